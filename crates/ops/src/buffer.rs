//! Output buffers that a kernel writes in full, allocated without zeroing.
//!
//! `vec![0f32; n]` writes every value once before the kernel writes it
//! again: for the activations of a training step, a memset of each output.

use std::mem::MaybeUninit;

/// `len` f32 values, each written by `fill` through the slice it is given,
/// in a buffer that is not zeroed first.
///
/// # Safety
///
/// `fill` must write every element of the slice it receives (if it panics,
/// nothing is read).
pub(crate) unsafe fn filled_by(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the caller guarantees that `fill` initialised all `len` values.
    unsafe { out.set_len(len) };
    out
}

/// `values`, every one of which has been written, as initialised values.
///
/// # Safety
///
/// Every element of `values` must have been initialised.
pub(crate) unsafe fn assume_init_mut(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller
    // guarantees that every element is initialised.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}
