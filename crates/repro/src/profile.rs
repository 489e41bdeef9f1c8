//! Profiles: how much compute a reproduction spends, from a CI smoke test
//! to the paper's exact recipe.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use resnet_train::{LrSchedule, ScheduleConfig, TrainConfig, Warmup};

/// Which recipe the reproductions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileName {
    /// A few iterations of everything, to check that every output is produced.
    Smoke,
    /// Short schedules on the bundled real sample, for a 2-core CPU.
    Quick,
    /// The paper's recipe exactly (full CIFAR-10, 64k iterations, 45k/5k split).
    Paper,
}

impl FromStr for ProfileName {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "smoke" => Ok(ProfileName::Smoke),
            "quick" => Ok(ProfileName::Quick),
            "paper" => Ok(ProfileName::Paper),
            _ => anyhow::bail!("unknown profile `{s}`: expected smoke, quick or paper"),
        }
    }
}

impl std::fmt::Display for ProfileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProfileName::Smoke => "smoke",
            ProfileName::Quick => "quick",
            ProfileName::Paper => "paper",
        })
    }
}

/// The training recipe of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Its name.
    pub name: ProfileName,
    /// Images per step.
    pub batch_size: usize,
    /// Steps per run.
    pub iterations: u64,
    /// Learning rate at the start (and after ResNet-110's warm-up).
    pub base_lr: f64,
    /// Steps at which the learning rate is divided by 10.
    pub milestones: Vec<u64>,
    /// Training images held out for validation.
    pub val_size: usize,
    /// Steps between test evaluations (points of the test-error curves).
    pub eval_every: u64,
    /// Steps between training-error records (points of the training curves).
    pub log_every: u64,
    /// Runs (seeds) per net, for mean and std.
    pub runs: usize,
    /// Whether ResNet-1202 is trained (it needs a GPU to be practical).
    pub with_1202: bool,
    /// Whether plain-110 is trained (the paper trains it but leaves it out of Fig. 6).
    pub with_plain110: bool,
}

impl Profile {
    /// The settings of a named profile.
    pub fn new(name: ProfileName) -> Profile {
        match name {
            ProfileName::Smoke => Profile {
                name,
                batch_size: 8,
                iterations: 2,
                base_lr: 0.1,
                milestones: vec![1],
                val_size: 0,
                eval_every: 2,
                log_every: 1,
                runs: 1,
                with_1202: false,
                with_plain110: false,
            },
            ProfileName::Quick => Profile {
                name,
                batch_size: 128,
                iterations: 120,
                // Half the paper's lr: in a schedule 500x shorter, the deep
                // ResNets have no time to recover from lr 0.1's first steps
                // (ResNet-56 ends at chance with it).
                base_lr: 0.05,
                milestones: vec![80, 100],
                val_size: 0,
                eval_every: 20,
                log_every: 5,
                runs: 1,
                with_1202: false,
                with_plain110: false,
            },
            ProfileName::Paper => Profile {
                name,
                batch_size: 128,
                iterations: 64_000,
                base_lr: 0.1,
                milestones: vec![32_000, 48_000],
                val_size: 5_000,
                eval_every: 1_000,
                log_every: 100,
                runs: 5,
                with_1202: true,
                with_plain110: true,
            },
        }
    }

    /// The data folder the profile trains on unless `--data` says otherwise.
    pub fn default_data(&self, root: &Path) -> PathBuf {
        match self.name {
            ProfileName::Paper => root.join("data/cifar-10-batches-bin"),
            _ => root.join("data/cifar-10-sample"),
        }
    }

    /// The full config of one run of `arch` with `seed`.
    pub fn train_config(&self, arch: &str, seed: u64, data: &Path, device: &str) -> TrainConfig {
        // The paper warms ResNet-110 (and 1202) up at lr 0.01 until training error < 80%.
        let warmup = matches!(arch, "resnet110" | "resnet1202").then(Warmup::default);
        TrainConfig {
            arch: arch.to_string(),
            data: data.to_path_buf(),
            val_size: self.val_size,
            batch_size: self.batch_size,
            iterations: self.iterations,
            schedule: ScheduleConfig {
                schedule: LrSchedule::Step {
                    base_lr: self.base_lr,
                    milestones: self.milestones.clone(),
                    gamma: 0.1,
                },
                warmup,
            },
            seed,
            eval_every: self.eval_every,
            checkpoint_every: self.eval_every,
            log_every: self.log_every,
            device: device.to_string(),
            ..TrainConfig::default()
        }
    }

    /// How this profile departs from the paper's CIFAR-10 recipe, in words.
    /// `dataset_train_images` is the size of the data's whole training set.
    pub fn deviations(&self, dataset_train_images: usize) -> Vec<String> {
        let paper = Profile::new(ProfileName::Paper);
        let mut out = Vec::new();
        if dataset_train_images != 50_000 {
            out.push(format!(
                "a {dataset_train_images}-image sample of the training set instead of all 50,000 images"
            ));
        }
        if self.val_size != paper.val_size {
            out.push(format!(
                "{} validation images held out instead of the paper's 5,000",
                self.val_size
            ));
        }
        if self.iterations != paper.iterations {
            out.push(format!(
                "{} iterations of batch {} instead of 64,000 of batch 128; lr divided by 10 at {:?} instead of [32000, 48000]",
                self.iterations, self.batch_size, self.milestones
            ));
        }
        if self.base_lr != paper.base_lr {
            out.push(format!(
                "initial lr {} instead of 0.1 (at 0.1, ResNet-56 blows up in its first steps and cannot recover \
                 in so short a schedule)",
                self.base_lr
            ));
        }
        if self.runs < paper.runs {
            out.push(format!(
                "{} run(s) per net instead of 5 for ResNet-110's mean and std",
                self.runs
            ));
        }
        if !self.with_1202 {
            out.push("ResNet-1202 not trained (impractical without a GPU)".into());
        }
        if !self.with_plain110 {
            out.push("plain-110 not trained".into());
        }
        out
    }
}
