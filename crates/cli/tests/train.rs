//! `resnet train` as a user runs it: a run killed with SIGKILL, or stopped
//! with SIGTERM, and resumed ends bit-identical to an uninterrupted one, with
//! the paper's recipe options that carry state across steps (Caffe's momentum
//! update across lr changes, per-group batch norm); a run folder in use is
//! refused.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use resnet_test_support::process::{send_signal, wait_for_a_record, Reaped};
use resnet_test_support::{assert_bit_identical, cifar_sample};

/// `resnet train` of ResNet-20 on the sample, batches of 8, a record every 3 steps.
fn train_command(out: &Path, iterations: u64, checkpoint_every: u64) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet"));
    cmd.args(["train", "--arch", "resnet20", "--batch-size", "8"])
        .arg("--iterations")
        .arg(iterations.to_string())
        .arg("--checkpoint-every")
        .arg(checkpoint_every.to_string());
    cmd.args([
        // An lr change at every checkpoint the run may be killed at: Caffe's
        // update must rescale its momentum there, after the resume too.
        "--milestones",
        "6,9,12",
        "--update-rule",
        "caffe",
        "--bn-group",
        "4",
        "--log-every",
        "3",
        "--eval-every",
        "0",
        "--seed",
        "7",
        "--data",
    ])
    .arg(cifar_sample())
    .arg("--out")
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

fn checkpoint_iteration(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoint.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["iteration"].as_u64()
}

fn weights(run: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn a_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, interrupted) = (dir.path().join("straight"), dir.path().join("interrupted"));

    let out = train_command(&straight, 24, 3).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill the second run with SIGKILL as soon as it has a checkpoint mid-way.
    let mut child = train_command(&interrupted, 24, 3).spawn().unwrap();
    let started = Instant::now();
    let killed_after = loop {
        if let Some(it) = checkpoint_iteration(&interrupted).filter(|&it| it >= 6) {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
            break it;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "run finished before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(killed_after < 24, "killed at {killed_after}");
    assert!(!interrupted.join("model.safetensors").exists());

    let resume = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--resume", "--out"])
        .arg(&interrupted)
        .output()
        .unwrap();
    assert!(
        resume.status.success(),
        "{}",
        String::from_utf8_lossy(&resume.stderr)
    );

    assert_same_weights(&straight, &interrupted);
    // The metrics log reads as if the run had never stopped.
    assert_eq!(records(&interrupted), records(&straight));
}

fn assert_same_weights(straight: &Path, resumed: &Path) {
    assert_bit_identical(&weights(straight), &weights(resumed));
}

/// Iteration and training loss of each metric record.
fn records(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let record = serde_json::from_str::<serde_json::Value>(l).unwrap();
            (
                record["iteration"].as_u64().unwrap(),
                record["train_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_run_stopped_with_sigterm_saves_a_checkpoint_and_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, stopped) = (dir.path().join("straight"), dir.path().join("stopped"));
    // A checkpoint only every 10 steps: the stop writes its own.
    let out = train_command(&straight, 24, 10).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = train_command(&stopped, 24, 10).spawn().unwrap();
    wait_for_a_record(&stopped, &mut child);
    send_signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let iteration = checkpoint_iteration(&stopped).expect("a checkpoint is saved");
    assert!((3..24).contains(&iteration), "stopped at {iteration}");
    assert!(
        stderr.contains(&format!("stopped after iteration {iteration}"))
            && stderr.contains(&format!(
                "resnet train --resume --out {}",
                stopped.display()
            )),
        "{stderr}"
    );
    assert!(!stopped.join("model.safetensors").exists());

    // A flag that sets a run's config is refused with --resume, not
    // ignored (the bit-identical end below shows it changed nothing).
    let refused = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--resume", "--precision", "bf16", "--out"])
        .arg(&stopped)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("--resume") && err.contains("--precision"),
        "{err}"
    );

    // Resume with exactly the command printed.
    let printed = stderr.lines().last().unwrap();
    let (_, command) = printed.split_once("resume with: resnet ").unwrap();
    let resume = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(command.split(' '))
        .output()
        .unwrap();
    assert!(
        resume.status.success(),
        "{}",
        String::from_utf8_lossy(&resume.stderr)
    );
    assert_same_weights(&straight, &stopped);
    // The same records, the first after the stop averaging over the same steps.
    assert_eq!(records(&stopped), records(&straight));
}

#[test]
fn a_second_trainer_on_a_run_folder_in_use_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut holder = Reaped(
        train_command(&run, 100_000, 1000)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_a_record(&run, &mut holder.0);
    for args in [
        vec!["train", "--resume"],
        vec!["train", "--iterations", "1"],
    ] {
        let data = match args[1] {
            "--resume" => vec![],
            _ => vec!["--data".into(), cifar_sample()],
        };
        let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(&args)
            .arg("--out")
            .arg(&run)
            .args(data)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        let needle = match args.len() {
            2 => format!("in use by another trainer (pid {})", holder.0.id()),
            _ => "already holds a run".to_string(),
        };
        assert!(stderr.contains(&needle), "{args:?}: {stderr}");
    }
    send_signal(&holder.0, "INT");
    assert_eq!(holder.0.wait().unwrap().code(), Some(1));
    // The holder saved a checkpoint on SIGINT (Ctrl-C) as on SIGTERM. (That
    // the OS releases the lock of a killed holder, the SIGKILL test shows.)
    assert!(checkpoint_iteration(&run).is_some());
}

#[test]
fn train_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![
        (
            vec!["train", "--arch", "resnet19", "--iterations", "1"],
            "unknown architecture `resnet19`",
        ),
        (
            vec!["train", "--batch-size", "0"],
            "batch_size must be at least 1",
        ),
        (vec!["train", "--resume"], "holds no run to resume"),
        // A negative number is the flag's value, checked as such.
        (
            vec!["train", "--lr", "-1", "--iterations", "1"],
            "base_lr must be finite and > 0, got -1",
        ),
        (
            vec!["train", "--batch-size", "100000", "--iterations", "1"],
            "expected at most the 5438 images of the split",
        ),
    ];
    if cfg!(not(feature = "cuda")) {
        cases.push((
            vec!["train", "--device", "cuda", "--iterations", "1"],
            "cannot open device `cuda:0`: this build has no CUDA support",
        ));
    }
    if cfg!(not(feature = "nccl")) {
        cases.push((
            vec!["train", "--collective-backend", "nccl", "--iterations", "1"],
            "NCCL backend is not in this build",
        ));
    }
    for (args, needle) in cases {
        // --resume takes the run's data from its config, and no --data.
        let data = match args[1] {
            "--resume" => vec![],
            _ => vec!["--data".into(), cifar_sample()],
        };
        let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(&args)
            .arg("--out")
            .arg(dir.path().join("run"))
            .args(data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            !dir.path().join("run").exists(),
            "a failed start must leave no run folder behind"
        );
    }
    // A CUDA setting that names nothing is refused before any GPU is looked
    // for, in every build.
    let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--device", "cuda", "--iterations", "1", "--out"])
        .arg(dir.path().join("run"))
        .arg("--data")
        .arg(cifar_sample())
        .env("RESNET_CUDA_KERNELS", "conv,batchnorm")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("RESNET_CUDA_KERNELS=\"conv,batchnorm\"")
            && err.contains("unknown kernel group `batchnorm`")
            && err.contains("batch-norm"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!dir.path().join("run").exists());
    let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--iterations", "1", "--out"])
        .arg(dir.path().join("run2"))
        .arg("--data")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("missing"), "{err}");
    assert!(
        !dir.path().join("run2").exists(),
        "a bad data folder must leave no run folder behind"
    );
}

/// Writes `ROOT/<class>/<i>.png`, `per_class` small pictures per class.
fn image_folder(root: &Path, classes: &[&str], per_class: u32) {
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let shade = (40 * c as u32 + 17 * i) as u8;
            let picture = image::RgbImage::from_fn(48 + 4 * i, 40, |x, y| {
                image::Rgb([x as u8 ^ shade, y as u8, shade])
            });
            picture.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

#[test]
fn an_image_folder_trains_with_the_imagenet_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val, run) = (
        dir.path().join("train"),
        dir.path().join("val"),
        dir.path().join("run"),
    );
    image_folder(&train, &["ant", "bee"], 2);
    image_folder(&val, &["ant", "bee"], 1);
    let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--arch", "resnet18", "--iterations", "2"])
        .args(["--batch-size", "2", "--loader-threads", "2", "--data"])
        .arg(&train)
        .arg("--val-data")
        .arg(&val)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("resnet18: 2 iterations") && stdout.contains("on 2 images"),
        "{stdout}"
    );

    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(name)).unwrap()).unwrap()
    };
    let config = &json("config.json")["config"];
    // Detected as an image folder; the ImageNet recipe where no flag overrides it.
    assert_eq!(config["dataset"], "image-folder");
    assert_eq!(config["batch_size"], 2);
    assert_eq!(config["iterations"], 2);
    assert_eq!(config["schedule"]["schedule"]["type"], "plateau");
    assert_eq!(config["schedule"]["schedule"]["base_lr"], 0.1);
    assert_eq!(config["sgd"]["weight_decay"], 1e-4);
    assert_eq!(config["normalization"], "per-pixel-mean");
    assert_eq!(config["image_augment"]["max_side"], 480);
    assert_eq!(config["val_data"], val.display().to_string());
    let summary = json("summary.json");
    assert_eq!(summary["test"]["images"], 2);
    assert_eq!(summary["train_images"], 4);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["iteration"], 2);
    assert!(last["test_error"].is_number(), "{last}");
    let weights = weights(&run);
    assert_eq!(weights["normalization.mean_image"].dims(), [3, 224, 224]);
    assert_eq!(weights["fc.weight"].dims(), [1000, 512]);

    // `resnet eval` reads the run's weights with their 224x224 mean image and
    // agrees with the trainer's own centre-crop evaluation.
    let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(["eval", "--arch", "resnet18", "--json", "--weights"])
        .arg(&run)
        .arg("--data")
        .arg(&val)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(eval["images"], 2);
    assert_eq!(eval["top1_error"], summary["test"]["top1_error"]);
}

#[test]
fn image_folder_errors_name_the_flag_or_folder() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    image_folder(&train, &["ant", "bee"], 1);
    let missing = dir.path().join("no-such-val");
    for (args, needle) in [
        (vec!["--val-size", "1"], "--val-size".to_string()),
        (
            vec!["--val-data", missing.to_str().unwrap()],
            "no-such-val".to_string(),
        ),
        (
            vec!["--dataset", "pictures"],
            "invalid value 'pictures' for '--dataset".to_string(),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(["train", "--iterations", "1", "--data"])
            .arg(&train)
            .args(&args)
            .arg("--out")
            .arg(dir.path().join("run"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(&needle), "{args:?}: {err}");
        assert!(!dir.path().join("run").exists(), "{args:?}");
    }
}

#[test]
fn a_corrupt_image_stops_the_start_unless_bad_images_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    image_folder(&train, &["ant", "bee"], 2);
    std::fs::write(train.join("bee/broken.png"), b"not a png").unwrap();
    let run = |extra: &[&str], out: &str| {
        Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(["train", "--arch", "resnet18", "--iterations", "1"])
            .args([
                "--batch-size",
                "2",
                "--normalization",
                "per-channel",
                "--data",
            ])
            .arg(&train)
            .args(extra)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    let out = run(&[], "rejected");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.png"), "{err}");
    assert!(!dir.path().join("rejected").exists());

    let out = run(&["--skip-bad-images"], "skipped");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("skipped/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["train_images"], 4, "the broken file is left out");
}

/// `--resume RUN_DIR` needs no `--out`; with both, they must name one
/// folder; `--resume` alone names none.
#[test]
fn resume_takes_its_run_folder_from_either_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = train_command(&run, 2, 0).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resume = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(["train", "--resume"])
            .args(args)
            .output()
            .unwrap()
    };
    let (run_arg, other) = (run.as_os_str(), dir.path().join("other"));
    for args in [vec![run_arg], vec![run_arg, "--out".as_ref(), run_arg]] {
        let out = resume(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("resnet20: 2 iterations"), "{stdout}");
    }
    let cases = [
        (
            vec![run_arg, "--out".as_ref(), other.as_os_str()],
            "name two run folders",
        ),
        (vec![], "no run folder: give --out RUN_DIR"),
    ];
    for (args, needle) in cases {
        let out = resume(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert!(!other.exists());
}
