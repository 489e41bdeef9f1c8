//! Device selection from a user-facing string (`--device cpu|cuda[:N]|metal[:N]`).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::dispatch::check_cuda_kernel_choice;
use crate::{cuda_runtime, OpsError};

/// A device as the user names it: parsed from `cpu`, `cuda`, `cuda:N`,
/// `metal` or `metal:N`, then opened with [`DeviceSpec::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The host CPU (always available).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (needs the `cuda` feature of candle).
    Cuda(usize),
    /// An Apple GPU by ordinal (needs the `metal` feature of candle).
    Metal(usize),
}

impl DeviceSpec {
    /// Opens the device; a GPU that is not compiled in or not present is an
    /// error naming the device.
    ///
    /// An NVIDIA GPU's memory pool is set to keep the memory that tensors
    /// free (see `keep_freed_gpu_memory`).
    ///
    /// Before an NVIDIA GPU is opened, the libraries that opening it loads
    /// are looked for: a missing one is an [`OpsError::CudaLibraryMissing`]
    /// naming it, not a panic. The driver's errors that a user can act on (no
    /// GPU visible, a driver older than the build) carry a hint.
    pub fn open(self) -> Result<Device, OpsError> {
        let opened = match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                check_cuda_kernel_choice()?;
                check_memory_setting(std::env::var("RESNET_CUDA_MEMORY").ok())?;
                cuda_runtime::check_libraries(&self.to_string(), &cuda_runtime::libraries())?;
                Device::new_cuda(n).and_then(|device| {
                    keep_freed_gpu_memory(&device)?;
                    Ok(device)
                })
            }
            DeviceSpec::Metal(n) => Device::new_metal(n),
        };
        opened.map_err(|source| OpsError::Unavailable {
            spec: self.to_string(),
            hint: cuda_runtime::hint(&source.to_string()),
            source: Box::new(source),
        })
    }
}

/// Checks the value of `RESNET_CUDA_MEMORY`: unset, empty or `release`
/// (see `keep_freed_gpu_memory`); any other value is an error, not a silent
/// default.
fn check_memory_setting(value: Option<String>) -> Result<(), OpsError> {
    match value {
        Some(value) if !value.is_empty() && value != "release" => Err(OpsError::BadSetting {
            variable: "RESNET_CUDA_MEMORY",
            value,
            detail: "expected `release` (freed GPU memory goes back to the driver at each \
                     synchronisation) or nothing (the pool keeps it)"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// Makes the memory pool that candle's CUDA tensors are allocated from
/// (`cuMemAllocAsync` from the device's current pool) keep the memory they
/// free, as PyTorch's caching allocator does.
///
/// The pool's default release threshold is 0: at every synchronisation, which
/// a training step has at least once (its loss is read back), every block
/// no tensor holds goes back to the driver, and the next step maps it again
/// for each of its activations. With the threshold at its maximum the pool
/// keeps what it has and hands it out again. `RESNET_CUDA_MEMORY=release`
/// leaves the default, to compare.
#[cfg(feature = "cuda")]
fn keep_freed_gpu_memory(device: &Device) -> candle_core::Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::cuda_backend::WrapErr;

    if std::env::var("RESNET_CUDA_MEMORY").is_ok_and(|v| v == "release") {
        return Ok(());
    }
    let Some(pool) = memory_pool(device)? else {
        return Ok(());
    };
    let mut threshold = u64::MAX;
    // SAFETY: the pool is the live device's; the release threshold
    // attribute takes a u64, which `threshold` is.
    unsafe {
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .w()
    }
}

/// Without CUDA there is no GPU memory pool to set.
#[cfg(not(feature = "cuda"))]
fn keep_freed_gpu_memory(_device: &Device) -> candle_core::Result<()> {
    Ok(())
}

/// The memory pool that candle allocates the tensors of `device` from
/// (`cuMemAllocAsync` from the device's current pool), with the device's
/// context bound to this thread: `None` for a device that is not an NVIDIA
/// GPU or a GPU without such pools.
#[cfg(feature = "cuda")]
fn memory_pool(
    device: &Device,
) -> candle_core::Result<Option<candle_core::cuda_backend::cudarc::driver::sys::CUmemoryPool>> {
    use candle_core::cuda_backend::cudarc::driver::result;
    use candle_core::cuda_backend::WrapErr;

    let Device::Cuda(cuda) = device else {
        return Ok(None);
    };
    let stream = cuda.cuda_stream();
    let context = stream.context();
    if !context.has_async_alloc() {
        return Ok(None);
    }
    context.bind_to_thread().w()?;
    // SAFETY: the device comes from a live context.
    Ok(Some(
        unsafe { result::device::get_mem_pool(context.cu_device()) }.w()?,
    ))
}

/// The most memory that tensors on `device` have held at once since the
/// process opened it, in bytes: on an NVIDIA GPU the high-water mark of the
/// memory pool candle allocates them from (`CU_MEMPOOL_ATTR_USED_MEM_HIGH`),
/// what `torch.cuda.max_memory_allocated` counts for PyTorch's tensors.
/// `None` on the CPU, on other devices, or where the GPU has no such pool.
#[cfg(feature = "cuda")]
pub fn peak_device_memory(device: &Device) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};

    let pool = memory_pool(device).ok()??;
    let mut bytes = 0u64;
    // SAFETY: the pool is the live device's; the attribute is a u64, which
    // `bytes` is.
    unsafe {
        result::mem_pool::get_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            (&mut bytes as *mut u64).cast(),
        )
        .ok()?;
    }
    Some(bytes)
}

/// Without CUDA no device has a GPU memory pool: always `None`.
#[cfg(not(feature = "cuda"))]
pub fn peak_device_memory(_device: &Device) -> Option<u64> {
    None
}

impl FromStr for DeviceSpec {
    type Err = OpsError;

    fn from_str(s: &str) -> Result<Self, OpsError> {
        let invalid = || OpsError::InvalidDevice {
            spec: s.to_string(),
        };
        let (kind, ordinal) = match s.split_once(':') {
            Some((kind, n)) => (kind, n.parse::<usize>().map_err(|_| invalid())?),
            None => (s, 0),
        };
        match kind {
            "cpu" if !s.contains(':') => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(ordinal)),
            "metal" => Ok(DeviceSpec::Metal(ordinal)),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_the_rest() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(
            "metal:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Metal(1)
        );
        for bad in ["gpu", "cpu:0", "cuda:x", "", "cuda:"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cpu_opens_and_a_missing_gpu_is_a_named_error() {
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
        assert_eq!(peak_device_memory(&Device::Cpu), None);
        if let Err(e) = DeviceSpec::Cuda(7).open() {
            assert!(e.to_string().contains("cuda:7"), "{e}");
            #[cfg(not(feature = "cuda"))]
            assert!(e.to_string().contains("build-cuda.sh"), "{e}");
        }
    }

    #[test]
    fn the_memory_setting_takes_release_or_nothing() {
        for ok in [None, Some(""), Some("release")] {
            assert!(check_memory_setting(ok.map(String::from)).is_ok(), "{ok:?}");
        }
        let err = check_memory_setting(Some("relase".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RESNET_CUDA_MEMORY=\"relase\""), "{err}");
        assert!(err.contains("expected `release`"), "{err}");
    }
}
