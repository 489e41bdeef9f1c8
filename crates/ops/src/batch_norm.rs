//! Batch normalisation over NCHW tensors with fast CPU kernels.
//!
//! Composed from candle's ops, a training-mode batch norm runs a dozen strided
//! reductions and broadcasts forward and backward, on one core, with a
//! temporary tensor each. [`batch_norm_train`] instead runs one custom op per
//! pass: the forward computes the batch statistics and the output together,
//! the backward computes all three gradients from `x` and the saved
//! statistics; both are parallel over channels. [`batch_norm_eval`] is a
//! per-channel affine map, parallel over planes. [`batch_norm_relu_train`]
//! and [`batch_norm_relu_eval`] apply the ReLU that follows a batch norm in
//! the same passes; [`batch_norm_add_relu_train`] the residual join and the
//! ReLU that end a block. Sums are accumulated in f64
//! in a fixed order, so results are bit-identical whatever the number of
//! threads. With the `cudnn` feature, [`batch_norm_train`] on f32 CUDA
//! tensors runs cuDNN's batch norm forward and backward (`batch_norm/saved.rs`,
//! whose CPU body lets the CPU tests cover everything but the launch).
//! On devices or dtypes without a kernel here both fall back to the composed
//! candle implementation; a Metal kernel is added by implementing `metal_fwd`
//! on the ops and extending [`has_kernel`].

mod composed;
mod cpu;
#[cfg(feature = "cudnn")]
mod cudnn;
mod eval;
mod running;
mod saved;
#[cfg(test)]
mod tests;
mod train;

pub use running::update_running_stat;

use candle_core::Tensor;

use crate::dispatch::{has_cuda_kernel, has_kernel, has_native_kernel, CudaKernel};
use crate::format::{through_nchw, Format};
use crate::OpsError;

const OP: &str = "batch_norm";

/// The sizes of an NCHW tensor as the kernels see it: `n` images of `c`
/// planes of `plane = H*W` values, and the format of the ops' buffers (the
/// saved-statistics ops also take NHWC, `[n, H, W, c]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    n: usize,
    c: usize,
    plane: usize,
    format: Format,
}

impl Dims {
    /// Checks that `x` is 4-d and every `(name, tensor)` of `params` is `[C]`.
    fn new(x: &Tensor, params: &[(&str, &Tensor)]) -> Result<Self, OpsError> {
        let &[n, c, h, w] = x.dims() else {
            return Err(OpsError::BadShape {
                op: OP,
                expected: "a 4-d NCHW input",
                got: x.dims().to_vec(),
            });
        };
        for (name, t) in params {
            if t.dims() != [c] {
                return Err(OpsError::Incompatible {
                    op: OP,
                    detail: format!(
                        "{name} has shape {:?} but input {:?} has {c} channels",
                        t.dims(),
                        x.dims()
                    ),
                });
            }
        }
        Ok(Self {
            n,
            c,
            plane: h * w,
            format: Format::Nchw,
        })
    }

    /// The NCHW dims of the values, a plane as one row: `[n, c, plane, 1]`.
    fn nchw(&self) -> [usize; 4] {
        [self.n, self.c, self.plane, 1]
    }

    /// Values per channel, `N*H*W`.
    fn per_channel(&self) -> usize {
        self.n * self.plane
    }
}

/// What [`batch_norm_train`] returns.
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// The normalised, scaled and shifted input, `[N, C, H, W]`.
    pub y: Tensor,
    /// The batch mean of each channel, `[C]`, detached from the graph.
    pub mean: Tensor,
    /// The biased batch variance of each channel (divided by `N*H*W`), `[C]`,
    /// detached from the graph.
    pub var: Tensor,
}

/// Training-mode batch norm of an NCHW input `x` with per-channel `weight`
/// and `bias` (`[C]`): `y = (x - mean) / sqrt(var + eps) * weight + bias`,
/// where `mean` and the biased `var` are the statistics of each channel over
/// `(N, H, W)`, returned alongside `y` (detached, for the running averages).
///
/// `y` is differentiable with respect to `x`, `weight` and `bias` (not to
/// second order on the CPU kernel). f32 tensors on the CPU run this crate's
/// kernels, f32 tensors on CUDA cuDNN's batch norm when built with the `cudnn`
/// feature; everything else runs the same computation composed from candle's
/// ops. A non-4-d input is an [`OpsError::BadShape`], parameters that are not
/// `[C]` or an input with no values per channel an [`OpsError::Incompatible`].
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    train(x, weight, bias, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU: `y = max(bn(x), 0)`, with the
/// same statistics and errors.
///
/// On the CPU kernel the ReLU costs no pass of its own: the forward writes
/// `max(bn(x), 0)` directly, and the backward recomputes the normalised
/// value from `x` to mask the gradient while it reads it anyway. Elsewhere it
/// is [`batch_norm_train`] then [`crate::relu`].
pub fn batch_norm_relu_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    train(x, weight, bias, eps, true)
}

/// [`batch_norm_train`], plus `residual` (the shape of `x`), then a ReLU:
/// `y = max(bn(x) + residual, 0)`, the end of a residual block, with the
/// same statistics and errors, and an [`OpsError::Incompatible`] naming both
/// shapes if `residual`'s is not `x`'s.
///
/// On the CPU kernel this is one pass that never writes `bn(x)` out: the
/// block keeps one activation fewer alive for its backward pass than
/// [`batch_norm_train`] then [`crate::add_relu`], which is what runs
/// elsewhere.
pub fn batch_norm_add_relu_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    if residual.dims() != x.dims() {
        return Err(OpsError::Incompatible {
            op: OP,
            detail: format!(
                "residual has shape {:?} but input has {:?}",
                residual.dims(),
                x.dims()
            ),
        });
    }
    let dims = Dims::new(x, &[("weight", weight), ("bias", bias)])?;
    if dims.per_channel() > 0
        && Format::of(x) == Format::Nchw
        && [x, weight, bias, residual]
            .iter()
            .all(|t| has_kernel(t.device(), t.dtype()))
    {
        return train::run_add_relu(dims, x, [weight, bias, residual], eps);
    }
    let out = train(x, weight, bias, eps, false)?;
    Ok(BatchNormOutput {
        y: crate::add_relu(&out.y, residual)?,
        ..out
    })
}

/// Training-mode batch norm, followed by a ReLU if `relu`.
fn train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOutput, OpsError> {
    let dims = Dims::new(x, &[("weight", weight), ("bias", bias)])?;
    if dims.per_channel() == 0 {
        return Err(OpsError::Incompatible {
            op: OP,
            detail: format!("input {:?} has no values per channel", x.dims()),
        });
    }
    if Format::of(x) == Format::Nhwc {
        return channels_last_train(dims, x, weight, bias, eps, relu);
    }
    if [x, weight, bias]
        .iter()
        .all(|t| has_kernel(t.device(), t.dtype()))
    {
        return train::run(dims, x, weight, bias, eps, relu);
    }
    let out = unfused_train(dims, x, weight, bias, eps)?;
    if relu {
        Ok(BatchNormOutput {
            y: crate::relu(&out.y)?,
            ..out
        })
    } else {
        Ok(out)
    }
}

/// Training-mode batch norm of a channels-last `x`, followed by a ReLU if
/// `relu`, its output channels-last: the saved-statistics op on the NHWC
/// view where it has a body for the tensors (cuDNN's NHWC batch norm on
/// CUDA, the CPU kernels on transposed values on the CPU, so that the CPU
/// runs what CUDA runs), the NCHW path on a copy elsewhere.
fn channels_last_train(
    dims: Dims,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOutput, OpsError> {
    let out = if [x, weight, bias].iter().all(|t| saved_form_runs(t)) {
        let nhwc = Dims {
            format: Format::Nhwc,
            ..dims
        };
        saved::train(nhwc, x, weight, bias, eps)?
    } else {
        let out = train(&x.contiguous()?, weight, bias, eps, false)?;
        BatchNormOutput {
            y: crate::to_channels_last(&out.y)?,
            ..out
        }
    };
    if relu {
        Ok(BatchNormOutput {
            y: crate::relu(&out.y)?,
            ..out
        })
    } else {
        Ok(out)
    }
}

/// Whether the saved-statistics ops have a body for `t`: the CPU kernels,
/// or cuDNN's batch norm.
fn saved_form_runs(t: &Tensor) -> bool {
    has_kernel(t.device(), t.dtype()) || cudnn_runs(t)
}

/// Whether cuDNN's batch norm runs `t`: built with the `cudnn` feature, on
/// CUDA, of a dtype it takes.
fn cudnn_runs(t: &Tensor) -> bool {
    has_cuda_kernel(CudaKernel::BatchNorm, t.device(), t.dtype())
}

/// Training-mode batch norm where this crate has no CPU kernel: cuDNN's on
/// CUDA when built with it, candle's ops otherwise.
fn unfused_train(
    dims: Dims,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    if [x, weight, bias].iter().all(|t| cudnn_runs(t)) {
        return saved::train(dims, x, weight, bias, eps);
    }
    composed::train(x, weight, bias, eps)
}

/// Eval-mode batch norm of an NCHW input `x`: `y = (x - running_mean) /
/// sqrt(running_var + eps) * weight + bias`, all four parameters `[C]`.
///
/// Computed as one affine map per channel, `x * scale + shift`, with `scale`
/// and `shift` folded from the parameters by candle's ops; `y` is
/// differentiable with respect to `x`, `weight` and `bias`. f32 tensors on
/// the CPU or CUDA run this crate's kernel, everything else candle's
/// broadcasts.
/// Shapes that do not fit are errors as for [`batch_norm_train`].
pub fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor, OpsError> {
    through_nchw(x, |x| {
        eval(x, [weight, bias, running_mean, running_var], eps, false)
    })
}

/// [`batch_norm_eval`] followed by a ReLU, `max(bn(x), 0)`, in the same
/// pass of this crate's kernel on the CPU or CUDA (its backward masks the
/// gradient by the output); elsewhere [`batch_norm_eval`] then
/// [`crate::relu`].
pub fn batch_norm_relu_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor, OpsError> {
    through_nchw(x, |x| {
        eval(x, [weight, bias, running_mean, running_var], eps, true)
    })
}

/// Eval-mode batch norm, followed by a ReLU if `relu`.
fn eval(
    x: &Tensor,
    [weight, bias, running_mean, running_var]: [&Tensor; 4],
    eps: f64,
    relu: bool,
) -> Result<Tensor, OpsError> {
    let dims = Dims::new(
        x,
        &[
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    let (scale, shift) = composed::fold(weight, bias, running_mean, running_var, eps)?;
    if [x, &scale, &shift]
        .iter()
        .all(|t| has_native_kernel(t.device(), t.dtype()))
    {
        return eval::run(dims, x, &scale, &shift, relu);
    }
    let y = composed::affine(x, &scale, &shift)?;
    if relu {
        crate::relu(&y)
    } else {
        Ok(y)
    }
}
