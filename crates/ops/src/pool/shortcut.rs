//! The paper's option-A shortcut as one pass each way, on the CPU (parallel
//! over output planes) and on CUDA (`kernels/pool.cu`): every `stride`-th
//! row and column of the input, with zero channels added before and after.
//!
//! Composed from candle's ops it is a strided view, its copy and two
//! concatenations with tensors of zeros, each a kernel launch on a GPU, and
//! as many again backward; here it is one gather forward and one backward.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::args::f32_data;
use crate::buffer::filled_by;

/// The shortcut's parameters and the sizes they give an input.
#[derive(Debug, Clone, Copy)]
pub(super) struct PadSubsample {
    /// Rows and columns kept: every `stride`-th, from the first.
    pub(super) stride: usize,
    /// Zero channels before the input's channels...
    pub(super) pad_before: usize,
    /// ...and after them.
    pub(super) pad_after: usize,
}

/// The input and output sizes of one application.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    ho: usize,
    wo: usize,
}

impl Sizes {
    fn output_dims(&self) -> [usize; 4] {
        [self.n, self.co, self.ho, self.wo]
    }

    /// The sizes the CUDA kernels take, in their order (`kernels/pool.cu`:
    /// `c, h, w, co, ho, wo, pad_before, stride`); a size past `u32` is an
    /// error naming it.
    #[cfg(any(test, feature = "cuda"))]
    fn kernel_params(&self, op: &PadSubsample) -> candle_core::Result<[u32; 8]> {
        let values = [
            self.c,
            self.h,
            self.w,
            self.co,
            self.ho,
            self.wo,
            op.pad_before,
            op.stride,
        ];
        let mut params = [0u32; 8];
        for (p, v) in params.iter_mut().zip(values) {
            *p = u32::try_from(v).map_err(|_| {
                candle_core::Error::Msg(format!("pad_subsample: size {v} exceeds 2^32"))
            })?;
        }
        Ok(params)
    }
}

impl PadSubsample {
    fn sizes(&self, layout: &Layout) -> candle_core::Result<Sizes> {
        let &[n, c, h, w] = layout.dims() else {
            candle_core::bail!("pad_subsample: expected NCHW, got {:?}", layout.dims());
        };
        if self.stride == 0 {
            candle_core::bail!("pad_subsample: the stride must be at least 1");
        }
        Ok(Sizes {
            n,
            c,
            h,
            w,
            co: c + self.pad_before + self.pad_after,
            ho: h.div_ceil(self.stride),
            wo: w.div_ceil(self.stride),
        })
    }
}

impl CustomOp1 for PadSubsample {
    fn name(&self) -> &'static str {
        "pad_subsample"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = self.sizes(l)?;
        let x = f32_data(self.name(), s, l, l.dims())?;
        let shape = Shape::from(z.output_dims().to_vec());
        if shape.elem_count() == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        let stride = self.stride;
        let fill = |y: &mut [MaybeUninit<f32>]| {
            y.par_chunks_mut(z.ho * z.wo)
                .enumerate()
                .for_each(|(plane, out)| {
                    let (image, channel) = (plane / z.co, plane % z.co);
                    let Some(source) = channel.checked_sub(self.pad_before).filter(|&c| c < z.c)
                    else {
                        out.fill(MaybeUninit::new(0.0));
                        return;
                    };
                    let input = &x[(image * z.c + source) * z.h * z.w..][..z.h * z.w];
                    for (oy, row) in out.chunks_exact_mut(z.wo).enumerate() {
                        let from = &input[oy * stride * z.w..];
                        for (ox, v) in row.iter_mut().enumerate() {
                            v.write(from[ox * stride]);
                        }
                    }
                })
        };
        // SAFETY: one chunk per output plane, each written in full (zeros, or
        // one value per row and column).
        let y = unsafe { filled_by(shape.elem_count(), fill) };
        Ok((CpuStorage::F32(y), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let z = self.sizes(l)?;
        let x = crate::args::cuda_view::<f32>(self.name(), s, l, l.dims())?;
        let y = crate::cuda::launch(
            self.name(),
            &s.device,
            (&crate::cuda::POOL, "pad_subsample_f32"),
            &[x],
            &z.kernel_params(self)?,
            z.n * z.co * z.ho * z.wo,
        )?;
        Ok((y, Shape::from(z.output_dims().to_vec())))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &dy.contiguous()?,
            &PadSubsampleGrad(*self),
        )?))
    }
}

/// The input gradient `(x, dy) -> dx`: each kept position's output
/// gradient, zero elsewhere (`x` only gives the sizes).
struct PadSubsampleGrad(PadSubsample);

impl CustomOp2 for PadSubsampleGrad {
    fn name(&self) -> &'static str {
        "pad_subsample_grad"
    }

    fn cpu_fwd(
        &self,
        _sx: &CpuStorage,
        lx: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = self.0.sizes(lx)?;
        let dy = f32_data(self.name(), sd, ld, &z.output_dims())?;
        if lx.shape().elem_count() == 0 {
            return Ok((CpuStorage::F32(Vec::new()), lx.shape().clone()));
        }
        let stride = self.0.stride;
        let fill = |dx: &mut [MaybeUninit<f32>]| {
            dx.par_chunks_mut(z.h * z.w)
                .enumerate()
                .for_each(|(plane, dx)| {
                    let (image, channel) = (plane / z.c, plane % z.c);
                    let from = (image * z.co + channel + self.0.pad_before) * z.ho * z.wo;
                    let grad = &dy[from..][..z.ho * z.wo];
                    for (iy, row) in dx.chunks_exact_mut(z.w).enumerate() {
                        if iy % stride != 0 {
                            row.fill(MaybeUninit::new(0.0));
                            continue;
                        }
                        let g = &grad[iy / stride * z.wo..];
                        for (ix, v) in row.iter_mut().enumerate() {
                            v.write(if ix % stride == 0 {
                                g[ix / stride]
                            } else {
                                0.0
                            });
                        }
                    }
                })
        };
        // SAFETY: one chunk per input plane, every value of which is written.
        let dx = unsafe { filled_by(z.n * z.c * z.h * z.w, fill) };
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
        let z = self.0.sizes(lx)?;
        let dy = crate::args::cuda_view::<f32>(self.name(), sd, ld, &z.output_dims())?;
        let dx = crate::cuda::launch(
            self.name(),
            &sd.device,
            (&crate::cuda::POOL, "pad_subsample_grad_f32"),
            &[dy],
            &z.kernel_params(&self.0)?,
            z.n * z.c * z.h * z.w,
        )?;
        Ok((dx, lx.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Layout;

    use super::PadSubsample;

    /// The CUDA kernels' arguments are packed here, on every build: the
    /// order they take and the refusal of sizes they cannot index.
    #[test]
    fn kernel_parameters_are_the_sizes_in_the_kernels_order() {
        let op = PadSubsample {
            stride: 2,
            pad_before: 3,
            pad_after: 5,
        };
        let sizes = op.sizes(&Layout::contiguous((2, 4, 7, 6))).unwrap();
        assert_eq!(sizes.kernel_params(&op).unwrap(), [4, 7, 6, 12, 4, 3, 3, 2]);
        let huge = PadSubsample {
            pad_after: 1 << 33,
            ..op
        };
        let sizes = huge.sizes(&Layout::contiguous((2, 4, 7, 6))).unwrap();
        let err = sizes.kernel_params(&huge).unwrap_err().to_string();
        assert!(err.contains("8589934599"), "{err}");
    }
}
