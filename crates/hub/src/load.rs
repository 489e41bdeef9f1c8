//! The one entry point: fetch, read, rename and load pretrained weights.

use std::path::PathBuf;

use resnet_models::{BlockKind, ResNet};

use crate::registry::{self, Entry};
use crate::{
    detect_layout, fetch_with, read_tensors, to_torchvision, HubError, HubOptions, Layout, Result,
    WeightsSource,
};

/// What [`load_pretrained`] loaded.
#[derive(Debug, Clone)]
pub struct LoadedWeights {
    /// The local file read (for a hub source, in the hub cache).
    pub path: PathBuf,
    /// The naming layout detected in the file.
    pub layout: Layout,
    /// The registry entry of a known hub file, with its preprocessing and accuracy.
    pub registry_entry: Option<&'static Entry>,
}

/// Loads the weights `source` names into `model`: fetches them (see
/// [`crate::fetch`]; `endpoint` else `HF_ENDPOINT` else the Hugging Face
/// hub), reads safetensors or a PyTorch checkpoint, renames the detected
/// layout to torchvision names and sets every model tensor. A missing,
/// unexpected or misshapen tensor is an error naming it (and both shapes);
/// so are known weights of bottleneck nets loaded into a model with the
/// other stride placement. On error the model is left unchanged.
pub fn load_pretrained(
    model: &ResNet,
    source: &WeightsSource,
    endpoint: Option<&str>,
) -> Result<LoadedWeights> {
    let options = HubOptions {
        endpoint: endpoint.map(str::to_string),
        cache_dir: None,
    };
    load_pretrained_with(model, source, &options)
}

/// Like [`load_pretrained`], with the server and the cache folder given by `options`.
pub fn load_pretrained_with(
    model: &ResNet,
    source: &WeightsSource,
    options: &HubOptions,
) -> Result<LoadedWeights> {
    let registry_entry = registry::find_source(source);
    if let Some(entry) = registry_entry {
        let spec = model.spec();
        if spec.block == BlockKind::Bottleneck && spec.stride_placement != entry.stride_placement {
            return Err(HubError::StridePlacement {
                name: entry.name,
                expected: entry.stride_placement,
                found: spec.stride_placement,
            });
        }
    }
    let path = fetch_with(source, options)?;
    let tensors = read_tensors(&path)?;
    let layout = detect_layout(tensors.keys().map(String::as_str));
    let source_name = source.to_string();
    let tensors = to_torchvision(tensors, layout, &source_name)?;
    model.load_tensors(&tensors, &source_name)?;
    Ok(LoadedWeights {
        path,
        layout,
        registry_entry,
    })
}
