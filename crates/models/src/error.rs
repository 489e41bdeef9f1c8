//! Errors of the models crate.

use std::path::PathBuf;

/// Everything that can go wrong when naming, building, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An architecture id that is not in the zoo.
    #[error("unknown architecture `{id}`; valid ids: {valid}")]
    UnknownArch {
        /// The id that was given.
        id: String,
        /// Every valid id, comma-separated.
        valid: String,
    },
    /// A spec value that cannot be parsed (shortcut option, stride placement).
    #[error("invalid {what} `{value}`: expected one of {expected}")]
    InvalidOption {
        /// Which option it is.
        what: &'static str,
        /// The value that was given.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// A weights file lacks a tensor the model needs.
    #[error("{source_name}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// The file or source the tensors came from.
        source_name: String,
        /// The tensor's name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A weights file holds a tensor the model does not have.
    #[error("{source_name}: unexpected tensor `{name}` with shape {found:?}; the model has no such tensor")]
    UnexpectedTensor {
        /// The file or source the tensors came from.
        source_name: String,
        /// The tensor's name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
    },
    /// A tensor whose shape differs from the model's.
    #[error("{source_name}: tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The file or source the tensors came from.
        source_name: String,
        /// The tensor's name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A safetensors file that could not be read (not one, or damaged) or
    /// written.
    #[error(
        "{path}: {}",
        if *writing { "could not be written as safetensors" } else { "not a readable safetensors file" }
    )]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// Whether it was being written (else read).
        writing: bool,
        /// What candle reported.
        source: candle_core::Error,
    },
    /// A weights file whose metadata describe another net than the one asked for.
    #[error("{path}: the weights' metadata say {field} = {in_file}, but {asked} was asked for")]
    MetadataMismatch {
        /// The weights file.
        path: PathBuf,
        /// The metadata field that differs.
        field: &'static str,
        /// Its value in the file.
        in_file: String,
        /// The value of the net asked for.
        asked: String,
    },
    /// A weights file whose metadata field cannot be read.
    #[error("{path}: metadata field `{field}`: {reason}")]
    BadMetadata {
        /// The weights file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An error from a tensor op.
    #[error(transparent)]
    Ops(#[from] resnet_ops::OpsError),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
