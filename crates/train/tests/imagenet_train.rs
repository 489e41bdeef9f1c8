//! The training loop on small generated ImageNet-style folders: the run
//! folder, the per-pixel mean in the weights, a crash and resume that ends
//! bit-identical, and bad data named in errors.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use resnet_data::synthetic::test_pattern;
use resnet_data::ImageNetNormalization;
use resnet_train::run_dir::{CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE};
use resnet_train::{
    read_metrics, resume, train, DatasetKind, NoObserver, NormalizationKind, TrainConfig,
    TrainError, TrainObserver,
};

/// Writes `ROOT/<class>/<i>.png` for every class, `per_class` images each, of
/// varying sizes; returns the root.
fn image_folder(root: &Path, classes: &[&str], per_class: u32, seed: u32) -> PathBuf {
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let s = seed + 10 * c as u32 + i;
            test_pattern(40 + 8 * i, 32 + 4 * (c as u32), s)
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
    root.to_path_buf()
}

const CLASSES: [&str; 3] = ["ant", "bee", "cow"];

/// A tiny training folder (6 images) and validation folder (3 images) in `dir`.
fn folders(dir: &Path) -> (PathBuf, PathBuf) {
    (
        image_folder(&dir.join("train"), &CLASSES, 2, 1),
        image_folder(&dir.join("val"), &CLASSES, 1, 100),
    )
}

/// The paper's ImageNet recipe, shrunk to a few ResNet-18 steps at batch 2.
fn tiny(train: PathBuf, val: Option<PathBuf>, iterations: u64) -> TrainConfig {
    TrainConfig {
        arch: "resnet18".into(),
        data: train,
        val_data: val,
        batch_size: 2,
        iterations,
        eval_every: 2,
        checkpoint_every: 1,
        log_every: 1,
        loader_threads: 2,
        ..TrainConfig::imagenet()
    }
}

fn weights(run: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu).unwrap()
}

/// Stops a run by panicking once `at` steps are done, as a crash would.
struct CrashAt(u64);

impl TrainObserver for CrashAt {
    fn on_step(&mut self, done: u64, _loss: f64, _lr: f64) {
        assert!(done < self.0, "simulated crash after step {done}");
    }
}

#[test]
fn an_image_folder_run_writes_its_folder_and_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = folders(dir.path());
    let config = tiny(train_dir, Some(val_dir), 3);
    assert_eq!(config.dataset, DatasetKind::ImageFolder);
    assert_eq!(config.normalization, NormalizationKind::PerPixelMean);
    let straight = dir.path().join("straight");
    let summary = train(&config, &straight, &mut NoObserver).unwrap();

    assert_eq!(summary.arch, "resnet18");
    assert_eq!((summary.iterations, summary.train_images), (3, 6));
    let test = summary
        .test
        .as_ref()
        .expect("the validation folder is tested");
    assert_eq!(test.images, 3);
    assert!((0.0..=1.0).contains(&test.top1_error) && test.loss.is_finite());
    assert!(summary.val.is_none());
    let records = read_metrics(&straight.join(METRICS_FILE)).unwrap();
    assert_eq!(
        records.iter().map(|r| r.iteration).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let tested: Vec<bool> = records.iter().map(|r| r.test_error.is_some()).collect();
    assert_eq!(tested, [false, true, true]);
    assert!(records
        .iter()
        .all(|r| r.lr == 0.1 && r.train_loss.is_finite() && r.epoch > 0.0));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join(CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(written["config"]["dataset"], "image-folder");
    assert_eq!(written["config"]["schedule"]["schedule"]["type"], "plateau");
    let summary_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join(SUMMARY_FILE)).unwrap())
            .unwrap();
    assert_eq!(summary_json["test"]["images"], 3);
    assert!(
        summary_json.get("peak_gpu_memory").is_none(),
        "a CPU run has no GPU memory peak: {summary_json}"
    );

    // The final weights carry the 224x224 per-pixel mean of the training views.
    let stored = weights(&straight);
    assert_eq!(stored["normalization.mean_image"].dims(), [3, 224, 224]);
    let Some(ImageNetNormalization::PerPixelMean(mean)) =
        resnet_eval::imagenet_normalization_from_tensors(&stored).unwrap()
    else {
        panic!("expected a per-pixel mean in the weights");
    };
    assert_eq!((mean.height(), mean.width()), (224, 224));
    assert!(mean.values().iter().all(|v| (0.0..=1.0).contains(v)));

    // Crash during step 2 (after checkpoint 1), resume, and end bit-identical.
    let crashed = dir.path().join("crashed");
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        train(&config, &crashed, &mut CrashAt(2))
    }));
    assert!(outcome.is_err(), "the run should have crashed");
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crashed.join(CHECKPOINT_FILE)).unwrap())
            .unwrap();
    assert_eq!(checkpoint["iteration"], 1);
    assert!(!crashed.join(SUMMARY_FILE).exists());
    let resumed = resume(&crashed, &mut NoObserver).unwrap();
    assert_eq!(resumed.test, summary.test);

    resnet_test_support::assert_bit_identical(&stored, &weights(&crashed));
}

#[test]
fn without_a_validation_folder_only_training_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, _) = folders(dir.path());
    let config = TrainConfig {
        normalization: NormalizationKind::PerChannel,
        ..tiny(train_dir, None, 2)
    };
    let run = dir.path().join("run");
    let summary = train(&config, &run, &mut NoObserver).unwrap();
    assert!(summary.test.is_none() && summary.val.is_none());
    let records = read_metrics(&run.join(METRICS_FILE)).unwrap();
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r.test_error.is_none() && r.val_error.is_none()));
    let text = std::fs::read_to_string(run.join(SUMMARY_FILE)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(json.get("test").is_none(), "{text}");
    // A finished run's summary reads back the same.
    let again = resume(&run, &mut NoObserver).unwrap();
    assert!(again.test.is_none());
    assert_eq!(again.final_train_loss, summary.final_train_loss);
    // torchvision's constants are stored.
    assert_eq!(
        resnet_eval::imagenet_normalization_from_tensors(&weights(&run)).unwrap(),
        Some(ImageNetNormalization::TORCHVISION)
    );
}

#[test]
fn bad_images_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = folders(dir.path());

    // A file that is no image at all: refused before the run folder is written.
    let corrupt = train_dir.join("bee/corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n garbage, not a header").unwrap();
    let run = dir.path().join("run");
    let err = train(
        &tiny(train_dir.clone(), Some(val_dir.clone()), 2),
        &run,
        &mut NoObserver,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("corrupt.png"), "{err}");
    assert!(
        !run.exists(),
        "a bad folder must leave no run folder behind"
    );
    std::fs::remove_file(&corrupt).unwrap();

    // A valid header with truncated pixel data: fails when its batch is loaded.
    let truncated = train_dir.join("cow/1.png");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let config = TrainConfig {
        normalization: NormalizationKind::PerChannel,
        ..tiny(train_dir, Some(val_dir), 3)
    };
    let err = train(&config, &run, &mut NoObserver).unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err:?}");
    assert!(err.to_string().contains("1.png"), "{err}");
    assert!(err.to_string().contains("cow"), "{err}");
}

#[test]
fn folders_that_do_not_fit_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, _) = folders(dir.path());
    let run = dir.path().join("run");

    let odd_val = image_folder(&dir.path().join("odd"), &["ant", "bee", "dog"], 1, 7);
    let err = train(
        &tiny(train_dir.clone(), Some(odd_val), 2),
        &run,
        &mut NoObserver,
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::ValClassesDiffer { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("odd") && message.contains("cow") && message.contains("val_labels"),
        "{message}"
    );

    let eleven: Vec<String> = (0..11).map(|i| format!("class{i:02}")).collect();
    let names: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let many = image_folder(&dir.path().join("many"), &names, 1, 3);
    let config = TrainConfig {
        arch: "resnet20".into(),
        ..tiny(many, None, 2)
    };
    let err = train(&config, &run, &mut NoObserver)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("many") && err.contains("11 classes") && err.contains("10 outputs"),
        "{err}"
    );

    let config = TrainConfig {
        val_size: 5,
        ..tiny(train_dir, None, 2)
    };
    let err = train(&config, &run, &mut NoObserver)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("val_size") && err.contains("--val-data"),
        "{err}"
    );
    assert!(!run.exists());
}

#[test]
fn a_flat_validation_folder_is_labelled_by_its_label_file() {
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, _) = folders(dir.path());
    let flat = dir.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    test_pattern(50, 40, 1).save(flat.join("v1.png")).unwrap();
    test_pattern(40, 50, 2).save(flat.join("v2.png")).unwrap();
    let labels = dir.path().join("val.txt");
    std::fs::write(&labels, "v1.png cow\nv2.png 0\n").unwrap();
    let config = TrainConfig {
        normalization: NormalizationKind::PerChannel,
        val_labels: Some(labels),
        ..tiny(train_dir, Some(flat), 1)
    };
    let summary = train(&config, &dir.path().join("run"), &mut NoObserver).unwrap();
    assert_eq!(summary.test.as_ref().map(|t| t.images), Some(2));
}
