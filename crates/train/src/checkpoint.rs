//! Checkpoints: everything needed to continue a run bit for bit.
//!
//! The tensors (weights, BN running statistics, SGD momentum, input
//! normalization) go into one safetensors file; the rest of the state
//! (iteration, loader position, scheduler state, recent training errors,
//! the unlogged metric sums) into `checkpoint.json`, which names the tensors
//! file and is written last: it is the commit point, so a kill at any moment
//! leaves the previous checkpoint intact.
//!
//! The two latest checkpoints are kept: the one before the latest is
//! described by `checkpoint.previous.json`, so a latest checkpoint damaged
//! after it was written (disk, copy) still leaves one to resume from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use md5::{Digest, Md5};
use resnet_data::LoaderPosition;
use resnet_models::WeightsMetadata;
use serde::{Deserialize, Serialize};

use crate::metrics::MetricWindow;
use crate::run_dir::{
    checkpoint_tensors_name, io_error, read_json, save_tensors, write_json, CHECKPOINT_FILE,
    PREVIOUS_CHECKPOINT_FILE,
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
    /// Where checkpoints written before the scheduler kept it in its state
    /// ([`SchedulerState::recent_train_errors`]) kept the window of recent
    /// training errors: read from them, never written.
    #[serde(default, skip_serializing)]
    pub recent_errors: Vec<f64>,
    /// Seconds of training so far.
    pub wall_time: f64,
    /// The learning rate of the last step (Caffe's update form rescales the
    /// momentum when the next one differs); absent in older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lr: Option<f64>,
    /// Sums of the steps since the last metric record, so that the first
    /// record after a resume averages over the same steps as without one
    /// (zero in checkpoints written before it was kept).
    #[serde(default)]
    pub window: MetricWindow,
    /// File name, in the run folder, of the checkpoint's tensors.
    pub tensors: String,
    /// MD5 of the tensors file, checked before it is loaded, so that a file
    /// damaged after it was written (a flipped bit) is not resumed from
    /// (absent in checkpoints written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors_md5: Option<String>,
}

/// Writes a checkpoint atomically, keeps the one before it as the
/// previous checkpoint and removes the tensors of older ones.
///
/// `normalization_tensors` store the input normalisation (the
/// `normalization.*` tensors of `resnet_eval`'s weights format); `metadata`
/// describe the model, as in the run's final weights.
pub fn save_checkpoint(
    run_dir: &Path,
    mut state: CheckpointState,
    model_tensors: HashMap<String, Tensor>,
    optimizer_tensors: HashMap<String, Tensor>,
    normalization_tensors: HashMap<String, Tensor>,
    metadata: &WeightsMetadata,
) -> Result<()> {
    let latest = run_dir.join(CHECKPOINT_FILE);
    let previous = run_dir.join(PREVIOUS_CHECKPOINT_FILE);
    state.tensors = checkpoint_tensors_name(state.iteration);
    let mut tensors = model_tensors;
    tensors.extend(optimizer_tensors);
    tensors.extend(normalization_tensors);
    let tensors_path = run_dir.join(&state.tensors);
    save_tensors(&tensors_path, &tensors, metadata)?;
    let file = std::fs::File::open(&tensors_path).map_err(io_error(&tensors_path))?;
    state.tensors_md5 = Some(md5_hex(file).map_err(io_error(&tensors_path))?);
    // The latest checkpoint becomes the previous one, unless it does not read
    // (then the previous one stays). Both files are valid at every moment: a
    // kill between the two writes leaves the old latest in both.
    let kept = match read_checkpoint(&latest) {
        Ok(old) if old.tensors != state.tensors => {
            write_json(&previous, &old)?;
            Some(old.tensors)
        }
        _ => read_checkpoint(&previous).ok().map(|old| old.tensors),
    };
    write_json(&latest, &state)?;
    // Both checkpoints are committed; other tensors files are garbage now.
    for entry in std::fs::read_dir(run_dir).map_err(io_error(run_dir))? {
        let name = entry.map_err(io_error(run_dir))?.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_tensors = name.starts_with("checkpoint-") && name.ends_with(".safetensors");
        if is_tensors && name != state.tensors && Some(name) != kept.as_deref() {
            let _ = std::fs::remove_file(run_dir.join(name));
        }
    }
    Ok(())
}

/// The checkpoint files of a run folder that exist, the latest first: the
/// candidates to resume from.
pub fn checkpoint_files(run_dir: &Path) -> Vec<PathBuf> {
    [CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE]
        .iter()
        .map(|name| run_dir.join(name))
        .filter(|path| path.exists())
        .collect()
}

/// Reads a checkpoint's state from its JSON file.
pub fn read_checkpoint(path: &Path) -> Result<CheckpointState> {
    read_json(path)
}

/// Loads the tensors of a checkpoint of the run in `run_dir` (on the CPU;
/// callers move them), after checking the file's MD5 where the checkpoint
/// has one.
pub fn load_checkpoint_tensors(
    run_dir: &Path,
    state: &CheckpointState,
) -> Result<HashMap<String, Tensor>> {
    let path = run_dir.join(&state.tensors);
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    if let Some(expected) = &state.tensors_md5 {
        let found = md5_hex(bytes.as_slice()).map_err(io_error(&path))?;
        if found != *expected {
            return Err(TrainError::ChecksumMismatch {
                path,
                expected: expected.clone(),
                found,
            });
        }
    }
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| TrainError::Tensors { path, source: e })
}

/// The MD5 of everything `reader` yields, in lowercase hexadecimal; read in
/// pieces, so a large checkpoint is never held twice.
fn md5_hex(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Md5::new();
    std::io::copy(&mut reader, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
