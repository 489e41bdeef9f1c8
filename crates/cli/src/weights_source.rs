//! Models for ImageNet-style images from a `--weights` value (a local file,
//! a run folder or a hub file), with the preprocessing the weights expect;
//! shared by `resnet predict` and `resnet eval` on image folders.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use resnet_data::{ImageNetNormalization, MeanImage, Normalization, PixelMean};
use resnet_eval::{load_imagenet_weights, load_weights, resolve_weights, NORMALIZATION_PREFIX};
use resnet_hub::registry::{self, Preprocessing};
use resnet_hub::{read_tensors, HubOptions, WeightsSource};
use resnet_models::{read_safetensors_metadata, ArchSpec, Precision, ResNet, WeightsMetadata};

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
    /// The names of the output classes stored with the weights (a
    /// fine-tuned run's class folders), if any.
    pub classes: Option<Vec<String>>,
}

impl LoadedModel {
    /// The model with its convolutions and fc layer in `precision` (what
    /// its folded form then runs in; the weights stay as loaded).
    pub fn with_precision(self, precision: Precision) -> LoadedModel {
        LoadedModel {
            model: self.model.with_precision(precision),
            ..self
        }
    }

    /// The normalisation its image views are classified with (`predict`,
    /// `eval` on image folders): the known one; a stored CIFAR-10 mean image
    /// as a per-pixel mean (views of another size subtract its channel
    /// averages); torchvision's, with a warning, when nothing is known.
    pub fn view_normalization(&self) -> Result<ImageNetNormalization> {
        Ok(match &self.normalization {
            KnownNormalization::Known(norm) => norm.clone(),
            KnownNormalization::CifarMeanImage(mean) => {
                let side = ((mean.values().len() / 3) as f64).sqrt() as usize;
                let values = mean.values().to_vec();
                ImageNetNormalization::PerPixelMean(PixelMean::from_values(side, side, values)?)
            }
            KnownNormalization::Unknown => {
                tracing::warn!(
                    "{}: no input normalization known; using torchvision's ImageNet mean and \
                     std (eval takes --mean R,G,B and --std R,G,B to choose)",
                    self.weights
                );
                ImageNetNormalization::TORCHVISION
            }
        })
    }
}

/// Builds the model `arch` describes and loads `weights` into it, on `device`.
///
/// `weights` is a safetensors or .pth file, a run folder (its
/// model.safetensors), a registry name (`resnet50.tv_in1k`) or
/// `hf:OWNER/REPO[/FILE][@REV]`.
/// Our own weights files (with metadata or `normalization.*` tensors) go
/// through [`resnet_eval::load_weights`], in the net their metadata describe
/// (class names included), and keep their normalisation; everything
/// else through [`resnet_hub::load_model`], the one loader of pretrained
/// models (known weights must be of `arch`'s architecture and take their
/// stride placement from the registry; an explicit `--stride-placement` that
/// contradicts it is an error).
pub fn load_model(arch: &ArchArgs, weights: &str, device: &Device) -> Result<LoadedModel> {
    let arch = &arch.for_weights(weights)?;
    let spec = arch.spec()?;
    let source = WeightsSource::parse(weights)?;
    let mut weights = weights.to_string();
    match &source {
        WeightsSource::Local(path) if registry::find(&weights).is_none() => {
            let path = resolve_weights(path)?;
            let metadata = stored_metadata(&path)?;
            if metadata.is_some()
                || read_tensors(&path)?
                    .keys()
                    .any(|k| k.starts_with(NORMALIZATION_PREFIX))
            {
                let spec = arch.spec_for(metadata.as_ref())?;
                let classes = metadata.and_then(|m| m.classes);
                return load_ours(spec, &path, classes, device);
            }
            weights = path.display().to_string();
        }
        _ => {}
    }
    let pretrained = resnet_hub::load_model(
        &weights,
        &spec,
        arch.stride_placement,
        device,
        &HubOptions::default(),
    )?;
    let normalization = match pretrained.entry {
        Some(_) => KnownNormalization::Known(pretrained.preprocessing.view_config().normalization),
        None => KnownNormalization::Unknown,
    };
    Ok(LoadedModel {
        model: pretrained.model,
        weights: match (pretrained.entry, source) {
            (_, hf @ WeightsSource::Hf(_)) => hf.to_string(),
            (Some(entry), WeightsSource::Local(_)) => entry.source().to_string(),
            (None, WeightsSource::Local(_)) => weights,
        },
        preprocessing: pretrained.preprocessing,
        normalization,
        classes: None,
    })
}

/// The architecture `weights` name, if they name one: a registry entry's,
/// or the one in the metadata of this project's weights file (a run
/// folder's model.safetensors). A local path that does not exist is an
/// error naming it.
pub fn named_arch(weights: &str) -> Result<Option<String>> {
    if let Some(entry) = registry::find(weights) {
        return Ok(Some(entry.arch.to_string()));
    }
    match WeightsSource::parse(weights)? {
        WeightsSource::Local(path) => {
            Ok(stored_metadata(&resolve_weights(&path)?)?.map(|m| m.arch))
        }
        WeightsSource::Hf(_) => Ok(None),
    }
}

/// The metadata of a safetensors file written by this project, if it is one.
fn stored_metadata(path: &Path) -> Result<Option<WeightsMetadata>> {
    if path.extension().is_none_or(|e| e != "safetensors") {
        return Ok(None);
    }
    Ok(read_safetensors_metadata(path)?)
}

/// Our own weights file at `path` (with its normalisation) in the net
/// `spec`, whose outputs are named `classes`, if known.
fn load_ours(
    spec: ArchSpec,
    path: &Path,
    classes: Option<Vec<String>>,
    device: &Device,
) -> Result<LoadedModel> {
    let model = ResNet::new(&spec, 0, device)?;
    let normalization = if spec.input_size == CIFAR_INPUT_SIZE {
        match load_weights(&model, path)? {
            Some(Normalization::PerChannel { mean, std }) => {
                KnownNormalization::Known(ImageNetNormalization::PerChannel { mean, std })
            }
            Some(Normalization::PerPixelMean(mean)) => KnownNormalization::CifarMeanImage(mean),
            None => KnownNormalization::Unknown,
        }
    } else {
        load_imagenet_weights(&model, path)?
            .map_or(KnownNormalization::Unknown, KnownNormalization::Known)
    };
    Ok(LoadedModel {
        model,
        weights: path.display().to_string(),
        preprocessing: Preprocessing::torchvision(spec.input_size),
        normalization,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::named_arch;

    #[test]
    fn registry_entries_and_missing_files_name_or_refuse_an_arch() {
        let arch = |w: &str| named_arch(w).unwrap();
        assert_eq!(arch("resnet50.tv_in1k").as_deref(), Some("resnet50"));
        assert_eq!(
            arch("hf:timm/resnet34.tv_in1k").as_deref(),
            Some("resnet34")
        );
        assert_eq!(arch("hf:someone/else"), None);
        let err = named_arch("no/such/weights.safetensors").unwrap_err();
        assert!(
            format!("{err:#}").contains("no/such/weights.safetensors"),
            "{err:#}"
        );
    }
}
