//! 2-d convolution with a fast forward and backward pass on the CPU and,
//! with the `cudnn` feature, on NVIDIA GPUs.
//!
//! Candle 0.9's CPU convolution computes the input gradient with a naive
//! transposed-convolution loop and runs the weight gradient on one core.
//! [`conv2d`] instead runs three custom ops built on im2col + gemm, each
//! parallel over the batch with rayon: the forward pass, the input gradient
//! (a forward convolution of the output gradient when the stride is 1, else
//! gemm then col2im) and the weight gradient (gemm accumulated over fixed
//! chunks of the batch, reduced in a fixed order, so results are
//! bit-identical from run to run). Forward convolutions that are 3x3 and wide
//! enough run Winograd's F(2x2, 3x3) instead of im2col (`conv/winograd.rs`);
//! narrower 3x3, stride-1 ones run a direct kernel that reads the
//! input in place, forward and weight gradient (`conv/direct.rs`), on CPUs
//! that have AVX-512 or AVX2. On CUDA, candle uses cuDNN for the forward pass only and
//! computes the input gradient with a naive kernel; the same three ops run
//! cuDNN's forward, backward-data and backward-filter convolutions there, in
//! f32 or bf16 (`conv/cuda.rs`). On devices or dtypes without a kernel here it falls back
//! to candle's own `Tensor::conv2d`; a Metal kernel is added by implementing
//! `metal_fwd` on the three ops and extending [`has_own_kernel`].
//!
//! [`InferenceConv`] is the forward pass alone, for eval-mode nets whose
//! batch norms are folded into their convolutions: a bias, a residual and a
//! ReLU applied as the output is written (`conv/epilogue.rs`), the weights
//! prepared once (`conv/inference.rs`).

mod cpu;
#[cfg(feature = "cudnn")]
mod cuda;
mod direct;
mod epilogue;
mod inference;
#[cfg(test)]
mod tests;
mod winograd;

pub use inference::InferenceConv;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
#[cfg(feature = "cudnn")]
use candle_core::{CudaStorage, Result as CandleResult};

use crate::args::f32_data;
use crate::dispatch::{has_own_kernel, CudaKernel};
use crate::format::Format;
use crate::OpsError;

const OP: &str = "conv2d";

/// The sizes of one convolution: input `[n, c, h, w]`, weight `[o, c, k, k]`,
/// output `[n, o, ho, wo]`, and the format of the three buffers (NHWC: input
/// `[n, h, w, c]`, weight `[o, k, k, c]`, output `[n, ho, wo, o]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
    format: Format,
}

impl Geometry {
    /// Checks the shapes and parameters and derives the output size.
    fn new(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<Self, OpsError> {
        let &[n, c, h, width] = x else {
            return Err(OpsError::BadShape {
                op: OP,
                expected: "a 4-d NCHW input",
                got: x.to_vec(),
            });
        };
        let &[o, wc, k, k2] = w else {
            return Err(OpsError::BadShape {
                op: OP,
                expected: "a 4-d [O, C, K, K] weight",
                got: w.to_vec(),
            });
        };
        let incompatible = |detail: String| Err(OpsError::Incompatible { op: OP, detail });
        if k != k2 || k == 0 {
            return incompatible(format!("weight {w:?} must have a square, non-empty kernel"));
        }
        if wc != c {
            return incompatible(format!(
                "input {x:?} has {c} channels but weight {w:?} expects {wc}"
            ));
        }
        if stride == 0 {
            return incompatible("stride must be at least 1, got 0".to_string());
        }
        if h + 2 * pad < k || width + 2 * pad < k {
            return incompatible(format!(
                "kernel of weight {w:?} is larger than input {x:?} padded by {pad}"
            ));
        }
        Ok(Self {
            n,
            c,
            h,
            w: width,
            o,
            k,
            stride,
            pad,
            ho: (h + 2 * pad - k) / stride + 1,
            wo: (width + 2 * pad - k) / stride + 1,
            format: Format::Nchw,
        })
    }

    /// The input's NCHW dims.
    fn input_nchw(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// The weight's OIHW dims.
    fn weight_nchw(&self) -> [usize; 4] {
        [self.o, self.c, self.k, self.k]
    }

    /// The output's NCHW dims.
    fn output_nchw(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
    }

    /// The input buffer's dims, in the geometry's format.
    fn input_dims(&self) -> [usize; 4] {
        self.format.order(self.input_nchw())
    }

    /// The weight buffer's dims, in the geometry's format.
    fn weight_dims(&self) -> [usize; 4] {
        self.format.order(self.weight_nchw())
    }

    /// The output buffer's dims, in the geometry's format.
    fn output_dims(&self) -> [usize; 4] {
        self.format.order(self.output_nchw())
    }
}

/// 2-d convolution of an NCHW input `x` `[N, C, H, W]` with a weight `w`
/// `[O, C, K, K]` (square kernel, no bias, groups or dilation), zero padding
/// `padding` on every side: output `[N, O, (H + 2p - K) / s + 1, (W + 2p - K) / s + 1]`,
/// the same as `x.conv2d(w, padding, stride, 1, 1)`.
///
/// f32 tensors on the CPU run this crate's im2col + gemm kernels, forward and
/// backward (gradients for both `x` and `w`; second-order gradients are not
/// supported); f32 and bf16 tensors on CUDA run cuDNN's forward,
/// backward-data and backward-filter convolutions (bf16 with f32 sums) when
/// built with the `cudnn` feature; bf16
/// tensors on the CPU run the f32 kernels on their values, the output
/// rounded to bf16 (candle has no bf16 convolution there); everything else
/// runs candle's own convolution. Shapes that do
/// not fit are an [`OpsError::BadShape`] or [`OpsError::Incompatible`] naming them.
///
/// A channels-last `x` ([`crate::to_channels_last`]) gives a channels-last
/// output: this crate's kernels run on its NHWC view, with a channels-last
/// copy of `w` (cuDNN's NHWC convolutions on CUDA; on the CPU the same ops
/// transpose to the NCHW kernels and back, which costs two copies).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor, OpsError> {
    let geometry = Geometry::new(x.dims(), w.dims(), stride, padding)?;
    if x.dtype() == DType::BF16 && x.device().is_cpu() {
        // Candle's CPU convolution has no bf16 product: bf16 operands are f32
        // values, convolved here in f32, the output rounded to bf16 as a
        // GPU's bf16 convolution with f32 sums writes it.
        let y = conv2d(
            &crate::to_dtype(x, DType::F32)?,
            &w.to_dtype(DType::F32)?,
            stride,
            padding,
        )?;
        return crate::to_dtype(&y, DType::BF16);
    }
    let fast = has_own_kernel(CudaKernel::Conv, x.device(), x.dtype())
        && has_own_kernel(CudaKernel::Conv, w.device(), w.dtype());
    if fast {
        let format = Format::of(x);
        let y = format
            .arg(x)?
            .apply_op2(&format.arg(w)?, Conv2d(Geometry { format, ..geometry }))?;
        format.result(y)
    } else {
        Ok(x.conv2d(w, padding, stride, 1, 1)?)
    }
}

/// The forward convolution `(x, w) -> y`.
struct Conv2d(Geometry);

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = f32_data(self.name(), xs, xl, &g.input_dims())?;
        let w = f32_data(self.name(), ws, wl, &g.weight_dims())?;
        let y = g.format.cpu_body(
            [(x, g.input_nchw()), (w, g.weight_nchw())],
            g.output_nchw(),
            |[x, w]| cpu::forward(g, x, w),
        );
        Ok((CpuStorage::F32(y), Shape::from(g.output_dims().to_vec())))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> CandleResult<(CudaStorage, Shape)> {
        let g = &self.0;
        let y = cuda::forward(g, (xs, xl), (ws, wl))?;
        Ok((y, Shape::from(g.output_dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2(w, Conv2dGradInput(self.0))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2(&dy, Conv2dGradWeight(self.0))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// The input gradient `(dy, w) -> dx` of [`Conv2d`].
struct Conv2dGradInput(Geometry);

impl CustomOp2 for Conv2dGradInput {
    fn name(&self) -> &'static str {
        "conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let dy = f32_data(self.name(), dys, dyl, &g.output_dims())?;
        let w = f32_data(self.name(), ws, wl, &g.weight_dims())?;
        let dx = g.format.cpu_body(
            [(dy, g.output_nchw()), (w, g.weight_nchw())],
            g.input_nchw(),
            |[dy, w]| cpu::grad_input(g, dy, w),
        );
        Ok((CpuStorage::F32(dx), Shape::from(g.input_dims().to_vec())))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        dys: &CudaStorage,
        dyl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> CandleResult<(CudaStorage, Shape)> {
        let g = &self.0;
        let dx = cuda::grad_input(g, (dys, dyl), (ws, wl))?;
        Ok((dx, Shape::from(g.input_dims().to_vec())))
    }
}

/// The weight gradient `(x, dy) -> dw` of [`Conv2d`].
struct Conv2dGradWeight(Geometry);

impl CustomOp2 for Conv2dGradWeight {
    fn name(&self) -> &'static str {
        "conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = f32_data(self.name(), xs, xl, &g.input_dims())?;
        let dy = f32_data(self.name(), dys, dyl, &g.output_dims())?;
        let dw = g.format.cpu_body(
            [(x, g.input_nchw()), (dy, g.output_nchw())],
            g.weight_nchw(),
            |[x, dy]| cpu::grad_weight(g, x, dy),
        );
        Ok((CpuStorage::F32(dw), Shape::from(g.weight_dims().to_vec())))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        dys: &CudaStorage,
        dyl: &Layout,
    ) -> CandleResult<(CudaStorage, Shape)> {
        let g = &self.0;
        let dw = cuda::grad_weight(g, (xs, xl), (dys, dyl))?;
        Ok((dw, Shape::from(g.weight_dims().to_vec())))
    }
}
