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

pub use running::{update_running_stat, update_running_stats, RunningUpdate};

use std::num::NonZeroUsize;

use candle_core::Tensor;

use crate::dispatch::{has_cuda_kernel, has_kernel, has_own_kernel, CudaKernel};
use crate::format::{through_nchw, Format};
use crate::OpsError;

const OP: &str = "batch_norm";

/// The sizes of an NCHW tensor as the kernels see it: `n` images of `c`
/// planes of `plane = H*W` values, normalised in groups of `group` images
/// (`n` for the whole batch; the last group may be smaller), and the format
/// of the ops' buffers (the saved-statistics ops also take NHWC,
/// `[n, H, W, c]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    n: usize,
    c: usize,
    plane: usize,
    group: usize,
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
            group: n,
            format: Format::Nchw,
        })
    }

    /// These dims normalised in groups of `group` images (the whole batch
    /// if `group` is at least `n`).
    fn in_groups(self, group: usize) -> Self {
        Self {
            group: group.clamp(1, self.n.max(1)),
            ..self
        }
    }

    /// The groups: the range of each one's values in an image-major buffer
    /// (NCHW or NHWC) and its dims as a batch of its own.
    fn groups(&self) -> impl Iterator<Item = (std::ops::Range<usize>, Dims)> + '_ {
        let image = self.c * self.plane;
        (0..self.n).step_by(self.group.max(1)).map(move |start| {
            let n = self.group.min(self.n - start);
            let part = Dims {
                n,
                group: n,
                ..*self
            };
            (start * image..(start + n) * image, part)
        })
    }

    /// The number of groups.
    fn group_count(&self) -> usize {
        self.n.div_ceil(self.group.max(1))
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

/// What [`batch_norm_train`] and [`GroupedBatchNorm`] return.
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// The normalised, scaled and shifted input, `[N, C, H, W]`.
    pub y: Tensor,
    /// The batch mean of each channel, `[C]` (`[G, C]` from
    /// [`GroupedBatchNorm`]: a row per group), detached from the graph.
    pub mean: Tensor,
    /// The biased batch variance of each channel (divided by the values per
    /// channel), `[C]` (`[G, C]` from [`GroupedBatchNorm`]), detached from
    /// the graph.
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
/// ops. A channels-last `x` gives a channels-last `y` (cuDNN's NHWC batch
/// norm on CUDA; the same op on transposed values on the CPU). A non-4-d
/// input is an [`OpsError::BadShape`], parameters that are not `[C]` or an
/// input with no values per channel an [`OpsError::Incompatible`].
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    whole_batch(train(x, weight, bias, eps, After::Nothing, None)?)
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
    whole_batch(train(x, weight, bias, eps, After::Relu, None)?)
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
    whole_batch(train(x, weight, bias, eps, After::AddRelu(residual), None)?)
}

/// Training-mode batch norm that normalises each group of `group` images of
/// the batch on its own, as if it were a batch of its own (the last group
/// may be smaller): the paper's per-GPU batch norm on one device. One op
/// runs all the groups, forward and backward, with the kernels of
/// [`batch_norm_train`], and the statistics are a row per group (`[G, C]`).
/// The weight and bias gradients are summed over the groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupedBatchNorm {
    /// Images per group.
    pub group: NonZeroUsize,
    /// Added to the variance, as in [`batch_norm_train`].
    pub eps: f64,
}

impl GroupedBatchNorm {
    /// [`batch_norm_train`] by groups.
    pub fn train(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<BatchNormOutput, OpsError> {
        train(x, weight, bias, self.eps, After::Nothing, Some(self.group))
    }

    /// [`batch_norm_relu_train`] by groups.
    pub fn train_relu(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<BatchNormOutput, OpsError> {
        train(x, weight, bias, self.eps, After::Relu, Some(self.group))
    }

    /// [`batch_norm_add_relu_train`] by groups.
    pub fn train_add_relu(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        residual: &Tensor,
    ) -> Result<BatchNormOutput, OpsError> {
        let after = After::AddRelu(residual);
        train(x, weight, bias, self.eps, after, Some(self.group))
    }
}

/// What follows a training-mode batch norm.
#[derive(Clone, Copy)]
enum After<'a> {
    Nothing,
    Relu,
    /// The residual join with this tensor, then a ReLU.
    AddRelu(&'a Tensor),
}

impl After<'_> {
    /// `self` applied to a batch norm's output `y`, by this crate's
    /// element-wise kernels.
    fn apply(self, out: BatchNormOutput) -> Result<BatchNormOutput, OpsError> {
        let y = match self {
            After::Nothing => return Ok(out),
            After::Relu => crate::relu(&out.y)?,
            After::AddRelu(residual) => crate::add_relu(&out.y, residual)?,
        };
        Ok(BatchNormOutput { y, ..out })
    }
}

/// `out` of one group, its statistics `[C]`.
fn whole_batch(out: BatchNormOutput) -> Result<BatchNormOutput, OpsError> {
    Ok(BatchNormOutput {
        mean: out.mean.squeeze(0)?,
        var: out.var.squeeze(0)?,
        y: out.y,
    })
}

/// Training-mode batch norm in groups of `group` images (the whole batch if
/// None), then `after`; statistics `[G, C]`.
fn train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    after: After,
    group: Option<NonZeroUsize>,
) -> Result<BatchNormOutput, OpsError> {
    let dims = Dims::new(x, &[("weight", weight), ("bias", bias)])?;
    if dims.per_channel() == 0 {
        return Err(OpsError::Incompatible {
            op: OP,
            detail: format!("input {:?} has no values per channel", x.dims()),
        });
    }
    if let After::AddRelu(residual) = after {
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
    }
    let dims = dims.in_groups(group.map_or(dims.n, NonZeroUsize::get));
    if Format::of(x) == Format::Nhwc {
        return after.apply(channels_last_train(dims, x, weight, bias, eps)?);
    }
    let on_cpu = |ts: &[&Tensor]| ts.iter().all(|t| has_kernel(t.device(), t.dtype()));
    match after {
        After::AddRelu(residual) if on_cpu(&[x, weight, bias, residual]) => {
            train::run_add_relu(dims, x, [weight, bias, residual], eps)
        }
        After::Nothing | After::Relu if on_cpu(&[x, weight, bias]) => {
            train::run(dims, x, weight, bias, eps, matches!(after, After::Relu))
        }
        _ => after.apply(unfused_train(dims, x, weight, bias, eps)?),
    }
}

/// Training-mode batch norm of a channels-last `x`, its output
/// channels-last: the saved-statistics op on the NHWC view where it has a
/// body for the tensors (cuDNN's NHWC batch norm on CUDA, the CPU kernels on
/// transposed values on the CPU, so that the CPU runs what CUDA runs), the
/// NCHW path on a copy elsewhere.
fn channels_last_train(
    dims: Dims,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    if [x, weight, bias].iter().all(|t| saved_form_runs(t)) {
        let nhwc = Dims {
            format: Format::Nhwc,
            ..dims
        };
        return saved::train(nhwc, x, weight, bias, eps);
    }
    let group = NonZeroUsize::new(dims.group);
    let out = train(&x.contiguous()?, weight, bias, eps, After::Nothing, group)?;
    Ok(BatchNormOutput {
        y: crate::to_channels_last(&out.y)?,
        ..out
    })
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
/// CUDA when built with it, candle's ops otherwise (a group at a time).
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
    let (mut ys, mut means, mut vars) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..dims.n).step_by(dims.group) {
        let part = x.narrow(0, start, dims.group.min(dims.n - start))?;
        let out = composed::train(&part, weight, bias, eps)?;
        ys.push(out.y);
        means.push(out.mean);
        vars.push(out.var);
    }
    Ok(BatchNormOutput {
        y: Tensor::cat(&ys, 0)?,
        mean: Tensor::stack(&means, 0)?,
        var: Tensor::stack(&vars, 0)?,
    })
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
        .all(|t| has_own_kernel(CudaKernel::Elementwise, t.device(), t.dtype()))
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
