//! The eval-mode op: a per-channel affine map and its backward pass, on the
//! CPU and (with the `cuda` feature) on NVIDIA GPUs.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{cpu, Dims};
use crate::activation::relu_grad;
use crate::args::f32_data;
use crate::OpsError;

/// Runs [`ChannelAffine`] (followed by a ReLU in the same pass if `relu`) on
/// f32 CPU or CUDA tensors.
pub(super) fn run(
    dims: Dims,
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    relu: bool,
) -> Result<Tensor, OpsError> {
    Ok(x.contiguous()?.apply_op3(
        &scale.contiguous()?,
        &shift.contiguous()?,
        ChannelAffine { dims, relu },
    )?)
}

/// `(x, scale, shift) -> x * scale + shift` per channel, or its `max(., 0)`
/// with `relu`.
struct ChannelAffine {
    dims: Dims,
    relu: bool,
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let x = f32_data(self.name(), xs, xl, xl.dims())?;
        let scale = f32_data(self.name(), ss, sl, &[d.c])?;
        let shift = f32_data(self.name(), bs, bl, &[d.c])?;
        Ok((
            CpuStorage::F32(cpu::affine(d, x, scale, shift, self.relu)),
            xl.shape().clone(),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let args = [(xs, xl), (ss, sl), (bs, bl)];
        let y = cuda::channel_affine(self.name(), self.dims, args, self.relu)?;
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = if self.relu {
            relu_grad(dy, y)?
        } else {
            dy.contiguous()?
        };
        let dx = if x.track_op() {
            let scale_only = ChannelAffine {
                dims: self.dims,
                relu: false,
            };
            Some(dy.apply_op3_no_bwd(scale, &shift.zeros_like()?, &scale_only)?)
        } else {
            None
        };
        let grads = if !(scale.track_op() || shift.track_op()) {
            None
        } else if x.device().is_cpu() {
            Some(x.apply_op2_no_bwd(&dy, &ChannelAffineParamGrads(self.dims))?)
        } else {
            // Elsewhere (CUDA) the two sums are candle's reductions.
            let dscale = (&dy * x)?.sum((0, 2, 3))?;
            Some(Tensor::stack(&[dscale, dy.sum((0, 2, 3))?], 0)?)
        };
        let row = |param: &Tensor, i: usize| match &grads {
            Some(grads) if param.track_op() => grads.get(i).map(Some),
            _ => Ok(None),
        };
        Ok((dx, row(scale, 0)?, row(shift, 1)?))
    }
}

/// `(x, dy) -> [[sum(dy * x)], [sum(dy)]]` per channel (`[2, C]`): the
/// gradients of [`ChannelAffine`]'s `scale` and `shift`.
struct ChannelAffineParamGrads(Dims);

impl CustomOp2 for ChannelAffineParamGrads {
    fn name(&self) -> &'static str {
        "channel-affine-param-grads"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.0;
        let x = f32_data(self.name(), xs, xl, xl.dims())?;
        let dy = f32_data(self.name(), dys, dyl, xl.dims())?;
        Ok((
            CpuStorage::F32(cpu::affine_param_grads(d, x, dy)),
            Shape::from((2, d.c)),
        ))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::{CudaStorage, Result};

    use super::Dims;
    use crate::args::cuda_view;
    use crate::cuda::{launch, Arg, ELEMENTWISE};

    /// `x * scale + shift` per channel (then `max(., 0)` if `relu`) for
    /// `[x, scale, shift]`: the kernel takes those, the output, the plane
    /// size, `C` and the ReLU flag.
    pub(super) fn channel_affine(
        op: &'static str,
        d: Dims,
        [(xs, xl), (ss, sl), (bs, bl)]: [Arg; 3],
        relu: bool,
    ) -> Result<CudaStorage> {
        let inputs = [
            cuda_view::<f32>(op, xs, xl, xl.dims())?,
            cuda_view::<f32>(op, ss, sl, &[d.c])?,
            cuda_view::<f32>(op, bs, bl, &[d.c])?,
        ];
        let params = [d.plane as u32, d.c as u32, u32::from(relu)];
        let count = xl.shape().elem_count();
        let kernel = (&ELEMENTWISE, "channel_affine_f32");
        launch(op, &xs.device, kernel, &inputs, &params, count)
    }
}
