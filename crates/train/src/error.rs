//! The error type of this crate.

use std::path::PathBuf;

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

    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error("training diverged: loss is {loss} at iteration {iteration}; the last good checkpoint is kept")]
    NonFiniteLoss {
        /// The iteration (1-based step count) whose loss was not finite.
        iteration: u64,
        /// The loss value.
        loss: f64,
    },

    /// The GPU had no memory left for a training step or an evaluation.
    #[error(
        "{device} ran out of memory training {arch} with batches of {batch_size}; \
         try a smaller --batch-size (the driver said: {detail})"
    )]
    OutOfMemory {
        /// The device, as configured.
        device: String,
        /// The architecture id.
        arch: String,
        /// Images per step.
        batch_size: usize,
        /// The error as the driver reported it.
        detail: String,
    },

    /// A new run was asked for in a folder that already holds one.
    #[error("{path} already holds a run (config.json exists); resume it or choose another folder")]
    RunExists {
        /// The run folder.
        path: PathBuf,
    },

    /// Another process trains in the run folder (it holds the folder's lock).
    #[error(
        "{path} is in use by another trainer ({}); wait for it to end or stop it first",
        match pid { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_string() }
    )]
    RunInUse {
        /// The run folder.
        path: PathBuf,
        /// The process holding the lock, as it wrote it into the lock file.
        pid: Option<u32>,
    },

    /// The run was asked to stop (a signal) and saved a checkpoint first.
    #[error("stopped on request after iteration {iteration}; checkpoint saved in {path}, resume the run to continue")]
    Stopped {
        /// The run folder.
        path: PathBuf,
        /// Steps done, and saved in the checkpoint.
        iteration: u64,
    },

    /// No checkpoint of a run reads: the latest and the one before it.
    #[error("{path}: no checkpoint can be resumed from: {failures}")]
    NoReadableCheckpoint {
        /// The run folder.
        path: PathBuf,
        /// Each checkpoint's failure, the latest first, joined by `; `.
        failures: String,
    },

    /// Resuming a folder that holds no run.
    #[error("{path} holds no run to resume (no config.json)")]
    NoRun {
        /// The folder given.
        path: PathBuf,
    },

    /// An image folder has more classes than the network has outputs.
    #[error("{path} has {classes} classes but {arch} has {outputs} outputs")]
    TooManyClasses {
        /// The training folder.
        path: PathBuf,
        /// Its number of classes (class folders).
        classes: usize,
        /// The architecture id.
        arch: String,
        /// Outputs of its classifier.
        outputs: usize,
    },

    /// A validation folder whose class folders are not the training folder's.
    #[error(
        "validation folder {val} does not have the classes of training folder {train}: {detail}; \
         expected the same class folders, or a flat folder with a label file (val_labels)"
    )]
    ValClassesDiffer {
        /// The training folder.
        train: PathBuf,
        /// The validation folder.
        val: PathBuf,
        /// The first class that differs.
        detail: String,
    },

    /// The training loader ended, which an endless loader never should.
    #[error("the training data loader stopped unexpectedly")]
    LoaderStopped,

    /// A file of the run folder could not be read or written.
    #[error("{path}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A JSON file of the run folder is malformed.
    #[error("{path}: {message}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },

    /// A checkpoint's tensors file could not be read or written.
    #[error("{path}")]
    Tensors {
        /// The file concerned.
        path: PathBuf,
        /// What candle reported.
        source: candle_core::Error,
    },

    /// A checkpoint's tensors file is not the one that was written.
    #[error("{path}: MD5 {found} differs from the {expected} written with the checkpoint: the file was damaged after it was written")]
    ChecksumMismatch {
        /// The tensors file.
        path: std::path::PathBuf,
        /// The MD5 recorded in the checkpoint's state.
        expected: String,
        /// The MD5 of the file as it is.
        found: String,
    },

    /// Building or loading the model failed.
    #[error(transparent)]
    Model(#[from] resnet_models::ModelError),

    /// Reading or preparing the data failed.
    #[error(transparent)]
    Data(#[from] resnet_data::DataError),

    /// Evaluating or saving weights failed.
    #[error(transparent)]
    Eval(#[from] resnet_eval::EvalError),

    /// The device could not be opened.
    #[error(transparent)]
    Device(#[from] resnet_ops::OpsError),

    /// A collective between the ranks of a data-parallel run failed.
    #[error(transparent)]
    Collective(#[from] crate::collective::CollectiveError),

    /// Another rank of a data-parallel run failed; its own error says why.
    #[error("rank {rank} failed {during}, so this rank stops too (rank {rank}'s error says why)")]
    RankFailed {
        /// The lowest rank that failed.
        rank: usize,
        /// Where: while setting up the run, or at which iteration.
        during: String,
    },

    /// The ranks of a data-parallel run resumed at different iterations
    /// (they read different run folders).
    #[error("the ranks resumed at different iterations (this rank at {iteration}); every rank must read the same run folder")]
    RanksDisagree {
        /// The iteration this rank resumed at.
        iteration: u64,
    },

    /// A parameter got no gradient in a data-parallel step.
    #[error("parameter `{0}` got no gradient, so the ranks cannot sum its gradients")]
    NoGradient(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
