//! Differentiable pooling and resampling.
//!
//! The max pool of f32 tensors on the CPU and CUDA runs this crate's kernels
//! (`pool/max.rs`). Everything else is expressed with reshapes, narrows and
//! element-wise maxima, so candle's autograd differentiates it on every
//! backend.

mod max;

use candle_core::{Tensor, D};

use crate::dispatch::has_native_kernel;
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

/// Views `x` along `dim` as `len` pairs and returns element `phase` of each
/// pair starting at pair `start`: `x[2 * (start + i) + phase]` for `i < len`.
/// `x.dim(dim)` must be at least `2 * (start + len)`.
fn strided_pick(
    x: &Tensor,
    dim: usize,
    start: usize,
    len: usize,
    phase: usize,
) -> Result<Tensor, OpsError> {
    let pairs = start + len;
    let x = x.narrow(dim, 0, 2 * pairs)?;
    let mut shape = x.dims().to_vec();
    shape.splice(dim..=dim, [pairs, 2]);
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
    let left = strided_pick(&x, dim, 0, out, 0)?;
    let centre = strided_pick(&x, dim, 0, out, 1)?;
    let right = strided_pick(&x, dim, 1, out, 0)?;
    Ok(left.maximum(&centre)?.maximum(&right)?)
}

/// 3x3 max pool with stride 2 and padding 1 (the ImageNet stem's pool), with
/// a working backward pass. Output size is `floor((H - 1) / 2) + 1`, as in
/// PyTorch's `MaxPool2d(3, 2, 1)`. Padding never wins the max.
///
/// f32 tensors on the CPU or CUDA run this crate's kernels, which give each
/// output's gradient to the first maximum of its window, as PyTorch does.
/// Other tensors run candle's ops, which share it between tied maxima.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor, OpsError> {
    expect_nchw("max_pool_3x3_s2", x)?;
    if has_native_kernel(x.device(), x.dtype()) {
        return Ok(x.contiguous()?.apply_op1(max::MaxPool)?);
    }
    max3_stride2(&max3_stride2(x, 2)?, 3)
}

/// Every other row and column, `x[:, :, ::2, ::2]`: the stride-2 subsampling
/// of the paper's option-A identity shortcut. Odd sizes keep the last row or
/// column, giving `ceil(H / 2) x ceil(W / 2)`, the output size of a stride-2
/// 3x3 convolution with padding 1.
pub fn subsample2(x: &Tensor) -> Result<Tensor, OpsError> {
    expect_nchw("subsample2", x)?;
    let mut y = x.clone();
    for dim in [2, 3] {
        let n = y.dim(dim)?;
        let out = n.div_ceil(2);
        y = pad_const(&y, dim, 0, 2 * out - n, 0.0)?;
        y = strided_pick(&y, dim, 0, out, 0)?;
    }
    Ok(y)
}

/// Global average pooling: `(N, C, H, W) -> (N, C)`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor, OpsError> {
    expect_nchw("global_avg_pool", x)?;
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

    #[test]
    fn subsample_keeps_even_rows_and_columns() {
        let x = Tensor::arange(0f32, 35., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 5, 7))
            .unwrap();
        let y = subsample2(&x).unwrap();
        assert_eq!(y.dims(), &[1, 1, 3, 4]);
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            got,
            vec![0., 2., 4., 6., 14., 16., 18., 20., 28., 30., 32., 34.]
        );
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
    fn ops_reject_tensors_that_are_not_nchw() {
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = max_pool_3x3_s2(&x).unwrap_err().to_string();
        assert!(
            err.contains("max_pool_3x3_s2") && err.contains("[2, 3]"),
            "{err}"
        );
        assert!(subsample2(&x).is_err() && global_avg_pool(&x).is_err());
    }
}
