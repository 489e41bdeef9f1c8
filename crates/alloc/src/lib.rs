//! The global allocator of the workspace's binaries: mimalloc, told to keep
//! the memory that is freed.
//!
//! A training step frees and allocates the same large tensor buffers every
//! iteration. mimalloc is fast at that, but by default it returns freed
//! memory to the operating system ("purges" it) a second after it is freed
//! (10 ms in mimalloc v2), so a step longer than that faults its pages back
//! in and the kernel zeroes them: measured, ~30% of a ResNet-110 training
//! step. [`keep_freed_memory`]
//! turns purging off; the process then stays at the footprint it reaches in
//! every step anyway.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: resnet_alloc::MiMalloc = resnet_alloc::MiMalloc;
//!
//! fn main() {
//!     resnet_alloc::keep_freed_memory();
//!     // ...
//! }
//! ```

pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (position 15 of `mi_option_e` in the
/// bundled `mimalloc.h`, v2 and v3; libmimalloc-sys names no constant for it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Stops mimalloc from returning freed memory to the operating system, so
/// that buffers freed in one training step are reused, already mapped, in
/// the next. Call it first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is thread-safe and takes effect for later
    // frees; -1 is mimalloc's documented "never purge".
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// mimalloc's current purge delay in milliseconds (-1: never).
pub fn purge_delay_ms() -> std::ffi::c_long {
    // SAFETY: reading an option has no preconditions.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_the_purge_delay_and_gets_turned_off() {
        // The purge delay defaults to 1000 ms (10 ms in v2), its neighbours
        // in the enum (eager-commit delay, NUMA nodes) to 1 and 0: an index
        // off by one would show here (unless the environment sets it).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!(
                [10, 1000].contains(&purge_delay_ms()),
                "{}",
                purge_delay_ms()
            );
        }
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
