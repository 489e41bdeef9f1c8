//! The files of a run folder: config, metrics, checkpoints, final weights.
//!
//! ```text
//! RUN/config.json                      every hyperparameter, written at start
//! RUN/metrics.jsonl                    one MetricRecord per line
//! RUN/checkpoint.json                  the latest checkpoint's state (the commit point)
//! RUN/checkpoint-00001000.safetensors  weights + momentum + normalization of it
//! RUN/model.safetensors                final weights + normalization (resnet_eval's format)
//! RUN/summary.json                     final errors, written last
//! ```
//! Every file is written to a temporary name and renamed, so a killed run
//! never leaves a half-written file behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Result, TrainError};

/// Name of the config file.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the metrics log.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Name of the latest checkpoint's state file.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
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

/// The temporary name a file is written under before its rename.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Writes `tensors` as a safetensors file at `path` atomically (temporary file, then rename).
pub(crate) fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = temp_path(path);
    candle_core::safetensors::save(tensors, &tmp).map_err(|e| TrainError::Tensors {
        path: tmp.clone(),
        source: e,
    })?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Writes `value` as pretty JSON to `path` atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes())
}

/// Reads JSON from `path`; a missing or malformed file is an error naming it.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
