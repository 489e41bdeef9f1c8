//! `cargo xtask reproduce table1` end to end: files written and parseable.

use resnet_test_support::{run, stderr};

#[test]
fn table1_writes_markdown_and_json_with_every_net() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "reproduce".as_ref(),
        "table1".as_ref(),
        "--out".as_ref(),
        dir.path(),
    ];
    let out = run(env!("CARGO_BIN_EXE_xtask"), args);
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("table1.json")).unwrap())
            .unwrap();
    let archs: Vec<&str> = records
        .iter()
        .map(|r| r["arch"].as_str().unwrap())
        .collect();
    assert_eq!(archs.len(), 13);
    for id in ["resnet18", "resnet152", "plain34", "resnet20", "resnet1202"] {
        assert!(archs.contains(&id), "{archs:?}");
    }
    for r in records.iter().filter(|r| r["dataset"] == "imagenet") {
        let (ours, paper) = (
            r["flops"].as_f64().unwrap(),
            r["paper_flops"].as_f64().unwrap(),
        );
        assert!((ours / paper - 1.0).abs() < 0.03, "{r}");
    }
    let md = std::fs::read_to_string(dir.path().join("table1.md")).unwrap();
    assert!(
        md.contains("| conv3_x | 28x28 |") && md.contains("11689512") && md.contains("19.40M"),
        "{md}"
    );
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn unknown_target_fails_with_usage() {
    let out = run(env!("CARGO_BIN_EXE_xtask"), ["reproduce", "table9"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'table9'"), "{stderr}");
    // The usage lists every target of both halves of the paper.
    assert!(
        stderr.contains("table1, fig1, fig6, table6, fig7, all, table2"),
        "{stderr}"
    );
}

fn xtask(args: &[&str]) -> std::process::Output {
    run(env!("CARGO_BIN_EXE_xtask"), args)
}

#[test]
fn a_dry_run_prints_the_plan_and_deviations_and_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let data = dir.path().join("cifar-10-batches-bin");
    let out = xtask(&[
        "reproduce",
        "all",
        "--profile",
        "paper",
        "--dry-run",
        "--out",
        out_dir,
        "--data",
        data.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    for needle in [
        "profile: paper",
        "batch norm over groups of 64 images",
        "world size 1 (one process)",
        "equivalent of 2 ranks of 64",
        "- resnet110: seeds [0, 1, 2, 3, 4]",
        "- `init`:",
    ] {
        assert!(stdout.contains(needle), "{needle} missing:\n{stdout}");
    }
    // Nothing downloaded, trained or written.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_reproduction_flags_name_the_flag() {
    let out = xtask(&["reproduce", "fig1", "--bn-group", "48", "--dry-run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--bn-group 48 must divide"), "{stderr}");
    // One line, as the resnet binary's errors, whatever RUST_BACKTRACE says.
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let out = xtask(&["reproduce", "fig1", "--bn-group", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value '0' for '--bn-group"));
    // A flag of the other half of the paper is refused, not ignored.
    let out = xtask(&["reproduce", "table3", "--bn-group", "4"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--bn-group is a flag of the CIFAR-10 targets"),
        "{stderr}"
    );
    let out = xtask(&["reproduce", "fig1", "--limit", "3", "--dry-run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--limit is a flag of the ImageNet targets"),
        "{stderr}"
    );
    // A flag of another task is refused too.
    let out = xtask(&["bench", "--profile", "paper"]);
    assert!(!out.status.success());
    if !cfg!(feature = "cuda") {
        let out = xtask(&["reproduce", "fig1", "--device", "cuda", "--dry-run"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--features cuda"), "{stderr}");
    }
}

/// `cargo xtask reproduce fig1 --profile smoke --out OUT` as rank `rank` of
/// 2, started as torchrun starts its ranks, rank 0 listening on `port`.
fn xtask_rank(rank: usize, port: u16, out: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "fig1", "--profile", "smoke", "--out"])
        .arg(out)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start xtask")
}

/// Two ranks reproduce Fig. 1 together: every run trains on both, rank 0
/// alone writes the runs and the reports, which record the world size; the
/// results are a one-process run's with batch norm over each rank's share.
#[test]
fn two_ranks_reproduce_fig1_as_one_process_with_their_batch_norm_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ranks = [0, 1].map(|r| xtask_rank(r, port, &two));
    let outs = ranks.map(|rank| rank.wait_with_output().unwrap());
    for (r, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "rank {r}: {}", stderr(out));
    }
    let printed = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let written = format!("wrote {}", two.join("fig1.json").display());
    assert!(
        printed(&outs[0]).contains(&written),
        "{}",
        printed(&outs[0])
    );
    assert!(
        !printed(&outs[1]).contains(&written),
        "rank 1 wrote the report"
    );
    let report = |root: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join("fig1.json")).unwrap()).unwrap()
    };
    let parallel = report(&two);
    assert_eq!(
        parallel["provenance"]["parallelism"]["world_sizes"],
        serde_json::json!([2])
    );

    // The smoke profile's batch of 8 on 2 ranks: batch norm over 4 images each.
    let single = xtask(&[
        "reproduce",
        "fig1",
        "--profile",
        "smoke",
        "--bn-group",
        "4",
        "--out",
        one.to_str().unwrap(),
    ]);
    assert!(single.status.success(), "{}", stderr(&single));
    let single = report(&one);
    for (a, b) in parallel["nets"]
        .as_array()
        .unwrap()
        .iter()
        .zip(single["nets"].as_array().unwrap())
    {
        for key in ["final_train_error_pct", "final_test_error_pct"] {
            let (a, b) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            // Within one image of the 1017 test images (gradient sums in
            // another order may flip a near tie).
            assert!(
                (a - b).abs() <= 100.0 / 1017.0 + 1e-9,
                "{key}: {a} against {b}"
            );
        }
    }
}

/// Under an MPI launcher without torchrun's variables the runner says how to
/// start its ranks, instead of training the same runs twice side by side.
#[test]
fn an_mpi_launched_runner_without_torchruns_variables_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "fig1", "--profile", "smoke", "--out"])
        .arg(dir.path().join("out"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("MPI launcher") && err.contains("RANK, WORLD_SIZE"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing is written");
}
