//! Which kernel runs an op: this crate's (on the CPU, or on CUDA with the
//! `cuda`/`cudnn` features) or candle's own ops, by device, dtype, build and
//! the process-wide switches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use candle_core::{DType, Device};

use crate::OpsError;

static USE_FAST_KERNELS: AtomicBool = AtomicBool::new(true);

/// Chooses between this crate's kernels (the default) and candle's own ops,
/// for every conv and batch norm from now on, process-wide. The candle path
/// stays available to compare speed and results side by side.
pub fn set_fast_kernels(enabled: bool) {
    USE_FAST_KERNELS.store(enabled, Ordering::Relaxed);
}

/// Whether this crate's kernels are in use (see [`set_fast_kernels`]).
pub fn fast_kernels() -> bool {
    USE_FAST_KERNELS.load(Ordering::Relaxed)
}

/// Whether this crate has a kernel for tensors on `device` of type `dtype`
/// (today: f32 on the CPU) and kernels are switched on.
pub(crate) fn has_kernel(device: &Device, dtype: DType) -> bool {
    fast_kernels() && device.is_cpu() && dtype == DType::F32
}

/// This crate's CUDA kernels, in the groups that `RESNET_CUDA_KERNELS`
/// turns on and off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CudaKernel {
    /// [`crate::conv2d`] through cuDNN's convolutions (`cudnn` feature).
    Conv,
    /// [`crate::batch_norm_train`] through cuDNN's batch norm (`cudnn`
    /// feature).
    BatchNorm,
    /// This crate's element-wise kernels (`kernels/elementwise.cu`, `cuda`
    /// feature): the ReLU, the residual join and eval-mode batch norm.
    Elementwise,
    /// This crate's pools (`kernels/pool.cu`): the max pool, the option-A
    /// shortcut and the global average pool.
    Pool,
    /// The updates of many tensors in one launch: the SGD step, the running
    /// statistics and [`crate::set_all`].
    Update,
    /// [`crate::cross_entropy`]'s kernels (`kernels/loss.cu`).
    Loss,
    /// [`crate::HostStaging`]'s page-locked copies.
    Staging,
}

impl CudaKernel {
    /// Every group, in the order [`CudaKernel::name`] lists them.
    const ALL: [CudaKernel; 7] = [
        CudaKernel::Conv,
        CudaKernel::BatchNorm,
        CudaKernel::Elementwise,
        CudaKernel::Pool,
        CudaKernel::Update,
        CudaKernel::Loss,
        CudaKernel::Staging,
    ];

    /// The group's name in `RESNET_CUDA_KERNELS`.
    fn name(self) -> &'static str {
        match self {
            CudaKernel::Conv => "conv",
            CudaKernel::BatchNorm => "batch-norm",
            CudaKernel::Elementwise => "elementwise",
            CudaKernel::Pool => "pool",
            CudaKernel::Update => "update",
            CudaKernel::Loss => "loss",
            CudaKernel::Staging => "staging",
        }
    }

    /// The group's bit in a [`KernelSet`].
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Whether the kernel takes tensors of `dtype`: f32, and bf16 for the
    /// convolution (bf16 mixed precision's operands).
    fn takes(self, dtype: DType) -> bool {
        dtype == DType::F32 || (self == CudaKernel::Conv && dtype == DType::BF16)
    }

    /// Whether this build has the kernel.
    fn built(self) -> bool {
        match self {
            CudaKernel::Conv | CudaKernel::BatchNorm => cfg!(feature = "cudnn"),
            _ => cfg!(feature = "cuda"),
        }
    }
}

/// The groups of [`CudaKernel`] that are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KernelSet(u8);

impl KernelSet {
    /// Every group on.
    const ALL: KernelSet = KernelSet((1 << CudaKernel::ALL.len()) - 1);

    /// Whether `kernel` is on.
    fn has(self, kernel: CudaKernel) -> bool {
        self.0 & kernel.bit() != 0
    }

    /// A `RESNET_CUDA_KERNELS` value: empty or `all` (every group), `none`,
    /// or a comma-separated list of groups to turn on (`conv,batch-norm`),
    /// or, where the first item starts with `-`, to turn off (`-loss,-update`:
    /// every group but those). An unknown item is an error that lists the
    /// groups.
    fn parse(value: &str) -> Result<KernelSet, String> {
        let value = value.trim();
        match value {
            "" | "all" => return Ok(KernelSet::ALL),
            "none" => return Ok(KernelSet(0)),
            _ => {}
        }
        let mut set = if value.starts_with('-') {
            KernelSet::ALL
        } else {
            KernelSet(0)
        };
        for item in value.split(',').map(str::trim) {
            let (off, name) = match item.strip_prefix('-') {
                Some(name) => (true, name),
                None => (false, item),
            };
            let Some(kernel) = CudaKernel::ALL.into_iter().find(|k| k.name() == name) else {
                let names: Vec<&str> = CudaKernel::ALL.iter().map(|k| k.name()).collect();
                return Err(format!(
                    "unknown kernel group `{item}`: expected `all`, `none`, or groups \
                     separated by commas, each of {} (`-group` to turn one off)",
                    names.join(", ")
                ));
            };
            set.0 = if off {
                set.0 & !kernel.bit()
            } else {
                set.0 | kernel.bit()
            };
        }
        Ok(set)
    }
}

/// The `RESNET_CUDA_KERNELS` environment variable, read and parsed once: the
/// groups it leaves on, or the value it holds and what is wrong with it.
fn cuda_kernel_choice() -> &'static Result<KernelSet, (String, String)> {
    static CHOICE: OnceLock<Result<KernelSet, (String, String)>> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let value = std::env::var("RESNET_CUDA_KERNELS").unwrap_or_default();
        KernelSet::parse(&value).map_err(|detail| (value, detail))
    })
}

/// Checks `RESNET_CUDA_KERNELS`, which opening a CUDA device does: a value
/// that names no group is an error, not a silent default.
pub(crate) fn check_cuda_kernel_choice() -> Result<(), OpsError> {
    match cuda_kernel_choice() {
        Ok(_) => Ok(()),
        Err((value, detail)) => Err(OpsError::BadSetting {
            variable: "RESNET_CUDA_KERNELS",
            value: value.clone(),
            detail: detail.clone(),
        }),
    }
}

/// Whether `kernel` runs tensors on `device` of type `dtype`: on CUDA, of a
/// dtype it takes ([`CudaKernel::takes`]), built with the kernel's feature,
/// kernels switched on, and `kernel` not turned off by the
/// `RESNET_CUDA_KERNELS` environment variable (see [`KernelSet::parse`]; a
/// value it refuses, which [`crate::DeviceSpec::open`] reports, leaves every
/// group on).
pub(crate) fn has_cuda_kernel(kernel: CudaKernel, device: &Device, dtype: DType) -> bool {
    kernel.built()
        && device.is_cuda()
        && kernel.takes(dtype)
        && fast_kernels()
        && cuda_kernel_choice()
            .as_ref()
            .map_or(true, |set| set.has(kernel))
}

/// Whether the ops of `kernel`'s group have a kernel of this crate's for
/// tensors on `device` of type `dtype`: on the CPU as [`has_kernel`], on
/// CUDA as [`has_cuda_kernel`].
pub(crate) fn has_own_kernel(kernel: CudaKernel, device: &Device, dtype: DType) -> bool {
    has_kernel(device, dtype) || has_cuda_kernel(kernel, device, dtype)
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::{CudaKernel, KernelSet};

    #[test]
    fn the_convolution_alone_takes_bf16_on_cuda() {
        for kernel in CudaKernel::ALL {
            assert!(kernel.takes(DType::F32), "{kernel:?}");
            assert_eq!(
                kernel.takes(DType::BF16),
                kernel == CudaKernel::Conv,
                "{kernel:?}"
            );
            for dtype in [DType::F16, DType::F64, DType::U8] {
                assert!(!kernel.takes(dtype), "{kernel:?} {dtype:?}");
            }
        }
    }

    /// The groups `value` leaves on, by name.
    fn on(value: &str) -> Vec<&'static str> {
        let set = KernelSet::parse(value).unwrap();
        CudaKernel::ALL
            .into_iter()
            .filter(|&k| set.has(k))
            .map(CudaKernel::name)
            .collect()
    }

    #[test]
    fn the_environment_choice_selects_the_cuda_kernels() {
        let all = [
            "conv",
            "batch-norm",
            "elementwise",
            "pool",
            "update",
            "loss",
            "staging",
        ];
        assert_eq!(on(""), all);
        assert_eq!(on("all"), all);
        assert_eq!(on(" all "), all);
        assert!(on("none").is_empty());
        assert_eq!(on("conv"), ["conv"]);
        assert_eq!(
            on("conv, batch-norm,elementwise"),
            ["conv", "batch-norm", "elementwise"]
        );
        assert_eq!(
            on("-update,-loss,-staging"),
            ["conv", "batch-norm", "elementwise", "pool"]
        );
        assert_eq!(
            on("-pool"),
            [
                "conv",
                "batch-norm",
                "elementwise",
                "update",
                "loss",
                "staging"
            ]
        );
        assert_eq!(on("conv,pool,-conv"), ["pool"]);
    }

    #[test]
    fn an_unknown_group_is_an_error_that_lists_the_groups() {
        for value in ["cnov", "conv,batchnorm", "-all", "conv,", "conv,none"] {
            let err = KernelSet::parse(value).unwrap_err();
            assert!(err.contains("unknown kernel group"), "{value}: {err}");
            assert!(
                err.contains("batch-norm") && err.contains("staging"),
                "{err}"
            );
        }
        let err = KernelSet::parse("conv,batchnorm").unwrap_err();
        assert!(err.contains("`batchnorm`"), "{err}");
    }
}
