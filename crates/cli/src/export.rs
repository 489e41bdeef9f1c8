//! `resnet export`: weights as PyTorch and timm load them, a
//! torchvision-strict `model.safetensors` and a timm-style `config.json`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use clap::Args;
use resnet_data::{ImageNetNormalization, Resample};
use resnet_hub::imagenet_classes;
use resnet_models::{save_safetensors, write_atomic};
use serde_json::json;

use crate::arch::ArchArgs;
use crate::weights_source::{load_model, KnownNormalization};

/// Flags of `resnet export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    arch: ArchArgs,
    /// Weights: a safetensors or .pth file, a run folder, a registry name or
    /// `hf:OWNER/REPO[/FILE][@REV]`.
    #[arg(long)]
    weights: String,
    /// Folder to write `model.safetensors` and `config.json` into.
    #[arg(long)]
    out: PathBuf,
}

/// Name of the exported weights file (the name timm and transformers look for).
pub const EXPORT_WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the exported timm-style config.
pub const EXPORT_CONFIG_FILE: &str = "config.json";

/// Writes the export: `torchvision.models.resnetN().load_state_dict(...,
/// strict=True)` takes its tensors, and `timm.create_model("resnetN",
/// pretrained_cfg_overlay=...)` its config. Nets torchvision does not build,
/// and per-pixel mean normalisations (no timm equivalent), are refused.
pub fn run(args: &ExportArgs) -> Result<()> {
    let loaded = load_model(&args.arch, &args.weights, &Device::Cpu)?;
    let model = &loaded.model;
    model
        .torchvision_compatible()
        .map_err(|why| anyhow!("--weights {}: {why}; it cannot be exported", args.weights))?;
    let (mean, std) = match &loaded.normalization {
        KnownNormalization::Known(ImageNetNormalization::PerChannel { mean, std }) => (*mean, *std),
        KnownNormalization::Unknown => (loaded.preprocessing.mean, loaded.preprocessing.std),
        KnownNormalization::Known(ImageNetNormalization::PerPixelMean(_))
        | KnownNormalization::CifarMeanImage(_) => bail!(
            "--weights {}: they expect a per-pixel mean image, which timm's config cannot \
             express; train with --normalization per-channel to export",
            args.weights
        ),
    };
    let spec = model.spec();
    let classes = loaded.classes.clone().or_else(|| {
        (spec.num_classes == 1000)
            .then(|| imagenet_classes().into_iter().map(String::from).collect())
    });
    let crop = loaded.preprocessing.crop;
    let features = spec.widths.last().copied().unwrap_or_default() * spec.block.expansion();
    let config = json!({
        "architecture": spec.id,
        "num_classes": spec.num_classes,
        "num_features": features,
        "global_pool": "avg",
        "label_names": classes,
        "pretrained_cfg": {
            "input_size": [3, crop, crop],
            "interpolation": match loaded.preprocessing.interpolation {
                Resample::Bilinear => "bilinear",
                Resample::Bicubic => "bicubic",
            },
            "crop_pct": loaded.preprocessing.crop_pct,
            "crop_mode": "center",
            "mean": mean,
            "std": std,
            "num_classes": spec.num_classes,
            "pool_size": [crop / 32, crop / 32],
            "first_conv": "conv1",
            "classifier": "fc",
        },
    });
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let metadata = model
        .metadata()
        .with_classes(loaded.classes.clone())
        .with_mean_std(mean, std);
    let weights = args.out.join(EXPORT_WEIGHTS_FILE);
    save_safetensors(&weights, &model.torchvision_state_dict()?, Some(&metadata))?;
    write_atomic(
        &args.out.join(EXPORT_CONFIG_FILE),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    println!(
        "{}: {} and {} in {}",
        spec.id,
        EXPORT_WEIGHTS_FILE,
        EXPORT_CONFIG_FILE,
        args.out.display()
    );
    Ok(())
}
