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
    let stats = Statistics::new(dims, eps);
    let op = BatchNormTrain {
        stats: stats.clone(),
        relu,
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    stats.with(x, y)
}

/// Runs [`BatchNormAddReluTrain`]: `max(bn(x) + residual, 0)` in one pass,
/// on contiguous f32 CPU tensors, and reads back the statistics it recorded.
pub(super) fn run_add_relu(
    dims: Dims,
    x: &Tensor,
    [weight, bias, residual]: [&Tensor; 3],
    eps: f64,
) -> Result<BatchNormOutput, OpsError> {
    let stats = Statistics::new(dims, eps);
    let op = BatchNormAddReluTrain {
        stats: stats.clone(),
    };
    // The op has three inputs: the weight and bias go in as one `[2C]`
    // tensor, whose gradient candle splits back between them.
    let params = Tensor::cat(&[weight, bias], 0)?;
    let y = x
        .contiguous()?
        .apply_op3(&params, &residual.contiguous()?, op)?;
    stats.with(x, y)
}

/// The batch statistics a training op records in its forward pass, shared
/// by the op, the caller that reads them back, and the backward pass.
#[derive(Clone)]
struct Statistics {
    dims: Dims,
    eps: f64,
    /// One per group of images.
    moments: Arc<OnceLock<Vec<Moments>>>,
}

impl Statistics {
    fn new(dims: Dims, eps: f64) -> Self {
        Self {
            dims,
            eps,
            moments: Arc::new(OnceLock::new()),
        }
    }

    /// The forward kernel on `x` (its layout `xl`), `then` applied, for op
    /// `op`; records the statistics (an op runs once).
    fn forward(
        &self,
        op: &str,
        (x, xl): (&[f32], &Layout),
        weight: &[f32],
        bias: &[f32],
        then: Then,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, moments) = cpu::train_forward_groups(self.dims, x, weight, bias, self.eps, then);
        if self.moments.set(moments).is_err() {
            candle_core::bail!("{op}: the op ran twice");
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// `dx` and `[dweight; dbias]` (`[2C]`) for the output gradient `dy` of
    /// the batch norm of `x` (the gradient of `max(bn(x), 0)` when
    /// `relu_bias` holds the forward's bias), for op `op`.
    fn backward(
        &self,
        op: &str,
        x: &Tensor,
        dy: &Tensor,
        weight: &Tensor,
        relu_bias: Option<Vec<f32>>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let Some(moments) = self.moments.get() else {
            candle_core::bail!("{op}: backward before forward");
        };
        let grad = BatchNormGrad {
            dims: self.dims,
            eps: self.eps,
            moments,
            relu_bias,
        };
        let packed = x.apply_op3_no_bwd(&dy.contiguous()?, weight, &grad)?;
        let len = x.elem_count();
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        Ok((dx, packed.narrow(0, len, 2 * self.dims.c)?))
    }

    /// `y` with the statistics recorded, as `[G, C]` f32 tensors (one row
    /// per group) on `x`'s device.
    fn with(&self, x: &Tensor, y: Tensor) -> Result<BatchNormOutput, OpsError> {
        let moments = self.moments.get().ok_or_else(|| {
            candle_core::Error::Msg(
                "batch-norm-train: the forward pass recorded no statistics".into(),
            )
        })?;
        let rows = |of: fn(&Moments) -> &[f64]| {
            let values: Vec<f32> = moments
                .iter()
                .flat_map(|m| of(m).iter().map(|&v| v as f32))
                .collect();
            Tensor::from_vec(values, (moments.len(), self.dims.c), x.device())
        };
        Ok(BatchNormOutput {
            y,
            mean: rows(|m| &m.mean)?,
            var: rows(|m| &m.var)?,
        })
    }
}

/// The training forward `(x, weight, bias) -> y`, or `max(y, 0)` with
/// `relu`, recording the batch statistics in `stats`.
struct BatchNormTrain {
    stats: Statistics,
    relu: bool,
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
        let c = self.stats.dims.c;
        let x = f32_data(self.name(), xs, xl, xl.dims())?;
        let weight = f32_data(self.name(), ws, wl, &[c])?;
        let bias = f32_data(self.name(), bs, bl, &[c])?;
        let then = if self.relu { Then::Relu } else { Then::Nothing };
        self.stats.forward(self.name(), (x, xl), weight, bias, then)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let relu_bias = if self.relu {
            Some(bias.to_vec1::<f32>()?)
        } else {
            None
        };
        let (dx, dparams) = self.stats.backward(self.name(), x, dy, weight, relu_bias)?;
        let c = self.stats.dims.c;
        let (dweight, dbias) = (dparams.narrow(0, 0, c)?, dparams.narrow(0, c, c)?);
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
/// alive until the backward pass). It records the batch statistics in
/// `stats`.
struct BatchNormAddReluTrain {
    stats: Statistics,
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
        let c = self.stats.dims.c;
        let x = f32_data(self.name(), xs, xl, xl.dims())?;
        let params = f32_data(self.name(), ps, pl, &[2 * c])?;
        let residual = f32_data(self.name(), rs, rl, xl.dims())?;
        let (weight, bias) = params.split_at(c);
        let then = Then::AddRelu(residual);
        self.stats.forward(self.name(), (x, xl), weight, bias, then)
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
        let dy = crate::activation::relu_grad(dy, y)?;
        let weight = params.narrow(0, 0, self.stats.dims.c)?;
        let (dx, dparams) = self.stats.backward(self.name(), x, &dy, &weight, None)?;
        Ok((
            x.track_op().then_some(dx),
            params.track_op().then_some(dparams),
            residual.track_op().then_some(dy),
        ))
    }
}

/// The backward pass `(x, dy, weight) -> [dx, dweight, dbias]` of the
/// training ops, packed into one flat tensor of `N*C*H*W + 2*C` values;
/// `relu_bias` holds the forward's bias when it applied a ReLU.
struct BatchNormGrad<'a> {
    dims: Dims,
    eps: f64,
    /// One per group of images.
    moments: &'a [Moments],
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
        let packed = cpu::train_backward_groups(
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
