//! The training loop on the real bundled CIFAR-10 sample.

use std::path::PathBuf;

use resnet_train::run_dir::{CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE};
use resnet_train::{
    read_metrics, resume, train, LrSchedule, NoObserver, ScheduleConfig, TrainConfig, TrainError,
};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-sample")
}

fn small_config(iterations: u64) -> TrainConfig {
    TrainConfig {
        arch: "resnet20".into(),
        data: sample(),
        batch_size: 16,
        iterations,
        eval_every: 0,
        checkpoint_every: 2,
        log_every: 2,
        ..TrainConfig::default()
    }
}

#[test]
fn a_resnet_learns_on_real_cifar_images() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        arch: "resnet20".into(),
        data: sample(),
        batch_size: 64,
        iterations: 400,
        eval_every: 0,
        checkpoint_every: 0,
        log_every: 50,
        schedule: ScheduleConfig {
            schedule: LrSchedule::Step {
                base_lr: 0.1,
                milestones: vec![300],
                gamma: 0.1,
            },
            warmup: None,
        },
        ..TrainConfig::default()
    };
    let summary = train(&config, dir.path(), &mut NoObserver).unwrap();
    let records = read_metrics(&dir.path().join(METRICS_FILE)).unwrap();
    let first = &records[0];
    eprintln!("first record {first:?}\nsummary {summary:?}");
    // Chance is ln 10 = 2.30 loss and 90% error on 10 classes.
    assert!(
        first.train_loss > 1.9,
        "starts near chance: {}",
        first.train_loss
    );
    assert!(
        summary.final_train_loss < 1.7,
        "training loss must fall well below ln 10: {}",
        summary.final_train_loss
    );
    let test = summary.test.as_ref().expect("a CIFAR-10 run is tested");
    assert_eq!(test.images, 1017);
    assert!(
        test.top1_error < 0.65,
        "held-out error must be clearly below the 90% of chance: {}",
        test.top1_error
    );
    assert!(dir.path().join("model.safetensors").exists());
}

#[test]
fn a_run_folder_holds_config_metrics_checkpoint_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(4);
    train(&config, dir.path(), &mut NoObserver).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(written["config"]["arch"], "resnet20");
    assert_eq!(written["config"]["batch_size"], 16);
    assert_eq!(written["config"]["sgd"]["momentum"], 0.9);
    assert_eq!(written["candle"], "0.9.2");
    let records = read_metrics(&dir.path().join(METRICS_FILE)).unwrap();
    assert_eq!(
        records.iter().map(|r| r.iteration).collect::<Vec<_>>(),
        vec![2, 4]
    );
    assert!(records[1].test_error.is_some() && records[0].test_error.is_none());
    assert!(records
        .iter()
        .all(|r| r.lr == 0.1 && r.images_per_sec > 0.0));
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap())
            .unwrap();
    assert_eq!(checkpoint["iteration"], 4);
    // Only the latest checkpoint's tensors are kept, and no temporary files.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "checkpoint-00000004.safetensors",
            CHECKPOINT_FILE,
            CONFIG_FILE,
            METRICS_FILE,
            "model.safetensors",
            SUMMARY_FILE
        ]
    );

    // A second run in the same folder is refused; resuming a finished run returns its summary.
    let err = train(&config, dir.path(), &mut NoObserver).unwrap_err();
    assert!(matches!(err, TrainError::RunExists { .. }), "{err}");
    assert_eq!(resume(dir.path(), &mut NoObserver).unwrap().iterations, 4);
}

#[test]
fn a_diverging_run_stops_naming_the_iteration_and_keeps_its_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(30);
    config.checkpoint_every = 1;
    config.schedule.schedule = LrSchedule::Step {
        base_lr: 1e30,
        milestones: vec![],
        gamma: 0.1,
    };
    let err = train(&config, dir.path(), &mut NoObserver).unwrap_err();
    let TrainError::NonFiniteLoss { iteration, .. } = err else {
        panic!("expected a divergence error, got {err}")
    };
    assert!(
        err.to_string().contains(&format!("iteration {iteration}")),
        "{err}"
    );
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap())
            .unwrap();
    assert_eq!(checkpoint["iteration"].as_u64().unwrap(), iteration - 1);
    assert!(dir
        .path()
        .join(checkpoint["tensors"].as_str().unwrap())
        .exists());
    assert!(!dir.path().join(SUMMARY_FILE).exists());
}

#[test]
fn bad_data_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        data: dir.path().join("nowhere"),
        ..small_config(2)
    };
    let err = train(&config, &dir.path().join("run"), &mut NoObserver)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere"), "{err}");
}
