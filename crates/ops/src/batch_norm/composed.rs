//! Batch norm composed from candle's own ops: the fallback on devices and
//! dtypes without a kernel here, and the reference the kernels are tested
//! against. Candle's autograd differentiates it on every backend.

use candle_core::Tensor;

use super::BatchNormOutput;
use crate::OpsError;

/// `t` (`[C]`) viewed as `[1, C, 1, 1]`, to broadcast over an NCHW tensor.
fn per_channel(t: &Tensor) -> Result<Tensor, OpsError> {
    Ok(t.reshape((1, t.elem_count(), 1, 1))?)
}

/// Folds the normalisation into one affine map per channel:
/// `scale = weight / sqrt(var + eps)`, `shift = bias - mean * scale`, all
/// tensors of the same shape.
pub(super) fn fold(
    weight: &Tensor,
    bias: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor), OpsError> {
    let scale = weight.div(&(var + eps)?.sqrt()?)?;
    let shift = bias.sub(&mean.mul(&scale)?)?;
    Ok((scale, shift))
}

/// `x * scale + shift` with `scale` and `shift` `[C]`.
pub(super) fn affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor, OpsError> {
    Ok(x.broadcast_mul(&per_channel(scale)?)?
        .broadcast_add(&per_channel(shift)?)?)
}

/// Training mode: normalise with the batch statistics over `(N, H, W)`.
pub(super) fn train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    let mean = x.mean_keepdim((0, 2, 3))?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
    let (mean, var) = (mean.flatten_all()?, var.flatten_all()?);
    let (scale, shift) = fold(weight, bias, &mean, &var, eps)?;
    Ok(BatchNormOutput {
        y: affine(x, &scale, &shift)?,
        mean: mean.detach(),
        var: var.detach(),
    })
}
