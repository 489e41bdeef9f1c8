//! The error type of this crate.

use candle_core::Shape;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Two parameters handed to the optimizer have the same name.
    #[error("duplicate parameter name `{0}`")]
    DuplicateParameter(String),

    /// A saved optimizer state lacks the tensor of a parameter.
    #[error("optimizer state has no tensor `{name}` (expected shape {expected:?})")]
    MissingState {
        /// Name of the missing state tensor.
        name: String,
        /// Shape the tensor should have had (the parameter's shape).
        expected: Shape,
    },

    /// A saved optimizer state has a tensor that matches no parameter.
    #[error(
        "optimizer state has unexpected tensor `{name}` (shape {found:?}) matching no parameter"
    )]
    UnexpectedState {
        /// Name of the extra state tensor.
        name: String,
        /// Shape of the extra tensor.
        found: Shape,
    },

    /// A saved optimizer state tensor has the wrong shape.
    #[error("optimizer state tensor `{name}` has shape {found:?}, expected {expected:?}")]
    StateShapeMismatch {
        /// Name of the state tensor.
        name: String,
        /// Shape the tensor should have had (the parameter's shape).
        expected: Shape,
        /// Shape the tensor has.
        found: Shape,
    },

    /// A saved optimizer state tensor has the wrong dtype.
    #[error("optimizer state tensor `{name}` has dtype {found:?}, expected {expected:?}")]
    StateDTypeMismatch {
        /// Name of the state tensor.
        name: String,
        /// The parameter's dtype.
        expected: candle_core::DType,
        /// The dtype of the saved tensor.
        found: candle_core::DType,
    },

    /// A saved scheduler state does not fit the scheduler's configuration.
    #[error("scheduler state does not match its configuration: {0}")]
    SchedulerStateMismatch(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
