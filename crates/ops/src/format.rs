//! Channels-last activations: NCHW tensors whose values lie in memory in
//! NHWC order, as PyTorch's `memory_format=torch.channels_last` keeps them.
//!
//! A channels-last tensor has the dims of an NCHW one (`[N, C, H, W]`), so
//! every shape check and every caller is unchanged; only its strides differ
//! (`[H*W*C, 1, W*C, C]`), which [`to_channels_last`] sets and
//! [`is_channels_last`] reads. cuDNN's tensor-core convolutions and batch
//! norm want their data that way. The ops of this crate keep a channels-last
//! input channels-last: [`crate::conv2d`] and the training-mode batch norms
//! run on its NHWC view (cuDNN with NHWC descriptors on CUDA; on the CPU, the
//! same ops transpose to the NCHW kernels and back, so the CPU test suite
//! runs what CUDA runs), the element-wise ops and casts run on its values in
//! memory order, and the pools and eval-mode batch norm run their NCHW
//! kernels on a copy and hand the result back channels-last. Any other
//! candle op still computes the right values, in NCHW.

use std::borrow::Cow;

use candle_core::{DType, Shape, Tensor};
use rayon::prelude::*;

use crate::OpsError;

/// How an op's 4-d buffers are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum Format {
    /// `[N, C, H, W]` (contiguous NCHW).
    #[default]
    Nchw,
    /// `[N, H, W, C]` (the NHWC view of a channels-last tensor).
    Nhwc,
}

impl Format {
    /// The format of a 4-d argument `x`: NHWC if it is channels-last.
    pub(crate) fn of(x: &Tensor) -> Self {
        if is_channels_last(x) {
            Format::Nhwc
        } else {
            Format::Nchw
        }
    }

    /// The dims of a buffer of this format holding NCHW dims `[n, c, h, w]`.
    pub(crate) fn order(self, [n, c, h, w]: [usize; 4]) -> [usize; 4] {
        match self {
            Format::Nchw => [n, c, h, w],
            Format::Nhwc => [n, h, w, c],
        }
    }

    /// The buffer an op of this format takes for the NCHW tensor `x`: `x`
    /// itself (contiguous) in NCHW, its NHWC view (channels-last first) in
    /// NHWC.
    pub(crate) fn arg(self, x: &Tensor) -> Result<Tensor, OpsError> {
        Ok(match self {
            Format::Nchw => x.contiguous()?,
            Format::Nhwc => to_channels_last(x)?.permute((0, 2, 3, 1))?,
        })
    }

    /// The NCHW tensor of an op's 4-d output buffer `y` of this format: `y`
    /// itself in NCHW, its channels-last NCHW view in NHWC.
    pub(crate) fn result(self, y: Tensor) -> Result<Tensor, OpsError> {
        Ok(match self {
            Format::Nchw => y,
            Format::Nhwc => y.permute((0, 3, 1, 2))?,
        })
    }

    /// An op's CPU body for this format: `f` on NCHW values; in NHWC, the
    /// input buffers (NHWC, their NCHW dims in `inputs`) are transposed to
    /// NCHW first and the output (NCHW dims `out`) back to NHWC.
    pub(crate) fn cpu_body<const K: usize>(
        self,
        inputs: [(&[f32], [usize; 4]); K],
        out: [usize; 4],
        f: impl FnOnce([&[f32]; K]) -> Vec<f32>,
    ) -> Vec<f32> {
        let nchw = inputs.map(|(data, dims)| self.read_nchw(data, dims));
        self.write_nchw(f(std::array::from_fn(|k| &*nchw[k])), out)
    }

    /// The values of a buffer of this format holding NCHW dims `dims`, in
    /// NCHW order (borrowed in NCHW, transposed in NHWC).
    pub(crate) fn read_nchw(self, data: &[f32], dims: [usize; 4]) -> Cow<'_, [f32]> {
        match self {
            Format::Nchw => Cow::Borrowed(data),
            Format::Nhwc => Cow::Owned(nhwc_to_nchw(data, dims)),
        }
    }

    /// NCHW values `data` of dims `dims` as a buffer of this format (as they
    /// are in NCHW, transposed in NHWC).
    pub(crate) fn write_nchw(self, data: Vec<f32>, dims: [usize; 4]) -> Vec<f32> {
        match self {
            Format::Nchw => data,
            Format::Nhwc => nchw_to_nhwc(&data, dims),
        }
    }
}

/// Whether `x` is channels-last: 4-d, its values in NHWC order and not also
/// in NCHW order (a tensor with one channel, or one pixel per image, is both,
/// and counts as NCHW).
pub fn is_channels_last(x: &Tensor) -> bool {
    let (&[n, c, h, w], &[sn, sc, sh, sw]) = (x.dims(), x.stride()) else {
        return false;
    };
    !x.is_contiguous() && Shape::from((n, h, w, c)).is_contiguous(&[sn, sh, sw, sc])
}

/// `x` (4-d NCHW) with its values in channels-last order: the same dims and
/// values, differentiable. A copy, unless `x` is channels-last already.
/// Anything but a 4-d tensor is an [`OpsError::BadShape`].
pub fn to_channels_last(x: &Tensor) -> Result<Tensor, OpsError> {
    if x.rank() != 4 {
        return Err(OpsError::BadShape {
            op: "to_channels_last",
            expected: "a 4-d NCHW tensor",
            got: x.dims().to_vec(),
        });
    }
    if is_channels_last(x) {
        return Ok(x.clone());
    }
    Ok(x.permute((0, 2, 3, 1))?
        .contiguous()?
        .permute((0, 3, 1, 2))?)
}

/// `x` converted to `dtype`, channels-last if `x` is (candle's own
/// conversion writes NCHW order).
pub fn to_dtype(x: &Tensor, dtype: DType) -> Result<Tensor, OpsError> {
    in_memory_order(x, |t| Ok(t.to_dtype(dtype)?))
}

/// `f`, an element-wise map, applied to `x`'s values in memory order: on
/// the NHWC view of a channels-last `x`, its result turned back into a
/// channels-last NCHW tensor; on `x` itself otherwise.
pub(crate) fn in_memory_order(
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> Result<Tensor, OpsError>,
) -> Result<Tensor, OpsError> {
    if is_channels_last(x) {
        Format::Nhwc.result(f(&Format::Nhwc.arg(x)?)?)
    } else {
        f(x)
    }
}

/// `f`, an op with NCHW kernels only and a 4-d output, on a channels-last
/// `x`: on an NCHW copy, its output copied back to channels-last. Other
/// inputs go to `f` as they are.
pub(crate) fn through_nchw(
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> Result<Tensor, OpsError>,
) -> Result<Tensor, OpsError> {
    if is_channels_last(x) {
        to_channels_last(&f(&x.contiguous()?)?)
    } else {
        f(x)
    }
}

/// NHWC values of NCHW dims `[n, c, h, w]`, in NCHW order; images in
/// parallel.
fn nhwc_to_nchw(data: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    transpose_images(data, n, [h * w, c])
}

/// NCHW values of dims `[n, c, h, w]`, in NHWC order; images in parallel.
fn nchw_to_nhwc(data: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    transpose_images(data, n, [c, h * w])
}

/// Each of the `n` images of `data`, a `[rows, cols]` matrix, transposed to
/// `[cols, rows]`.
fn transpose_images(data: &[f32], n: usize, [rows, cols]: [usize; 2]) -> Vec<f32> {
    let image = rows * cols;
    assert_eq!(data.len(), n * image, "transpose: values for {n} images");
    let mut out = vec![0f32; data.len()];
    if image == 0 {
        return out;
    }
    out.par_chunks_mut(image)
        .zip(data.par_chunks(image))
        .for_each(|(dst, src)| {
            for (r, row) in src.chunks(cols).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    dst[k * rows + r] = v;
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn sample() -> Tensor {
        Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 5.0, &Device::Cpu)
            .and_then(|t| t.reshape((2, 3, 4, 5)))
            .expect("a sample tensor")
    }

    #[test]
    fn channels_last_keeps_dims_and_values_and_is_recognised() -> Result<(), OpsError> {
        let x = sample();
        assert!(!is_channels_last(&x));
        let cl = to_channels_last(&x)?;
        assert!(is_channels_last(&cl));
        assert_eq!(cl.dims(), x.dims());
        assert_eq!(cl.stride(), [60, 1, 15, 3]);
        let diff = (&cl - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        // Converting again is free, and a one-channel tensor counts as NCHW.
        assert!(is_channels_last(&to_channels_last(&cl)?));
        assert!(!is_channels_last(&to_channels_last(&x.narrow(1, 0, 1)?)?));
        assert!(to_channels_last(&x.flatten_all()?).is_err());
        Ok(())
    }

    #[test]
    fn casts_keep_channels_last() -> Result<(), OpsError> {
        let cl = to_channels_last(&sample())?;
        let half = to_dtype(&cl, DType::BF16)?;
        assert!(is_channels_last(&half));
        assert_eq!(half.dtype(), DType::BF16);
        let back = to_dtype(&half, DType::F32)?;
        let diff = (&back - &sample())?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "small integers survive bf16");
        assert!(!is_channels_last(&to_dtype(&sample(), DType::BF16)?));
        Ok(())
    }

    #[test]
    fn the_cpu_transposes_invert_each_other_and_match_candle() -> Result<(), OpsError> {
        let x = sample();
        let dims = [2, 3, 4, 5];
        let nchw = x.flatten_all()?.to_vec1::<f32>()?;
        let nhwc = x.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(nchw_to_nhwc(&nchw, dims), nhwc);
        assert_eq!(nhwc_to_nchw(&nhwc, dims), nchw);
        // An NHWC body sees NCHW values, and what it returns in NCHW order
        // comes back in NHWC order.
        let numbered: Vec<f32> = (0..nchw.len()).map(|i| i as f32).collect();
        let body = Format::Nhwc.cpu_body([(nhwc.as_slice(), dims)], dims, |[v]| {
            assert_eq!(v, nchw.as_slice());
            numbered.clone()
        });
        assert_eq!(body, nchw_to_nhwc(&numbered, dims));
        assert_eq!(
            Format::Nchw.cpu_body([(&nchw[..], dims)], dims, |[v]| v.to_vec()),
            nchw
        );
        Ok(())
    }
}
