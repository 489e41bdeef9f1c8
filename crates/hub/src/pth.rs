//! PyTorch checkpoints (`torch.save` zip files), read without executing pickled code.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{pickle, Tensor};

use crate::{HubError, Result};

/// Keys under which training scripts commonly nest the state dict.
const STATE_DICT_KEYS: [&str; 2] = ["state_dict", "model"];

/// Every tensor of the PyTorch checkpoint at `path`: a bare state dict, or
/// one nested under a `state_dict` or `model` key. The pickle is interpreted
/// by candle's reader, which only rebuilds tensors and never runs code.
pub fn read_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    let read_error = |reason: String| HubError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let bare = pickle::read_all(path).map_err(|e| read_error(e.to_string()))?;
    if !bare.is_empty() {
        return Ok(bare.into_iter().collect());
    }
    for key in STATE_DICT_KEYS {
        // A missing key is an error here: try the next one.
        if let Ok(nested) = pickle::read_all_with_key(path, Some(key)) {
            if !nested.is_empty() {
                return Ok(nested.into_iter().collect());
            }
        }
    }
    Err(read_error(format!(
        "no tensors found: expected a PyTorch state dict, bare or under one of the keys {}",
        STATE_DICT_KEYS.map(|k| format!("`{k}`")).join(", ")
    )))
}
