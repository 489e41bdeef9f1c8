//! Soak workloads: long runs that sample the process's resident memory as
//! they go, to show that it stays flat once warmed up (nothing kept per step
//! or per batch). What `cargo xtask soak` runs; not a test.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use resnet_data::{CropGeometry, ImageFolder, ImageNetNormalization, TestViews, ViewConfig};
use resnet_eval::{evaluate_folder, Member};
use resnet_models::{ArchSpec, ResNet};
use resnet_train::{TrainConfig, TrainObserver};
use serde::Serialize;

use crate::imagenet_folder;

/// Steps between the training soak's evaluations and checkpoints. The
/// first evaluation raises the resident memory once (its batches are larger
/// than training's, and the allocator keeps what it frees for reuse), so
/// the curve is flat only after it.
pub const TRAIN_EVAL_EVERY: u64 = 1000;

/// One point of a memory curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RssSample {
    /// Training steps done, or evaluation passes done.
    pub step: u64,
    /// Resident memory of the process then, in MiB.
    pub rss_mib: f64,
}

/// Resident set size of this process now in MiB, from `/proc/self/status`.
pub fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples the resident memory every `every` steps of a training run.
struct RssEvery {
    every: u64,
    samples: Vec<RssSample>,
}

impl TrainObserver for RssEvery {
    fn on_step(&mut self, done: u64, _loss: f64, _lr: f64) {
        if done.is_multiple_of(self.every) {
            if let Some(rss_mib) = rss_mib() {
                // Logged as it is taken, so that a run cut short keeps its curve.
                tracing::info!(step = done, rss_mib, "training soak: resident memory");
                self.samples.push(RssSample {
                    step: done,
                    rss_mib,
                });
            }
        }
    }
}

/// Trains ResNet-20 on the CIFAR-10 folder `data` on the CPU with the
/// paper's recipe (batches of `batch_size`, a checkpoint and a test every
/// [`TRAIN_EVAL_EVERY`] steps) for `iterations` steps, sampling the resident memory every
/// `every` steps.
pub fn soak_train(
    data: &Path,
    iterations: u64,
    every: u64,
    batch_size: usize,
) -> Result<Vec<RssSample>> {
    anyhow::ensure!(every > 0, "the sampling interval must be at least 1 step");
    let run = tempfile::tempdir()?;
    let config = TrainConfig {
        arch: "resnet20".into(),
        data: data.to_path_buf(),
        batch_size,
        iterations,
        eval_every: TRAIN_EVAL_EVERY,
        checkpoint_every: TRAIN_EVAL_EVERY,
        log_every: every,
        device: "cpu".into(),
        ..TrainConfig::default()
    };
    let mut observer = RssEvery {
        every,
        samples: Vec::new(),
    };
    resnet_train::train(&config, &run.path().join("run"), &mut observer)?;
    Ok(observer.samples)
}

/// Evaluates an untrained ResNet-18 (centre crops, batches of 32) `passes`
/// times over a folder of `images` generated JPEGs, sampling the resident
/// memory after each pass.
pub fn soak_eval(passes: u64, images: usize, threads: usize) -> Result<Vec<RssSample>> {
    let dir = tempfile::tempdir()?;
    imagenet_folder::write_jpeg_folder(dir.path(), images)?;
    let folder = Arc::new(ImageFolder::open(dir.path(), None)?);
    let device = Device::Cpu;
    let model = ResNet::new(&ArchSpec::from_id("resnet18")?, 0, &device)?;
    let member = Member {
        model: &model,
        views: ViewConfig {
            geometry: CropGeometry::STANDARD,
            normalization: ImageNetNormalization::TORCHVISION,
        },
    };
    let mut samples = Vec::new();
    for pass in 1..=passes {
        evaluate_folder(
            std::slice::from_ref(&member),
            Arc::clone(&folder),
            &TestViews::Center,
            32,
            threads,
            &device,
        )
        .with_context(|| format!("evaluation pass {pass}"))?;
        if let Some(rss_mib) = rss_mib() {
            tracing::info!(pass, rss_mib, "evaluation soak: resident memory");
            samples.push(RssSample {
                step: pass,
                rss_mib,
            });
        }
    }
    Ok(samples)
}

/// The growth of a memory curve after warm-up: the last sample less the
/// first at or after step `warmup`, in MiB; `None` with no such sample.
pub fn growth_after(samples: &[RssSample], warmup: u64) -> Option<f64> {
    let first = samples.iter().find(|s| s.step >= warmup)?;
    let last = samples.last()?;
    Some(last.rss_mib - first.rss_mib)
}
