//! `resnet predict`: the top classes of images, with names and probabilities.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args;
use resnet_data::{load_rgb, ViewConfig};
use resnet_hub::{classify, imagenet_classes};
use resnet_models::Precision;
use resnet_ops::DeviceSpec;
use serde_json::json;

use crate::arch::ArchArgs;
use crate::weights_source::load_model;

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
    /// Precision of the forward pass: bf16 runs the folded net in bf16
    /// throughout, weights and activations (probabilities in f32).
    #[arg(long, default_value = "fp32")]
    precision: Precision,
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
    let loaded = load_model(&args.arch, &args.weights, &device)?.with_precision(args.precision);
    let config = ViewConfig {
        geometry: loaded.preprocessing.geometry(),
        normalization: loaded.view_normalization()?,
    };
    let model = loaded.model.fold_for_inference()?;
    let imagenet: Vec<String> = imagenet_classes().into_iter().map(String::from).collect();
    let names = match &loaded.classes {
        Some(stored) => Some(stored.clone()),
        None => (model.spec().num_classes == imagenet.len()).then_some(imagenet),
    };

    for path in &args.images {
        let image = load_rgb(path)?;
        let top = classify(&model, &device, &image, &config, names.as_deref(), args.top)?;
        if args.json {
            let top: Vec<_> = top
                .iter()
                .map(|p| json!({"class": p.class, "name": p.name, "probability": p.probability}))
                .collect();
            println!(
                "{}",
                json!({"image": path.display().to_string(), "top": top})
            );
        } else {
            println!("{}:", path.display());
            for p in top {
                let label = p.name.map(|n| format!(" {n}")).unwrap_or_default();
                println!("  {:6.2}%  {:4}{label}", 100.0 * p.probability, p.class);
            }
        }
    }
    Ok(())
}
