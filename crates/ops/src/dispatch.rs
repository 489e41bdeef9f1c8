//! Which kernel runs an op: this crate's (on the CPU, or on CUDA with the
//! `cuda`/`cudnn` features) or candle's own ops, by device, dtype, build and
//! the process-wide switches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use candle_core::{DType, Device};

static USE_FAST_KERNELS: AtomicBool = AtomicBool::new(true);

/// Chooses between this crate's kernels (the default) and candle's own ops,
/// for every conv and batch norm from now on, process-wide. The candle path
/// stays available to compare speed and results side by side.
pub fn set_fast_kernels(enabled: bool) {
    USE_FAST_KERNELS.store(enabled, Ordering::Relaxed);
}

/// Whether this crate's kernels are in use (see [`set_fast_kernels`]).
pub fn fast_kernels() -> bool {
    USE_FAST_KERNELS.load(Ordering::Relaxed)
}

/// Whether this crate has a kernel for tensors on `device` of type `dtype`
/// (today: f32 on the CPU) and kernels are switched on.
pub(crate) fn has_kernel(device: &Device, dtype: DType) -> bool {
    fast_kernels() && device.is_cpu() && dtype == DType::F32
}

/// This crate's CUDA kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CudaKernel {
    /// [`crate::conv2d`] through cuDNN's convolutions (`cudnn` feature).
    Conv,
    /// [`crate::batch_norm_train`] through cuDNN's batch norm (`cudnn`
    /// feature).
    BatchNorm,
    /// This crate's own kernels (`kernels/*.cu`, `cuda` feature): the ReLU,
    /// the residual join, the max pool, eval-mode batch norm, the SGD update
    /// and the running statistics' update.
    Native,
}

impl CudaKernel {
    /// Whether the kernel takes tensors of `dtype`: f32, and bf16 for the
    /// convolution (bf16 mixed precision's operands).
    fn takes(self, dtype: DType) -> bool {
        dtype == DType::F32 || (self == CudaKernel::Conv && dtype == DType::BF16)
    }

    /// Whether this build has the kernel.
    fn built(self) -> bool {
        match self {
            CudaKernel::Native => cfg!(feature = "cuda"),
            _ => cfg!(feature = "cudnn"),
        }
    }
}

/// Whether `kernel` runs tensors on `device` of type `dtype`: on CUDA, of a
/// dtype it takes ([`CudaKernel::takes`]), built with the kernel's feature, kernels switched on, and `kernel` not
/// turned off by the `RESNET_CUDA_KERNELS` environment variable, read once:
/// `all` (the default), `conv` (the convolution only) or `none` (candle's
/// CUDA ops for everything, to compare).
pub(crate) fn has_cuda_kernel(kernel: CudaKernel, device: &Device, dtype: DType) -> bool {
    kernel.built()
        && device.is_cuda()
        && kernel.takes(dtype)
        && fast_kernels()
        && cuda_kernel_enabled(kernel)
}

/// Whether `RESNET_CUDA_KERNELS` leaves `kernel` on.
fn cuda_kernel_enabled(kernel: CudaKernel) -> bool {
    static CHOICE: OnceLock<String> = OnceLock::new();
    let choice = CHOICE.get_or_init(|| std::env::var("RESNET_CUDA_KERNELS").unwrap_or_default());
    enabled_by(choice, kernel)
}

/// Whether the `RESNET_CUDA_KERNELS` value `choice` leaves `kernel` on.
fn enabled_by(choice: &str, kernel: CudaKernel) -> bool {
    match choice {
        "none" => false,
        "conv" => kernel == CudaKernel::Conv,
        _ => true,
    }
}

/// Whether the ops with a kernel of this crate's own on CUDA (see
/// [`CudaKernel::Native`]) have one for tensors on `device` of type `dtype`:
/// on the CPU as [`has_kernel`], on CUDA as [`has_cuda_kernel`].
pub(crate) fn has_native_kernel(device: &Device, dtype: DType) -> bool {
    has_kernel(device, dtype) || has_cuda_kernel(CudaKernel::Native, device, dtype)
}

/// Whether [`crate::conv2d`] has a kernel for tensors on `device` of type
/// `dtype`: on the CPU as [`has_kernel`], on CUDA as [`has_cuda_kernel`].
pub(crate) fn has_conv_kernel(device: &Device, dtype: DType) -> bool {
    has_kernel(device, dtype) || has_cuda_kernel(CudaKernel::Conv, device, dtype)
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::{enabled_by, CudaKernel};

    #[test]
    fn the_convolution_alone_takes_bf16_on_cuda() {
        assert!(CudaKernel::Conv.takes(DType::F32) && CudaKernel::Conv.takes(DType::BF16));
        assert!(CudaKernel::Native.takes(DType::F32) && !CudaKernel::Native.takes(DType::BF16));
        for dtype in [DType::F16, DType::F64, DType::U8] {
            assert!(!CudaKernel::Conv.takes(dtype), "{dtype:?}");
        }
    }

    #[test]
    fn the_environment_choice_selects_the_cuda_kernels() {
        for kernel in [CudaKernel::Conv, CudaKernel::Native] {
            assert!(enabled_by("", kernel), "{kernel:?} by default");
            assert!(enabled_by("all", kernel), "{kernel:?} with all");
            assert!(!enabled_by("none", kernel), "{kernel:?} with none");
        }
        assert!(enabled_by("conv", CudaKernel::Conv));
        assert!(!enabled_by("conv", CudaKernel::Native));
    }
}
