//! `resnet eval`: top-1 and top-5 error of trained weights on a CIFAR-10
//! split, or of one model or an ensemble on an ImageNet-style image folder.

mod folder;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use resnet_data::{Cifar10, Normalization, Split};
use resnet_eval::{evaluate, load_weights, resolve_weights};
use resnet_hub::WeightsSource;
use resnet_models::{Precision, ResNet};
use resnet_ops::DeviceSpec;
use serde_json::json;

use crate::arch::ArchArgs;

/// Default images per forward pass on CIFAR-10.
const CIFAR_BATCH_SIZE: usize = 256;

/// Which images of the dataset to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SplitChoice {
    /// The test split.
    Test,
    /// The last --val-size training images.
    Val,
    /// The training images before those.
    Train,
}

impl SplitChoice {
    /// Its name on the command line.
    fn name(self) -> &'static str {
        match self {
            SplitChoice::Test => "test",
            SplitChoice::Val => "val",
            SplitChoice::Train => "train",
        }
    }
}

/// Flags of `resnet eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    arch: ArchArgs,
    /// Trained weights: a safetensors file (final weights or a checkpoint), or
    /// a run folder, meaning its model.safetensors. On image folders also a
    /// PyTorch .pth file or `hf:OWNER/REPO[/FILE][@REV]` (fetched into the
    /// Hugging Face cache; known hub weights bring their preprocessing).
    #[arg(long)]
    weights: String,
    /// Image folders only: more models for an ensemble, whose softmax is
    /// averaged with that of --weights. Comma-separated entries
    /// `ARCH=WEIGHTS` (e.g. `resnet101=hf:timm/resnet101.tv_in1k`), or just
    /// `WEIGHTS`: of the registry's architecture for known hub weights, else
    /// of --arch. --shortcut, --stride-placement and --num-classes apply to
    /// every model; each keeps its own preprocessing and normalisation.
    #[arg(long, value_name = "[ARCH=]WEIGHTS,...", value_delimiter = ',')]
    ensemble: Vec<String>,
    /// A CIFAR-10 folder (the official binary files, or a folder holding
    /// cifar-10-batches-bin/); anything else is read as an image folder of
    /// JPEG and PNG files: ROOT/<class>/<image> (classes are the sorted
    /// sub-folders, or those of --classes), or a flat folder with --labels.
    #[arg(long)]
    data: PathBuf,
    /// Image folders: the label file of a flat --data folder, one
    /// `<file name> <class>` per line, the class an index or a name of --classes.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Image folders: a class-list file, one class name per line in label
    /// order (with class sub-folders: which to use; with --labels: the class
    /// names its lines may use).
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// Image folders: skip image files that fail to open (each one logged)
    /// instead of refusing to start with the list of them.
    #[arg(long)]
    skip_bad_images: bool,
    /// Image folders: average the softmax over ten crops (the four corners and
    /// the centre, and their mirror images) instead of the centre crop alone.
    #[arg(long, conflicts_with = "multi_scale")]
    ten_crop: bool,
    /// Image folders: average the softmax over the whole image resized to each
    /// shorter side of --scales (fully convolutional) instead of the centre crop.
    #[arg(long)]
    multi_scale: bool,
    /// Shorter sides of --multi-scale [default: 224,256,384,480,640, the paper's].
    #[arg(
        long,
        value_name = "S1,S2,...",
        value_delimiter = ',',
        requires = "multi_scale"
    )]
    scales: Option<Vec<u32>>,
    /// CIFAR-10 only: split to evaluate (default: test).
    #[arg(long)]
    split: Option<SplitChoice>,
    /// CIFAR-10 only: training images held out as the validation split, taken
    /// from the end (the paper's is 5000; 0, the default, holds none out, so
    /// `--split val` needs it set).
    #[arg(long, default_value_t = 0)]
    val_size: usize,
    /// Per-channel input mean R,G,B in 0..1 pixel units (torchvision Normalize);
    /// with --std, overrides the normalisation stored in the weights (and the
    /// registry's, for every model). On image folders, weights with no known
    /// normalisation use torchvision's ImageNet mean and std, with a warning.
    #[arg(long, value_name = "R,G,B")]
    mean: Option<String>,
    /// Per-channel input standard deviation R,G,B in 0..1 pixel units, each > 0.
    #[arg(long, value_name = "R,G,B")]
    std: Option<String>,
    /// Images per forward pass; on image folders, views per forward pass
    /// [default: 256 for CIFAR-10, 32 for image folders].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Threads preparing batches.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Device: cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision of the forward pass: bf16 runs the folded net in bf16
    /// throughout, weights and activations (logits, loss and errors in f32).
    /// On the CPU bf16 gives a GPU's bf16 results at more than fp32's cost.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
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

/// The per-channel `(mean, std)` given by --mean and --std, if any.
fn flag_channels(mean: Option<&str>, std: Option<&str>) -> Result<Option<([f32; 3], [f32; 3])>> {
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
            Ok(Some((mean, std_values)))
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

/// Evaluates the weights on a CIFAR-10 split or an image folder and prints the result.
pub fn run(args: &EvalArgs) -> Result<()> {
    ensure!(
        args.batch_size != Some(0),
        "--batch-size must be at least 1"
    );
    ensure!(args.threads > 0, "--threads must be at least 1");
    if Cifar10::locate(&args.data).is_ok() {
        run_cifar(args)
    } else {
        folder::run_folder(args)
    }
}

/// Evaluates the weights on a CIFAR-10 split.
fn run_cifar(args: &EvalArgs) -> Result<()> {
    let folder_only = [
        ("--ensemble", !args.ensemble.is_empty()),
        ("--ten-crop", args.ten_crop),
        ("--multi-scale", args.multi_scale),
        ("--labels", args.labels.is_some()),
        ("--classes", args.classes.is_some()),
        ("--skip-bad-images", args.skip_bad_images),
    ];
    if let Some((flag, _)) = folder_only.iter().find(|(_, given)| *given) {
        bail!(
            "{flag} applies to image folders, but {} is a CIFAR-10 folder",
            args.data.display()
        );
    }
    let flags = flag_channels(args.mean.as_deref(), args.std.as_deref())?
        .map(|(mean, std)| Normalization::PerChannel { mean, std });
    let split_choice = args.split.unwrap_or(SplitChoice::Test);
    ensure!(
        split_choice != SplitChoice::Val || args.val_size > 0,
        "--split val needs --val-size N > 0 (the last N training images)"
    );
    if let WeightsSource::Hf(_) = WeightsSource::parse(&args.weights)? {
        bail!(
            "--weights {}: hub weights are ImageNet models; on CIFAR-10 pass a local \
             weights file or run folder",
            args.weights
        );
    }
    let spec = args.arch.for_weights(&args.weights)?.spec()?;
    let device = args.device.parse::<DeviceSpec>()?.open()?;

    let weights = resolve_weights(Path::new(&args.weights))?;
    let model = ResNet::new(&spec, 0, &device)?.with_precision(args.precision);
    let stored = load_weights(&model, &weights)?;
    let Some(norm) = flags.or(stored) else {
        bail!(
            "{} stores no input normalization; pass --mean R,G,B and --std R,G,B \
             (per-channel, 0..1 pixel units)",
            weights.display()
        );
    };

    let data = Cifar10::load(&args.data)?;
    let split = select_split(data, split_choice, args.val_size)?;
    let images = split.len();
    let report = evaluate(
        &model,
        Arc::new(split),
        &norm,
        args.batch_size.unwrap_or(CIFAR_BATCH_SIZE),
        args.threads,
        &device,
    )
    .with_context(|| format!("evaluating {} on {} images", spec.id, images))?;

    if args.json {
        let out = json!({
            "arch": spec.id,
            "weights": weights.display().to_string(),
            "split": split_choice.name(),
            "precision": args.precision,
            "images": report.images,
            "top1_error": report.top1_error,
            "top5_error": report.top5_error,
            "loss": report.loss,
        });
        println!("{out}");
    } else {
        println!(
            "{} on {} ({} images, {}): top-1 error {:.2}%, top-5 error {:.2}%, loss {:.4}",
            spec.id,
            split_choice.name(),
            report.images,
            args.precision,
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
        let err = flag_channels(Some("0,0,0"), Some("1,0,1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--std"), "{err}");
        assert!(flag_channels(Some("0,0,0"), None).is_err());
        assert!(flag_channels(None, Some("1,1,1")).is_err());
        assert_eq!(flag_channels(None, None).unwrap(), None);
        assert_eq!(
            flag_channels(Some("0,0.5,1"), Some("1,2,3")).unwrap(),
            Some(([0.0, 0.5, 1.0], [1.0, 2.0, 3.0]))
        );
    }

    #[test]
    fn split_names_parse_and_print() {
        use clap::ValueEnum;
        for name in ["test", "val", "train"] {
            assert_eq!(SplitChoice::from_str(name, false).unwrap().name(), name);
        }
        assert!(SplitChoice::from_str("validation", false).is_err());
    }
}
