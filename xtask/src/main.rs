//! `cargo xtask`: reproduction and benchmark tasks for the workspace.
//!
//! A thin runner over the library crates (it never reimplements them), with
//! as few dependencies as possible.

use std::num::NonZeroUsize;
use std::path::PathBuf;

mod bench;
mod soak;

use anyhow::{bail, Context, Result};
use resnet_repro::{ImageNetOptions, ImageNetTarget, Options, Profile, ProfileName, Target};

const USAGE: &str = "\
usage: cargo xtask reproduce <target> [--profile quick|gpu|paper|smoke] [--data DIR] [--device cpu|cuda]
                             [--runs N] [--seed S] [--out DIR] [--val-size N] [--bn-group N] [--dry-run]
       cargo xtask reproduce <table2|fig4> --imagenet DIR --profile paper|smoke [--limit N] [--seed S]
       cargo xtask reproduce <table3|table4|table5> --imagenet DIR [--limit N]
                             [--weights ARCH=SOURCE,...] [--device D] [--out DIR]
       cargo xtask bench [--json] [--only NAME] [--runs N]
       cargo xtask soak [--iterations N] [--every N] [--batch-size N] [--passes N] [--images N]
                        [--out FILE]

targets:
  table1  Table 1: architectures, parameters and FLOPs (no training)
  fig1    Fig. 1: training and test error of plain-20 and plain-56
  fig6    Fig. 6: CIFAR-10 plain nets and ResNets by depth, three panels
  table6  Table 6: CIFAR-10 test error by depth, beside the paper's
  fig7    Fig. 7: standard deviations of 3x3 layer responses
  all     every target, sharing the training runs
  table2  Table 2: plain-18/34 vs ResNet-18/34 (option A) trained on ImageNet, 10-crop top-1 error
  fig4    Fig. 4: their training and validation error curves
  table3  Table 3: 10-crop ImageNet validation error of public ResNet-34/50/101/152 weights
  table4  Table 4: the same with multi-scale fully-convolutional testing
  table5  Table 5: their ensemble (softmax averaged, multi-scale)

ImageNet flags:
  --imagenet DIR  ILSVRC-2012 as DIR/train/<synset>/<image> and DIR/val/<synset>/<image> (table3-5 need
                  only the validation set, which may also be DIR/<synset>/<image>)
  --limit N       test on N evenly spaced validation images only (the report says so)
  --weights A=S   weights for arch A: a registry name, hf:OWNER/REPO[/FILE][@REV], a local file,
                  or none to leave A out (default: torchvision's, resnet34..152.tv_in1k)

CIFAR-10 flags:
  --dry-run       print the plan (nets, seeds, iterations, data, device) and every deviation from the
                  paper, and exit without training
  --val-size N    hold N training images out for validation (the paper chose its schedule on a 45k/5k
                  split; its final models, and the paper profile's, train on all 50k)
  --bn-group N    batch-norm statistics over groups of N images of the batch, as on the paper's GPUs
                  (the paper and gpu profiles use 64; the others the whole batch)

soak (resident memory over a long CPU run; defaults as the issue asks):
  --iterations N  ResNet-20 training steps on the CIFAR-10 sample (5000), RSS every --every (100) steps
  --batch-size N  images per step (128)
  --passes N      ResNet-18 evaluation passes over --images N (256) generated JPEGs (50)
  --out FILE      the curves as JSON (results/soak.json)

profiles:
  quick   (default) short schedules on the bundled CIFAR-10 sample, for a 2-core CPU
  gpu     every net of Fig. 6 (plain and ResNet 20-110), 3000 iterations at the paper's lr 0.1 (steps at
          1500/2250, warm-up for ResNet-110), batch norm per 64 images, two seeds for Fig. 7's nets; the
          full CIFAR-10 in data/cifar-10-batches-bin when present, else the bundled sample; for one GPU
  paper   the paper's recipe: full CIFAR-10, all 50k training images, 64k iterations, batch norm per 64
          images, 5 runs (what it cannot match, e.g. the momentum update's form, is listed as deviations)
  smoke   a few iterations of everything, to check that every file is produced";

/// The workspace root, from this crate's manifest directory; for a runner
/// copied to a machine without the workspace (`target/cuda/dist/xtask`,
/// shipped with `data/cifar-10-sample` beside it), the binary's folder.
fn project_root() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    if workspace.join("Cargo.toml").exists() {
        return workspace;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or(workspace)
}

/// `text` as a whole number, or an error naming `flag`.
fn whole<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{flag} must be a whole number, not `{text}`"))
}

/// mimalloc, keeping freed memory for reuse (see `resnet-alloc`).
#[global_allocator]
static GLOBAL: resnet_alloc::MiMalloc = resnet_alloc::MiMalloc;

fn main() -> Result<()> {
    resnet_alloc::keep_freed_memory();
    resnet_train::progress::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    let (mut out, mut data, mut device, mut seed, mut runs) =
        (root.join("results"), None, "cpu".to_string(), 0, None);
    let mut profile = ProfileName::Quick;
    let (mut json, mut only) = (false, None);
    let (mut dry_run, mut val_size, mut bn_group) = (false, None, None);
    let (mut imagenet, mut limit, mut weights) = (None, None, Vec::new());
    let mut soak = soak::SoakOptions {
        iterations: 5000,
        every: 100,
        batch_size: 128,
        passes: 50,
        images: 256,
        out: root.join("results/soak.json"),
    };
    let mut soak_out = None;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
                .cloned()
        };
        match arg.as_str() {
            "--out" => {
                let dir = PathBuf::from(value("--out")?);
                soak_out = Some(dir.clone());
                out = dir;
            }
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--device" => device = value("--device")?,
            "--profile" => profile = value("--profile")?.parse()?,
            "--seed" => {
                seed = value("--seed")?
                    .parse()
                    .context("--seed must be a whole number")?
            }
            "--runs" => {
                runs = Some(
                    value("--runs")?
                        .parse::<usize>()
                        .context("--runs must be a whole number")?,
                )
            }
            "--imagenet" => imagenet = Some(PathBuf::from(value("--imagenet")?)),
            "--limit" => {
                limit = Some(
                    value("--limit")?
                        .parse::<usize>()
                        .context("--limit must be a whole number")?,
                )
            }
            "--weights" => {
                for pair in value("--weights")?.split(',') {
                    let (arch, source) = pair
                        .split_once('=')
                        .with_context(|| format!("--weights `{pair}`: expected ARCH=SOURCE"))?;
                    weights.push((arch.to_string(), source.to_string()));
                }
            }
            "--val-size" => {
                val_size = Some(
                    value("--val-size")?
                        .parse::<usize>()
                        .context("--val-size must be a whole number")?,
                )
            }
            "--bn-group" => {
                bn_group = Some(
                    value("--bn-group")?
                        .parse::<NonZeroUsize>()
                        .context("--bn-group must be a whole number of images, at least 1")?,
                )
            }
            "--dry-run" => dry_run = true,
            "--iterations" => soak.iterations = whole(&value("--iterations")?, "--iterations")?,
            "--every" => soak.every = whole(&value("--every")?, "--every")?,
            "--batch-size" => soak.batch_size = whole(&value("--batch-size")?, "--batch-size")?,
            "--passes" => soak.passes = whole(&value("--passes")?, "--passes")?,
            "--images" => soak.images = whole(&value("--images")?, "--images")?,
            "--json" => json = true,
            "--only" => only = Some(value("--only")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown flag `{flag}`\n{USAGE}"),
            _ => positional.push(arg.as_str()),
        }
    }
    let target: Target = match positional.as_slice() {
        ["reproduce", target] if target.parse::<ImageNetTarget>().is_ok() => {
            anyhow::ensure!(
                !dry_run,
                "--dry-run plans the CIFAR-10 targets (table1, fig1, fig6, table6, fig7, all), not {target}"
            );
            return resnet_repro::reproduce_imagenet(
                target.parse()?,
                ImageNetOptions {
                    imagenet,
                    limit,
                    device,
                    out,
                    profile,
                    seed,
                    weights,
                },
            );
        }
        ["reproduce", target] => target.parse().with_context(|| USAGE.to_string())?,
        ["bench"] => return bench::run(json, only.as_deref(), runs.unwrap_or(5), &root),
        ["bench-one", name] => return bench::run_one(name, runs.unwrap_or(5), &root),
        ["soak"] => {
            if let Some(file) = soak_out {
                soak.out = file;
            }
            return soak::run(&soak, &root);
        }
        _ => bail!("{USAGE}"),
    };
    if device.starts_with("cuda") && !cfg!(feature = "cuda") {
        bail!(
            "--device {device} needs the runner built with CUDA, and `cargo xtask` builds it without: run \
             `cargo run --release -p xtask --features cuda -- reproduce ...` (cudnn for cuDNN; needs the CUDA \
             toolkit, see scripts/build-cuda.sh)"
        );
    }
    let mut profile = Profile::new(profile);
    if let Some(runs) = runs {
        anyhow::ensure!(runs > 0, "--runs must be at least 1");
        profile.runs = runs;
        // Table 6 trains the Fig. 7 nets over every seed anyway: use them all.
        profile.fig7_runs = profile.fig7_runs.max(runs);
    }
    if let Some(val_size) = val_size {
        profile.val_size = val_size;
    }
    if let Some(group) = bn_group {
        anyhow::ensure!(
            profile.batch_size.is_multiple_of(group.get()),
            "--bn-group {group} must divide the {} profile's batch of {}",
            profile.name,
            profile.batch_size
        );
        profile.bn_group = Some(group);
    }
    let data = data.unwrap_or_else(|| profile.default_data(&root));
    let opts = Options {
        profile,
        data,
        device,
        seed,
        out,
    };
    if dry_run {
        print!("{}", resnet_repro::plan(target, &opts)?);
        return Ok(());
    }
    resnet_repro::reproduce(target, opts)
}
