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
//! again from the input rather than keeping indices. On the CPU both passes
//! fold each input row over its windows' columns, then the rows
//! ([`WindowMaxima`]), instead of searching each 3x3 window on its own.

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
        // Offsets within a plane are u32, on the CPU and in the CUDA kernel.
        if h.checked_mul(w).is_none_or(|len| len > u32::MAX as usize) {
            candle_core::bail!("max_pool_3x3_s2: a {h}x{w} plane has more than 2^32 values");
        }
        let (ho, wo) = (pooled(h), pooled(w));
        Ok((n * c, Planes { h, w, ho, wo }))
    }
}

/// A row of window maxima and where they are: scratch for one plane.
struct WindowMaxima {
    /// Per output column, the maximum of the rows folded so far...
    value: Vec<f32>,
    /// ...and its offset in the plane.
    at: Vec<u32>,
    /// The same for the row being folded in.
    row_value: Vec<f32>,
    row_at: Vec<u32>,
}

impl WindowMaxima {
    fn new(p: &Planes) -> Self {
        Self {
            value: vec![0.0; p.wo],
            at: vec![0; p.wo],
            row_value: vec![0.0; p.wo],
            row_at: vec![0; p.wo],
        }
    }

    /// The maximum of each window of output row `oy` of `plane`, and its
    /// offset in the plane: the first maximum in row-major order, a NaN
    /// counting as the maximum (the last NaN of a window wins), as PyTorch
    /// picks it. Each input row is folded over its window's columns, then
    /// the rows in order ([`replaces`]), which visits a window in row-major
    /// order.
    fn of_row(&mut self, p: &Planes, plane: &[f32], oy: usize) {
        let (y0, y1) = ((2 * oy).saturating_sub(1), (2 * oy + 2).min(p.h));
        for y in y0..y1 {
            let line = &plane[y * p.w..][..p.w];
            if y == y0 {
                row_maxima(line, y * p.w, &mut self.value, &mut self.at);
                continue;
            }
            row_maxima(line, y * p.w, &mut self.row_value, &mut self.row_at);
            let rows = self.row_value.iter().zip(&self.row_at);
            for ((v, at), (rv, rat)) in self.value.iter_mut().zip(&mut self.at).zip(rows) {
                if replaces(*v, *rv) {
                    (*v, *at) = (*rv, *rat);
                }
            }
        }
    }
}

/// Whether `b` replaces `a`, the value before it in row-major order, as the
/// window's maximum: when greater, or a NaN.
#[inline(always)]
fn replaces(a: f32, b: f32) -> bool {
    b > a || b.is_nan()
}

/// The maximum of each output column's 3 (at the edges 2, or 1) input
/// columns of `line`, which starts at offset `first` of its plane, into
/// `value`, and its offset into `at` (`wo` values each).
fn row_maxima(line: &[f32], first: usize, value: &mut [f32], at: &mut [u32]) {
    let w = line.len();
    // The first maximum of `line[start..end]`, as (value, offset in line).
    let edge = |start: usize, end: usize| {
        let mut best = start;
        for i in start + 1..end {
            if replaces(line[best], line[i]) {
                best = i;
            }
        }
        (line[best], first + best)
    };
    // Column 0's window lacks its left input column; columns 1..full have
    // all three (2ox-1, 2ox, 2ox+1, unrolled); an odd width leaves a last
    // column without its right one.
    let (v, a) = edge(0, w.min(2));
    (value[0], at[0]) = (v, a as u32);
    let full = value.len().min(w / 2).max(1);
    for ox in 1..full {
        let i = 2 * ox - 1;
        let (mut best, mut v) = (i, line[i]);
        if replaces(v, line[i + 1]) {
            (best, v) = (i + 1, line[i + 1]);
        }
        if replaces(v, line[i + 2]) {
            (best, v) = (i + 2, line[i + 2]);
        }
        value[ox] = v;
        at[ox] = (first + best) as u32;
    }
    if full < value.len() {
        let (v, a) = edge(2 * full - 1, w);
        (value[full], at[full]) = (v, a as u32);
    }
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
                .for_each_init(
                    || WindowMaxima::new(&p),
                    |maxima, (out, plane)| {
                        for (oy, out) in out.chunks_exact_mut(p.wo).enumerate() {
                            maxima.of_row(&p, plane, oy);
                            for (o, v) in out.iter_mut().zip(&maxima.value) {
                                o.write(*v);
                            }
                        }
                    },
                );
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
            .for_each_init(
                || WindowMaxima::new(&p),
                |maxima, (dx, (plane, dy))| {
                    for (oy, dy) in dy.chunks_exact(p.wo).enumerate() {
                        maxima.of_row(&p, plane, oy);
                        for (at, g) in maxima.at.iter().zip(dy) {
                            dx[*at as usize] += *g;
                        }
                    }
                },
            );
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
    use crate::args::cuda_view;
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
        let mut inputs = vec![cuda_view::<f32>(op, xs, xl, xl.dims())?];
        let pooled_dims = [xl.dims()[0], xl.dims()[1], p.ho, p.wo];
        if let Some((s, l)) = dy {
            inputs.push(cuda_view::<f32>(op, s, l, &pooled_dims)?);
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

    /// The offset in its plane of the first maximum of output `(oy, ox)`'s
    /// window, visiting it in row-major order (a NaN counts as the maximum;
    /// the last NaN wins): the definition the kernel's folds must match.
    fn arg_max(p: &Planes, plane: &[f32], oy: usize, ox: usize) -> usize {
        let mut best = None::<usize>;
        for y in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(p.h) {
            for x in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(p.w) {
                let at = y * p.w + x;
                if best.is_none_or(|b| plane[at] > plane[b] || plane[at].is_nan()) {
                    best = Some(at);
                }
            }
        }
        best.expect("a window holds at least one input")
    }

    #[test]
    fn window_maxima_are_each_windows_first_maximum_bit_for_bit() {
        // Few distinct values (ties everywhere), signed zeros and NaNs with
        // different payloads, on widths and heights 1 to 7 and 112.
        let pool: [f32; 6] = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::from_bits(0x7fc0_0001),
            f32::from_bits(0xffc0_0002),
        ];
        for (h, w) in [
            (1, 1),
            (1, 2),
            (2, 1),
            (3, 3),
            (4, 5),
            (7, 6),
            (5, 7),
            (112, 112),
        ] {
            let data: Vec<f32> = (0..h * w).map(|i| pool[(i * 7 + i / 3) % 6]).collect();
            let (_, p) = Planes::of(&Layout::contiguous((1, 1, h, w))).unwrap();
            let mut maxima = WindowMaxima::new(&p);
            for oy in 0..p.ho {
                maxima.of_row(&p, &data, oy);
                for ox in 0..p.wo {
                    let want = arg_max(&p, &data, oy, ox);
                    let case = format!("{h}x{w} at ({oy}, {ox})");
                    assert_eq!(maxima.at[ox] as usize, want, "{case}");
                    assert_eq!(maxima.value[ox].to_bits(), data[want].to_bits(), "{case}");
                }
            }
        }
    }

    #[test]
    fn planes_too_large_for_u32_offsets_are_refused() {
        let e = Planes::of(&Layout::contiguous((1, 1, 70_000, 70_000)))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("70000x70000"), "{e}");
        assert!(Planes::of(&Layout::contiguous((1, 1, 65_536, 65_535))).is_ok());
    }
}
