//! Evaluating trained ResNets.
//!
//! - [`save_weights`] / [`load_weights`]: the trained-weights file, one
//!   safetensors file holding the model tensors under torchvision names and
//!   the input normalisation under `normalization.` names. Loading also
//!   accepts trainer checkpoints (their `momentum.*` buffers are skipped) and
//!   the usual PyTorch CIFAR layout (`module.` prefix, `linear.*` classifier,
//!   `num_batches_tracked` counters).
//! - [`resolve_weights`]: a weights file, or a run folder's [`MODEL_FILE`].
//! - [`evaluate`]: top-1 and top-5 error and mean cross-entropy of a model on
//!   a split; [`batch_errors`] counts the mistakes in one batch of logits.
//! - [`evaluate_folder`]: the same for one model or an ensemble ([`Member`]s)
//!   on an ImageNet-style [`ImageFolder`](resnet_data::ImageFolder), over the
//!   centre crop, the ten crops or the multi-scale views ([`TestViews`]) of
//!   every image, softmax averaged; [`predict_folder`] yields each image's
//!   averaged probabilities.

mod error;
mod evaluate;
mod imagenet;
mod normalization;
mod rename;
mod weights;

pub use error::{EvalError, Result};
pub use evaluate::{batch_errors, evaluate, EvalReport};
pub use imagenet::{evaluate_folder, predict_folder, FolderPredictions, ImagePrediction, Member};
pub use normalization::{imagenet_normalization_from_tensors, imagenet_normalization_tensors};
pub use normalization::{normalization_from_tensors, normalization_tensors, NORMALIZATION_PREFIX};
pub use resnet_data::{CropGeometry, TestViews, ViewConfig};
pub use weights::{
    load_imagenet_weights, load_weights, read_weights, resolve_weights, save_weights, MODEL_FILE,
};
