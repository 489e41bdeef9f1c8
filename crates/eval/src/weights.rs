//! The trained-weights file: model tensors and input normalisation in one safetensors file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use resnet_data::{ImageNetNormalization, Normalization};
use resnet_models::{read_safetensors, save_safetensors, ResNet, WeightsMetadata, MOMENTUM_PREFIX};

use crate::normalization::{
    imagenet_normalization_from_tensors, normalization_from_tensors, normalization_tensors,
    NORMALIZATION_PREFIX,
};
use crate::rename::pytorch_to_torchvision_name;
use crate::{EvalError, Result};

/// The file a training run writes into its folder at the end: the final weights.
pub const MODEL_FILE: &str = "model.safetensors";

/// Writes every tensor of `model` and, if given, the input normalisation to a
/// safetensors file at `path`, atomically, with the model's
/// [`resnet_models::WeightsMetadata`] (a per-channel normalisation included).
pub fn save_weights(model: &ResNet, norm: Option<&Normalization>, path: &Path) -> Result<()> {
    let mut tensors = model.state_tensors();
    let mut metadata = model.metadata();
    if let Some(norm) = norm {
        tensors.extend(normalization_tensors(norm)?);
        if let Normalization::PerChannel { mean, std } = norm {
            metadata = metadata.with_mean_std(*mean, *std);
        }
    }
    Ok(save_safetensors(path, &tensors, Some(&metadata))?)
}

/// Loads the weights file at `path` into `model` and returns the input
/// normalisation stored in it, if any. Metadata in the file that describe
/// another net than `model` are an error naming the field.
///
/// Accepted besides what [`save_weights`] writes: trainer checkpoints (their
/// `momentum.*` entries are skipped) and the PyTorch CIFAR layout (a leading
/// `module.` is stripped, `linear.*` is read as `fc.*`, BN
/// `num_batches_tracked` counters are ignored). A missing, misshapen or
/// unexpected tensor is an error naming the file and the tensor; on error the
/// model is left unchanged.
pub fn load_weights(model: &ResNet, path: &Path) -> Result<Option<Normalization>> {
    load_with(model, path, normalization_from_tensors)
}

/// As [`load_weights`], for weights trained on an ImageNet-style folder:
/// their normalisation is a per-pixel mean image of any size or per-channel
/// values ([`imagenet_normalization_from_tensors`]).
pub fn load_imagenet_weights(model: &ResNet, path: &Path) -> Result<Option<ImageNetNormalization>> {
    load_with(model, path, imagenet_normalization_from_tensors)
}

/// Loads the model's tensors from `path` and reads its normalisation with `read`.
fn load_with<N>(
    model: &ResNet,
    path: &Path,
    read: impl Fn(&HashMap<String, Tensor>) -> Result<Option<N>>,
) -> Result<Option<N>> {
    let (mut tensors, metadata) = read_weights(path)?;
    if let Some(metadata) = metadata {
        metadata.check(model.spec(), path)?;
    }
    let norm = read(&tensors).map_err(|e| EvalError::InFile {
        path: path.to_path_buf(),
        error: Box::new(e),
    })?;
    tensors.retain(|name, _| !name.starts_with(NORMALIZATION_PREFIX));
    model.load_tensors(&tensors, &path.display().to_string())?;
    Ok(norm)
}

/// The tensors of the weights file at `path` by torchvision name (with
/// their `normalization.*` entries, without a checkpoint's `momentum.*`;
/// the layouts [`load_weights`] accepts), and its metadata, if any.
pub fn read_weights(path: &Path) -> Result<(HashMap<String, Tensor>, Option<WeightsMetadata>)> {
    let (file, metadata) = read_safetensors(path)?;
    let mut originals: HashMap<String, String> = HashMap::new();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut names: Vec<&String> = file.keys().collect();
    names.sort();
    for original in names {
        let name = pytorch_to_torchvision_name(original);
        if name.starts_with(MOMENTUM_PREFIX) {
            continue;
        }
        if let Some(first) = originals.insert(name.to_string(), original.clone()) {
            return Err(EvalError::DuplicateTensor {
                path: path.to_path_buf(),
                first,
                second: original.clone(),
                name: name.to_string(),
            });
        }
        tensors.insert(name.to_string(), file[original].clone());
    }
    Ok((tensors, metadata))
}

/// The weights file named by `path`: a file as it is; a folder (a run
/// folder) means its [`MODEL_FILE`], which must exist.
pub fn resolve_weights(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(EvalError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let model = path.join(MODEL_FILE);
    if model.is_file() {
        return Ok(model);
    }
    let mut found: Vec<String> = std::fs::read_dir(path)
        .map_err(|error| EvalError::Io {
            action: "listing",
            path: path.to_path_buf(),
            error,
        })?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".safetensors"))
        .collect();
    found.sort();
    Err(EvalError::NoModelFile {
        dir: path.to_path_buf(),
        found,
    })
}
