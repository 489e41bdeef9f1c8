//! Errors of the tensor-ops crate.

/// Everything that can go wrong when choosing a device or running an op.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A `--device` string that is not `cpu`, `cuda[:N]` or `metal[:N]`.
    #[error("invalid device `{spec}`: expected `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N`")]
    InvalidDevice {
        /// The string that was given.
        spec: String,
    },
    /// The device exists as a name but could not be opened (not compiled in,
    /// no GPU, a driver too old, ...), with what to do about it where the
    /// error is one a user can act on.
    #[error("cannot open device `{spec}`{}", hint.map(|h| format!(": {h}")).unwrap_or_default())]
    Unavailable {
        /// The device that was asked for.
        spec: String,
        /// What to do, if known.
        hint: Option<&'static str>,
        /// What candle reported (boxed: the errors that hold this one stay
        /// small).
        source: Box<candle_core::Error>,
    },
    /// A shared library that opening an NVIDIA GPU loads is not on the
    /// loader's path.
    #[error("cannot open device `{spec}`: {file} ({from}) was not found; {hint}")]
    CudaLibraryMissing {
        /// The device that was asked for.
        spec: String,
        /// The library file, e.g. `libcudnn.so.9`.
        file: &'static str,
        /// What ships it.
        from: &'static str,
        /// How to make it found.
        hint: &'static str,
    },
    /// An environment variable that this crate reads holds a value it does
    /// not take.
    #[error("environment variable {variable}={value:?}: {detail}")]
    BadSetting {
        /// The variable, e.g. `RESNET_CUDA_KERNELS`.
        variable: &'static str,
        /// The value it holds.
        value: String,
        /// What is wrong and what it takes.
        detail: String,
    },
    /// An op got a tensor of a rank or shape it does not handle.
    #[error("{op}: expected {expected}, got shape {got:?}")]
    BadShape {
        /// The op that refused the tensor.
        op: &'static str,
        /// What the op expects.
        expected: &'static str,
        /// The shape it was given.
        got: Vec<usize>,
    },
    /// Tensors or parameters of an op that do not fit together, such as a
    /// convolution weight whose channel count differs from its input's.
    #[error("{op}: {detail}")]
    Incompatible {
        /// The op that refused its arguments.
        op: &'static str,
        /// What does not fit, naming the shapes and parameters involved.
        detail: String,
    },
    /// An error from candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Checks that `t` has the shape and dtype of `like`; otherwise an
/// [`OpsError::Incompatible`] for `op` naming both, as `the <what> is <dtype>
/// <dims>, the <like_what> <dtype> <dims>`.
pub(crate) fn expect_like(
    op: &'static str,
    (what, t): (&str, &candle_core::Tensor),
    (like_what, like): (&str, &candle_core::Tensor),
) -> Result<(), OpsError> {
    if t.shape() == like.shape() && t.dtype() == like.dtype() {
        return Ok(());
    }
    Err(OpsError::Incompatible {
        op,
        detail: format!(
            "the {what} is {:?} {:?}, the {like_what} {:?} {:?}",
            t.dtype(),
            t.dims(),
            like.dtype(),
            like.dims()
        ),
    })
}
