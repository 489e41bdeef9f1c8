//! Differentiable pooling and resampling.
//!
//! The max pool, the option-A shortcut and the global average pool of f32
//! tensors on the CPU and CUDA run this crate's kernels (`pool/max.rs`,
//! `pool/shortcut.rs`, `pool/average.rs`), one pass each way. Everything
//! else is expressed with reshapes, narrows and element-wise maxima, so
//! candle's autograd differentiates it on every backend.

mod average;
mod max;
mod shortcut;

use candle_core::{Tensor, D};

use crate::dispatch::{has_own_kernel, CudaKernel};
use crate::format::through_nchw;
use crate::OpsError;

fn expect_nchw(op: &'static str, x: &Tensor) -> Result<(), OpsError> {
    if x.rank() == 4 {
        Ok(())
    } else {
        Err(OpsError::BadShape {
            op,
            expected: "a 4-d NCHW tensor",
            got: x.dims().to_vec(),
        })
    }
}

/// Views `x` along `dim` as `len` groups of `step` and returns element
/// `phase` of each group starting at group `start`:
/// `x[step * (start + i) + phase]` for `i < len`. `x.dim(dim)` must be at
/// least `step * (start + len)`.
fn strided_pick(
    x: &Tensor,
    dim: usize,
    [start, len, phase, step]: [usize; 4],
) -> Result<Tensor, OpsError> {
    let groups = start + len;
    let x = x.narrow(dim, 0, step * groups)?;
    let mut shape = x.dims().to_vec();
    shape.splice(dim..=dim, [groups, step]);
    let picked = x
        .reshape(shape)?
        .narrow(dim, start, len)?
        .narrow(dim + 1, phase, 1)?;
    Ok(picked.squeeze(dim + 1)?)
}

/// Pads `x` along `dim` with `before` and `after` copies of `value`.
fn pad_const(
    x: &Tensor,
    dim: usize,
    before: usize,
    after: usize,
    value: f64,
) -> Result<Tensor, OpsError> {
    let block = |n: usize| -> Result<Tensor, OpsError> {
        let mut shape = x.dims().to_vec();
        shape[dim] = n;
        Ok(Tensor::full(value, shape, x.device())?.to_dtype(x.dtype())?)
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Ok(Tensor::cat(&parts, dim)?)
}

/// One dimension of a 3-wide, stride-2, padding-1 max pool.
fn max3_stride2(x: &Tensor, dim: usize) -> Result<Tensor, OpsError> {
    let n = x.dim(dim)?;
    let out = (n - 1) / 2 + 1;
    let x = pad_const(x, dim, 1, 2 * out + 1 - n, f64::NEG_INFINITY)?;
    let left = strided_pick(&x, dim, [0, out, 0, 2])?;
    let centre = strided_pick(&x, dim, [0, out, 1, 2])?;
    let right = strided_pick(&x, dim, [1, out, 0, 2])?;
    Ok(left.maximum(&centre)?.maximum(&right)?)
}

/// 3x3 max pool with stride 2 and padding 1 (the ImageNet stem's pool), with
/// a working backward pass. Output size is `floor((H - 1) / 2) + 1`, as in
/// PyTorch's `MaxPool2d(3, 2, 1)`. Padding never wins the max.
///
/// f32 tensors on the CPU or CUDA run this crate's kernels, which give each
/// output's gradient to the first maximum of its window, as PyTorch does.
/// Other tensors run candle's ops, which share it between tied maxima.
/// A channels-last `x` is pooled on an NCHW copy, the output channels-last.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor, OpsError> {
    expect_nchw("max_pool_3x3_s2", x)?;
    through_nchw(x, |x| {
        if has_own_kernel(CudaKernel::Pool, x.device(), x.dtype()) {
            return Ok(x.contiguous()?.apply_op1(max::MaxPool)?);
        }
        max3_stride2(&max3_stride2(x, 2)?, 3)
    })
}

/// The paper's option-A identity shortcut: every `stride`-th row and column
/// of `x`, `x[:, :, ::stride, ::stride]`, with `pad_before` channels of
/// zeros before its channels and `pad_after` after them. Sizes that `stride`
/// does not divide keep the last row or column, giving
/// `ceil(H / stride) x ceil(W / stride)`, the output size of a 3x3
/// convolution with that stride and padding 1.
///
/// f32 tensors on the CPU or CUDA run this crate's kernels, one pass each
/// way; other tensors run candle's ops (strided views and concatenations),
/// with the same values. A channels-last `x` runs on an NCHW copy, the
/// output channels-last.
pub fn pad_subsample(
    x: &Tensor,
    stride: usize,
    pad_before: usize,
    pad_after: usize,
) -> Result<Tensor, OpsError> {
    expect_nchw("pad_subsample", x)?;
    if stride == 0 {
        return Err(OpsError::Incompatible {
            op: "pad_subsample",
            detail: "the stride must be at least 1".into(),
        });
    }
    through_nchw(x, |x| {
        if has_own_kernel(CudaKernel::Pool, x.device(), x.dtype()) {
            let op = shortcut::PadSubsample {
                stride,
                pad_before,
                pad_after,
            };
            return Ok(x.contiguous()?.apply_op1(op)?);
        }
        let mut y = x.clone();
        for dim in [2, 3] {
            let n = y.dim(dim)?;
            let out = n.div_ceil(stride);
            y = pad_const(&y, dim, 0, stride * out - n, 0.0)?;
            y = strided_pick(&y, dim, [0, out, 0, stride])?;
        }
        pad_const(&y, 1, pad_before, pad_after, 0.0)
    })
}

/// Global average pooling: `(N, C, H, W) -> (N, C)`.
///
/// f32 tensors on the CPU or CUDA run this crate's kernels, which sum each
/// plane in order, one pass each way; other tensors run candle's `mean`.
/// A channels-last `x` is pooled on an NCHW copy.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor, OpsError> {
    expect_nchw("global_avg_pool", x)?;
    if has_own_kernel(CudaKernel::Pool, x.device(), x.dtype()) {
        return Ok(x.contiguous()?.apply_op1(average::GlobalAvgPool)?);
    }
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn random(shape: &[usize], seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect()
    }

    /// Direct definition of PyTorch's MaxPool2d(3, 2, 1) on a flat buffer.
    fn reference_max_pool(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
        let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let mut out = Vec::new();
        for plane in 0..n * c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best = f32::NEG_INFINITY;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (y, x0) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                            if y >= 0 && x0 >= 0 && (y as usize) < h && (x0 as usize) < w {
                                best = best.max(x[plane * h * w + y as usize * w + x0 as usize]);
                            }
                        }
                    }
                    out.push(best);
                }
            }
        }
        out
    }

    #[test]
    fn max_pool_matches_the_definition_on_odd_and_even_sizes() {
        for (i, &(n, c, h, w)) in [(1, 1, 4, 4), (2, 3, 7, 5), (1, 2, 112, 112), (3, 1, 1, 2)]
            .iter()
            .enumerate()
        {
            let data = random(&[n, c, h, w], i as u64);
            let x = Tensor::from_vec(data.clone(), (n, c, h, w), &Device::Cpu).unwrap();
            let y = max_pool_3x3_s2(&x).unwrap();
            assert_eq!(y.dims(), &[n, c, (h - 1) / 2 + 1, (w - 1) / 2 + 1]);
            let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, reference_max_pool(&data, n, c, h, w));
        }
    }

    #[test]
    fn max_pool_gradient_goes_to_the_arg_max_of_each_window() {
        // Distinct values: each output's gradient lands on exactly one input.
        let (h, w) = (5, 6);
        let data: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 97) as f32).collect();
        let x = Var::from_vec(data.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
        let y = max_pool_3x3_s2(x.as_tensor()).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut expected = vec![0f32; h * w];
        let out = reference_max_pool(&data, 1, 1, h, w);
        for v in out {
            let at = data.iter().position(|&d| d == v).unwrap();
            expected[at] += 1.0;
        }
        assert_eq!(g, expected);
    }

    /// `op`'s output and its input gradient for the output gradient `dy`,
    /// both as f32 values, computed in `dtype`.
    fn with_gradient(
        op: impl Fn(&Tensor) -> Tensor,
        x: &Tensor,
        dy: &Tensor,
        dtype: candle_core::DType,
    ) -> (Vec<f32>, Vec<f32>) {
        let as_f32 = |t: &Tensor| {
            let t = t.to_dtype(candle_core::DType::F32).unwrap();
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
        let y = op(x.as_tensor());
        let dy = dy.to_dtype(dtype).unwrap();
        let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        (as_f32(&y), as_f32(grads.get(&x).unwrap()))
    }

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        Tensor::from_vec(random(shape, seed), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn pad_subsample_keeps_every_stride_th_row_and_column_between_zero_channels() {
        let x = Tensor::arange(0f32, 35., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 5, 7))
            .unwrap();
        let y = pad_subsample(&x, 2, 1, 1).unwrap();
        assert_eq!(y.dims(), &[1, 3, 3, 4]);
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let kept = [0., 2., 4., 6., 14., 16., 18., 20., 28., 30., 32., 34.];
        assert_eq!(got, [[0.; 12], kept, [0.; 12]].concat());
    }

    #[test]
    fn pad_subsample_kernel_matches_candle_ops_both_ways() {
        // The f32 kernels against the composed ops, which run for f64; both
        // only move values, so they agree exactly.
        for (i, &(shape, stride, before, after)) in [
            ([2, 3, 5, 7], 2, 1, 2),
            ([1, 4, 8, 8], 2, 2, 2),
            ([2, 2, 7, 4], 3, 0, 3),
            ([1, 3, 4, 5], 1, 0, 0),
            ([3, 1, 1, 1], 2, 4, 0),
        ]
        .iter()
        .enumerate()
        {
            let x = tensor(&shape, i as u64);
            let [n, c, h, w] = shape;
            let out = [
                n,
                c + before + after,
                h.div_ceil(stride),
                w.div_ceil(stride),
            ];
            let dy = tensor(&out, 50 + i as u64);
            let op = |t: &Tensor| pad_subsample(t, stride, before, after).unwrap();
            let got = with_gradient(op, &x, &dy, candle_core::DType::F32);
            let want = with_gradient(op, &x, &dy, candle_core::DType::F64);
            assert_eq!(got, want, "{shape:?} /{stride} +{before}+{after}");
        }
    }

    #[test]
    fn global_average_pool_averages_each_plane() {
        let x = Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 2, 2))
            .unwrap();
        let y = global_avg_pool(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![1.5, 5.5]]);
    }

    #[test]
    fn global_average_pool_kernel_matches_candle_mean_both_ways() {
        for (i, shape) in [[2, 3, 8, 8], [1, 5, 7, 7], [3, 2, 1, 3]]
            .iter()
            .enumerate()
        {
            let x = tensor(shape, 70 + i as u64);
            let dy = tensor(&shape[..2], 80 + i as u64);
            let op = |t: &Tensor| global_avg_pool(t).unwrap();
            let (y, dx) = with_gradient(op, &x, &dy, candle_core::DType::F32);
            let (want_y, want_dx) = with_gradient(op, &x, &dy, candle_core::DType::F64);
            for (a, b) in y.iter().zip(&want_y) {
                assert!((a - b).abs() <= 1e-6, "{shape:?}: mean {a} vs {b}");
            }
            // dy / (H W), rounded once either way.
            assert_eq!(dx, want_dx, "{shape:?}: gradient");
        }
    }

    #[test]
    fn empty_tensors_pool_to_empty_tensors() {
        let x = Tensor::zeros((0, 3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(pad_subsample(&x, 2, 1, 1).unwrap().dims(), [0, 5, 2, 2]);
        assert_eq!(global_avg_pool(&x).unwrap().dims(), [0, 3]);
        let x = Var::zeros((2, 3, 0, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = pad_subsample(x.as_tensor(), 2, 1, 0).unwrap();
        assert_eq!(y.dims(), [2, 4, 0, 2]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&x).unwrap().dims(), [2, 3, 0, 4]);
    }

    #[test]
    fn ops_reject_tensors_that_are_not_nchw() {
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = max_pool_3x3_s2(&x).unwrap_err().to_string();
        assert!(
            err.contains("max_pool_3x3_s2") && err.contains("[2, 3]"),
            "{err}"
        );
        assert!(pad_subsample(&x, 2, 0, 0).is_err() && global_avg_pool(&x).is_err());
        let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = pad_subsample(&x, 0, 0, 0).unwrap_err().to_string();
        assert!(
            err.contains("pad_subsample") && err.contains("stride"),
            "{err}"
        );
    }
}
