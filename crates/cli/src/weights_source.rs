//! Models for ImageNet-style images from a `--weights` value (a local file,
//! a run folder or a hub file), with the preprocessing the weights expect;
//! shared by `resnet predict` and `resnet eval` on image folders.

use anyhow::{ensure, Result};
use candle_core::Device;
use resnet_data::{
    ImageNetNormalization, MeanImage, Normalization, Resample, IMAGENET_MEAN, IMAGENET_STD,
};
use resnet_eval::{load_imagenet_weights, load_weights, resolve_weights, NORMALIZATION_PREFIX};
use resnet_hub::registry::{self, Preprocessing};
use resnet_hub::{load_pretrained, read_tensors, WeightsSource};
use resnet_models::ResNet;

use crate::arch::ArchArgs;

/// The input side of the CIFAR-10 nets, whose weights store CIFAR normalisations.
const CIFAR_INPUT_SIZE: usize = 32;

/// What is known of the input normalisation a model's weights expect.
#[derive(Debug, Clone, PartialEq)]
pub enum KnownNormalization {
    /// The registry's (known hub weights), or the one stored in
    /// our own weights file.
    Known(ImageNetNormalization),
    /// A CIFAR-10 per-pixel mean image (32x32) stored in our own weights file.
    CifarMeanImage(MeanImage),
    /// Nothing: weights from elsewhere that the registry does not know.
    Unknown,
}

/// A model with its weights loaded, and the input they expect.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model, on the device it was loaded for.
    pub model: ResNet,
    /// Where the weights came from: the local file read, or the hub spec.
    pub weights: String,
    /// The registry's evaluation preprocessing for known hub weights, else
    /// torchvision's for the architecture's input size.
    pub preprocessing: Preprocessing,
    /// The input normalisation, where known.
    pub normalization: KnownNormalization,
}

/// Builds the model `arch` describes and loads `weights` into it, on `device`.
///
/// `weights` is a safetensors or .pth file, a run folder (its
/// model.safetensors) or `hf:OWNER/REPO[/FILE][@REV]`. Known hub weights must
/// be of `arch`'s architecture and take their stride placement from the
/// registry (an explicit `--stride-placement` that contradicts it is an
/// error). Our own weights files (with `normalization.*` tensors) go through
/// [`resnet_eval::load_weights`] and keep their normalisation; everything
/// else through [`resnet_hub::load_pretrained`].
pub fn load_model(arch: &ArchArgs, weights: &str, device: &Device) -> Result<LoadedModel> {
    let source = WeightsSource::parse(weights)?;
    let entry = registry::find_source(&source);
    let mut spec = arch.spec()?;
    if let Some(entry) = entry {
        ensure!(
            spec.id == entry.arch,
            "--arch {} does not fit {weights} ({} weights)",
            spec.id,
            entry.arch
        );
        ensure!(
            arch.stride_placement.is_none() || spec.stride_placement == entry.stride_placement,
            "--stride-placement {} contradicts {}: its weights use {}",
            spec.stride_placement,
            entry.name,
            entry.stride_placement
        );
        spec = spec.with_stride_placement(entry.stride_placement);
    }
    let model = ResNet::new(&spec, 0, device)?;
    let default = default_preprocessing(spec.input_size);
    let source = match source {
        WeightsSource::Local(path) => {
            let path = resolve_weights(&path)?;
            let tensors = read_tensors(&path)?;
            if tensors.keys().any(|k| k.starts_with(NORMALIZATION_PREFIX)) {
                let normalization = if spec.input_size == CIFAR_INPUT_SIZE {
                    match load_weights(&model, &path)? {
                        Some(Normalization::PerChannel { mean, std }) => {
                            KnownNormalization::Known(ImageNetNormalization::PerChannel {
                                mean,
                                std,
                            })
                        }
                        Some(Normalization::PerPixelMean(mean)) => {
                            KnownNormalization::CifarMeanImage(mean)
                        }
                        None => KnownNormalization::Unknown,
                    }
                } else {
                    load_imagenet_weights(&model, &path)?
                        .map_or(KnownNormalization::Unknown, KnownNormalization::Known)
                };
                return Ok(LoadedModel {
                    model,
                    weights: path.display().to_string(),
                    preprocessing: default,
                    normalization,
                });
            }
            WeightsSource::Local(path)
        }
        hf => hf,
    };
    load_pretrained(&model, &source, None)?;
    let (preprocessing, normalization) = match entry {
        Some(entry) => {
            let p = entry.preprocessing;
            let norm = ImageNetNormalization::PerChannel {
                mean: p.mean,
                std: p.std,
            };
            (p, KnownNormalization::Known(norm))
        }
        None => (default, KnownNormalization::Unknown),
    };
    Ok(LoadedModel {
        model,
        weights: source.to_string(),
        preprocessing,
        normalization,
    })
}

/// torchvision's evaluation transform for a `crop` x `crop` input: shorter
/// side `crop / 0.875` (256 for 224), center crop, ImageNet mean and std.
fn default_preprocessing(crop: usize) -> Preprocessing {
    Preprocessing {
        crop_pct: 0.875,
        crop,
        interpolation: Resample::Bilinear,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_preprocessing_is_torchvision_resize_256_crop_224() {
        assert_eq!(default_preprocessing(224).resize(), 256);
    }
}
