//! What the CPU kernels of this crate share: which tensors they take and how
//! a custom op reads its arguments.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout};

/// Whether this crate has a kernel for tensors on `device` of type `dtype`
/// (today: f32 on the CPU).
pub(crate) fn has_kernel(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && dtype == DType::F32
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
