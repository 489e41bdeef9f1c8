//! What opening an NVIDIA GPU needs at run time, checked before candle is
//! asked to: the shared libraries a `cuda` build loads, and what the
//! driver's errors at that point mean.
//!
//! A `cuda` build loads the driver and the CUDA libraries when a GPU is
//! first opened, not when the program starts (candle's cudarc is built with
//! `dynamic-loading`), so the same binary runs on the CPU of a machine that
//! has none of them. cudarc panics when a library it needs is missing;
//! [`check_libraries`] finds that first and makes it an error that names the
//! library and where it comes from.

use crate::OpsError;

/// A shared library that a `cuda` build loads when it opens a GPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CudaLibrary {
    /// The file the loader looks for, e.g. `libcudnn.so.9`.
    pub(crate) file: &'static str,
    /// What ships it.
    pub(crate) from: &'static str,
    /// Whether the loader finds it (cudarc's own search).
    pub(crate) present: fn() -> bool,
}

/// How to make a missing library other than the driver's visible.
const LIBRARY_HINT: &str = "put the directory that holds it on LD_LIBRARY_PATH \
     (PyTorch's CUDA wheels have them under site-packages/nvidia/*/lib; scripts/gpu-check.sh \
     shows how)";

/// How to get the driver's library.
const DRIVER_HINT: &str = "install the NVIDIA driver (580 or newer for this CUDA 13 build)";

/// The libraries this build loads to open a GPU, the driver's first.
#[cfg(feature = "cuda")]
pub(crate) fn libraries() -> Vec<CudaLibrary> {
    use candle_core::cuda_backend::cudarc;
    let mut libs = vec![
        CudaLibrary {
            file: "libcuda.so.1",
            from: "the NVIDIA driver",
            present: || loadable(cudarc::driver::sys::is_culib_present),
        },
        CudaLibrary {
            file: "libnvrtc.so.13",
            from: "CUDA's NVRTC, in the nvidia-cuda-nvrtc wheel",
            present: || loadable(cudarc::nvrtc::sys::is_culib_present),
        },
        CudaLibrary {
            file: "libcublas.so.13",
            from: "cuBLAS, in the nvidia-cublas wheel",
            present: || loadable(cudarc::cublas::sys::is_culib_present),
        },
        CudaLibrary {
            file: "libcublasLt.so.13",
            from: "cuBLASLt, in the nvidia-cublas wheel",
            present: || loadable(cudarc::cublaslt::sys::is_culib_present),
        },
        CudaLibrary {
            file: "libcurand.so.10",
            from: "cuRAND, in the nvidia-curand wheel or dist/lib of scripts/build-cuda.sh",
            present: || loadable(cudarc::curand::sys::is_culib_present),
        },
    ];
    #[cfg(feature = "cudnn")]
    libs.push(CudaLibrary {
        file: "libcudnn.so.9",
        from: "cuDNN 9, in the nvidia-cudnn-cu13 wheel",
        present: || loadable(cudarc::cudnn::sys::is_culib_present),
    });
    libs
}

/// Runs one of cudarc's `is_culib_present` checks.
#[cfg(feature = "cuda")]
fn loadable(check: unsafe fn() -> bool) -> bool {
    // SAFETY: cudarc's check only tries to load the library by its
    // candidate names and drops it; it calls none of its functions.
    unsafe { check() }
}

/// Without CUDA support nothing is loaded (opening a GPU fails earlier).
#[cfg(not(feature = "cuda"))]
pub(crate) fn libraries() -> Vec<CudaLibrary> {
    Vec::new()
}

/// The first of `libs` that is missing, as an error for device `spec`.
pub(crate) fn check_libraries(spec: &str, libs: &[CudaLibrary]) -> Result<(), OpsError> {
    match libs.iter().find(|lib| !(lib.present)()) {
        None => Ok(()),
        Some(lib) => Err(OpsError::CudaLibraryMissing {
            spec: spec.to_string(),
            file: lib.file,
            from: lib.from,
            hint: if lib.file.starts_with("libcuda.") {
                DRIVER_HINT
            } else {
                LIBRARY_HINT
            },
        }),
    }
}

/// What to do about an error from opening a GPU, by the CUDA error it
/// names, if it is one of those a user can act on.
pub(crate) fn hint(error: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 6] = [
        (
            "CUDA_ERROR_NO_DEVICE",
            "no NVIDIA GPU is visible to this process (see nvidia-smi and CUDA_VISIBLE_DEVICES)",
        ),
        (
            "CUDA_ERROR_INVALID_DEVICE",
            "there is no GPU with that ordinal (see nvidia-smi and CUDA_VISIBLE_DEVICES)",
        ),
        (
            "CUDA_ERROR_INSUFFICIENT_DRIVER",
            "the NVIDIA driver is older than this build's CUDA 13 (580 or newer is needed)",
        ),
        (
            "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
            "the NVIDIA driver is older than the CUDA 13 that compiled this build's kernels \
             (580 or newer is needed)",
        ),
        (
            "CUDA_ERROR_OUT_OF_MEMORY",
            "the GPU has no memory left (see nvidia-smi for other processes)",
        ),
        (
            "not been built with cuda support",
            "this build has no CUDA support; build it with scripts/build-cuda.sh \
             (or `--features cuda,cudnn`)",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| error.contains(needle))
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(file: &'static str, present: fn() -> bool) -> CudaLibrary {
        CudaLibrary {
            file,
            from: "somewhere",
            present,
        }
    }

    #[test]
    fn the_first_missing_library_is_named_with_where_it_comes_from() {
        let libs = [
            lib("libcublas.so.13", || true),
            lib("libcudnn.so.9", || false),
            lib("libcuda.so.1", || false),
        ];
        let e = check_libraries("cuda:1", &libs).unwrap_err().to_string();
        for part in ["cuda:1", "libcudnn.so.9", "somewhere", "LD_LIBRARY_PATH"] {
            assert!(e.contains(part), "{part} missing from: {e}");
        }
        let driver = check_libraries("cuda:0", &libs[2..])
            .unwrap_err()
            .to_string();
        assert!(
            driver.contains("libcuda.so.1") && driver.contains("driver"),
            "{driver}"
        );
        assert!(check_libraries("cuda:0", &libs[..1]).is_ok());
    }

    #[test]
    fn driver_errors_get_a_hint_and_others_none() {
        let old = "DriverError(CUDA_ERROR_UNSUPPORTED_PTX_VERSION, \"the provided PTX was compiled with an unsupported toolchain.\")";
        assert!(hint(old).is_some_and(|h| h.contains("580")));
        assert!(
            hint("DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")")
                .is_some_and(|h| h.contains("CUDA_VISIBLE_DEVICES"))
        );
        assert!(hint("shape mismatch").is_none());
    }

    #[test]
    fn a_build_without_cuda_needs_no_library_and_says_how_to_get_cuda() {
        #[cfg(not(feature = "cuda"))]
        {
            assert!(libraries().is_empty());
            let e = candle_core::Device::new_cuda(0).unwrap_err().to_string();
            assert!(hint(&e).is_some_and(|h| h.contains("build-cuda.sh")), "{e}");
        }
        #[cfg(feature = "cuda")]
        assert!(libraries()[0].file.starts_with("libcuda."));
    }
}
