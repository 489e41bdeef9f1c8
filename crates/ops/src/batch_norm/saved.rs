//! Training-mode batch norm in the form cuDNN computes it: the forward op
//! saves the batch mean and inverse standard deviation (f32, on the op's
//! device), and the backward op reads them back.
//!
//! The forward op returns `y` alone; the statistics it saves ([`Saved`])
//! live beside the op, where the backward op (holding the same [`Saved`])
//! finds them, and [`train`] turns them into the batch mean and biased
//! variance (`1 / inv_std^2 - eps`) for the running averages with a third
//! op ([`SavedMoments`]), one launch on CUDA. The backward op returns `[dx, dweight, dbias]` in
//! one flat tensor ([`Packed`]), whose parts are views. Nothing the autograd
//! differentiates is packed: a packed forward output would cost its backward
//! pass a full-size copy of `dy` (candle pads a narrowed part's gradient with
//! zeros), on every batch norm of every step.
//!
//! Only the launch is CUDA's (`cudnn.rs`, `cudnn` feature). The ops, their
//! argument checks, the saved statistics, the packing and the backward
//! composition are this module's, and each op also has a CPU body built on
//! the CPU kernels of `cpu.rs`, so that the CPU test suite runs all of it on
//! machines with no GPU (`tests.rs`: `saved_statistics_form_matches_the_kernels`).
//! The CPU path of [`super::batch_norm_train`] uses it for channels-last inputs
//! only, as CUDA does (NHWC buffers, which the CPU bodies transpose); for
//! NCHW ones it keeps the statistics in f64 beside the op (`train.rs`).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

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
    let x = dims.format.arg(x)?;
    let saved = Saved::default();
    let op = Forward {
        dims,
        shape: x.dims().to_vec(),
        eps,
        saved: saved.clone(),
    };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let moments = x.apply_op1_no_bwd(&SavedMoments {
        dims,
        eps,
        saved,
        op: "batch-norm-train-saved",
    })?;
    let values = dims.group_count() * dims.c;
    let rows = (dims.group_count(), dims.c);
    Ok(BatchNormOutput {
        y: dims.format.result(y)?,
        mean: moments.narrow(0, 0, values)?.reshape(rows)?,
        var: moments.narrow(0, values, values)?.reshape(rows)?,
    })
}

/// The statistics a forward op saved, `[mean; inv_std]` (`2*C` f32 values)
/// for each group of images in turn, on its device; shared by the op, [`SavedMoments`] and the backward op.
#[derive(Clone, Default)]
struct Saved(Arc<OnceLock<SavedValues>>);

/// Where [`Saved`] statistics live.
enum SavedValues {
    Cpu(Vec<f32>),
    #[cfg(feature = "cudnn")]
    Cuda(candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>),
}

impl Saved {
    /// Records the forward op `op`'s statistics (an op runs once).
    fn set(&self, op: &str, values: SavedValues) -> Result<()> {
        if self.0.set(values).is_err() {
            candle_core::bail!("{op}: the op ran twice");
        }
        Ok(())
    }

    /// The statistics, for op `op`.
    fn get(&self, op: &str) -> Result<&SavedValues> {
        self.0.get().ok_or_else(|| {
            candle_core::Error::Msg(format!("{op}: no statistics saved by a forward pass"))
        })
    }

    /// The statistics on the CPU, for op `op`.
    fn cpu(&self, op: &str) -> Result<&[f32]> {
        match self.get(op)? {
            SavedValues::Cpu(values) => Ok(values),
            #[cfg(feature = "cudnn")]
            SavedValues::Cuda(_) => candle_core::bail!("{op}: the statistics are on a GPU"),
        }
    }

    /// The statistics on a GPU, for op `op`.
    #[cfg(feature = "cudnn")]
    fn cuda(&self, op: &str) -> Result<&candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>> {
        match self.get(op)? {
            SavedValues::Cuda(values) => Ok(values),
            SavedValues::Cpu(_) => candle_core::bail!("{op}: the statistics are on the CPU"),
        }
    }
}

/// Where the parts of the backward op's flat output lie: `dx` (`N*C*H*W`
/// values), then `dweight` and `dbias` (`C` values each).
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

    /// `dx`.
    pub(super) fn data(self) -> Range<usize> {
        0..self.len
    }

    /// `dweight`.
    pub(super) fn first(self) -> Range<usize> {
        self.len..self.len + self.c
    }

    /// `dbias`.
    pub(super) fn second(self) -> Range<usize> {
        self.len + self.c..self.total()
    }
}

/// The training forward `(x, weight, bias) -> y`, saving the statistics.
struct Forward {
    dims: Dims,
    /// The dims of `x` (and `y`).
    shape: Vec<usize>,
    eps: f64,
    saved: Saved,
}

impl Forward {
    /// The dims of `(x, weight, bias)`, which both bodies check.
    fn arg_dims(&self) -> [Vec<usize>; 3] {
        let c = vec![self.dims.c];
        [self.shape.clone(), c.clone(), c]
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
        let then = cpu::Then::Nothing;
        let (y, moments) = cpu::train_forward_groups(d, &x, weight, bias, eps, then);
        let mut stats = Vec::with_capacity(2 * d.c * moments.len());
        for m in &moments {
            stats.extend(m.mean.iter().map(|&m| m as f32));
            stats.extend(m.var.iter().map(|&v| (1.0 / (v + eps).sqrt()) as f32));
        }
        self.saved.set(name, SavedValues::Cpu(stats))?;
        let y = d.format.write_nchw(y, d.nchw());
        Ok((CpuStorage::F32(y), Shape::from(self.shape.clone())))
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
        let (y, stats) = super::cudnn::forward(&xs.device, self.dims, self.eps, args)?;
        self.saved.set(name, SavedValues::Cuda(stats))?;
        Ok((y, Shape::from(self.shape.clone())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let at = Packed::new(self.dims);
        let part = |t: &Tensor, range: Range<usize>| t.narrow(0, range.start, range.len());
        let grad = Backward {
            dims: self.dims,
            shape: self.shape.clone(),
            eps: self.eps,
            saved: self.saved.clone(),
        };
        let grads = x.apply_op3_no_bwd(&dy.contiguous()?, weight, &grad)?;
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

/// The batch moments `[mean; var]` (`[2*G*C]`: the means of the `G`
/// groups, then their variances) from the statistics a [`Forward`] op
/// saved, the biased variance as `1 / inv_std^2 - eps` in f32, in one pass;
/// its argument (the op's `x`) only places it on the device.
struct SavedMoments {
    dims: Dims,
    eps: f64,
    saved: Saved,
    /// The forward op, for errors.
    op: &'static str,
}

impl SavedMoments {
    /// The output's length.
    fn len(&self) -> usize {
        2 * self.dims.group_count() * self.dims.c
    }
}

impl CustomOp1 for SavedMoments {
    fn name(&self) -> &'static str {
        "batch-norm-train-saved-moments"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, eps) = (self.dims.c, self.eps as f32);
        let groups = self.saved.cpu(self.op)?.chunks(2 * c);
        let mut moments: Vec<f32> = groups.clone().flat_map(|g| &g[..c]).copied().collect();
        let inv_std = groups.flat_map(|g| &g[c..]);
        moments.extend(inv_std.map(|&s| 1.0 / (s * s) - eps));
        Ok((CpuStorage::F32(moments), Shape::from(self.len())))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{launch, ELEMENTWISE};
        let saved = self.saved.cuda(self.op)?.slice(..);
        let c = u32::try_from(self.dims.c)
            .map_err(|_| candle_core::Error::Msg(format!("{}: too many channels", self.op)))?;
        let params = [c, (self.eps as f32).to_bits()];
        let kernel = (&ELEMENTWISE, "saved_moments_f32");
        let moments = launch(
            self.name(),
            &s.device,
            kernel,
            &[saved],
            &params,
            self.len(),
        )?;
        Ok((moments, Shape::from(self.len())))
    }
}

/// The backward pass `(x, dy, weight) -> [dx, dweight, dbias]` of
/// [`Forward`], with the statistics it saved.
struct Backward {
    dims: Dims,
    /// The dims of `x` and `dy`.
    shape: Vec<usize>,
    eps: f64,
    saved: Saved,
}

impl Backward {
    /// The dims of `(x, dy, weight)`, which both bodies check.
    fn arg_dims(&self) -> [Vec<usize>; 3] {
        [self.shape.clone(), self.shape.clone(), vec![self.dims.c]]
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
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (name, [xd, dyd, wd]) = (self.name(), self.arg_dims());
        let x = f32_data(name, xs, xl, &xd)?;
        let dy = f32_data(name, dys, dyl, &dyd)?;
        let weight = f32_data(name, ws, wl, &wd)?;
        let moments: Vec<Moments> = self
            .saved
            .cpu(name)?
            .chunks(2 * self.dims.c)
            .map(|group| {
                let (mean, inv_std) = group.split_at(self.dims.c);
                Moments {
                    mean: mean.iter().map(|&m| f64::from(m)).collect(),
                    var: inv_std
                        .iter()
                        .map(|&s| 1.0 / (f64::from(s) * f64::from(s)) - self.eps)
                        .collect(),
                }
            })
            .collect();
        let (d, format) = (self.dims, self.dims.format);
        let (x, dy) = (
            format.read_nchw(x, d.nchw()),
            format.read_nchw(dy, d.nchw()),
        );
        let mut out = cpu::train_backward_groups(d, &x, &dy, weight, &moments, self.eps, None);
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
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::args::cuda_view;
        let (name, [xd, dyd, wd]) = (self.name(), self.arg_dims());
        let args = [
            cuda_view::<f32>(name, xs, xl, &xd)?,
            cuda_view::<f32>(name, dys, dyl, &dyd)?,
            cuda_view::<f32>(name, ws, wl, &wd)?,
        ];
        let stats = self.saved.cuda(name)?;
        let out = super::cudnn::backward(&xs.device, self.dims, self.eps, args, stats)?;
        Ok((out, Shape::from(Packed::new(self.dims).total())))
    }
}
