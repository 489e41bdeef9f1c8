//! Checkpoints: everything needed to continue a run bit for bit.
//!
//! The tensors (weights, BN running statistics, SGD momentum, input
//! normalization) go into one safetensors file; the rest of the state
//! (iteration, loader position, scheduler state, recent training errors)
//! into `checkpoint.json`, which names the tensors file and is written last:
//! it is the commit point, so a kill at any moment leaves the previous
//! checkpoint intact.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use resnet_data::LoaderPosition;
use serde::{Deserialize, Serialize};

use crate::run_dir::{
    checkpoint_tensors_name, read_json, save_tensors, write_json, CHECKPOINT_FILE,
};
use crate::{Result, SchedulerState, TrainError};

/// The non-tensor state of a checkpoint (`checkpoint.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// SGD steps done.
    pub iteration: u64,
    /// Where the training loader continues (the data position and so the
    /// random stream of the augmentation, which derives from it and the seed).
    pub loader: LoaderPosition,
    /// The learning-rate scheduler's state.
    pub scheduler: SchedulerState,
    /// Top-1 errors of the most recent batches (the warm-up's window).
    pub recent_errors: Vec<f64>,
    /// Seconds of training so far.
    pub wall_time: f64,
    /// The learning rate of the last step (Caffe's update form rescales the
    /// momentum when the next one differs); absent in older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lr: Option<f64>,
    /// File name, in the run folder, of the checkpoint's tensors.
    pub tensors: String,
}

/// Writes a checkpoint atomically and removes the one it supersedes.
///
/// `normalization_tensors` store the input normalisation (the
/// `normalization.*` tensors of `resnet_eval`'s weights format).
pub fn save_checkpoint(
    run_dir: &Path,
    mut state: CheckpointState,
    model_tensors: HashMap<String, Tensor>,
    optimizer_tensors: HashMap<String, Tensor>,
    normalization_tensors: HashMap<String, Tensor>,
) -> Result<()> {
    let previous = read_checkpoint(run_dir)?.map(|s| s.tensors);
    state.tensors = checkpoint_tensors_name(state.iteration);
    let mut tensors = model_tensors;
    tensors.extend(optimizer_tensors);
    tensors.extend(normalization_tensors);
    save_tensors(&run_dir.join(&state.tensors), &tensors)?;
    write_json(&run_dir.join(CHECKPOINT_FILE), &state)?;
    if let Some(old) = previous.filter(|old| *old != state.tensors) {
        // The new checkpoint is committed; the old tensors are garbage now.
        let _ = std::fs::remove_file(run_dir.join(old));
    }
    Ok(())
}

/// The latest checkpoint's state, or `None` if the run has none yet.
pub fn read_checkpoint(run_dir: &Path) -> Result<Option<CheckpointState>> {
    let path = run_dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
}

/// Loads the tensors of a checkpoint (on the CPU; callers move them).
pub fn load_checkpoint_tensors(
    run_dir: &Path,
    state: &CheckpointState,
) -> Result<HashMap<String, Tensor>> {
    let path = run_dir.join(&state.tensors);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| TrainError::Tensors { path, source: e })
}
