//! The files of a run folder: config, metrics, checkpoints, final weights.
//!
//! ```text
//! RUN/config.json                      every hyperparameter, written at start
//! RUN/metrics.jsonl                    one MetricRecord per line
//! RUN/run.lock                         advisory lock of the trainer writing here (its pid)
//! RUN/checkpoint.json                  the latest checkpoint's state (the commit point)
//! RUN/checkpoint.previous.json         the checkpoint before it, kept as a fallback
//! RUN/checkpoint-00001000.safetensors  weights + momentum + normalization of each
//! RUN/model.safetensors                final weights + normalization (resnet_eval's format)
//! RUN/summary.json                     final errors, written last
//! ```
//! Every file is written to a temporary name and renamed, so a killed run
//! never leaves a half-written file behind.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::path::Path;

use candle_core::Tensor;
use resnet_models::{save_safetensors, WeightsMetadata};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Result, TrainError};

/// Name of the config file.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the metrics log.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Name of the latest checkpoint's state file.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// Name of the state file of the checkpoint before the latest.
pub const PREVIOUS_CHECKPOINT_FILE: &str = "checkpoint.previous.json";
/// Name of the lock file of a run folder.
pub const LOCK_FILE: &str = "run.lock";
/// Name of the summary written when a run finishes.
pub const SUMMARY_FILE: &str = "summary.json";

/// Name of the tensors file of the checkpoint after `iteration` steps.
pub fn checkpoint_tensors_name(iteration: u64) -> String {
    format!("checkpoint-{iteration:08}.safetensors")
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `tensors`, with `metadata`, as a safetensors file at `path`
/// atomically (through the project's one writer, [`save_safetensors`]).
pub(crate) fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: &WeightsMetadata,
) -> Result<()> {
    Ok(save_safetensors(path, tensors, Some(metadata))?)
}

/// Writes `value` as pretty JSON to `path` atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(resnet_models::write_atomic(path, text.as_bytes())?)
}

/// Reads JSON from `path`; a missing or malformed file is an error naming it.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// An advisory lock on a run folder, held by the one process that trains
/// in it. The OS releases it when that process ends, however it ends, so a
/// killed run can be resumed at once.
#[derive(Debug)]
pub struct RunLock {
    /// The open, locked lock file: closing it releases the lock.
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir` (which must exist) and writes this
    /// process's id into it; a folder in use by another process is an error
    /// naming the holder's pid.
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        let path = run_dir.join(LOCK_FILE);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(TrainError::RunInUse {
                    path: run_dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(&path)(e)),
        }
        file.set_len(0).map_err(io_error(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_error(&path))?;
        Ok(RunLock { _file: file })
    }
}
