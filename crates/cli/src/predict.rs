//! `resnet predict`: the top classes of images, with names and probabilities.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use resnet_data::{
    load_rgb, resize_shorter_side, ImageNetNormalization, Normalization, PixelMean, IMAGENET_MEAN,
    IMAGENET_STD,
};
use resnet_eval::{load_weights, resolve_weights, NORMALIZATION_PREFIX};
use resnet_hub::registry::{Entry, Interpolation, Preprocessing};
use resnet_hub::{load_pretrained, read_tensors, WeightsSource};
use resnet_models::ResNet;
use resnet_ops::DeviceSpec;
use serde_json::json;

use crate::arch::ArchArgs;

/// The 1000 ImageNet-1k class names, one per line in index order (torchvision's list).
const IMAGENET_CLASSES: &str = include_str!("../imagenet_classes.txt");

/// Flags of `resnet predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    arch: ArchArgs,
    /// Weights: a safetensors or .pth file, a run folder, or
    /// `hf:OWNER/REPO[/FILE][@REV]` (fetched into the Hugging Face cache).
    #[arg(long)]
    weights: String,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Device: cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object per image per line instead of text.
    #[arg(long)]
    json: bool,
    /// Images to classify (JPEG or PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Classifies every image and prints its top classes.
pub fn run(args: &PredictArgs) -> Result<()> {
    ensure!(args.top > 0, "--top must be at least 1");
    let source = WeightsSource::parse(&args.weights)?;
    let entry = resnet_hub::registry::find_source(&source);
    let mut spec = args.arch.spec()?;
    if let Some(entry) = entry {
        ensure!(
            spec.id == entry.arch,
            "--arch {} does not fit {} ({} weights)",
            spec.id,
            args.weights,
            entry.arch
        );
        ensure!(
            args.arch.stride_placement.is_none() || spec.stride_placement == entry.stride_placement,
            "--stride-placement {} contradicts {}: its weights use {}",
            spec.stride_placement,
            entry.name,
            entry.stride_placement
        );
        spec = spec.with_stride_placement(entry.stride_placement);
    }
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    let model = ResNet::new(&spec, 0, &device)?;
    let (preprocessing, norm) = load(&model, source, entry)?;
    let names: Vec<&str> = IMAGENET_CLASSES.lines().collect();
    let names = (spec.num_classes == names.len()).then_some(names);

    for path in &args.images {
        let probabilities = classify(&model, path, &preprocessing, &norm, &device)?;
        let top = top_k(&probabilities, args.top);
        let name = |class: usize| names.as_ref().map(|n| n[class]);
        if args.json {
            let top: Vec<_> = top
                .iter()
                .map(|&(class, p)| json!({"class": class, "name": name(class), "probability": p}))
                .collect();
            println!(
                "{}",
                json!({"image": path.display().to_string(), "top": top})
            );
        } else {
            println!("{}:", path.display());
            for (class, p) in top {
                let label = name(class).map(|n| format!(" {n}")).unwrap_or_default();
                println!("  {:6.2}%  {class:4}{label}", 100.0 * p);
            }
        }
    }
    Ok(())
}

/// Loads the weights into `model`; returns the preprocessing they expect.
///
/// Our own weights files (with `normalization.*` tensors) go through
/// [`resnet_eval::load_weights`] and keep their normalisation; everything else
/// through [`resnet_hub::load_pretrained`], with the registry's preprocessing
/// for known weights and torchvision's otherwise.
fn load(
    model: &ResNet,
    source: WeightsSource,
    entry: Option<&Entry>,
) -> Result<(Preprocessing, ImageNetNormalization)> {
    let source = match source {
        WeightsSource::Local(path) => {
            let path = resolve_weights(&path)?;
            let tensors = read_tensors(&path)?;
            if tensors.keys().any(|k| k.starts_with(NORMALIZATION_PREFIX)) {
                let stored = load_weights(model, &path)?;
                let norm = stored.map(imagenet_normalization).transpose()?;
                let default = default_preprocessing(model.spec().input_size);
                return Ok((default, norm.unwrap_or(ImageNetNormalization::TORCHVISION)));
            }
            WeightsSource::Local(path)
        }
        hf => hf,
    };
    load_pretrained(model, &source, None)?;
    let preprocessing = entry.map_or_else(
        || default_preprocessing(model.spec().input_size),
        |e| e.preprocessing,
    );
    let norm = ImageNetNormalization::PerChannel {
        mean: preprocessing.mean,
        std: preprocessing.std,
    };
    Ok((preprocessing, norm))
}

/// torchvision's evaluation transform for a `crop` x `crop` input: shorter
/// side `crop / 0.875` (256 for 224), center crop, ImageNet mean and std.
fn default_preprocessing(crop: usize) -> Preprocessing {
    Preprocessing {
        crop_pct: 0.875,
        crop,
        interpolation: Interpolation::Bilinear,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    }
}

/// The stored normalisation of our own weights, for views of any size.
fn imagenet_normalization(norm: Normalization) -> Result<ImageNetNormalization> {
    Ok(match norm {
        Normalization::PerChannel { mean, std } => ImageNetNormalization::PerChannel { mean, std },
        Normalization::PerPixelMean(mean) => {
            let side = ((mean.values().len() / 3) as f64).sqrt() as usize;
            let values = mean.values().to_vec();
            ImageNetNormalization::PerPixelMean(PixelMean::from_values(side, side, values)?)
        }
    })
}

/// Softmax probabilities of every class for the image at `path`.
///
/// The image's shorter side is resized to [`Preprocessing::resize`] with the
/// data crate's triangle (bilinear, antialiased) filter, whatever the
/// preprocessing's interpolation: bicubic weights are approximated.
fn classify(
    model: &ResNet,
    path: &Path,
    preprocessing: &Preprocessing,
    norm: &ImageNetNormalization,
    device: &Device,
) -> Result<Vec<f32>> {
    let image = load_rgb(path).with_context(|| format!("reading image {}", path.display()))?;
    let crop = preprocessing.crop;
    let resize = preprocessing.resize().max(crop);
    let resized = resize_shorter_side(&image, resize as u32);
    let (width, height) = (resized.width() as usize, resized.height() as usize);
    if width < crop || height < crop {
        bail!("{}: too small to crop {crop}x{crop}", path.display());
    }
    let (left, top) = ((width - crop) / 2, (height - crop) / 2);
    let raw = resized.as_raw();
    let mut view = vec![0f32; 3 * crop * crop];
    for (c, plane) in view.chunks_exact_mut(crop * crop).enumerate() {
        for (y, row) in plane.chunks_exact_mut(crop).enumerate() {
            let start = ((top + y) * width + left) * 3 + c;
            for (v, &byte) in row.iter_mut().zip(raw[start..].iter().step_by(3)) {
                *v = f32::from(byte) / 255.0;
            }
        }
    }
    norm.apply(&mut view, crop, crop);
    let input = Tensor::from_vec(view, (1, 3, crop, crop), device)?;
    let logits = model.forward_t(&input, false)?;
    Ok(softmax(&logits.flatten_all()?.to_vec1::<f32>()?))
}

/// `exp(x - max) / sum`, which cannot overflow.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, most probable first.
fn top_k(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_sorts_by_probability_and_truncates() {
        assert_eq!(top_k(&[0.1, 0.6, 0.3], 2), vec![(1, 0.6), (2, 0.3)]);
        assert_eq!(top_k(&[1.0], 5).len(), 1);
    }

    #[test]
    fn class_file_has_1000_names_in_torchvision_order() {
        let names: Vec<&str> = IMAGENET_CLASSES.lines().collect();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(names[207], "golden retriever");
    }

    #[test]
    fn default_preprocessing_is_torchvision_resize_256_crop_224() {
        assert_eq!(default_preprocessing(224).resize(), 256);
    }
}
