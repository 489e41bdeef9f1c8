//! What the CPU kernels of this crate share: which tensors they take and how
//! a custom op reads its arguments.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout};

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

/// The contiguous f32 data of a custom-op argument, checked against the
/// dims the op expects.
pub(crate) fn f32_data<'a>(
    op: &'static str,
    storage: &'a CpuStorage,
    layout: &Layout,
    dims: &[usize],
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        return Err(candle_core::Error::UnsupportedDTypeForOp(
            storage.dtype(),
            op,
        ));
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(candle_core::Error::RequiresContiguous { op });
    };
    if layout.dims() != dims {
        candle_core::bail!("{op}: expected shape {dims:?}, got {:?}", layout.dims());
    }
    Ok(&data[start..end])
}
