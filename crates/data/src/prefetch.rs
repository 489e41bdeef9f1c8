//! Background workers that produce numbered items in order, a bounded number ahead.
//!
//! Worker `w` of `T` produces items `w, w + T, w + 2T, ...` into its own bounded
//! channel; the consumer reads the channels round-robin, so items arrive in
//! numbering order whatever the thread count, and each item depends only on its
//! number. Dropping the [`Prefetcher`] closes the channels and joins the workers.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use crate::error::{DataError, Result};

/// Ordered, bounded, multi-threaded production of items `0, 1, 2, ...` until one is `None`.
pub(crate) struct Prefetcher<T> {
    receivers: Vec<Receiver<T>>,
    workers: Vec<Option<JoinHandle<()>>>,
    next: usize,
    finished: bool,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts `threads` workers, each made by `make_worker` and keeping up to
    /// `ahead / threads` (at least 1) finished items queued.
    pub(crate) fn spawn<F>(
        name: &str,
        threads: usize,
        ahead: usize,
        make_worker: impl Fn() -> F,
    ) -> Result<Self>
    where
        F: FnMut(u64) -> Option<T> + Send + 'static,
    {
        let capacity = ahead.div_ceil(threads).max(1);
        let mut me = Self {
            receivers: Vec::with_capacity(threads),
            workers: Vec::with_capacity(threads),
            next: 0,
            finished: false,
        };
        for w in 0..threads {
            let (tx, rx) = sync_channel(capacity);
            let mut produce = make_worker();
            let thread_name = format!("{name}-{w}");
            let handle = std::thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || {
                    let mut k = w as u64;
                    while let Some(item) = produce(k) {
                        if tx.send(item).is_err() {
                            return; // The consumer is gone.
                        }
                        k += threads as u64;
                    }
                })
                .map_err(|source| DataError::Spawn {
                    name: thread_name,
                    source,
                })?;
            me.receivers.push(rx);
            me.workers.push(Some(handle));
        }
        Ok(me)
    }
}

impl<T> Iterator for Prefetcher<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.finished {
            return None;
        }
        let w = self.next % self.receivers.len();
        match self.receivers[w].recv() {
            Ok(item) => {
                self.next += 1;
                Some(item)
            }
            Err(_) => {
                // The worker ended: either the items ran out, or it panicked.
                self.finished = true;
                if let Some(Err(panic)) = self.workers[w].take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

/// A [`Prefetcher`] of fallible items that ends after the first error: each
/// worker stops after producing its first error, and the consumer yields the
/// first error it meets, then nothing.
pub(crate) struct FallibleFetcher<T> {
    inner: Prefetcher<Result<T>>,
    failed: bool,
}

impl<T: Send + 'static> FallibleFetcher<T> {
    /// As [`Prefetcher::spawn`], for workers that may fail.
    pub(crate) fn spawn<F>(
        name: &str,
        threads: usize,
        ahead: usize,
        make_worker: impl Fn() -> F,
    ) -> Result<Self>
    where
        F: FnMut(u64) -> Option<Result<T>> + Send + 'static,
    {
        let inner = Prefetcher::spawn(name, threads, ahead, || until_error(make_worker()))?;
        Ok(Self {
            inner,
            failed: false,
        })
    }
}

impl<T> Iterator for FallibleFetcher<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.failed {
            return None;
        }
        let item = self.inner.next()?;
        self.failed = item.is_err();
        Some(item)
    }
}

/// Produces results until the first error, then nothing.
fn until_error<T>(
    mut produce: impl FnMut(u64) -> Option<Result<T>>,
) -> impl FnMut(u64) -> Option<Result<T>> {
    let mut failed = false;
    move |k| {
        if failed {
            return None;
        }
        let item = produce(k)?;
        failed = item.is_err();
        Some(item)
    }
}

impl<T> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        // Closing the channels makes every blocked or future `send` fail, so each
        // worker stops after at most the item it is producing.
        self.receivers.clear();
        for handle in self.workers.iter_mut().filter_map(Option::take) {
            // A worker's panic was either reported by `next` or is moot now.
            let _ = handle.join();
        }
    }
}
