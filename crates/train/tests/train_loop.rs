//! The training loop on the real bundled CIFAR-10 sample.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use resnet_models::Precision;
use resnet_test_support::{assert_bit_identical, cifar_sample, file_names, max_abs};
use resnet_train::run_dir::{
    RunLock, CHECKPOINT_FILE, CONFIG_FILE, LOCK_FILE, METRICS_FILE, PREVIOUS_CHECKPOINT_FILE,
    SUMMARY_FILE,
};
use resnet_train::{
    read_metrics, resume, train, LrSchedule, MetricRecord, NoObserver, ScheduleConfig, TrainConfig,
    TrainError, TrainObserver,
};

fn small_config(iterations: u64) -> TrainConfig {
    TrainConfig {
        arch: "resnet20".into(),
        data: cifar_sample(),
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
        data: cifar_sample(),
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
    let previous: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(PREVIOUS_CHECKPOINT_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(previous["iteration"], 2);
    // The two latest checkpoints' tensors are kept, and no temporary files.
    assert_eq!(
        file_names(dir.path()),
        vec![
            "checkpoint-00000002.safetensors",
            "checkpoint-00000004.safetensors",
            CHECKPOINT_FILE,
            PREVIOUS_CHECKPOINT_FILE,
            CONFIG_FILE,
            METRICS_FILE,
            "model.safetensors",
            LOCK_FILE,
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
fn a_relative_data_path_is_written_absolute() {
    let dir = tempfile::tempdir().unwrap();
    // Tests run in the crate's folder.
    let relative = PathBuf::from("../../data/cifar-10-sample");
    let config = TrainConfig {
        data: relative.clone(),
        ..small_config(1)
    };
    train(&config, dir.path(), &mut NoObserver).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap())
            .unwrap();
    let data = PathBuf::from(written["config"]["data"].as_str().unwrap());
    assert!(data.is_absolute(), "{}", data.display());
    assert_eq!(
        data.canonicalize().unwrap(),
        relative.canonicalize().unwrap()
    );
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

/// Asks the loop to stop once `at` steps are done (as a signal handler
/// would), and notes where each run starts.
#[derive(Default)]
struct StopAt {
    at: Option<u64>,
    done: u64,
    started_at: Vec<u64>,
}

impl TrainObserver for StopAt {
    fn on_start(&mut self, start: u64, _total: u64) {
        self.started_at.push(start);
    }
    fn on_step(&mut self, done: u64, _loss: f64, _lr: f64) {
        self.done = done;
    }
    fn stop_requested(&mut self) -> bool {
        self.at == Some(self.done)
    }
}

fn final_weights(run: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu).unwrap()
}

/// The metric records without their timings, which differ between runs.
fn records_without_timings(run: &Path) -> Vec<MetricRecord> {
    read_metrics(&run.join(METRICS_FILE))
        .unwrap()
        .into_iter()
        .map(|r| MetricRecord {
            images_per_sec: 0.0,
            wall_time: 0.0,
            ..r
        })
        .collect()
}

fn checkpoint_iteration(path: &Path) -> u64 {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    state["iteration"].as_u64().unwrap()
}

/// Trains `config` in `straight` uninterrupted, and in `stopped` with a stop
/// after step 5 and a resume; checks the stop's checkpoints and that both
/// end with the same weights bit for bit and the same records.
fn stop_and_resume_bit_identical(config: &TrainConfig, straight: &Path, stopped: &Path) {
    train(config, straight, &mut NoObserver).unwrap();

    let mut observer = StopAt {
        at: Some(5),
        ..StopAt::default()
    };
    let err = train(config, stopped, &mut observer).unwrap_err();
    assert!(
        matches!(err, TrainError::Stopped { iteration: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("resume"), "{err}");
    assert_eq!(checkpoint_iteration(&stopped.join(CHECKPOINT_FILE)), 5);
    assert_eq!(
        checkpoint_iteration(&stopped.join(PREVIOUS_CHECKPOINT_FILE)),
        4
    );
    assert!(!stopped.join(SUMMARY_FILE).exists());

    let mut observer = StopAt::default();
    resume(stopped, &mut observer).unwrap();
    assert_eq!(observer.started_at, vec![5]);
    assert_bit_identical(&final_weights(straight), &final_weights(stopped));
    assert_eq!(
        records_without_timings(stopped),
        records_without_timings(straight)
    );
}

/// Checkpoints every 4 steps and records every 3: a stop after step 5 falls
/// between both, so the checkpoint must carry the unlogged steps.
fn stop_config() -> TrainConfig {
    TrainConfig {
        checkpoint_every: 4,
        log_every: 3,
        ..small_config(9)
    }
}

#[test]
fn a_run_stopped_on_request_saves_a_checkpoint_and_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, stopped) = (dir.path().join("straight"), dir.path().join("stopped"));
    stop_and_resume_bit_identical(&stop_config(), &straight, &stopped);
}

/// bf16 mixed precision keeps its parameters, checkpoints and optimizer
/// state in f32, resumes bit-identical, and is recorded in the run's config.
#[test]
fn a_bf16_run_keeps_f32_state_and_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, stopped) = (dir.path().join("straight"), dir.path().join("stopped"));
    let config = TrainConfig {
        precision: Precision::Bf16,
        ..stop_config()
    };
    stop_and_resume_bit_identical(&config, &straight, &stopped);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stopped.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(written["config"]["precision"], "bf16");
    let checkpoint = candle_core::safetensors::load(
        stopped.join("checkpoint-00000009.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(checkpoint.keys().any(|k| k.starts_with("momentum")));
    for (name, tensor) in checkpoint.iter().chain(&final_weights(&stopped)) {
        assert_eq!(tensor.dtype(), DType::F32, "{name}");
    }
    // The same run in fp32 ends elsewhere: the convolutions did run in bf16.
    let fp32 = dir.path().join("fp32");
    train(&stop_config(), &fp32, &mut NoObserver).unwrap();
    let (a, b) = (final_weights(&fp32), final_weights(&stopped));
    let changed = a["conv1.weight"]
        .ne(&b["conv1.weight"])
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        changed > 0.0,
        "bf16 and fp32 trained the same conv1 weights"
    );
}

/// A channels-last run resumes bit-identical, is recorded in the run's
/// config, and trains what the NCHW run trains, up to the order of sums.
/// (Over more steps the two drift apart, as any two orders of sums do: these
/// early steps amplify a difference of 1e-7 some tenfold per step.)
#[test]
fn a_channels_last_run_resumes_bit_identical_and_matches_nchw() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, stopped) = (dir.path().join("straight"), dir.path().join("stopped"));
    let config = TrainConfig {
        channels_last: true,
        ..stop_config()
    };
    stop_and_resume_bit_identical(&config, &straight, &stopped);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stopped.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(written["config"]["channels_last"], true);
    let two_steps = |channels_last, run: &Path| {
        let config = TrainConfig {
            channels_last,
            ..small_config(2)
        };
        train(&config, run, &mut NoObserver).unwrap();
        final_weights(run)
    };
    let nchw = two_steps(false, &dir.path().join("nchw"));
    let cl = two_steps(true, &dir.path().join("cl"));
    for (name, want) in &nchw {
        let got = &cl[name];
        let scale = max_abs(want);
        let err = resnet_test_support::max_abs_diff(got, want);
        assert!(
            err <= 1e-4 * scale.max(1e-6),
            "{name}: {err} apart (largest value {scale})"
        );
    }
}

#[test]
fn a_run_folder_in_use_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut observer = StopAt {
        at: Some(1),
        ..StopAt::default()
    };
    let err = train(&small_config(4), &run, &mut observer).unwrap_err();
    assert!(matches!(err, TrainError::Stopped { .. }), "{err}");

    let lock = RunLock::acquire(&run).unwrap();
    let pid = std::process::id();
    let err = resume(&run, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, TrainError::RunInUse { pid: Some(p), .. } if p == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
    // A new run in a folder in use is refused too, and writes nothing.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let fresh_lock = RunLock::acquire(&fresh).unwrap();
    let err = train(&small_config(4), &fresh, &mut NoObserver).unwrap_err();
    assert!(matches!(err, TrainError::RunInUse { .. }), "{err}");
    assert_eq!(file_names(&fresh), vec![LOCK_FILE]);

    // Released, the run resumes and finishes.
    drop((lock, fresh_lock));
    assert_eq!(resume(&run, &mut NoObserver).unwrap().iterations, 4);
}

#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_one_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, damaged) = (dir.path().join("straight"), dir.path().join("damaged"));
    let config = small_config(8);
    train(&config, &straight, &mut NoObserver).unwrap();

    let mut observer = StopAt {
        at: Some(5),
        ..StopAt::default()
    };
    train(&config, &damaged, &mut observer).unwrap_err();
    // Checkpoints at 4 (every 2 steps) and 5 (the stop): 2 is removed.
    let tensors: Vec<String> = file_names(&damaged)
        .into_iter()
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert_eq!(
        tensors,
        vec![
            "checkpoint-00000004.safetensors",
            "checkpoint-00000005.safetensors"
        ]
    );
    // The newest tensors file is cut short after it was written.
    let newest = damaged.join("checkpoint-00000005.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();

    let mut observer = StopAt::default();
    resume(&damaged, &mut observer).unwrap();
    assert_eq!(
        observer.started_at,
        vec![4],
        "resumed from the older checkpoint"
    );
    assert_bit_identical(&final_weights(&straight), &final_weights(&damaged));
    assert_eq!(
        records_without_timings(&damaged),
        records_without_timings(&straight)
    );
}

#[test]
fn a_flipped_bit_in_the_latest_checkpoint_is_caught_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, damaged) = (dir.path().join("straight"), dir.path().join("damaged"));
    let config = small_config(6);
    train(&config, &straight, &mut NoObserver).unwrap();
    let mut observer = StopAt {
        at: Some(5),
        ..StopAt::default()
    };
    train(&config, &damaged, &mut observer).unwrap_err();
    // One bit of a weight, past the header: the file still parses.
    let newest = damaged.join("checkpoint-00000005.safetensors");
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&newest, &bytes).unwrap();
    assert!(candle_core::safetensors::load(&newest, &Device::Cpu).is_ok());

    let mut observer = StopAt::default();
    resume(&damaged, &mut observer).unwrap();
    assert_eq!(
        observer.started_at,
        vec![4],
        "resumed from the older checkpoint"
    );
    assert_bit_identical(&final_weights(&straight), &final_weights(&damaged));
}

#[test]
fn no_readable_checkpoint_is_an_error_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut observer = StopAt {
        at: Some(3),
        ..StopAt::default()
    };
    train(&small_config(8), &run, &mut observer).unwrap_err();
    std::fs::write(run.join(CHECKPOINT_FILE), "{ not json").unwrap();
    std::fs::write(run.join("checkpoint-00000002.safetensors"), b"garbage").unwrap();
    let err = resume(&run, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, TrainError::NoReadableCheckpoint { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(CHECKPOINT_FILE) && message.contains("checkpoint-00000002.safetensors"),
        "{message}"
    );
}
