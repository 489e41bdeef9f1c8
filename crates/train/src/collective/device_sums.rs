//! Gradient sums on the GPU through NCCL, for the ranks of a host world.
//!
//! A data-parallel run's ranks are joined by a host world ([`super::TcpWorld`],
//! `MpiWorld`, or [`super::SingleProcess`] for one rank), which carries the
//! small sums (metrics, flags) and sets the timeout. With the NCCL backend
//! (feature `nccl`), the one large sum of a step, the gradients, stays on
//! the GPU: `NcclWorld` runs NCCL's all-reduce on the tensor's own CUDA
//! stream instead of copying it to the host and back.
//!
//! The communicator is made at the first sum of a CUDA tensor, which every
//! rank reaches at the same step: a host sum first proves every rank alive
//! (within the host's timeout), rank 0's NCCL id reaches the others in a
//! second host sum ([`from_rank_zero`]), then each rank joins
//! (`ncclCommInitRank`). A device sum that has not completed within the
//! timeout ends with [`CollectiveError::Timeout`] ([`wait_for`]); dropping
//! the world then aborts the communicator (`ncclCommAbort`), which ends its
//! kernels on the GPU.

use std::time::Duration;

use super::{Collective, CollectiveError};

/// Which collective sums the gradients of a run on a GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SumBackend {
    /// NCCL for a world of several ranks where the build has it (feature
    /// `nccl`) and its library loads, the host world otherwise.
    #[default]
    Auto,
    /// The host world (MPI, TCP): tensors are copied to the host and back.
    Host,
    /// NCCL for the sums of CUDA tensors, even in a world of one rank, or
    /// an error where the build or the machine lacks it. A CPU run's tensors
    /// are summed by the host world whatever the backend.
    Nccl,
}

/// The file the NCCL backend loads when it starts.
const NCCL_LIBRARY: &str = "libnccl.so";

/// Whether this build has the NCCL backend (feature `nccl`).
const NCCL_BUILT: bool = cfg!(feature = "nccl");

/// Whether a run of `ranks` ranks sums on the GPU with NCCL: `backend` as
/// asked, for a build that has NCCL or not (`built`), on a machine where its
/// library loads or not (`loads`, asked only where it matters).
fn uses_nccl(
    backend: SumBackend,
    ranks: usize,
    built: bool,
    loads: impl FnOnce() -> bool,
) -> Result<bool, CollectiveError> {
    match backend {
        SumBackend::Host => Ok(false),
        SumBackend::Auto => Ok(ranks > 1 && built && loads()),
        SumBackend::Nccl if !built => Err(CollectiveError::Setup(
            "the NCCL backend is not in this build: build with the `nccl` feature \
             (scripts/build-cuda.sh does)"
                .into(),
        )),
        SumBackend::Nccl if !loads() => Err(CollectiveError::Setup(format!(
            "the NCCL backend needs {NCCL_LIBRARY}, which was not found: install NCCL \
             (Debian and Ubuntu: libnccl2 and libnccl-dev) or put a folder holding a \
             {NCCL_LIBRARY} link to PyTorch's libnccl.so.2 (site-packages/nvidia/nccl/lib) \
             on LD_LIBRARY_PATH"
        ))),
        SumBackend::Nccl => Ok(true),
    }
}

/// `host` itself, or `host` with NCCL sums for CUDA tensors where `backend`
/// asks for them (see [`SumBackend`]: `auto` on several ranks of a build with
/// NCCL whose library loads); device sums give up after `timeout`.
pub fn with_backend<'a>(
    host: &'a dyn Collective,
    backend: SumBackend,
    timeout: Duration,
) -> Result<Box<dyn Collective + 'a>, CollectiveError> {
    #[cfg(feature = "nccl")]
    if uses_nccl(backend, host.world_size(), NCCL_BUILT, nccl::library_loads)? {
        return Ok(Box::new(nccl::NcclWorld::new(host, timeout)));
    }
    #[cfg(not(feature = "nccl"))]
    {
        uses_nccl(backend, host.world_size(), NCCL_BUILT, || false)?;
        let _ = timeout;
    }
    Ok(Box::new(host))
}

/// Rank 0's `bytes` on every rank, through a sum over `host` to which the
/// other ranks add zeros. Every rank passes as many bytes (the others'
/// values are ignored); a sum that is not one byte per value (ranks that
/// disagree) is an error.
#[cfg(any(feature = "nccl", test))]
fn from_rank_zero(host: &dyn Collective, bytes: &[u8]) -> Result<Vec<u8>, CollectiveError> {
    let mut values: Vec<f64> = if host.rank() == 0 {
        bytes.iter().map(|&b| f64::from(b)).collect()
    } else {
        vec![0.0; bytes.len()]
    };
    host.all_reduce_sum_f64(&mut values)?;
    values
        .iter()
        .map(|&v| {
            let byte = v as u8;
            if f64::from(byte) == v {
                Ok(byte)
            } else {
                Err(CollectiveError::Setup(format!(
                    "rank {}: the ranks sent different NCCL ids (a sum of {v}, not one byte)",
                    host.rank()
                )))
            }
        })
        .collect()
}

/// Polls `done` until it says so, or ends with a timeout of `rank`'s
/// `operation` once `timeout` has passed.
#[cfg(any(feature = "nccl", test))]
fn wait_for(
    rank: usize,
    operation: &'static str,
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CollectiveError>,
) -> Result<(), CollectiveError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_micros(20);
    while !done()? {
        if start.elapsed() >= timeout {
            return Err(CollectiveError::Timeout {
                rank,
                operation,
                timeout,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(feature = "nccl")]
mod nccl {
    use std::cell::OnceCell;
    use std::time::Duration;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc;
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
    use cudarc::nccl::safe::{Comm, Id, ReduceOp};

    use super::{from_rank_zero, wait_for, Collective, CollectiveError};

    /// What the device sum waits in, in a timeout's message.
    const OPERATION: &str = "NCCL all-reduce";

    /// Whether NCCL's library loads (cudarc's own search for it).
    pub(super) fn library_loads() -> bool {
        // SAFETY: cudarc's check only tries to load the library by its
        // candidate names and drops it; it calls none of its functions.
        unsafe { cudarc::nccl::sys::is_culib_present() }
    }

    /// An NCCL error as a collective's.
    fn nccl_error(rank: usize, what: &str, e: impl std::fmt::Debug) -> CollectiveError {
        CollectiveError::Setup(format!("rank {rank}: NCCL {what}: {e:?}"))
    }

    /// A host world whose sums of CUDA f32 tensors run on the GPU (NCCL).
    pub(super) struct NcclWorld<'a> {
        host: &'a dyn Collective,
        timeout: Duration,
        /// Made at the first device sum, on the stream of its tensor's GPU.
        comm: OnceCell<Comm>,
    }

    impl<'a> NcclWorld<'a> {
        pub(super) fn new(host: &'a dyn Collective, timeout: Duration) -> Self {
            Self {
                host,
                timeout,
                comm: OnceCell::new(),
            }
        }

        /// The communicator, made with every rank on `device`'s stream at
        /// the first call (see the module's documentation).
        fn comm(&self, device: &candle_core::CudaDevice) -> Result<&Comm, CollectiveError> {
            if let Some(comm) = self.comm.get() {
                return Ok(comm);
            }
            let (rank, size) = (self.rank(), self.world_size());
            self.host.all_reduce_sum_f64(&mut [1.0])?;
            let id = if rank == 0 {
                let id = Id::new().map_err(|e| nccl_error(rank, "id", e))?;
                id.internal().map(|c| c as u8)
            } else {
                [0; 128]
            };
            let shared = from_rank_zero(self.host, &id)?;
            let id = Id::uninit(std::array::from_fn(|i| shared[i] as std::ffi::c_char));
            // ncclCommInitRank binds the communicator to the calling
            // thread's current device: make that the tensor's.
            let stream = device.cuda_stream();
            stream
                .context()
                .bind_to_thread()
                .map_err(|e| nccl_error(rank, "device", e))?;
            let comm = Comm::from_rank(stream, rank, size, id)
                .map_err(|e| nccl_error(rank, "communicator", e))?;
            Ok(self.comm.get_or_init(|| comm))
        }
    }

    impl Collective for NcclWorld<'_> {
        fn rank(&self) -> usize {
            self.host.rank()
        }

        fn world_size(&self) -> usize {
            self.host.world_size()
        }

        fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
            self.host.all_reduce_sum_f32(values)
        }

        fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
            self.host.all_reduce_sum_f64(values)
        }

        fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError> {
            let device = match tensor.device() {
                Device::Cuda(device) if tensor.dtype() == DType::F32 => device,
                _ => return self.host.all_reduce_sum(tensor),
            };
            let comm = self.comm(device)?;
            let summed = tensor.contiguous()?.apply_op1_no_bwd(&AllReduce(comm))?;
            let rank = self.rank();
            let done = device
                .cuda_stream()
                .record_event(None)
                .map_err(|e| nccl_error(rank, "event", e))?;
            wait_for(rank, OPERATION, self.timeout, || {
                done.try_is_complete()
                    .map_err(|e| nccl_error(rank, "all-reduce", e))
            })?;
            Ok(summed)
        }
    }

    /// NCCL's sum of a contiguous CUDA f32 tensor over the ranks of a
    /// communicator, into a new tensor.
    struct AllReduce<'c>(&'c Comm);

    impl CustomOp1 for AllReduce<'_> {
        fn name(&self) -> &'static str {
            "nccl-all-reduce"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!(
                "nccl-all-reduce sums CUDA tensors; CPU tensors go to the host world"
            )
        }

        fn cuda_fwd(
            &self,
            storage: &CudaStorage,
            layout: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let Some((start, end)) = layout.contiguous_offsets() else {
                return Err(candle_core::Error::RequiresContiguous { op: self.name() });
            };
            let send = storage.as_cuda_slice::<f32>()?.slice(start..end);
            let device = storage.device().clone();
            // SAFETY: NCCL writes every value of the buffer before it is read.
            let mut receive = unsafe { device.alloc::<f32>(end - start) }?;
            self.0
                .all_reduce(&send, &mut receive, &ReduceOp::Sum)
                .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
            Ok((
                CudaStorage::wrap_cuda_slice(receive, device),
                layout.shape().clone(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::threads::world;
    use super::super::SingleProcess;
    use super::*;

    #[test]
    fn rank_zeros_bytes_reach_every_rank() {
        let ranks = world(3, Duration::from_secs(30));
        let id: Vec<u8> = (0..128).map(|i| (i * 37 % 256) as u8).collect();
        let got = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .iter()
                .map(|rank| {
                    let mine = if rank.rank() == 0 {
                        id.clone()
                    } else {
                        vec![255; 128]
                    };
                    scope.spawn(move || from_rank_zero(rank, &mine).unwrap())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(got, vec![id.clone(); 3]);
        assert_eq!(from_rank_zero(&SingleProcess, &id).unwrap(), id);
    }

    /// A world of two whose other rank adds `extra` to every value.
    struct Disagreeing {
        extra: f64,
    }

    impl Collective for Disagreeing {
        fn rank(&self) -> usize {
            1
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<(), CollectiveError> {
            unreachable!("only f64 sums are used")
        }
        fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
            values.iter_mut().for_each(|v| *v += self.extra);
            Ok(())
        }
    }

    #[test]
    fn a_sum_that_is_not_one_byte_is_an_error() {
        for extra in [0.5, 256.0, -1.0] {
            let err = from_rank_zero(&Disagreeing { extra }, &[0, 1]).unwrap_err();
            assert!(err.to_string().contains("different NCCL ids"), "{err}");
        }
        assert_eq!(
            from_rank_zero(&Disagreeing { extra: 7.0 }, &[0, 1]).unwrap(),
            [7, 7]
        );
    }

    #[test]
    fn a_wait_ends_when_done_or_times_out_naming_the_rank() {
        let mut polls = 0;
        wait_for(1, "sum", Duration::from_secs(30), || {
            polls += 1;
            Ok(polls == 3)
        })
        .unwrap();
        assert_eq!(polls, 3);
        let err = wait_for(2, "sum", Duration::from_millis(20), || Ok(false)).unwrap_err();
        assert!(
            matches!(err, CollectiveError::Timeout { rank: 2, .. }),
            "{err}"
        );
        let err = wait_for(0, "sum", Duration::from_secs(30), || {
            Err(CollectiveError::Setup("failed".into()))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "failed");
    }

    #[test]
    fn the_backend_follows_the_flag_the_build_and_the_library() {
        let never = || -> bool { panic!("the library is not asked about") };
        assert!(!uses_nccl(SumBackend::Host, 2, true, never).unwrap());
        assert!(!uses_nccl(SumBackend::Auto, 2, false, never).unwrap());
        // One rank has nothing to sum: only an explicit request uses NCCL.
        assert!(!uses_nccl(SumBackend::Auto, 1, true, never).unwrap());
        assert!(uses_nccl(SumBackend::Auto, 2, true, || true).unwrap());
        assert!(!uses_nccl(SumBackend::Auto, 2, true, || false).unwrap());
        assert!(uses_nccl(SumBackend::Nccl, 1, true, || true).unwrap());
        let unbuilt = uses_nccl(SumBackend::Nccl, 2, false, never).unwrap_err();
        assert!(unbuilt.to_string().contains("`nccl` feature"), "{unbuilt}");
        let missing = uses_nccl(SumBackend::Nccl, 1, true, || false).unwrap_err();
        assert!(missing.to_string().contains(NCCL_LIBRARY), "{missing}");
    }

    #[test]
    fn the_host_backend_is_the_host_world() {
        let world = with_backend(&SingleProcess, SumBackend::Host, Duration::from_secs(1)).unwrap();
        assert_eq!((world.rank(), world.world_size()), (0, 1));
        let auto = with_backend(&SingleProcess, SumBackend::Auto, Duration::from_secs(1));
        assert!(auto.is_ok());
        if !NCCL_BUILT {
            let err = with_backend(&SingleProcess, SumBackend::Nccl, Duration::from_secs(1));
            assert!(err.is_err());
        }
    }
}
