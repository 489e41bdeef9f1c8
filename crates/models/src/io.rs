//! Saving and loading model tensors as safetensors, by torchvision name.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::{ModelError, ResNet};

/// Suffix of a PyTorch BN counter that has no use here; such entries are ignored.
const IGNORED_SUFFIX: &str = "num_batches_tracked";

impl ResNet {
    /// Every tensor (parameters and running statistics) by name, as saved.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        self.named_vars()
            .into_iter()
            .map(|v| (v.name, v.var.as_tensor().detach()))
            .collect()
    }

    /// Writes every tensor to a safetensors file, atomically: a temporary
    /// file beside `path` is written first and then renamed over it.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&self.state_tensors(), &tmp).map_err(|source| {
            ModelError::Safetensors {
                path: tmp.clone(),
                source,
            }
        })?;
        std::fs::rename(&tmp, path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Loads a safetensors file written by [`ResNet::save`] or by torchvision.
    pub fn load(&self, path: &Path) -> Result<(), ModelError> {
        let tensors =
            candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|source| {
                ModelError::Safetensors {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        self.load_tensors(&tensors, &path.display().to_string())
    }

    /// Sets every model tensor from `tensors`, checking first that each one
    /// is present with the right shape and that nothing is left over (BN
    /// `num_batches_tracked` counters are ignored); `source_name` names the
    /// origin in errors. On error the model is left unchanged.
    pub fn load_tensors(
        &self,
        tensors: &HashMap<String, Tensor>,
        source_name: &str,
    ) -> Result<(), ModelError> {
        let vars = self.named_vars();
        let mut updates = Vec::with_capacity(vars.len());
        for v in &vars {
            let expected = v.var.dims().to_vec();
            let t = tensors
                .get(&v.name)
                .ok_or_else(|| ModelError::MissingTensor {
                    source_name: source_name.to_string(),
                    name: v.name.clone(),
                    expected: expected.clone(),
                })?;
            if t.dims() != expected.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    source_name: source_name.to_string(),
                    name: v.name.clone(),
                    expected,
                    found: t.dims().to_vec(),
                });
            }
            updates.push((&v.var, t));
        }
        let known: HashSet<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        let mut extra: Vec<_> = tensors
            .iter()
            .filter(|(name, _)| !name.ends_with(IGNORED_SUFFIX) && !known.contains(name.as_str()))
            .collect();
        extra.sort_by(|a, b| a.0.cmp(b.0));
        if let Some((name, t)) = extra.first() {
            return Err(ModelError::UnexpectedTensor {
                source_name: source_name.to_string(),
                name: name.to_string(),
                found: t.dims().to_vec(),
            });
        }
        for (var, t) in updates {
            var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
        }
        Ok(())
    }
}
