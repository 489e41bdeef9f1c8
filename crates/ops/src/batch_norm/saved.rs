//! Training-mode batch norm in the form cuDNN computes it: the forward op
//! returns the batch statistics inside its output tensor, and the backward
//! op takes them back from there.
//!
//! The forward op returns one flat tensor `[y, mean, inv_std]` (`N*C*H*W +
//! 2*C` values, see [`Packed`]): `y` is a view of it, and the batch mean and
//! inverse standard deviation are both what the backward pass reuses and what
//! [`train`] returns (the biased variance as `1 / inv_std^2 - eps`). The
//! backward op returns `[dx, dweight, dbias]` in one flat tensor.
//!
//! Only the launch is CUDA's (`cudnn.rs`, `cudnn` feature). The ops, their
//! argument checks, the packing and the backward composition are this
//! module's, and each op also has a CPU body built on the CPU kernels of
//! `cpu.rs`, so that the CPU test suite runs all of it on machines with no
//! GPU (`tests.rs`: `saved_statistics_form_matches_the_kernels`). The CPU
//! path of [`super::batch_norm_train`] uses it for channels-last inputs
//! only, as CUDA does (NHWC buffers, which the CPU bodies transpose); for
//! NCHW ones it keeps the statistics in f64 beside the op (`train.rs`).

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu::{self, Moments};
use super::{BatchNormOutput, Dims};
use crate::args::f32_data;
use crate::OpsError;

/// Runs [`Forward`] on f32 tensors: cuDNN's batch norm on CUDA, the CPU
/// kernels on the CPU.
pub(super) fn train(
    dims: Dims,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> std::result::Result<BatchNormOutput, OpsError> {
    let at = Packed::new(dims);
    let x = dims.format.arg(x)?;
    let op = Forward {
        dims,
        shape: x.dims().to_vec(),
        eps,
    };
    let packed = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let part = |range: Range<usize>| packed.narrow(0, range.start, range.len());
    let inv_std = part(at.second())?.detach();
    Ok(BatchNormOutput {
        y: dims.format.result(part(at.data())?.reshape(x.shape())?)?,
        mean: part(at.first())?.detach(),
        var: (inv_std.sqr()?.recip()? - eps)?,
    })
}

/// Where the parts of the ops' flat outputs lie: the per-value part (`y` or
/// `dx`, `N*C*H*W` values), then two per-channel parts (`mean` and `inv_std`,
/// or `dweight` and `dbias`, `C` values each).
#[derive(Debug, Clone, Copy)]
pub(super) struct Packed {
    len: usize,
    c: usize,
}

impl Packed {
    /// The layout for an input of `dims`.
    pub(super) fn new(dims: Dims) -> Self {
        Self {
            len: dims.n * dims.c * dims.plane,
            c: dims.c,
        }
    }

    /// Values in all: `N*C*H*W + 2*C`.
    pub(super) fn total(self) -> usize {
        self.len + 2 * self.c
    }

    /// The per-value part.
    pub(super) fn data(self) -> Range<usize> {
        0..self.len
    }

    /// The first per-channel part: `mean`, or `dweight`.
    pub(super) fn first(self) -> Range<usize> {
        self.len..self.len + self.c
    }

    /// The second per-channel part: `inv_std`, or `dbias`.
    pub(super) fn second(self) -> Range<usize> {
        self.len + self.c..self.total()
    }
}

/// The training forward `(x, weight, bias) -> [y, mean, inv_std]`.
struct Forward {
    dims: Dims,
    /// The dims of `x`.
    shape: Vec<usize>,
    eps: f64,
}

impl Forward {
    /// The dims of `(x, weight, bias)`, which both bodies check.
    fn arg_dims(&self) -> [Vec<usize>; 3] {
        let c = vec![self.dims.c];
        [self.shape.clone(), c.clone(), c]
    }

    /// The shape of the output: flat, [`Packed`].
    fn out_shape(&self) -> Shape {
        Shape::from(Packed::new(self.dims).total())
    }
}

impl CustomOp3 for Forward {
    fn name(&self) -> &'static str {
        "batch-norm-train-saved"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (name, [xd, wd, bd]) = (self.name(), self.arg_dims());
        let x = f32_data(name, xs, xl, &xd)?;
        let weight = f32_data(name, ws, wl, &wd)?;
        let bias = f32_data(name, bs, bl, &bd)?;
        let (d, eps) = (self.dims, self.eps);
        let x = d.format.read_nchw(x, d.nchw());
        let (y, moments) = cpu::train_forward(d, &x, weight, bias, eps, cpu::Then::Nothing);
        let mut out = d.format.write_nchw(y, d.nchw());
        out.extend(moments.mean.iter().map(|&m| m as f32));
        out.extend(
            moments
                .var
                .iter()
                .map(|&v| (1.0 / (v + self.eps).sqrt()) as f32),
        );
        Ok((CpuStorage::F32(out), self.out_shape()))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::args::cuda_view;
        let (name, [xd, wd, bd]) = (self.name(), self.arg_dims());
        let args = [
            cuda_view::<f32>(name, xs, xl, &xd)?,
            cuda_view::<f32>(name, ws, wl, &wd)?,
            cuda_view::<f32>(name, bs, bl, &bd)?,
        ];
        let out = super::cudnn::forward(&xs.device, self.dims, self.eps, args)?;
        Ok((out, self.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        packed: &Tensor,
        dpacked: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let at = Packed::new(self.dims);
        let part = |t: &Tensor, range: Range<usize>| t.narrow(0, range.start, range.len());
        // `dy` arrives as a flat part of the packed gradient: the backward op
        // takes it in `x`'s shape.
        let dy = part(dpacked, at.data())?.reshape(x.shape())?.contiguous()?;
        let stats = part(packed, at.first().start..at.total())?;
        let saved = Tensor::cat(&[weight, &stats], 0)?;
        let grad = Backward {
            dims: self.dims,
            shape: self.shape.clone(),
            eps: self.eps,
        };
        let grads = x.apply_op3_no_bwd(&dy, &saved, &grad)?;
        Ok((
            x.track_op()
                .then(|| part(&grads, at.data())?.reshape(x.shape()))
                .transpose()?,
            weight
                .track_op()
                .then(|| part(&grads, at.first()))
                .transpose()?,
            bias.track_op()
                .then(|| part(&grads, at.second()))
                .transpose()?,
        ))
    }
}

/// The backward pass `(x, dy, [weight, mean, inv_std]) -> [dx, dweight,
/// dbias]` of [`Forward`].
struct Backward {
    dims: Dims,
    /// The dims of `x` and `dy`.
    shape: Vec<usize>,
    eps: f64,
}

impl Backward {
    /// The dims of `(x, dy, saved)`, which both bodies check.
    fn arg_dims(&self) -> [Vec<usize>; 3] {
        [
            self.shape.clone(),
            self.shape.clone(),
            vec![3 * self.dims.c],
        ]
    }
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "batch-norm-train-saved-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (name, [xd, dyd, sd]) = (self.name(), self.arg_dims());
        let x = f32_data(name, xs, xl, &xd)?;
        let dy = f32_data(name, dys, dyl, &dyd)?;
        let saved = f32_data(name, ss, sl, &sd)?;
        let (weight, stats) = saved.split_at(self.dims.c);
        let (mean, inv_std) = stats.split_at(self.dims.c);
        let moments = Moments {
            mean: mean.iter().map(|&m| f64::from(m)).collect(),
            var: inv_std
                .iter()
                .map(|&s| 1.0 / (f64::from(s) * f64::from(s)) - self.eps)
                .collect(),
        };
        let (d, format) = (self.dims, self.dims.format);
        let (x, dy) = (
            format.read_nchw(x, d.nchw()),
            format.read_nchw(dy, d.nchw()),
        );
        let mut out = cpu::train_backward(d, &x, &dy, weight, &moments, self.eps, None);
        // `dx` comes first, then the per-channel parts.
        let per_channel = out.split_off(x.len());
        let mut out = format.write_nchw(out, d.nchw());
        out.extend(per_channel);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        dys: &candle_core::CudaStorage,
        dyl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::args::cuda_view;
        let (name, [xd, dyd, sd]) = (self.name(), self.arg_dims());
        let args = [
            cuda_view::<f32>(name, xs, xl, &xd)?,
            cuda_view::<f32>(name, dys, dyl, &dyd)?,
            cuda_view::<f32>(name, ss, sl, &sd)?,
        ];
        let out = super::cudnn::backward(&xs.device, self.dims, self.eps, args)?;
        Ok((out, Shape::from(Packed::new(self.dims).total())))
    }
}
