//! The one error type of this crate.

use std::path::PathBuf;

use resnet_data::DataError;
use resnet_models::ModelError;

/// Everything that can go wrong while saving, finding, loading or evaluating weights.
///
/// Every variant names the file, tensor or value concerned, on one line.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A weights path that is neither a file nor a folder.
    #[error("{path}: no such weights file or run folder")]
    NotFound {
        /// The path that was given.
        path: PathBuf,
    },

    /// A run folder without its final weights.
    #[error(
        "run folder {dir} has no model.safetensors yet (it is written at the end of a run); \
         pass a checkpoint file from the folder instead{}",
        checkpoint_list(found)
    )]
    NoModelFile {
        /// The run folder.
        dir: PathBuf,
        /// The `.safetensors` files the folder holds, sorted.
        found: Vec<String>,
    },

    /// Reading, writing or renaming a file failed.
    #[error("{action} {path}: {error}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },

    /// A `normalization.*` tensor that is missing, misshapen, unknown or invalid.
    #[error("normalization tensor `{name}` {problem}")]
    Normalization {
        /// The tensor's full name.
        name: String,
        /// What is wrong with it, and what was expected.
        problem: String,
    },

    /// Two tensors of a weights file map to the same model tensor after renaming.
    #[error("{path}: tensors `{first}` and `{second}` both map to `{name}`")]
    DuplicateTensor {
        /// The weights file.
        path: PathBuf,
        /// One name in the file.
        first: String,
        /// The other name in the file.
        second: String,
        /// The model tensor both map to.
        name: String,
    },

    /// An error about the contents of a file, prefixed with the file's path.
    #[error("{path}: {error}")]
    InFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong in it.
        error: Box<EvalError>,
    },

    /// Logits and labels whose shapes do not fit together.
    #[error(
        "logits of shape {logits:?} and labels of shape {labels:?}: expected [N, classes] and [N]"
    )]
    BatchShape {
        /// Shape of the logits.
        logits: Vec<usize>,
        /// Shape of the labels.
        labels: Vec<usize>,
    },

    /// A label that is not a class index of the logits.
    #[error("label {label} at index {index} is not a class of {classes}-way logits")]
    BadLabel {
        /// The label found.
        label: u32,
        /// Its index in the batch.
        index: usize,
        /// The number of classes.
        classes: usize,
    },

    /// An evaluation given no model.
    #[error("an evaluation needs at least one model")]
    NoModels,

    /// Models of an ensemble that output different numbers of classes.
    #[error(
        "model {index} of the ensemble ({arch}) outputs {found} classes but model 0 outputs \
         {expected}: every model must output the same classes"
    )]
    ClassCounts {
        /// The model's position in the ensemble.
        index: usize,
        /// Its architecture id.
        arch: String,
        /// Its number of classes.
        found: usize,
        /// The number of classes of the first model.
        expected: usize,
    },

    /// An image whose label is not a class the models output.
    #[error("{path}: label {label} is not one of the model's {classes} classes (0..{classes})")]
    LabelOutOfRange {
        /// The image file.
        path: PathBuf,
        /// Its label.
        label: u32,
        /// The number of classes the models output.
        classes: usize,
    },

    /// Evaluation on a split without images.
    #[error("cannot evaluate on an empty split (0 images)")]
    EmptySplit,

    /// An error of the models crate (names the file and tensor when loading).
    #[error(transparent)]
    Model(#[from] ModelError),

    /// An error of the data crate.
    #[error(transparent)]
    Data(#[from] DataError),

    /// An error from a tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `" (it holds a.safetensors, b.safetensors)"`, or nothing for no file.
fn checkpoint_list(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (it holds {})", found.join(", "))
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, EvalError>;
