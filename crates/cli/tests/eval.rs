//! The `resnet eval` command as a user runs it, on the bundled CIFAR-10 sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use resnet_data::Normalization;
use resnet_eval::{save_weights, MODEL_FILE};
use resnet_models::{ArchSpec, ResNet};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-sample")
}

fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .output()
        .unwrap()
}

/// A temp folder holding a run folder `run/` (with its model.safetensors,
/// normalisation included) and `bare.safetensors` (no normalisation), both
/// a fresh resnet20.
fn weights() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), 7, &Device::Cpu).unwrap();
    let norm = Normalization::PerChannel {
        mean: [0.49, 0.48, 0.45],
        std: [0.25, 0.24, 0.26],
    };
    std::fs::create_dir(dir.path().join("run")).unwrap();
    save_weights(
        &model,
        Some(&norm),
        &dir.path().join("run").join(MODEL_FILE),
    )
    .unwrap();
    save_weights(&model, None, &dir.path().join("bare.safetensors")).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args`, expects a failure whose one-line message contains `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let out = resnet(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{args:?}: no error line in {err}"));
    assert!(line.contains(needle), "{args:?}: {err}");
}

#[test]
fn json_report_on_the_sample_test_split_from_a_run_folder() {
    let dir = weights();
    let run = dir.path().join("run");
    let data = sample();
    let out = resnet(&[
        "eval",
        "--arch",
        "resnet20",
        "--weights",
        run.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 1017);
    assert_eq!(v["arch"], "resnet20");
    assert_eq!(v["split"], "test");
    for key in ["top1_error", "top5_error"] {
        let e = v[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&e), "{v}");
    }
    assert!(v["loss"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn mean_and_std_flags_normalize_weights_that_store_none() {
    let dir = weights();
    let bare = dir.path().join("bare.safetensors");
    let data = sample();
    let out = resnet(&[
        "eval",
        "--arch",
        "resnet20",
        "--weights",
        bare.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "val",
        "--val-size",
        "100",
        "--mean",
        "0.49,0.48,0.45",
        "--std",
        "0.25,0.24,0.26",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("resnet20 on val (100 images): top-1 error "),
        "{text}"
    );
    assert!(text.contains("top-5 error"), "{text}");
}

#[test]
fn bad_flags_weights_and_data_are_one_clear_line_each() {
    let dir = weights();
    let run = dir.path().join("run");
    let bare = dir.path().join("bare.safetensors");
    let empty = tempfile::tempdir().unwrap();
    let (run, bare, empty, data) = (
        run.to_str().unwrap(),
        bare.to_str().unwrap(),
        empty.path().to_str().unwrap(),
        sample(),
    );
    let data = data.to_str().unwrap();
    let eval = |extra: &[&'static str], weights: &str, data: &str| -> Vec<String> {
        let mut args = vec!["eval", "--weights", weights, "--data", data];
        if !extra.contains(&"--arch") {
            args.extend(["--arch", "resnet20"]);
        }
        args.extend(extra);
        args.into_iter().map(String::from).collect()
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            eval(&[], bare, data),
            "stores no input normalization; pass --mean R,G,B and --std R,G,B".into(),
        ),
        (
            eval(&["--mean", "0.5,0.5,0.5"], bare, data),
            "--mean needs --std".into(),
        ),
        (
            eval(&["--mean", "0.5,0.5", "--std", "1,1,1"], bare, data),
            "--mean `0.5,0.5`: expected 3 comma-separated numbers".into(),
        ),
        (
            eval(&["--mean", "0.5,0.5,0.5", "--std", "1,0,1"], bare, data),
            "--std `1,0,1`: every standard deviation must be > 0".into(),
        ),
        (eval(&["--split", "val"], run, data), "--val-size".into()),
        (
            eval(&["--arch", "resnet21"], run, data),
            "unknown architecture `resnet21`".into(),
        ),
        (
            eval(&["--arch", "resnet32"], run, data),
            "missing tensor `layer1.3.conv1.weight`".into(),
        ),
        (
            eval(&[], empty, data),
            "has no model.safetensors yet".into(),
        ),
        (
            eval(&[], run, empty),
            format!("{empty} is not a CIFAR-10 folder"),
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, &needle);
    }
}
