//! The 3x3, stride-2, padding-1 max pool as one pass forward and one pass
//! backward, on the CPU (parallel over planes) and on CUDA
//! (`kernels/pool.cu`).
//!
//! Composed from candle's ops, this pool (padding, strided views, two
//! element-wise maxima per dimension) took about 0.8 s forward and backward
//! on the 16 x 64 x 112 x 112 output of a ResNet-18 stem on two cores, more
//! than the rest of the training step. Here the backward pass gives each
//! output's gradient to the first maximum of its window in row-major order
//! (a NaN counts as the maximum), as PyTorch does; it finds that position
//! again from the input rather than keeping indices.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::args::f32_data;
use crate::buffer::filled_by;

/// The output size of the pool along a dimension of `n` inputs.
fn pooled(n: usize) -> usize {
    (n - 1) / 2 + 1
}

/// The sizes of the pool's input and output planes.
#[derive(Debug, Clone, Copy)]
struct Planes {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl Planes {
    fn of(layout: &Layout) -> candle_core::Result<(usize, Planes)> {
        let &[n, c, h, w] = layout.dims() else {
            candle_core::bail!("max_pool_3x3_s2: expected NCHW, got {:?}", layout.dims());
        };
        let (ho, wo) = (pooled(h), pooled(w));
        Ok((n * c, Planes { h, w, ho, wo }))
    }

    /// The offset in its plane of the first maximum of output `(oy, ox)`'s
    /// window.
    fn arg_max(&self, plane: &[f32], oy: usize, ox: usize) -> usize {
        let (y0, x0) = ((2 * oy).saturating_sub(1), (2 * ox).saturating_sub(1));
        let (y1, x1) = ((2 * oy + 2).min(self.h), (2 * ox + 2).min(self.w));
        if y1 - y0 == 3 && x1 - x0 == 3 {
            // A whole window: fixed bounds, which the compiler unrolls.
            return first_max(plane, self.w, y0 * self.w + x0, 3, 3);
        }
        first_max(plane, self.w, y0 * self.w + x0, y1 - y0, x1 - x0)
    }
}

/// The offset of the first maximum (a NaN counting as the maximum), in
/// row-major order, of the `rows x cols` block at `start` of a plane `w`
/// wide.
#[inline(always)]
fn first_max(plane: &[f32], w: usize, start: usize, rows: usize, cols: usize) -> usize {
    let mut best = (plane[start], start);
    for r in 0..rows {
        for c in 0..cols {
            let at = start + r * w + c;
            let v = plane[at];
            if v > best.0 || v.is_nan() {
                best = (v, at);
            }
        }
    }
    best.1
}

/// The forward pool.
pub(super) struct MaxPool;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool_3x3_s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (planes, p) = Planes::of(l)?;
        let x = f32_data(self.name(), s, l, l.dims())?;
        let fill = |out: &mut [MaybeUninit<f32>]| {
            out.par_chunks_mut(p.ho * p.wo)
                .zip(x.par_chunks(p.h * p.w))
                .for_each(|(out, plane)| {
                    for oy in 0..p.ho {
                        for ox in 0..p.wo {
                            out[oy * p.wo + ox].write(plane[p.arg_max(plane, oy, ox)]);
                        }
                    }
                });
        };
        // SAFETY: the output has one chunk of `ho * wo` values per plane and
        // each value of each chunk is written once.
        let y = unsafe { filled_by(planes * p.ho * p.wo, fill) };
        let dims = l.dims();
        Ok((
            CpuStorage::F32(y),
            Shape::from((dims[0], dims[1], p.ho, p.wo)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (planes, p) = Planes::of(l)?;
        let dims = l.dims();
        let y = cuda::pool(self.name(), "max_pool_3x3_s2_f32", planes, p, (s, l), None)?;
        Ok((y, Shape::from((dims[0], dims[1], p.ho, p.wo))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolGrad)?))
    }
}

/// The input gradient `(x, dy) -> dx`.
struct MaxPoolGrad;

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max_pool_3x3_s2_grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (planes, p) = Planes::of(lx)?;
        let dims = lx.dims();
        let x = f32_data(self.name(), sx, lx, dims)?;
        let dy = f32_data(self.name(), sd, ld, &[dims[0], dims[1], p.ho, p.wo])?;
        let mut dx = vec![0f32; planes * p.h * p.w];
        dx.par_chunks_mut(p.h * p.w)
            .zip(x.par_chunks(p.h * p.w).zip(dy.par_chunks(p.ho * p.wo)))
            .for_each(|(dx, (plane, dy))| {
                for oy in 0..p.ho {
                    for ox in 0..p.wo {
                        dx[p.arg_max(plane, oy, ox)] += dy[oy * p.wo + ox];
                    }
                }
            });
        Ok((CpuStorage::F32(dx), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &candle_core::CudaStorage,
        lx: &Layout,
        sd: &candle_core::CudaStorage,
        ld: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (planes, p) = Planes::of(lx)?;
        let name = "max_pool_3x3_s2_grad_f32";
        let dx = cuda::pool(self.name(), name, planes, p, (sx, lx), Some((sd, ld)))?;
        Ok((dx, lx.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::{CudaStorage, Result};

    use super::Planes;
    use crate::args::cuda_f32_view;
    use crate::cuda::{launch, Arg, POOL};

    /// Runs the pool kernel `name`: the forward (`dy` None, one thread per
    /// output value) or the backward (one thread per input value). Both take
    /// the input, the output gradient for the backward, the output, then the
    /// four plane sizes.
    pub(super) fn pool(
        op: &'static str,
        name: &str,
        planes: usize,
        p: Planes,
        (xs, xl): Arg,
        dy: Option<Arg>,
    ) -> Result<CudaStorage> {
        let mut inputs = vec![cuda_f32_view(op, xs, xl, xl.dims())?];
        let pooled_dims = [xl.dims()[0], xl.dims()[1], p.ho, p.wo];
        if let Some((s, l)) = dy {
            inputs.push(cuda_f32_view(op, s, l, &pooled_dims)?);
        }
        let count = planes * if dy.is_some() { p.h * p.w } else { p.ho * p.wo };
        let sizes = [p.h, p.w, p.ho, p.wo].map(|v| v as u32);
        launch(op, &xs.device, (&POOL, name), &inputs, &sizes, count)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::test_util::{random, values};

    /// The pool composed from candle's ops, with its gradient for `dy`.
    fn composed(x: &Var, dy: &Tensor) -> (Vec<f32>, Vec<f32>) {
        let y = super::super::max3_stride2(&super::super::max3_stride2(x, 2).unwrap(), 3).unwrap();
        let grads = (&y * dy).unwrap().sum_all().unwrap().backward().unwrap();
        (values(&y), values(grads.get(x).unwrap()))
    }

    /// The kernel, with its gradient for `dy`.
    fn kernel(x: &Var, dy: &Tensor) -> (Vec<f32>, Vec<f32>) {
        let y = x.contiguous().unwrap().apply_op1(MaxPool).unwrap();
        let grads = (&y * dy).unwrap().sum_all().unwrap().backward().unwrap();
        (values(&y), values(grads.get(x).unwrap()))
    }

    #[test]
    fn kernel_matches_candle_ops_on_distinct_values() {
        // Random values do not tie, so both give each gradient to one input.
        for (i, shape) in [[1, 1, 1, 1], [2, 3, 7, 5], [1, 2, 8, 9], [3, 4, 112, 111]]
            .iter()
            .enumerate()
        {
            let x = Var::from_tensor(&random(shape, i as u64)).unwrap();
            let dy_shape = [shape[0], shape[1], pooled(shape[2]), pooled(shape[3])];
            let dy = random(&dy_shape, 100 + i as u64);
            let (want_y, want_dx) = composed(&x, &dy);
            let (got_y, got_dx) = kernel(&x, &dy);
            assert_eq!(got_y, want_y, "values {shape:?}");
            assert_eq!(got_dx, want_dx, "gradient {shape:?}");
        }
    }

    #[test]
    fn tied_maxima_give_the_gradient_to_the_first_in_row_major_order() {
        // A 3x3 input of equal values, one window per 2x2 output corner.
        let x = Var::from_vec(vec![1f32; 9], (1, 1, 3, 3), &Device::Cpu).unwrap();
        let dy = Tensor::new(&[[[[1f32, 2.], [4., 8.]]]], &Device::Cpu).unwrap();
        let (y, dx) = kernel(&x, &dy);
        assert_eq!(y, [1.0; 4]);
        // Windows (rows, cols): [0,1]x[0,1], [0,1]x[1,2], [1,2]x[0,1], [1,2]x[1,2];
        // their first elements are (0,0), (0,1), (1,0), (1,1).
        assert_eq!(dx, [1., 2., 0., 4., 8., 0., 0., 0., 0.]);
    }

    #[test]
    fn a_nan_is_the_maximum_of_its_windows() {
        let mut data = vec![0f32; 16];
        data[5] = f32::NAN;
        let x = Var::from_vec(data, (1, 1, 4, 4), &Device::Cpu).unwrap();
        let dy = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (y, dx) = kernel(&x, &dy);
        // Input (1, 1) lies in every window of a 4x4 input.
        assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
        assert_eq!(dx[5], 4.0);
        assert_eq!(dx.iter().filter(|&&g| g != 0.0).count(), 1);
    }
}
