//! The full configuration of a training run, written into its folder.

use std::path::PathBuf;

use resnet_models::Shortcut;
use serde::{Deserialize, Serialize};

use crate::{Result, ScheduleConfig, SgdConfig, TrainError};

/// How images are normalised before they enter the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NormalizationKind {
    /// The paper's per-pixel mean subtraction (mean image of the training split).
    #[default]
    PerPixelMean,
    /// torchvision-style per-channel mean and standard deviation of the training split.
    PerChannel,
}

/// Every hyperparameter of a run. The defaults are the paper's CIFAR-10
/// recipe: batch 128, SGD with lr 0.1, momentum 0.9, weight decay 1e-4, lr
/// divided by 10 at 32k and 48k iterations, 64k iterations, per-pixel mean
/// subtraction, pad-4 random crops and flips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Architecture id from the zoo (`resnet20`, `plain56`, ...).
    pub arch: String,
    /// Shortcut option overriding the arch's default (A for CIFAR nets).
    pub shortcut: Option<Shortcut>,
    /// CIFAR-10 folder (the official binary layout).
    pub data: PathBuf,
    /// Training images held out, from the end of the training set, for
    /// validation (the paper chose its hyperparameters with 5000; 0 = none).
    pub val_size: usize,
    /// Images per SGD step.
    pub batch_size: usize,
    /// Number of SGD steps of the whole run.
    pub iterations: u64,
    /// Optimizer hyperparameters (its lr is overridden by the schedule).
    pub sgd: SgdConfig,
    /// Learning-rate schedule, with the optional ResNet-110 warm-up.
    pub schedule: ScheduleConfig,
    /// Seed of the weights' initialisation, the shuffling and the augmentation.
    pub seed: u64,
    /// Threads preparing batches.
    pub loader_threads: usize,
    /// Input normalisation.
    pub normalization: NormalizationKind,
    /// Whether to apply the paper's augmentation (pad 4, random crop, flip).
    pub augment: bool,
    /// Steps between evaluations on the validation and test splits (0: only at the end).
    pub eval_every: u64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// Steps between metric records.
    pub log_every: u64,
    /// Batches over which the training error is averaged for the warm-up test.
    pub warmup_window: usize,
    /// Device to train on: `cpu`, `cuda[:N]` or `metal[:N]`.
    pub device: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: "resnet20".into(),
            shortcut: None,
            data: PathBuf::from("data/cifar-10-sample"),
            val_size: 0,
            batch_size: 128,
            iterations: 64_000,
            sgd: SgdConfig::default(),
            schedule: ScheduleConfig::cifar(),
            seed: 0,
            loader_threads: 2,
            normalization: NormalizationKind::PerPixelMean,
            augment: true,
            eval_every: 1000,
            checkpoint_every: 1000,
            log_every: 100,
            warmup_window: 20,
            device: "cpu".into(),
        }
    }
}

impl TrainConfig {
    /// Checks every value: the arch id, the sizes, the optimizer and the schedule.
    pub fn validate(&self) -> Result<()> {
        resnet_models::ArchSpec::from_id(&self.arch)?;
        let positive = [
            ("batch_size", self.batch_size as u64),
            ("iterations", self.iterations),
            ("log_every", self.log_every),
            ("loader_threads", self.loader_threads as u64),
            ("warmup_window", self.warmup_window as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(TrainError::InvalidConfig(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        self.sgd.validate()?;
        self.schedule.validate()
    }
}

/// The config as written into a run folder, stamped with the software that ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfigFile {
    /// The run's hyperparameters.
    pub config: TrainConfig,
    /// Version of this crate.
    pub version: String,
    /// Version of candle it was built with.
    pub candle: String,
}

impl RunConfigFile {
    /// The config stamped with this build's versions.
    pub fn new(config: TrainConfig) -> RunConfigFile {
        RunConfigFile {
            config,
            version: env!("CARGO_PKG_VERSION").into(),
            candle: CANDLE_VERSION.into(),
        }
    }
}

/// The candle version the workspace pins.
pub const CANDLE_VERSION: &str = "0.9.2";
