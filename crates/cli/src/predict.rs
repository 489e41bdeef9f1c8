//! `resnet predict`: the top classes of images, with names and probabilities.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use resnet_data::{load_rgb, ImageNetNormalization, PixelMean, TestViews, ViewConfig};
use resnet_models::ResNet;
use resnet_ops::DeviceSpec;
use serde_json::json;

use crate::arch::ArchArgs;
use crate::weights_source::{load_model, KnownNormalization};

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
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    let loaded = load_model(&args.arch, &args.weights, &device)?;
    let config = ViewConfig {
        geometry: loaded.preprocessing.geometry(),
        normalization: normalization(&loaded.normalization)?,
    };
    let model = &loaded.model;
    let names: Vec<&str> = IMAGENET_CLASSES.lines().collect();
    let names = (model.spec().num_classes == names.len()).then_some(names);

    for path in &args.images {
        let probabilities = classify(model, path, &config, &device)?;
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

/// The normalisation to classify with: the known one; a stored CIFAR-10 mean
/// image as a per-pixel mean (views of other sizes subtract its channel
/// averages); torchvision's when nothing is known.
fn normalization(known: &KnownNormalization) -> Result<ImageNetNormalization> {
    Ok(match known {
        KnownNormalization::Known(norm) => norm.clone(),
        KnownNormalization::CifarMeanImage(mean) => {
            let side = ((mean.values().len() / 3) as f64).sqrt() as usize;
            let values = mean.values().to_vec();
            ImageNetNormalization::PerPixelMean(PixelMean::from_values(side, side, values)?)
        }
        KnownNormalization::Unknown => ImageNetNormalization::TORCHVISION,
    })
}

/// Softmax probabilities of every class for the centre view of the image at `path`.
fn classify(model: &ResNet, path: &Path, config: &ViewConfig, device: &Device) -> Result<Vec<f32>> {
    let image = load_rgb(path).with_context(|| format!("reading image {}", path.display()))?;
    let views = TestViews::Center.of(&image, config);
    let Some(view) = views.first() else {
        bail!("{}: no centre view", path.display());
    };
    let input = Tensor::from_slice(&view.data, (1, 3, view.height, view.width), device)?;
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
}
