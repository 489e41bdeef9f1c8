//! Benchmark workloads: what `cargo xtask bench` measures.
//!
//! Each [`Workload`] is timed after warm-up as the median of several runs;
//! the result carries images/s, GFLOP/s (2 FLOPs per multiply-add; a training
//! step counted as 3x a forward pass) and the fraction of the machine's FP32
//! peak (measured by [`measure_peak_gflops`]), plus the process's peak
//! resident memory where the OS reports it.

mod imagenet_folder;
mod peak;
pub mod soak;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resnet_data::{
    Augment, Cifar10, ImageFolder, ImageNetAugment, ImageNetNormalization, ImageNetTrainLoader,
    LoaderConfig, LoaderPosition, MeanImage, Normalization, TrainLoader,
};
use resnet_models::{count, ArchSpec, ResNet, StridePlacement};
use resnet_train::{Sgd, SgdConfig};
use serde::Serialize;

pub use imagenet_folder::write_jpeg_folder;
pub use peak::measure_peak_gflops;

/// What a workload does per timed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Forward, cross-entropy, backward and an SGD update, BN in train mode.
    TrainStep,
    /// An inference forward pass: the net folded for inference
    /// (`ResNet::fold_for_inference`, done before timing), as evaluation
    /// and prediction run it.
    Forward,
    /// An eval-mode forward pass of the net as trained: each batch norm, ReLU
    /// and residual join a separate op after its convolution (inference
    /// before folding; the baseline of [`Kind::Forward`]).
    ForwardUnfolded,
    /// One batch from the CIFAR-10 training loader (decode, normalise, augment).
    Loader,
    /// One batch from the ImageNet training loader over 500x375 JPEGs:
    /// decode, random rescale to a shorter side in [256, 480], 224 crop,
    /// flip, colour augmentation, normalise.
    ImageNetLoader,
    /// Reading and decoding those JPEGs on one thread, nothing else.
    JpegDecode,
    /// The paper's training augmentation of those images, already decoded,
    /// on one thread: rescale, crop, flip, colour, normalise.
    ImageNetAugment,
}

/// One line of the benchmark table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Its name, `kind/arch/bBATCH`.
    pub name: &'static str,
    /// What is timed.
    pub kind: Kind,
    /// The net (torchvision's v1.5 layout for ImageNet nets, like the peers).
    pub arch: &'static str,
    /// Images per run.
    pub batch: usize,
    /// Input side length.
    pub side: usize,
    /// Whether candle's own conv and batch norm replace this project's
    /// kernels: the baseline measured side by side with them.
    pub candle_ops: bool,
}

/// Every workload, in the order they are reported.
pub fn workloads() -> Vec<Workload> {
    use Kind::*;
    let w = |name, kind, arch, batch, side| Workload {
        name,
        kind,
        arch,
        batch,
        side,
        candle_ops: false,
    };
    let candle = |name, kind, arch, batch, side| Workload {
        name,
        kind,
        arch,
        batch,
        side,
        candle_ops: true,
    };
    vec![
        w("train_step/resnet20/b128", TrainStep, "resnet20", 128, 32),
        candle(
            "train_step/resnet20/b128/candle-ops",
            TrainStep,
            "resnet20",
            128,
            32,
        ),
        w("forward/resnet20/b128", Forward, "resnet20", 128, 32),
        w(
            "forward/resnet20/b128/unfolded",
            ForwardUnfolded,
            "resnet20",
            128,
            32,
        ),
        candle(
            "forward/resnet20/b128/candle-ops",
            ForwardUnfolded,
            "resnet20",
            128,
            32,
        ),
        w("train_step/resnet110/b128", TrainStep, "resnet110", 128, 32),
        w("forward/resnet50/b1", Forward, "resnet50", 1, 224),
        w(
            "forward/resnet50/b1/unfolded",
            ForwardUnfolded,
            "resnet50",
            1,
            224,
        ),
        w("forward/resnet50/b16", Forward, "resnet50", 16, 224),
        w(
            "forward/resnet50/b16/unfolded",
            ForwardUnfolded,
            "resnet50",
            16,
            224,
        ),
        w("train_step/resnet18/b16", TrainStep, "resnet18", 16, 224),
        w("loader/cifar10/b128", Loader, "-", 128, 32),
        w("loader/imagenet-jpeg/b32", ImageNetLoader, "-", 32, 224),
        w("decode/imagenet-jpeg/1-thread", JpegDecode, "-", 32, 224),
        w("augment/imagenet/1-thread", ImageNetAugment, "-", 32, 224),
    ]
}

/// The measured speed of a workload.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The workload's name.
    pub name: String,
    /// Median seconds per run.
    pub median_seconds: f64,
    /// Images per second at the median.
    pub images_per_sec: f64,
    /// Arithmetic throughput (None for the loader).
    pub gflops: Option<f64>,
    /// `gflops` as a fraction of the peak [`measure`] was given.
    pub peak_fraction: Option<f64>,
    /// Peak resident memory of the process in MiB (Linux only).
    pub peak_rss_mib: Option<f64>,
    /// Timed runs behind the median.
    pub runs: usize,
}

/// Batches the CIFAR-10 loader workload pulls per timed run.
const LOADER_BATCHES_PER_RUN: usize = 16;

/// Batches the ImageNet loader workload pulls per timed run.
const IMAGENET_BATCHES_PER_RUN: usize = 4;

/// JPEGs generated for the ImageNet loader workload (fewer than a timed run
/// pulls in total, so the decoder sees every file several times, as an epoch
/// loop would; the OS cache holds them, as it would a warm dataset).
const IMAGENET_IMAGES: usize = 64;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Peak resident set size of this process in MiB, from `/proc/self/status`.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Times `f` `runs` times after `warmup` untimed calls; returns the seconds of each run.
fn time(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

/// A generated folder of `images` ImageNet-sized JPEGs, opened (the folder
/// lives as long as the returned guard).
fn jpeg_folder(images: usize) -> Result<(tempfile::TempDir, ImageFolder)> {
    let dir = tempfile::tempdir()?;
    imagenet_folder::write_jpeg_folder(dir.path(), images)?;
    let folder = ImageFolder::open(dir.path(), None)?;
    Ok((dir, folder))
}

fn model(w: &Workload, device: &Device) -> Result<ResNet> {
    let spec = ArchSpec::from_id(w.arch)?.with_stride_placement(StridePlacement::V1_5);
    Ok(ResNet::new(&spec, 0, device)?)
}

/// Runs one workload on the CPU with `runs` timed repetitions; `data` is a
/// CIFAR-10 folder for the loader workload, `peak_gflops` the machine's FP32
/// peak (see [`measure_peak_gflops`]) that GFLOP/s are stated against.
pub fn measure(w: &Workload, runs: usize, data: &Path, peak_gflops: f64) -> Result<Measurement> {
    let device = Device::Cpu;
    resnet_ops::set_fast_kernels(!w.candle_ops);
    let x = || Tensor::randn(0f32, 1.0, (w.batch, 3, w.side, w.side), &device);
    let seconds = match w.kind {
        Kind::TrainStep => {
            let net = model(w, &device)?;
            let mut sgd = Sgd::new(net.parameters(), SgdConfig::default())?;
            let (x, labels) = (
                x()?,
                Tensor::from_vec(
                    (0..w.batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
                    w.batch,
                    &device,
                )?,
            );
            time(1, runs, || {
                let loss = resnet_ops::cross_entropy(&net.forward_t(&x, true)?, &labels, 0.0)?;
                sgd.step(&loss.backward()?)?;
                Ok(())
            })?
        }
        Kind::Forward => {
            let net = model(w, &device)?.fold_for_inference()?;
            let x = x()?;
            time(1, runs, || {
                net.forward(&x)?.to_dtype(DType::F32)?;
                Ok(())
            })?
        }
        Kind::ForwardUnfolded => {
            let net = model(w, &device)?;
            let x = x()?;
            time(1, runs, || {
                net.forward_t(&x, false)?.to_dtype(DType::F32)?;
                Ok(())
            })?
        }
        Kind::Loader => {
            let train = Cifar10::load(data)?.train;
            let norm = Normalization::PerPixelMean(MeanImage::from_split(&train)?);
            let config = LoaderConfig::new(w.batch, 0);
            let mut loader = TrainLoader::new(
                Arc::new(train),
                norm,
                Augment::PAPER,
                config,
                LoaderPosition::default(),
            )?;
            // Each run drains more batches than the prefetch queue holds, so it
            // measures the loader's throughput, not the queue.
            time(1, runs, || {
                for _ in 0..LOADER_BATCHES_PER_RUN {
                    loader
                        .next()
                        .ok_or_else(|| anyhow::anyhow!("loader stopped"))?;
                }
                Ok(())
            })?
        }
        Kind::JpegDecode => {
            let (_dir, folder) = jpeg_folder(w.batch)?;
            time(1, runs, || {
                for i in 0..w.batch {
                    folder.load(i)?;
                }
                Ok(())
            })?
        }
        Kind::ImageNetAugment => {
            let (_dir, folder) = jpeg_folder(w.batch)?;
            let images = (0..w.batch)
                .map(|i| folder.load(i))
                .collect::<Result<Vec<_>, _>>()?;
            let norm = ImageNetNormalization::TORCHVISION;
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            time(1, runs, || {
                for image in &images {
                    let view =
                        ImageNetAugment::PAPER.sample(&mut rng, image.width(), image.height());
                    view.apply(image, &norm);
                }
                Ok(())
            })?
        }
        Kind::ImageNetLoader => {
            let dir = tempfile::tempdir()?;
            imagenet_folder::write_jpeg_folder(dir.path(), IMAGENET_IMAGES)?;
            let folder = Arc::new(ImageFolder::open(dir.path(), None)?);
            // As many loader threads as the pool has (2 under `cargo xtask
            // bench`; all cores but two in scripts/gpu-check.sh).
            let threads = rayon::current_num_threads();
            let config = LoaderConfig {
                threads,
                prefetch: threads.max(4),
                ..LoaderConfig::new(w.batch, 0)
            };
            let mut loader = ImageNetTrainLoader::new(
                folder,
                ImageNetNormalization::TORCHVISION,
                ImageNetAugment::PAPER,
                config,
                LoaderPosition::default(),
            )?;
            time(1, runs, || {
                for _ in 0..IMAGENET_BATCHES_PER_RUN {
                    loader
                        .next()
                        .ok_or_else(|| anyhow::anyhow!("loader stopped"))??;
                }
                Ok(())
            })?
        }
    };
    let runs = seconds.len();
    let median_seconds = median(seconds);
    let batches = match w.kind {
        Kind::Loader => LOADER_BATCHES_PER_RUN,
        Kind::ImageNetLoader => IMAGENET_BATCHES_PER_RUN,
        Kind::TrainStep
        | Kind::Forward
        | Kind::ForwardUnfolded
        | Kind::JpegDecode
        | Kind::ImageNetAugment => 1,
    };
    let images_per_sec = (batches * w.batch) as f64 / median_seconds;
    let computes = matches!(
        w.kind,
        Kind::TrainStep | Kind::Forward | Kind::ForwardUnfolded
    );
    let gflops = computes.then(|| {
        let macs = count(
            &ArchSpec::from_id(w.arch)
                .expect("zoo arch")
                .with_stride_placement(StridePlacement::V1_5),
            w.side,
        )
        .macs;
        let passes = if w.kind == Kind::TrainStep { 3.0 } else { 1.0 };
        images_per_sec * macs as f64 * 2.0 * passes / 1e9
    });
    Ok(Measurement {
        name: w.name.to_string(),
        median_seconds,
        images_per_sec,
        gflops,
        peak_fraction: gflops.map(|g| g / peak_gflops),
        peak_rss_mib: peak_rss_mib(),
        runs,
    })
}
