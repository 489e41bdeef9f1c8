//! `cargo xtask`: reproduction and benchmark tasks for the workspace.
//!
//! A thin runner over the library crates (it never reimplements them), with
//! as few dependencies as possible.

use std::path::PathBuf;

mod bench;
mod soak;

use anyhow::{bail, Context, Result};
use resnet_repro::{ImageNetOptions, ImageNetTarget, Options, Profile, ProfileName, Target};

const USAGE: &str = "\
usage: cargo xtask reproduce <target> [--profile quick|paper|smoke] [--data DIR] [--device cpu|cuda|metal]
                             [--runs N] [--seed S] [--out DIR]
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

soak (resident memory over a long CPU run; defaults as the issue asks):
  --iterations N  ResNet-20 training steps on the CIFAR-10 sample (5000), RSS every --every (100) steps
  --batch-size N  images per step (128)
  --passes N      ResNet-18 evaluation passes over --images N (256) generated JPEGs (50)
  --out FILE      the curves as JSON (results/soak.json)

profiles:
  quick   (default) short schedules on the bundled CIFAR-10 sample, for a 2-core CPU
  paper   the paper's recipe exactly: full CIFAR-10, 45k/5k split, 64k iterations, 5 runs
  smoke   a few iterations of everything, to check that every file is produced";

/// The workspace root, from this crate's manifest directory.
fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
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
    let mut profile = Profile::new(profile);
    if let Some(runs) = runs {
        anyhow::ensure!(runs > 0, "--runs must be at least 1");
        profile.runs = runs;
    }
    let data = data.unwrap_or_else(|| profile.default_data(&root));
    resnet_repro::reproduce(
        target,
        Options {
            profile,
            data,
            device,
            seed,
            out,
        },
    )
}
