//! The full configuration of a training run, written into its folder.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use resnet_data::ImageNetAugment;
use resnet_models::{Precision, Shortcut, StridePlacement};
use serde::{Deserialize, Serialize};

use crate::{Result, ScheduleConfig, SgdConfig, TrainError, UpdateRule};

/// How images are normalised before they enter the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum NormalizationKind {
    /// The paper's per-pixel mean subtraction: the mean image of the training
    /// split (CIFAR-10), or of the 224x224 centre views of every training
    /// image (an image folder: one pass over the folder before training).
    #[default]
    PerPixelMean,
    /// torchvision-style per-channel mean and standard deviation: of the
    /// training split (CIFAR-10), or torchvision's ImageNet constants (an
    /// image folder: nothing to compute).
    PerChannel,
}

/// What a run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// CIFAR-10 in the official binary layout, tested on its test split.
    #[default]
    Cifar10,
    /// An ImageNet-style folder `ROOT/<class>/<image>` of JPEG and PNG files,
    /// tested on the centre crops of a validation folder (`val_data`).
    #[cfg_attr(feature = "clap", value(alias = "imagenet"))]
    ImageFolder,
}

/// What a run trains of its net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Freeze {
    /// Every parameter trains (the default).
    #[default]
    None,
    /// Only the fc head trains: the backbone's weights stay as loaded and its
    /// batch norms run in eval mode, so their running statistics stay too
    /// (see `resnet_models::ResNet::with_frozen_backbone`). For fine-tuning
    /// on few images, where batch statistics of a small batch would drift.
    Backbone,
}

/// Every hyperparameter of a run. The defaults are the paper's CIFAR-10
/// recipe: batch 128, SGD with lr 0.1, momentum 0.9, weight decay 1e-4, lr
/// divided by 10 at 32k and 48k iterations, 64k iterations, per-pixel mean
/// subtraction, pad-4 random crops and flips. [`TrainConfig::imagenet`] is
/// the paper's ImageNet recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Architecture id from the zoo (`resnet20`, `plain56`, ...).
    pub arch: String,
    /// Shortcut option overriding the arch's default (A for CIFAR nets).
    pub shortcut: Option<Shortcut>,
    /// Stride placement of downsampling bottleneck blocks, overriding the
    /// arch's (v1, the paper's); fine-tuning torchvision's or timm's
    /// bottleneck weights needs v1.5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stride_placement: Option<StridePlacement>,
    /// Outputs of the fc head, overriding the arch's (1000 for ImageNet
    /// nets, 10 for CIFAR nets); on an image folder, its number of classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Fine-tuning: the weights file (safetensors: final weights, a
    /// checkpoint, torchvision's) or run folder the net starts from instead
    /// of a fresh initialisation. With `num_classes` the fc head is a fresh
    /// one of that size and everything else is loaded; without, everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// What trains: everything, or (fine-tuning) the fc head alone.
    #[serde(skip_serializing_if = "is_default")]
    pub freeze: Freeze,
    /// What `data` holds.
    pub dataset: DatasetKind,
    /// CIFAR-10 folder (the official binary layout), or the image folder
    /// `ROOT/<class>/<image>` of the training images.
    pub data: PathBuf,
    /// CIFAR-10 only: training images held out, from the end of the training
    /// set, for validation (the paper chose its hyperparameters with 5000; 0 = none).
    pub val_size: usize,
    /// Image folders only: the validation images, whose centre-crop
    /// evaluation is the run's test error: class folders named as in `data`,
    /// or a flat folder labelled by `val_labels`. Without it only training
    /// metrics are logged.
    pub val_data: Option<PathBuf>,
    /// Image folders only: the label file of a flat `val_data` folder, one
    /// `<file name> <class index or name>` line per image.
    pub val_labels: Option<PathBuf>,
    /// Image folders only: drop image files that fail the check when the
    /// folders are opened (each one logged) instead of refusing to start.
    pub skip_bad_images: bool,
    /// Images per SGD step.
    pub batch_size: usize,
    /// Images per batch-norm group in train mode: the statistics of each
    /// group of this many images of the batch normalise that group, as each
    /// of the paper's GPUs did with its share (CIFAR-10: 64 of 128 on 2 GPUs;
    /// ImageNet: 32 of 256 on 8). `None`: the whole batch. Must divide
    /// `batch_size`. See `resnet_models::ResNet::with_bn_group`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bn_group: Option<NonZeroUsize>,
    /// Number of SGD steps of the whole run.
    pub iterations: u64,
    /// Optimizer hyperparameters (its lr is overridden by the schedule).
    pub sgd: SgdConfig,
    /// The form of the momentum update: PyTorch's (the default) or Caffe's
    /// (the paper's authors'); they differ at every change of the lr.
    pub update_rule: UpdateRule,
    /// Label smoothing ε of the cross-entropy, in [0, 1) (0: none, the
    /// paper's; see [`crate::loss::cross_entropy`]).
    #[serde(skip_serializing_if = "is_default")]
    pub label_smoothing: f64,
    /// Learning-rate schedule, with the optional ResNet-110 warm-up.
    pub schedule: ScheduleConfig,
    /// Seed of the weights' initialisation, the shuffling and the augmentation.
    pub seed: u64,
    /// Threads preparing batches.
    pub loader_threads: usize,
    /// Input normalisation.
    pub normalization: NormalizationKind,
    /// Whether to apply the paper's augmentation: pad 4, random crop and flip
    /// (CIFAR-10), or `image_augment` (image folders; without it, the shorter
    /// side is `image_augment.min_side` and the crop is still random, but
    /// there is no flip or colour augmentation).
    pub augment: bool,
    /// Image folders only: the scale, crop, flip and PCA colour augmentation
    /// (the paper's: shorter side in [256, 480], 224 crop, flip, lighting 0.1).
    pub image_augment: ImageNetAugment,
    /// Steps between evaluations on the validation and test splits (0: only at the end).
    pub eval_every: u64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// Steps between metric records.
    pub log_every: u64,
    /// Batches over which the training error is averaged for the warm-up test
    /// and, for an image folder without `val_data`, for the plateau schedule.
    pub warmup_window: usize,
    /// Device to train on: `cpu`, `cuda[:N]` or `metal[:N]`; `cuda` on
    /// several ranks is each rank's own GPU
    /// ([`crate::collective::rank_device`]).
    pub device: String,
    /// The precision of the convolutions and the fc layer (fp32, or bf16
    /// mixed precision: see `resnet_models::Precision`). Parameters, the
    /// optimizer's state, batch norm, the loss and checkpoints stay f32.
    pub precision: Precision,
    /// Whether the net's activations are channels-last (NHWC in memory; see
    /// `resnet_models::ResNet::with_channels_last`): the layout cuDNN's
    /// tensor-core kernels want on CUDA. The same training up to the order
    /// of sums; slower on the CPU.
    pub channels_last: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: "resnet20".into(),
            shortcut: None,
            stride_placement: None,
            num_classes: None,
            weights: None,
            freeze: Freeze::None,
            dataset: DatasetKind::Cifar10,
            data: PathBuf::from("data/cifar-10-sample"),
            val_size: 0,
            val_data: None,
            val_labels: None,
            skip_bad_images: false,
            batch_size: 128,
            bn_group: None,
            iterations: 64_000,
            sgd: SgdConfig::default(),
            update_rule: UpdateRule::Pytorch,
            label_smoothing: 0.0,
            schedule: ScheduleConfig::cifar(),
            seed: 0,
            loader_threads: 2,
            normalization: NormalizationKind::PerPixelMean,
            augment: true,
            image_augment: ImageNetAugment::PAPER,
            eval_every: 1000,
            checkpoint_every: 1000,
            log_every: 100,
            warmup_window: 20,
            device: "cpu".into(),
            precision: Precision::Fp32,
            channels_last: false,
        }
    }
}

impl TrainConfig {
    /// The paper's ImageNet recipe (section 3.4) on an image folder:
    /// ResNet-34, batch 256, SGD with lr 0.1, momentum 0.9, weight decay 1e-4,
    /// lr divided by 10 when the error plateaus ([`ScheduleConfig::imagenet`]),
    /// 600k iterations, per-pixel mean subtraction, the shorter side resized at
    /// random in [256, 480], a random 224 crop, flips and PCA colour
    /// augmentation. Evaluations and checkpoints come every 5000 iterations
    /// (about an epoch of the paper's data is 5000 steps); 8 loader threads
    /// decode images.
    ///
    /// The plateau is that of the validation folder's error (`val_data`, to be
    /// set); without one, of the training error averaged over the last
    /// `warmup_window` batches. The per-pixel mean takes a pass over the whole
    /// training folder before the first step; `normalization: per-channel`
    /// (torchvision's ImageNet constants) skips it.
    pub fn imagenet() -> Self {
        TrainConfig {
            arch: "resnet34".into(),
            dataset: DatasetKind::ImageFolder,
            data: PathBuf::from("data/imagenet/train"),
            batch_size: 256,
            iterations: 600_000,
            sgd: SgdConfig::default(),
            schedule: ScheduleConfig::imagenet(),
            loader_threads: 8,
            normalization: NormalizationKind::PerPixelMean,
            augment: true,
            image_augment: ImageNetAugment::PAPER,
            eval_every: 5000,
            checkpoint_every: 5000,
            log_every: 100,
            ..TrainConfig::default()
        }
    }

    /// The spec of the net the run trains: the arch with its shortcut and
    /// head overrides.
    pub fn spec(&self) -> Result<resnet_models::ArchSpec> {
        let mut spec = resnet_models::ArchSpec::from_id(&self.arch)?;
        if let Some(shortcut) = self.shortcut {
            spec = spec.with_shortcut(shortcut);
        }
        if let Some(placement) = self.stride_placement {
            spec = spec.with_stride_placement(placement);
        }
        if let Some(n) = self.num_classes {
            spec = spec.with_num_classes(n);
        }
        Ok(spec)
    }

    /// Checks every value: the arch id, the sizes, the optimizer, the
    /// schedule, and that the data options fit the dataset.
    pub fn validate(&self) -> Result<()> {
        resnet_models::ArchSpec::from_id(&self.arch)?;
        if self.freeze == Freeze::Backbone && self.weights.is_none() {
            return Err(TrainError::InvalidConfig(
                "freeze (--freeze) backbone keeps the backbone as loaded: give the weights \
                 to fine-tune with weights (--weights)"
                    .into(),
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(TrainError::InvalidConfig(format!(
                "label_smoothing (--label-smoothing) must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        let positive = [
            ("num_classes", self.num_classes.map_or(1, |n| n as u64)),
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
        if let Some(group) = self.bn_group {
            if !self.batch_size.is_multiple_of(group.get()) {
                return Err(TrainError::InvalidConfig(format!(
                    "bn_group (--bn-group) {group} must divide batch_size (--batch-size) {}",
                    self.batch_size
                )));
            }
        }
        self.sgd.validate()?;
        self.schedule.validate()?;
        self.validate_data_options()
    }

    /// Checks that the run can be split over `world_size` data-parallel
    /// ranks: each takes an equal, contiguous share of every batch, so
    /// `world_size` must divide `batch_size`, and `bn_group`, if given, must
    /// divide the share (batch norm never spans ranks).
    pub fn validate_world(&self, world_size: usize) -> Result<()> {
        if world_size <= 1 {
            return Ok(());
        }
        if !self.batch_size.is_multiple_of(world_size) {
            return Err(TrainError::InvalidConfig(format!(
                "batch_size (--batch-size) {} is the global batch and must divide evenly over the {world_size} ranks",
                self.batch_size
            )));
        }
        let share = self.batch_size / world_size;
        if let Some(group) = self.bn_group.filter(|g| !share.is_multiple_of(g.get())) {
            return Err(TrainError::InvalidConfig(format!(
                "bn_group (--bn-group) {group} must divide each rank's share of the batch, {share} \
                 images ({} over {world_size} ranks); each rank's share is a batch-norm group already",
                self.batch_size
            )));
        }
        Ok(())
    }

    /// The config with its paths (`data`, `val_data`, `val_labels`, `weights`) made
    /// absolute against the current folder, as written into a run folder: a
    /// run resumed from another folder reads the same data.
    pub fn with_absolute_paths(&self) -> Result<TrainConfig> {
        let absolute = |path: &Path| {
            std::path::absolute(path).map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(TrainConfig {
            data: absolute(&self.data)?,
            val_data: self.val_data.as_deref().map(absolute).transpose()?,
            val_labels: self.val_labels.as_deref().map(absolute).transpose()?,
            weights: self.weights.as_deref().map(absolute).transpose()?,
            ..self.clone()
        })
    }

    /// Checks that the data options given are those of the dataset.
    fn validate_data_options(&self) -> Result<()> {
        let bad = |message: &str| Err(TrainError::InvalidConfig(message.into()));
        match self.dataset {
            DatasetKind::Cifar10 if self.val_data.is_some() || self.val_labels.is_some() => bad(
                "val_data (--val-data) and val_labels (--val-labels) are for image folders; \
                 a CIFAR-10 run holds out val_size (--val-size) training images instead",
            ),
            DatasetKind::Cifar10 if self.skip_bad_images => bad(
                "skip_bad_images (--skip-bad-images) is for image folders; CIFAR-10 files hold no image files",
            ),
            DatasetKind::ImageFolder if self.val_size > 0 => bad(
                "val_size (--val-size) holds out CIFAR-10 training images; give an image \
                 folder run a validation folder with val_data (--val-data) instead",
            ),
            DatasetKind::ImageFolder if self.val_labels.is_some() && self.val_data.is_none() => {
                bad("val_labels (--val-labels) labels the images of val_data (--val-data), which is not given")
            }
            DatasetKind::ImageFolder => {
                self.image_augment.checked()?;
                Ok(())
            }
            DatasetKind::Cifar10 => Ok(()),
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The config as written into a run folder, stamped with the software that ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfigFile {
    /// The run's hyperparameters.
    pub config: TrainConfig,
    /// The names of the classes, in output order (an image folder's class
    /// folders); also in the metadata of the run's weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Version of this crate.
    pub version: String,
    /// Version of candle it was built with.
    pub candle: String,
    /// Data-parallel ranks the run trains on (each with its own batch-norm
    /// statistics, so a resumed run must keep it); 1 when not written.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub world_size: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl RunConfigFile {
    /// The config stamped with this build's versions, and the class names,
    /// for a run on one process.
    pub fn new(config: TrainConfig, classes: Option<Vec<String>>) -> RunConfigFile {
        RunConfigFile {
            config,
            classes,
            version: env!("CARGO_PKG_VERSION").into(),
            candle: CANDLE_VERSION.into(),
            world_size: 1,
        }
    }
}

/// The candle version the workspace pins.
pub const CANDLE_VERSION: &str = "0.9.2";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LrSchedule;

    #[test]
    fn the_imagenet_recipe_holds_the_papers_values() {
        let c = TrainConfig::imagenet();
        assert_eq!(c.dataset, DatasetKind::ImageFolder);
        assert_eq!((c.batch_size, c.iterations), (256, 600_000));
        assert_eq!(
            (c.sgd.lr, c.sgd.momentum, c.sgd.weight_decay),
            (0.1, 0.9, 1e-4)
        );
        let LrSchedule::Plateau {
            base_lr, factor, ..
        } = c.schedule.schedule
        else {
            panic!("expected a plateau schedule, got {:?}", c.schedule);
        };
        assert_eq!((base_lr, factor), (0.1, 0.1));
        assert!(c.schedule.warmup.is_none());
        assert_eq!(c.normalization, NormalizationKind::PerPixelMean);
        assert!(c.augment);
        let a = c.image_augment;
        assert_eq!((a.min_side, a.max_side, a.crop), (256, 480, 224));
        assert!(a.flip && a.lighting_std == 0.1);
        assert!(c.val_data.is_none() && c.val_size == 0);
        c.validate().unwrap();
    }

    #[test]
    fn cifar_configs_written_before_image_folders_still_load() {
        let old = r#"{
            "arch": "resnet20", "shortcut": null, "data": "data/cifar-10-sample",
            "val_size": 0, "batch_size": 128, "iterations": 64000,
            "sgd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001},
            "schedule": {"schedule": {"type": "step", "base_lr": 0.1,
                                      "milestones": [32000, 48000], "gamma": 0.1}},
            "seed": 0, "loader_threads": 2, "normalization": "per-pixel-mean",
            "augment": true, "eval_every": 1000, "checkpoint_every": 1000,
            "log_every": 100, "warmup_window": 20, "device": "cpu"
        }"#;
        let config: TrainConfig = serde_json::from_str(old).unwrap();
        assert_eq!(config, TrainConfig::default());
        assert_eq!(config.dataset, DatasetKind::Cifar10);
    }

    #[test]
    fn fine_tuning_options_are_checked() {
        let smoothing = |eps| TrainConfig {
            label_smoothing: eps,
            ..TrainConfig::default()
        };
        smoothing(0.1).validate().unwrap();
        for eps in [1.0, -0.1, f64::NAN] {
            let err = smoothing(eps).validate().unwrap_err().to_string();
            assert!(err.contains("--label-smoothing"), "{eps}: {err}");
        }
        let frozen = TrainConfig {
            freeze: Freeze::Backbone,
            ..TrainConfig::default()
        };
        let err = frozen.validate().unwrap_err().to_string();
        assert!(
            err.contains("--freeze") && err.contains("--weights"),
            "{err}"
        );
        TrainConfig {
            weights: Some("run".into()),
            ..frozen
        }
        .validate()
        .unwrap();
        let zero = TrainConfig {
            num_classes: Some(0),
            ..TrainConfig::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_classes"));
    }

    #[test]
    fn a_bn_group_must_divide_the_batch() {
        let group = |n| TrainConfig {
            bn_group: NonZeroUsize::new(n),
            ..TrainConfig::default()
        };
        group(64).validate().unwrap();
        let err = group(48).validate().unwrap_err().to_string();
        assert!(err.contains("--bn-group") && err.contains("128"), "{err}");
        let zero: std::result::Result<TrainConfig, _> = serde_json::from_str(r#"{"bn_group": 0}"#);
        assert!(zero.is_err(), "a group of 0 images must not parse");
    }

    #[test]
    fn a_batch_splits_evenly_over_the_ranks() {
        let c = TrainConfig::default();
        c.validate_world(1).unwrap();
        c.validate_world(2).unwrap();
        let err = c.validate_world(3).unwrap_err().to_string();
        assert!(
            err.contains("--batch-size") && err.contains("3 ranks"),
            "{err}"
        );
        let grouped = TrainConfig {
            bn_group: NonZeroUsize::new(64),
            ..TrainConfig::default()
        };
        grouped.validate_world(2).unwrap();
        let err = grouped.validate_world(4).unwrap_err().to_string();
        assert!(err.contains("--bn-group") && err.contains("32"), "{err}");
    }

    #[test]
    fn data_options_must_fit_the_dataset() {
        let folder = TrainConfig {
            val_data: Some("val".into()),
            ..TrainConfig::imagenet()
        };
        folder.validate().unwrap();
        let cases = [
            (
                TrainConfig {
                    val_data: Some("val".into()),
                    ..TrainConfig::default()
                },
                "--val-data",
            ),
            (
                TrainConfig {
                    val_size: 10,
                    ..folder.clone()
                },
                "--val-size",
            ),
            (
                TrainConfig {
                    val_data: None,
                    val_labels: Some("labels.txt".into()),
                    ..folder.clone()
                },
                "--val-labels",
            ),
            (
                TrainConfig {
                    image_augment: ImageNetAugment {
                        crop: 300,
                        ..ImageNetAugment::PAPER
                    },
                    ..folder
                },
                "ImageNet augmentation",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
