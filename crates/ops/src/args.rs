//! How the custom ops of this crate read their arguments (checked to be
//! contiguous f32 values of the dims the op expects, alike on the CPU and on
//! CUDA), and the parallel chunking of the element-wise kernels.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout};

/// Values per parallel task of the element-wise kernels: large enough to
/// amortise scheduling, small enough to split a CIFAR activation across two
/// cores.
pub(crate) const CHUNK: usize = 1 << 15;
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
    let (start, end) = contiguous_range(op, layout, dims)?;
    Ok(&data[start..end])
}

/// The start and end offsets of a custom-op argument's values, checked to be
/// contiguous and of the dims the op expects.
pub(crate) fn contiguous_range(
    op: &'static str,
    layout: &Layout,
    dims: &[usize],
) -> candle_core::Result<(usize, usize)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(candle_core::Error::RequiresContiguous { op });
    };
    if layout.dims() != dims {
        candle_core::bail!("{op}: expected shape {dims:?}, got {:?}", layout.dims());
    }
    Ok((start, end))
}

/// The contiguous `T` values of a CUDA custom-op argument, checked as
/// [`f32_data`] checks them on the CPU (a tensor of another dtype is an
/// error naming it).
#[cfg(feature = "cuda")]
pub(crate) fn cuda_view<'a, T: candle_core::cuda_backend::CudaDType>(
    op: &'static str,
    storage: &'a candle_core::CudaStorage,
    layout: &Layout,
    dims: &[usize],
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    let slice = storage.as_cuda_slice::<T>()?;
    let (start, end) = contiguous_range(op, layout, dims)?;
    Ok(slice.slice(start..end))
}
