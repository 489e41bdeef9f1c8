//! Tensor operations for the ResNet crates, on top of candle-core.
//!
//! This crate is the lowest layer of the workspace: it chooses the device a
//! model runs on and provides the pooling and resampling operations that
//! candle lacks or cannot differentiate (candle's max-pool backward only
//! supports kernel == stride, which rules out the ImageNet stem's 3x3/s2 pool),
//! and a convolution, a batch norm (alone or with the ReLU after it), the
//! activations and the cross-entropy loss whose CPU passes are fast and use
//! every core, and in-place updates of every tensor of a network in one pass
//! (the SGD step, the running statistics, [`set_all`]), with CUDA versions of
//! them (cuDNN's convolutions and batch norm, and this crate's kernels)
//! behind the `cuda` and `cudnn` features.
//! For inference, [`InferenceConv`] is a convolution whose bias (a folded
//! batch norm), residual and ReLU are applied as it writes its output.
//!
//! A residual block's forward and backward pass with these ops, which
//! candle's autograd differentiates like its own:
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use resnet_ops::{batch_norm_add_relu_train, batch_norm_relu_train, conv2d};
//!
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1.0, (2, 16, 8, 8), &dev)?;
//! let w1 = Var::randn(0f32, 0.1, (16, 16, 3, 3), &dev)?;
//! let w2 = Var::randn(0f32, 0.1, (16, 16, 3, 3), &dev)?;
//! let (gamma, beta) = (Tensor::ones(16, DType::F32, &dev)?, Tensor::zeros(16, DType::F32, &dev)?);
//! let h = batch_norm_relu_train(&conv2d(&x, &w1, 1, 1)?, &gamma, &beta, 1e-5)?.y;
//! // y = relu(F(x) + x): the second batch norm, the join and the ReLU in one op
//! let f = batch_norm_add_relu_train(&conv2d(&h, &w2, 1, 1)?, &gamma, &beta, &x, 1e-5)?;
//! let grads = f.y.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w1).expect("w1 gets a gradient").dims(), [16, 16, 3, 3]);
//! assert_eq!(f.mean.dims(), [16]); // the batch statistics, for the running averages
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # CUDA code is the launch and nothing more
//!
//! No GPU runs this crate's tests in CI, so everything around a CUDA launch
//! is written to run in the CPU test suite too. A CUDA op meets this rule
//! when:
//! - it is one candle custom op with a CPU body (`cpu_fwd`, this crate's CPU
//!   kernel, or a reference built on it where the CPU path of the public
//!   function uses another form) and a CUDA body (`cuda_fwd`), not a type of
//!   its own behind the feature;
//! - both bodies take their arguments through the same checks: the expected
//!   dims come from one method or value of the op, read by
//!   `args::f32_data` on the CPU and `args::cuda_view` on CUDA;
//! - the output's shape and the layout of any packed output come from code
//!   both bodies share, and `bwd` (the backward composition) is shared by
//!   construction, since it belongs to the op, not to a body;
//! - only the `cuda_fwd` bodies and the launch functions they call (in a
//!   `cuda`/`cudnn` module: buffers, descriptors, the kernel call) are behind
//!   `#[cfg(feature = ...)]`;
//! - a CPU test runs the op's forward and backward through the public
//!   function or, for a form only CUDA uses, directly (see
//!   `batch_norm/saved.rs`), and compares with the CPU kernels.
//!
//! The SGD update over every parameter at once ([`SgdStep::apply_all`]),
//! which writes many tensors and so is no custom op, meets it the same way:
//! the chunks, the table of addresses the kernel reads and the check that
//! no written tensor shares storage are shared code (`multi_tensor.rs`), the
//! CPU runs the same chunks, and only the table's copy and the launch are
//! CUDA's.
//!
//! `tests/cuda.rs` then compares the CUDA results with the CPU's on a GPU
//! (`scripts/gpu-check.sh`).

mod activation;
mod args;
mod assign;
mod batch_norm;
mod buffer;
mod conv;
mod cross_entropy;
#[cfg(feature = "cuda")]
mod cuda;
mod cuda_runtime;
mod device;
mod dispatch;
mod error;
mod format;
mod matmul;
mod multi_tensor;
mod pool;
mod scratch;
mod sgd_step;
mod staging;
#[cfg(test)]
mod test_util;

pub use activation::{add_relu, relu};
pub use assign::set_all;
pub use batch_norm::{
    batch_norm_add_relu_train, batch_norm_eval, batch_norm_relu_eval, batch_norm_relu_train,
    batch_norm_train, update_running_stat, update_running_stats, BatchNormOutput, GroupedBatchNorm,
    RunningUpdate,
};
pub use conv::{conv2d, InferenceConv};
pub use cross_entropy::cross_entropy;
pub use device::{peak_device_memory, DeviceSpec};
pub use dispatch::{fast_kernels, set_fast_kernels};
pub use error::OpsError;
pub use format::{is_channels_last, to_channels_last, to_dtype};
pub use matmul::matmul;
pub use pool::{global_avg_pool, max_pool_3x3_s2, pad_subsample};
pub use sgd_step::{SgdParam, SgdStep};
pub use staging::HostStaging;
