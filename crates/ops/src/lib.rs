//! Tensor operations for the ResNet crates, on top of candle-core.
//!
//! This crate is the lowest layer of the workspace: it chooses the device a
//! model runs on and provides the pooling and resampling operations that
//! candle lacks or cannot differentiate (candle's max-pool backward only
//! supports kernel == stride, which rules out the ImageNet stem's 3x3/s2 pool),
//! and a convolution, a batch norm (alone or with the ReLU after it), the
//! activations and the SGD update whose CPU passes are fast and use every
//! core, with CUDA versions of them (cuDNN's convolutions and batch norm, and
//! this crate's element-wise kernels) behind the `cuda` and `cudnn` features.

mod activation;
mod batch_norm;
mod buffer;
mod conv;
#[cfg(feature = "cuda")]
mod cuda;
mod device;
mod error;
mod kernel;
mod pool;
mod scratch;
mod sgd;
#[cfg(test)]
mod test_util;

pub use activation::{add_relu, relu};
pub use batch_norm::{
    batch_norm_eval, batch_norm_relu_eval, batch_norm_relu_train, batch_norm_train,
    update_running_stat, BatchNormOutput,
};
pub use conv::conv2d;
pub use device::DeviceSpec;
pub use error::OpsError;
pub use kernel::{fast_kernels, set_fast_kernels};
pub use pool::{global_avg_pool, max_pool_3x3_s2, subsample2};
pub use sgd::SgdStep;
