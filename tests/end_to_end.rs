//! A user's session with the `resnet` binary, end to end, on the bundled
//! CIFAR-10 sample: train a ResNet-20, stop it with SIGTERM as a cluster
//! would, resume it with the command it printed, then evaluate the result
//! and classify images with it, checking that the commands agree with each
//! other: `eval` reproduces the run's own final test error, and `predict`
//! ranks first the same classes `eval` counts as right.
//!
//! The workspace's end-to-end tests live in the top-level `tests/` folder;
//! this one belongs to `resnet-cli` so that it runs the `resnet` cargo built.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use resnet_data::Cifar10;
use resnet_test_support::process::{send_signal, wait_for_a_record};
use resnet_test_support::{cifar_sample, run, stderr};

fn resnet(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_resnet"), args)
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn train_stop_resume_eval_predict() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let sample = cifar_sample();

    // Train; stop with SIGTERM once a record is written.
    let mut trainer = Command::new(env!("CARGO_BIN_EXE_resnet"));
    trainer
        .args(["train", "--arch", "resnet20", "--batch-size", "16"])
        .args(["--iterations", "40", "--milestones", "30"])
        .args(["--log-every", "2", "--checkpoint-every", "100"])
        .args(["--normalization", "per-channel", "--eval-every", "0"])
        .args(["--seed", "3"])
        .arg("--data")
        .arg(&sample)
        .arg("--out")
        .arg(&run_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // (40 steps of batch 16 end in seconds: a failing test leaves nothing running long.)
    let mut child = trainer.spawn().unwrap();
    wait_for_a_record(&run_dir, &mut child);
    send_signal(&child, "TERM");
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(1), "{}", stderr(&stopped));
    let printed = stderr(&stopped);
    let (_, command) = printed
        .lines()
        .last()
        .unwrap()
        .split_once("resume with: resnet ")
        .unwrap_or_else(|| panic!("no resume command printed:\n{printed}"));

    // Resume with exactly the command printed, to the end.
    let args: Vec<&str> = command.split(' ').collect();
    let resumed = resnet(&args);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["iterations"], 40);

    // `eval` on the test split gives the run's own final test error.
    let run_arg = run_dir.to_str().unwrap();
    let sample_arg = sample.to_str().unwrap();
    let eval = json(&resnet(&[
        "eval",
        "--arch",
        "resnet20",
        "--weights",
        run_arg,
        "--data",
        sample_arg,
        "--json",
    ]));
    assert_eq!(eval["images"], 1017);
    for key in ["top1_error", "top5_error"] {
        assert_eq!(
            eval[key], summary["test"][key],
            "{key}: {eval} vs {summary}"
        );
    }

    // 24 test images as PNG files, labelled by a label file.
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let test = Cifar10::load(&sample).unwrap().test;
    let mut labels = String::new();
    let mut files = Vec::new();
    for i in 0..24 {
        let file = images.join(format!("test{i:02}.png"));
        write_png(&file, test.image(i).unwrap());
        labels.push_str(&format!("test{i:02}.png {}\n", test.labels()[i]));
        files.push(file.to_str().unwrap().to_string());
    }
    let labels_file = dir.path().join("labels.txt");
    std::fs::write(&labels_file, labels).unwrap();

    // `eval` on the folder counts the images whose top class is wrong ...
    let folder_eval = json(&resnet(&[
        "eval",
        "--arch",
        "resnet20",
        "--weights",
        run_arg,
        "--data",
        images.to_str().unwrap(),
        "--labels",
        labels_file.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(folder_eval["images"], 24);
    // ... and `predict` ranks first exactly the classes counted right.
    let mut args = vec![
        "predict",
        "--arch",
        "resnet20",
        "--weights",
        run_arg,
        "--json",
    ];
    args.extend(files.iter().map(String::as_str));
    let out = resnet(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 24);
    let mut wrong = 0;
    for (i, line) in lines.iter().enumerate() {
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        let probabilities: Vec<f64> = top
            .iter()
            .map(|p| p["probability"].as_f64().unwrap())
            .collect();
        assert!(probabilities.windows(2).all(|w| w[0] >= w[1]), "{line}");
        assert!(probabilities.iter().sum::<f64>() <= 1.0 + 1e-6, "{line}");
        wrong += usize::from(top[0]["class"] != u64::from(test.labels()[i]));
    }
    let folder_error = folder_eval["top1_error"].as_f64().unwrap();
    assert_eq!(
        wrong,
        (folder_error * 24.0).round() as usize,
        "{folder_eval}"
    );
}

/// Writes a CIFAR-10 record's image (3x32x32, channel-major bytes) as a PNG.
fn write_png(path: &Path, chw: &[u8]) {
    let pixels: Vec<u8> = (0..32 * 32)
        .flat_map(|p| [chw[p], chw[1024 + p], chw[2048 + p]])
        .collect();
    image::RgbImage::from_raw(32, 32, pixels)
        .unwrap()
        .save(path)
        .unwrap();
}
