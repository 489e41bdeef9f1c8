//! `resnet train` as a user runs it: a run killed with SIGKILL and resumed
//! ends bit-identical to an uninterrupted one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-sample")
}

fn train_command(out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet"));
    cmd.args([
        "train",
        "--arch",
        "resnet20",
        "--batch-size",
        "8",
        "--iterations",
        "24",
        "--checkpoint-every",
        "3",
    ])
    .args([
        "--log-every",
        "3",
        "--eval-every",
        "0",
        "--seed",
        "7",
        "--data",
    ])
    .arg(sample())
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

    let out = train_command(&straight).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill the second run with SIGKILL as soon as it has a checkpoint mid-way.
    let mut child = train_command(&interrupted).spawn().unwrap();
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

    let (a, b) = (weights(&straight), weights(&interrupted));
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let (va, vb) = (
            ta.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs after resume"
        );
    }
    // The metrics log reads as if the run had never stopped.
    let iterations = |run: &Path| -> Vec<u64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["iteration"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(iterations(&interrupted), iterations(&straight));
}

#[test]
fn train_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            vec!["train", "--arch", "resnet19", "--iterations", "1"],
            "unknown architecture `resnet19`",
        ),
        (
            vec!["train", "--batch-size", "0"],
            "batch_size must be at least 1",
        ),
        (vec!["train", "--resume"], "holds no run to resume"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(&args)
            .arg("--out")
            .arg(dir.path().join("run"))
            .arg("--data")
            .arg(sample())
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
