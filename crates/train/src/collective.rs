//! The processes of a data-parallel run and the collectives between them.
//!
//! A run of `world_size` processes (ranks) trains one model: each rank holds
//! a replica, computes the gradients of its share of every batch, and the
//! ranks sum them ([`Collective::all_reduce_sum`]) before each applies the
//! same update. [`SingleProcess`] is the world of one that a plain run is;
//! `MpiWorld` (feature `mpi`) is a world launched by `mpirun`/`srun`;
//! [`TcpWorld`] one launched as `torchrun` launches its ranks, joined over
//! TCP without MPI. [`with_backend`] adds NCCL's sums of CUDA tensors to any
//! of them (feature `nccl`, [`SumBackend`]); [`rank_device`] gives each rank
//! its own GPU.
//!
//! A collective that waits longer than its world's timeout for the other
//! ranks ends with [`CollectiveError::Timeout`] instead of hanging.

use std::time::Duration;

use candle_core::Tensor;

pub use self::device_sums::{with_backend, SumBackend};
pub use self::local_device::rank_device;
#[cfg(feature = "mpi")]
pub use self::mpi_world::MpiWorld;
pub use self::tcp::TcpWorld;

mod device_sums;
mod local_device;
mod tcp;

/// A failed collective.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The other ranks did not join a collective in time: one of them ended
    /// or hangs.
    #[error(
        "rank {rank}: the other ranks did not join the {operation} within {} s; \
         one of them has ended or hangs",
        timeout.as_secs_f64()
    )]
    Timeout {
        /// The rank that waited.
        rank: usize,
        /// What it waited in.
        operation: &'static str,
        /// How long it waited.
        timeout: Duration,
    },

    /// A rank left the world (it ended) while others still needed it.
    #[error("rank {rank} left the run while rank {waiting} waited for it in the {operation}")]
    RankGone {
        /// The rank that left.
        rank: usize,
        /// The rank that waited.
        waiting: usize,
        /// What it waited in.
        operation: &'static str,
    },

    /// The ranks could not be joined into a world, or sent what the others
    /// did not expect.
    #[error("{0}")]
    Setup(String),

    /// A tensor could not be moved to or from the host.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The ranks of a run and the collectives between them. Every rank must
/// call the same collectives in the same order with buffers of the same
/// length.
///
/// The sums are of host buffers; a backend that sums on a device (NCCL)
/// overrides [`Collective::all_reduce_sum`], which by default sums on the
/// host through [`Collective::all_reduce_sum_f32`].
pub trait Collective {
    /// This process's rank, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn world_size(&self) -> usize;

    /// Replaces `values` on every rank with their element-wise sum over all
    /// ranks (the same on every rank).
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError>;

    /// [`Collective::all_reduce_sum_f32`] for `f64` values (metric sums,
    /// counts and flags).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError>;

    /// The element-wise sum over all ranks of an `f32` tensor, on its device.
    fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError> {
        let mut values = tensor.flatten_all()?.to_vec1::<f32>()?;
        self.all_reduce_sum_f32(&mut values)?;
        Ok(Tensor::from_vec(values, tensor.shape(), tensor.device())?)
    }
}

/// A borrowed world is the world it borrows.
impl<C: Collective + ?Sized> Collective for &C {
    fn rank(&self) -> usize {
        (**self).rank()
    }

    fn world_size(&self) -> usize {
        (**self).world_size()
    }

    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        (**self).all_reduce_sum_f32(values)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        (**self).all_reduce_sum_f64(values)
    }

    fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError> {
        (**self).all_reduce_sum(tensor)
    }
}

/// The world of one process: every collective returns its input.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum_f32(&self, _values: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn all_reduce_sum_f64(&self, _values: &mut [f64]) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError> {
        Ok(tensor.clone())
    }
}

/// Whether an MPI launcher started this process: one of the variables that
/// Open MPI's `mpirun` and PMI or PMIx launchers such as `srun` set in every
/// rank is set.
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use std::time::{Duration, Instant};

    use mpi::collective::SystemOperation;
    use mpi::datatype::Equivalence;
    use mpi::environment::Universe;
    use mpi::request::StaticScope;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::CommunicatorCollectives;

    use super::{launched_by_mpi, Collective, CollectiveError};

    /// The ranks of a job launched by `mpirun` (or another MPI launcher),
    /// over `MPI_COMM_WORLD`. Collectives are non-blocking MPI ones, polled
    /// until they complete or the timeout passes; a rank whose collective
    /// timed out is expected to [`MpiWorld::abort`] the job.
    pub struct MpiWorld {
        /// Finalizes MPI when dropped.
        _universe: Universe,
        world: SimpleCommunicator,
        timeout: Duration,
    }

    impl std::fmt::Debug for MpiWorld {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MpiWorld")
                .field("rank", &self.rank())
                .field("world_size", &self.world_size())
                .field("timeout", &self.timeout)
                .finish()
        }
    }

    impl MpiWorld {
        /// The job's world, with collectives that give up after `timeout`,
        /// if this process was started by an MPI launcher; `None` for a
        /// process started on its own (which then needs no MPI runtime).
        pub fn from_launcher(timeout: Duration) -> Option<MpiWorld> {
            if !launched_by_mpi() {
                return None;
            }
            let universe = mpi::initialize()?;
            let world = universe.world();
            Some(MpiWorld {
                _universe: universe,
                world,
                timeout,
            })
        }

        /// Ends every rank of the job (`MPI_Abort`) with exit code `code`:
        /// what a rank that fails does, so that no other one waits for it.
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }

        /// Sums `values` over the ranks with a non-blocking all-reduce,
        /// polled until done or timed out.
        fn sum<T: Equivalence + Copy + 'static>(
            &self,
            values: &mut [T],
            operation: &'static str,
        ) -> Result<(), CollectiveError> {
            // MPI reads and writes the buffers until the request completes,
            // which a timed-out request never does: they are owned here, not
            // borrowed from the caller, and freed only once it completed.
            let send: *mut [T] = Box::into_raw(values.to_vec().into_boxed_slice());
            let recv: *mut [T] = Box::into_raw(values.to_vec().into_boxed_slice());
            // SAFETY: both come from `Box::into_raw` above and are only
            // freed below, after MPI is done with them.
            let (send_ref, recv_ref): (&'static [T], &'static mut [T]) =
                unsafe { (&*send, &mut *recv) };
            let mut request = self.world.immediate_all_reduce_into(
                StaticScope,
                send_ref,
                recv_ref,
                SystemOperation::sum(),
            );
            let started = Instant::now();
            loop {
                match request.test() {
                    Ok(_) => break,
                    Err(pending) => request = pending,
                }
                let waited = started.elapsed();
                if waited > self.timeout {
                    // Left pending, with its buffers: the caller ends the job.
                    std::mem::forget(request);
                    return Err(CollectiveError::Timeout {
                        rank: self.rank(),
                        operation,
                        timeout: self.timeout,
                    });
                }
                // Spin while a quick answer is likely, then poll gently.
                if waited < Duration::from_millis(2) {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            // SAFETY: the request completed, so MPI holds neither buffer any
            // more, and the references lent to it ended with it.
            unsafe {
                values.copy_from_slice(&*recv);
                drop(Box::from_raw(send));
                drop(Box::from_raw(recv));
            }
            Ok(())
        }
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn world_size(&self) -> usize {
            self.world.size() as usize
        }

        fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
            self.sum(values, "all-reduce of f32 values")
        }

        fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
            self.sum(values, "all-reduce of f64 values")
        }
    }
}

/// An in-process world of ranks on threads, for tests of the data-parallel
/// logic without MPI.
#[cfg(test)]
pub(crate) mod threads {
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    use super::{Collective, CollectiveError};

    /// The state of one all-reduce after another.
    #[derive(Default)]
    struct State {
        /// The values of the ranks that joined the current all-reduce.
        slots: Vec<Option<Vec<f64>>>,
        /// All-reduces completed so far.
        generation: u64,
        /// The sum of the last one completed.
        result: Vec<f64>,
        /// Ranks that have ended.
        gone: Vec<bool>,
    }

    struct Shared {
        state: Mutex<State>,
        changed: Condvar,
    }

    /// One rank of a world of threads; dropping it (its thread ended) makes
    /// the others' waits for it fail with [`CollectiveError::RankGone`].
    pub(crate) struct ThreadRank {
        rank: usize,
        size: usize,
        timeout: Duration,
        shared: Arc<Shared>,
    }

    /// The `size` ranks of a new world, each to be moved to its own thread.
    pub(crate) fn world(size: usize, timeout: Duration) -> Vec<ThreadRank> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots: vec![None; size],
                gone: vec![false; size],
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadRank {
                rank,
                size,
                timeout,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    impl ThreadRank {
        /// Sums in rank order, the same on every rank.
        fn sum(
            &self,
            values: &[f64],
            operation: &'static str,
        ) -> Result<Vec<f64>, CollectiveError> {
            let mut state = self.shared.state.lock().unwrap();
            let generation = state.generation;
            state.slots[self.rank] = Some(values.to_vec());
            if state.slots.iter().all(Option::is_some) {
                let mut sum = vec![0.0; values.len()];
                for slot in state.slots.iter_mut() {
                    for (s, v) in sum.iter_mut().zip(slot.take().unwrap_or_default()) {
                        *s += v;
                    }
                }
                state.result = sum;
                state.generation += 1;
                self.shared.changed.notify_all();
            }
            let deadline = Instant::now() + self.timeout;
            while state.generation == generation {
                let gone = (0..self.size).find(|&r| state.slots[r].is_none() && state.gone[r]);
                if let Some(rank) = gone {
                    return Err(CollectiveError::RankGone {
                        rank,
                        waiting: self.rank,
                        operation,
                    });
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(CollectiveError::Timeout {
                        rank: self.rank,
                        operation,
                        timeout: self.timeout,
                    });
                }
                state = self
                    .shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap()
                    .0;
            }
            Ok(state.result.clone())
        }
    }

    impl Drop for ThreadRank {
        fn drop(&mut self) {
            if let Ok(mut state) = self.shared.state.lock() {
                state.gone[self.rank] = true;
            }
            self.shared.changed.notify_all();
        }
    }

    impl Collective for ThreadRank {
        fn rank(&self) -> usize {
            self.rank
        }

        fn world_size(&self) -> usize {
            self.size
        }

        fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
            let wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            let sum = self.sum(&wide, "all-reduce of f32 values")?;
            for (v, s) in values.iter_mut().zip(sum) {
                *v = s as f32;
            }
            Ok(())
        }

        fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
            let sum = self.sum(values, "all-reduce of f64 values")?;
            values.copy_from_slice(&sum);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::threads::world;
    use super::*;

    #[test]
    fn ranks_sum_their_values_and_a_rank_that_left_is_named() {
        let mut ranks = world(3, Duration::from_secs(30));
        let last = ranks.pop().unwrap();
        let sums = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .iter()
                .chain([&last])
                .map(|rank| {
                    scope.spawn(move || {
                        let mut values = [rank.rank() as f32, 1.0];
                        rank.all_reduce_sum_f32(&mut values).unwrap();
                        values
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(sums, vec![[3.0, 3.0]; 3]);
        drop(last);
        let err = ranks[0].all_reduce_sum_f64(&mut [1.0]).unwrap_err();
        assert!(
            matches!(
                err,
                CollectiveError::RankGone {
                    rank: 2,
                    waiting: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_collective_that_nobody_joins_times_out() {
        let ranks = world(2, Duration::from_millis(50));
        let err = ranks[1].all_reduce_sum_f64(&mut [1.0]).unwrap_err();
        assert!(err.to_string().contains("rank 1"), "{err}");
        assert!(matches!(err, CollectiveError::Timeout { rank: 1, .. }));
    }

    #[test]
    fn a_single_process_keeps_its_values() {
        let tensor = Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu).unwrap();
        let summed = SingleProcess.all_reduce_sum(&tensor).unwrap();
        assert_eq!(summed.to_vec1::<f32>().unwrap(), [1.0, 2.0]);
        assert_eq!((SingleProcess.rank(), SingleProcess.world_size()), (0, 1));
    }
}
