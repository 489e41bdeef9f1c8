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
