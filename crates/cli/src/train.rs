//! `resnet train`: train a CIFAR-10 net with the paper's recipe.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use resnet_models::Shortcut;
use resnet_train::progress::ProgressObserver;
use resnet_train::{LrSchedule, NormalizationKind, TrainConfig, Warmup};

/// Flags of `resnet train`. Flags override the values of `--config`, which
/// override the paper's defaults.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Run folder: config, metrics, checkpoints and final weights go here.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in `--out` (or in the folder given here) from its last checkpoint.
    #[arg(long, num_args = 0..=1, value_name = "RUN_DIR")]
    #[allow(clippy::option_option)]
    resume: Option<Option<PathBuf>>,
    /// TOML or JSON file with any TrainConfig fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Architecture id (default resnet20).
    #[arg(long)]
    arch: Option<String>,
    /// Shortcut option A, B or C (default: the arch's, A for CIFAR nets).
    #[arg(long)]
    shortcut: Option<Shortcut>,
    /// CIFAR-10 folder (default data/cifar-10-sample).
    #[arg(long)]
    data: Option<PathBuf>,
    /// SGD steps (paper: 64000).
    #[arg(long)]
    iterations: Option<u64>,
    /// Images per step (paper: 128).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Initial learning rate (paper: 0.1).
    #[arg(long)]
    lr: Option<f64>,
    /// Iterations at which the lr is divided by 10 (paper: 32000,48000).
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<u64>>,
    /// Warm up at lr 0.01 until the training error is below 80% (default: on for resnet110 and resnet1202).
    #[arg(long)]
    warmup: Option<bool>,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Training images held out for validation, from the end (paper: 5000; default 0).
    #[arg(long)]
    val_size: Option<usize>,
    /// Steps between evaluations (0: only at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Steps between checkpoints (0: only at the end).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Steps between metric records.
    #[arg(long)]
    log_every: Option<u64>,
    /// Input normalization: per-pixel-mean (paper) or per-channel.
    #[arg(long, value_parser = parse_normalization)]
    normalization: Option<NormalizationKind>,
    /// Turn off the pad-4 crop and flip augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Threads preparing batches.
    #[arg(long)]
    loader_threads: Option<usize>,
    /// Device: cpu, cuda[:N] or metal[:N].
    #[arg(long)]
    device: Option<String>,
}

fn parse_normalization(s: &str) -> Result<NormalizationKind, String> {
    match s {
        "per-pixel-mean" => Ok(NormalizationKind::PerPixelMean),
        "per-channel" => Ok(NormalizationKind::PerChannel),
        _ => Err(format!("`{s}` is not per-pixel-mean or per-channel")),
    }
}

fn read_config(path: &Path) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --config {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}", e.message()))
    };
    parsed.with_context(|| format!("--config {}", path.display()))
}

impl TrainArgs {
    /// The run's config: defaults, then `--config`, then flags.
    fn config(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(path) => read_config(path)?,
            None => TrainConfig::default(),
        };
        let warmup_default = self.config.is_none()
            && self
                .arch
                .as_deref()
                .is_some_and(|a| a == "resnet110" || a == "resnet1202");
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { c.$field = v.clone(); })* };
        }
        set!(
            arch,
            data,
            iterations,
            batch_size,
            seed,
            val_size,
            eval_every,
            checkpoint_every,
            log_every,
            normalization,
            loader_threads,
            device
        );
        if let Some(s) = self.shortcut {
            c.shortcut = Some(s);
        }
        if let LrSchedule::Step {
            base_lr,
            milestones,
            ..
        } = &mut c.schedule.schedule
        {
            if let Some(lr) = self.lr {
                *base_lr = lr;
            }
            if let Some(m) = &self.milestones {
                *milestones = m.clone();
            }
        }
        if self.warmup.unwrap_or(warmup_default) {
            c.schedule.warmup.get_or_insert_with(Warmup::default);
        } else if self.warmup == Some(false) {
            c.schedule.warmup = None;
        }
        if self.no_augment {
            c.augment = false;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Trains (or resumes) and prints the final errors.
pub fn run(args: &TrainArgs) -> Result<()> {
    let mut observer = ProgressObserver::new("train");
    let summary = match &args.resume {
        Some(dir) => resnet_train::resume(dir.as_ref().unwrap_or(&args.out), &mut observer),
        None => resnet_train::train(&args.config()?, &args.out, &mut observer),
    };
    drop(observer);
    let summary = summary?;
    println!(
        "{}: {} iterations in {:.0} s; train loss {:.4}, train error {:.2}%, test error {:.2}% (top-5 {:.2}%) on {} images",
        summary.arch,
        summary.iterations,
        summary.wall_time,
        summary.final_train_loss,
        100.0 * summary.final_train_error,
        100.0 * summary.test.top1_error,
        100.0 * summary.test.top5_error,
        summary.test.images
    );
    Ok(())
}
