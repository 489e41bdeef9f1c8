//! The training-mode ops: the forward pass, which records the batch
//! statistics, and its backward pass; and the forward pass that adds a
//! residual block's shortcut and applies its ReLU in the same pass.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::cpu::{self, Moments, Then};
use super::{BatchNormOutput, Dims};
use crate::args::f32_data;
use crate::OpsError;

/// Runs [`BatchNormTrain`] (followed by a ReLU in the same kernel if `relu`)
/// on contiguous f32 CPU tensors and reads back the statistics it recorded.
pub(super) fn run(
    dims: Dims,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOutput, OpsError> {
    let moments = Arc::new(OnceLock::new());
    let op = BatchNormTrain {
        dims,
        eps,
        relu,
        moments: Arc::clone(&moments),
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    with_statistics(dims, x, y, &moments)
}

/// Runs [`BatchNormAddReluTrain`]: `max(bn(x) + residual, 0)` in one pass,
/// on contiguous f32 CPU tensors, and reads back the statistics it recorded.
pub(super) fn run_add_relu(
    dims: Dims,
    x: &Tensor,
    [weight, bias, residual]: [&Tensor; 3],
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    let moments = Arc::new(OnceLock::new());
    let op = BatchNormAddReluTrain {
        dims,
        eps,
        moments: Arc::clone(&moments),
    };
    // The op has three inputs: the weight and bias go in as one `[2C]`
    // tensor, whose gradient candle splits back between them.
    let params = Tensor::cat(&[weight, bias], 0)?;
    let y = x
        .contiguous()?
        .apply_op3(&params, &residual.contiguous()?, op)?;
    with_statistics(dims, x, y, &moments)
}

/// `y` with the batch statistics its op recorded, as `[C]` f32 tensors.
fn with_statistics(
    dims: Dims,
    x: &Tensor,
    y: Tensor,
    moments: &OnceLock<Moments>,
) -> Result<BatchNormOutput, OpsError> {
    let moments = moments.get().ok_or_else(|| {
        candle_core::Error::Msg("batch-norm-train: the forward pass recorded no statistics".into())
    })?;
    let channel = |values: &[f64]| {
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        Tensor::from_vec(values, dims.c, x.device())
    };
    Ok(BatchNormOutput {
        y,
        mean: channel(&moments.mean)?,
        var: channel(&moments.var)?,
    })
}

/// The training forward `(x, weight, bias) -> y`, or `max(y, 0)` with
/// `relu`; it stores the batch statistics in `moments`, shared with [`run`]
/// and the backward pass.
struct BatchNormTrain {
    dims: Dims,
    eps: f64,
    relu: bool,
    moments: Arc<OnceLock<Moments>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let x = f32_data(self.name(), xs, xl, xl.dims())?;
        let weight = f32_data(self.name(), ws, wl, &[d.c])?;
        let bias = f32_data(self.name(), bs, bl, &[d.c])?;
        let then = if self.relu { Then::Relu } else { Then::Nothing };
        let (y, moments) = cpu::train_forward(d, x, weight, bias, self.eps, then);
        if self.moments.set(moments).is_err() {
            candle_core::bail!("{}: the op ran twice", self.name());
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(moments) = self.moments.get() else {
            candle_core::bail!("{}: backward before forward", self.name());
        };
        let grad = BatchNormGrad {
            dims: self.dims,
            eps: self.eps,
            moments,
            relu_bias: if self.relu {
                Some(bias.to_vec1::<f32>()?)
            } else {
                None
            },
        };
        let packed = x.apply_op3_no_bwd(&dy.contiguous()?, weight, &grad)?;
        let (len, c) = (x.elem_count(), self.dims.c);
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dweight = packed.narrow(0, len, c)?;
        let dbias = packed.narrow(0, len + c, c)?;
        Ok((
            x.track_op().then_some(dx),
            weight.track_op().then_some(dweight),
            bias.track_op().then_some(dbias),
        ))
    }
}

/// The training forward `(x, [weight; bias], residual) -> max(bn(x) +
/// residual, 0)`: the last batch norm of a residual block, the join and the
/// block's ReLU, without writing `bn(x)` out (which the join would keep
/// alive until the backward pass). It stores the batch statistics in
/// `moments`, shared with [`run_add_relu`] and the backward pass.
struct BatchNormAddReluTrain {
    dims: Dims,
    eps: f64,
    moments: Arc<OnceLock<Moments>>,
}

impl CustomOp3 for BatchNormAddReluTrain {
    fn name(&self) -> &'static str {
        "batch-norm-add-relu-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let x = f32_data(self.name(), xs, xl, xl.dims())?;
        let params = f32_data(self.name(), ps, pl, &[2 * d.c])?;
        let residual = f32_data(self.name(), rs, rl, xl.dims())?;
        let (weight, bias) = params.split_at(d.c);
        let then = Then::AddRelu(residual);
        let (y, moments) = cpu::train_forward(d, x, weight, bias, self.eps, then);
        if self.moments.set(moments).is_err() {
            candle_core::bail!("{}: the op ran twice", self.name());
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// The output's ReLU passes `dy` where the output is positive: that
    /// gradient is the shortcut's, and the batch norm's output gradient.
    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        residual: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(moments) = self.moments.get() else {
            candle_core::bail!("{}: backward before forward", self.name());
        };
        let c = self.dims.c;
        let dy = crate::activation::relu_grad(dy, y)?;
        let grad = BatchNormGrad {
            dims: self.dims,
            eps: self.eps,
            moments,
            relu_bias: None,
        };
        let weight = params.narrow(0, 0, c)?;
        let packed = x.apply_op3_no_bwd(&dy, &weight, &grad)?;
        let len = x.elem_count();
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dparams = packed.narrow(0, len, 2 * c)?;
        Ok((
            x.track_op().then_some(dx),
            params.track_op().then_some(dparams),
            residual.track_op().then_some(dy),
        ))
    }
}

/// The backward pass `(x, dy, weight) -> [dx, dweight, dbias]` of
/// [`BatchNormTrain`] and [`BatchNormAddReluTrain`], packed into one flat tensor of `N*C*H*W + 2*C` values;
/// `relu_bias` holds the forward's bias when it applied a ReLU.
struct BatchNormGrad<'a> {
    dims: Dims,
    eps: f64,
    moments: &'a Moments,
    relu_bias: Option<Vec<f32>>,
}

impl CustomOp3 for BatchNormGrad<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-train-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let x = f32_data(self.name(), xs, xl, xl.dims())?;
        let dy = f32_data(self.name(), dys, dyl, xl.dims())?;
        let weight = f32_data(self.name(), ws, wl, &[d.c])?;
        let packed = cpu::train_backward(
            d,
            x,
            dy,
            weight,
            self.moments,
            self.eps,
            self.relu_bias.as_deref(),
        );
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
