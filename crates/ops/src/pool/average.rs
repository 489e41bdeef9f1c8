//! Global average pooling, `(N, C, H, W) -> (N, C)`, as one pass each way
//! on the CPU (parallel over planes) and on CUDA (`kernels/pool.cu`).
//!
//! Both sum each plane in order and divide by its size, so they give the
//! same values; the backward pass spreads each gradient evenly over its
//! plane. candle's `mean` over the two spatial dimensions is two reductions
//! and two scalings forward, and a broadcast and its copy backward.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::args::f32_data;
use crate::buffer::filled_by;

/// The forward pool.
pub(super) struct GlobalAvgPool;

/// The `(planes, plane size)` of an NCHW input, as the CUDA kernels take
/// them.
fn planes(op: &'static str, layout: &Layout) -> candle_core::Result<(usize, usize)> {
    let &[n, c, h, w] = layout.dims() else {
        candle_core::bail!("{op}: expected NCHW, got {:?}", layout.dims());
    };
    Ok((n * c, h * w))
}

/// The plane size `len` as the CUDA kernels take it, a `u32`; larger planes
/// are an error naming `op`.
#[cfg(any(test, feature = "cuda"))]
fn kernel_len(op: &'static str, len: usize) -> candle_core::Result<u32> {
    u32::try_from(len).map_err(|_| candle_core::Error::Msg(format!("{op}: planes of {len} values")))
}

/// The mean of `len` values that sum to `sum`, as the CUDA kernels take it.
fn mean(sum: f32, len: usize) -> f32 {
    sum / len as f32
}

impl CustomOp1 for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "global_avg_pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (count, len) = planes(self.name(), l)?;
        let x = f32_data(self.name(), s, l, l.dims())?;
        let means: Vec<f32> = if len == 0 {
            vec![f32::NAN; count]
        } else {
            x.par_chunks(len)
                .map(|plane| mean(plane.iter().fold(0.0, |acc, v| acc + v), len))
                .collect()
        };
        let dims = l.dims();
        Ok((CpuStorage::F32(means), Shape::from((dims[0], dims[1]))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (count, len) = planes(self.name(), l)?;
        let x = crate::args::cuda_view::<f32>(self.name(), s, l, l.dims())?;
        let y = cuda::run(self.name(), "global_avg_pool_f32", s, x, count, len)?;
        let dims = l.dims();
        Ok((y, Shape::from((dims[0], dims[1]))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &GlobalAvgPoolGrad)?,
        ))
    }
}

/// The input gradient `(x, dy) -> dx`, `dx = dy / (H W)` over each plane
/// (`x` only gives the shape).
struct GlobalAvgPoolGrad;

impl CustomOp2 for GlobalAvgPoolGrad {
    fn name(&self) -> &'static str {
        "global_avg_pool_grad"
    }

    fn cpu_fwd(
        &self,
        _sx: &CpuStorage,
        lx: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (count, len) = planes(self.name(), lx)?;
        let dims = lx.dims();
        let dy = f32_data(self.name(), sd, ld, &dims[..2])?;
        if count * len == 0 {
            return Ok((CpuStorage::F32(Vec::new()), lx.shape().clone()));
        }
        let fill = |dx: &mut [MaybeUninit<f32>]| {
            dx.par_chunks_mut(len).zip(dy).for_each(|(plane, &g)| {
                plane.fill(MaybeUninit::new(mean(g, len)));
            })
        };
        // SAFETY: one chunk per plane, each filled.
        let dx = unsafe { filled_by(count * len, fill) };
        Ok((CpuStorage::F32(dx), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _sx: &candle_core::CudaStorage,
        lx: &Layout,
        sd: &candle_core::CudaStorage,
        ld: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (count, len) = planes(self.name(), lx)?;
        let dims = lx.dims();
        let dy = crate::args::cuda_view::<f32>(self.name(), sd, ld, &dims[..2])?;
        let name = "global_avg_pool_grad_f32";
        let dx = cuda::run(self.name(), name, sd, dy, count * len, len)?;
        Ok((dx, lx.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::CudaView;
    use candle_core::{CudaStorage, Result};

    use crate::cuda::{launch, POOL};

    /// Runs the pool kernel `name` on `input` (on `on`'s device) with one
    /// thread for each of the `count` values it writes, for planes of `len`
    /// values.
    pub(super) fn run(
        op: &'static str,
        name: &str,
        on: &CudaStorage,
        input: CudaView<f32>,
        count: usize,
        len: usize,
    ) -> Result<CudaStorage> {
        let len = super::kernel_len(op, len)?;
        launch(op, &on.device, (&POOL, name), &[input], &[len], count)
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_len;

    /// The CUDA kernels' plane size is checked on every build, not only
    /// where a GPU runs them.
    #[test]
    fn kernel_plane_sizes_fit_u32_or_are_refused() {
        assert_eq!(kernel_len("global_avg_pool", 49).unwrap(), 49);
        let err = kernel_len("global_avg_pool", 1 << 32)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("global_avg_pool: planes of 4294967296 values"),
            "{err}"
        );
    }
}
