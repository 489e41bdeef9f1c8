//! Per-thread scratch space for the kernels' temporary matrices.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` f32 values of a buffer that belongs to the calling
/// thread and is kept for its next call: the im2col matrices (megabytes per
/// convolution at ImageNet sizes) are then neither allocated, zeroed nor
/// faulted in again for every call. Each thread's buffer stays as large as
/// the largest request it served.
///
/// The values are whatever an earlier call left: `f` must write a value
/// before reading it. A nested call on the same thread (rayon may run
/// another task there while `f` waits for its own) gets a fresh buffer.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}
