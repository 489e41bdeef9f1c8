//! Reading a weights file of either format.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::{read_pth, HubError, Result};

/// How every zip file, and so every `torch.save` checkpoint, starts.
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

/// Every tensor of the weights file at `path`, on the CPU: a PyTorch
/// checkpoint (recognised by its zip header, whatever its extension, see
/// [`read_pth`]) or else a safetensors file.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let read_error = |reason: String| HubError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| read_error(e.to_string()))?;
    let mut magic = [0u8; 4];
    let is_zip = file.read_exact(&mut magic).is_ok() && magic == ZIP_MAGIC;
    drop(file);
    if is_zip {
        return read_pth(path);
    }
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| read_error(format!("not a safetensors file or PyTorch checkpoint: {e}")))
}
