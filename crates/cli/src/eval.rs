//! `resnet eval`: top-1 and top-5 error of trained weights on a CIFAR-10 split.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use resnet_data::{Cifar10, Normalization, Split};
use resnet_eval::{evaluate, load_weights, resolve_weights};
use resnet_models::ResNet;
use resnet_ops::DeviceSpec;
use serde_json::json;

use crate::arch::ArchArgs;

/// Which images of the dataset to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitChoice {
    Test,
    Val,
    Train,
}

impl SplitChoice {
    fn name(self) -> &'static str {
        match self {
            SplitChoice::Test => "test",
            SplitChoice::Val => "val",
            SplitChoice::Train => "train",
        }
    }
}

impl FromStr for SplitChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "test" => Ok(SplitChoice::Test),
            "val" => Ok(SplitChoice::Val),
            "train" => Ok(SplitChoice::Train),
            _ => Err(format!("`{s}` is not test, val or train")),
        }
    }
}

/// Flags of `resnet eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    arch: ArchArgs,
    /// Trained weights: a safetensors file (final weights or a checkpoint), or
    /// a run folder, meaning its model.safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// CIFAR-10 folder (the official binary files, or a folder holding cifar-10-batches-bin/).
    #[arg(long)]
    data: PathBuf,
    /// Split to evaluate: test, val (the last --val-size training images) or
    /// train (the training images before those).
    #[arg(long, default_value = "test")]
    split: SplitChoice,
    /// Training images held out as the validation split, taken from the end
    /// (the paper's is 5000; 0, the default, holds none out, so `--split val`
    /// needs it set).
    #[arg(long, default_value_t = 0)]
    val_size: usize,
    /// Per-channel input mean R,G,B in 0..1 pixel units (torchvision Normalize);
    /// with --std, overrides the normalisation stored in the weights.
    #[arg(long, value_name = "R,G,B")]
    mean: Option<String>,
    /// Per-channel input standard deviation R,G,B in 0..1 pixel units, each > 0.
    #[arg(long, value_name = "R,G,B")]
    std: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Threads preparing batches.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Device: cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// Three comma-separated finite numbers given to `flag`.
fn parse_rgb(flag: &str, value: &str) -> Result<[f32; 3]> {
    let bad = || anyhow::anyhow!("{flag} `{value}`: expected 3 comma-separated numbers R,G,B");
    let numbers = value
        .split(',')
        .map(|v| v.trim().parse::<f32>().ok().filter(|x| x.is_finite()))
        .collect::<Option<Vec<f32>>>()
        .ok_or_else(bad)?;
    <[f32; 3]>::try_from(numbers).map_err(|_| bad())
}

/// The normalisation given by --mean and --std, if any.
fn flag_normalization(mean: Option<&str>, std: Option<&str>) -> Result<Option<Normalization>> {
    match (mean, std) {
        (None, None) => Ok(None),
        (Some(_), None) => bail!("--mean needs --std too (both R,G,B in 0..1 pixel units)"),
        (None, Some(_)) => bail!("--std needs --mean too (both R,G,B in 0..1 pixel units)"),
        (Some(mean), Some(std)) => {
            let mean = parse_rgb("--mean", mean)?;
            let std_values = parse_rgb("--std", std)?;
            ensure!(
                std_values.iter().all(|s| *s > 0.0),
                "--std `{std}`: every standard deviation must be > 0"
            );
            Ok(Some(Normalization::PerChannel {
                mean,
                std: std_values,
            }))
        }
    }
}

/// The images `choice` names, with `val_size` training images held out.
fn select_split(data: Cifar10, choice: SplitChoice, val_size: usize) -> Result<Split> {
    if choice == SplitChoice::Test {
        return Ok(data.test);
    }
    let (train, val) = data
        .train
        .split_off_validation(val_size)
        .with_context(|| format!("--val-size {val_size}"))?;
    Ok(if choice == SplitChoice::Val {
        val
    } else {
        train
    })
}

/// Evaluates the weights and prints the result.
pub fn run(args: &EvalArgs) -> Result<()> {
    let spec = args.arch.spec()?;
    let flags = flag_normalization(args.mean.as_deref(), args.std.as_deref())?;
    ensure!(
        args.split != SplitChoice::Val || args.val_size > 0,
        "--split val needs --val-size N > 0 (the last N training images)"
    );
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(args.threads > 0, "--threads must be at least 1");
    let device = args.device.parse::<DeviceSpec>()?.open()?;

    let weights = resolve_weights(&args.weights)?;
    let model = ResNet::new(&spec, 0, &device)?;
    let stored = load_weights(&model, &weights)?;
    let Some(norm) = flags.or(stored) else {
        bail!(
            "{} stores no input normalization; pass --mean R,G,B and --std R,G,B \
             (per-channel, 0..1 pixel units)",
            weights.display()
        );
    };

    let data = Cifar10::load(&args.data)?;
    let split = select_split(data, args.split, args.val_size)?;
    let images = split.len();
    let report = evaluate(
        &model,
        Arc::new(split),
        &norm,
        args.batch_size,
        args.threads,
        &device,
    )
    .with_context(|| format!("evaluating {} on {} images", spec.id, images))?;

    if args.json {
        let out = json!({
            "arch": spec.id,
            "weights": weights.display().to_string(),
            "split": args.split.name(),
            "images": report.images,
            "top1_error": report.top1_error,
            "top5_error": report.top5_error,
            "loss": report.loss,
        });
        println!("{out}");
    } else {
        println!(
            "{} on {} ({} images): top-1 error {:.2}%, top-5 error {:.2}%, loss {:.4}",
            spec.id,
            args.split.name(),
            report.images,
            100.0 * report.top1_error,
            100.0 * report.top5_error,
            report.loss
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_flags_need_three_finite_numbers_and_a_positive_std() {
        assert_eq!(
            parse_rgb("--mean", "0.5, 0.25,1").unwrap(),
            [0.5, 0.25, 1.0]
        );
        for bad in ["0.5,0.5", "0.5,0.5,0.5,0.5", "a,b,c", "", "1,nan,1"] {
            let err = parse_rgb("--mean", bad).unwrap_err().to_string();
            assert!(err.starts_with("--mean"), "{err}");
        }
        let err = flag_normalization(Some("0,0,0"), Some("1,0,1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--std"), "{err}");
        assert!(flag_normalization(Some("0,0,0"), None).is_err());
        assert!(flag_normalization(None, Some("1,1,1")).is_err());
        assert_eq!(flag_normalization(None, None).unwrap(), None);
    }

    #[test]
    fn split_names_parse_and_print() {
        for name in ["test", "val", "train"] {
            assert_eq!(name.parse::<SplitChoice>().unwrap().name(), name);
        }
        assert!("validation".parse::<SplitChoice>().is_err());
    }
}
