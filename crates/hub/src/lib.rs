//! Pretrained ResNet weights from local files and the Hugging Face hub.
//!
//! - [`WeightsSource`]: a local path, or `hf:OWNER/REPO[/FILE][@REVISION]`.
//! - [`fetch`]: the local file a source names, downloading `hf:` sources into
//!   the Hugging Face cache (`HF_HOME`, `HF_ENDPOINT`) and reusing them offline.
//! - [`read_tensors`]: every tensor of a safetensors file or a PyTorch
//!   `.pth`/`.pt` checkpoint, read without executing any pickled code.
//! - [`detect_layout`] / [`to_torchvision`]: timm and torchvision names as
//!   they are, the Hugging Face transformers layout renamed by a rule table.
//! - [`registry`]: known pretrained weights as data (repository, file,
//!   architecture, stride placement, preprocessing, reported top-1).
//! - [`load_pretrained`]: all of the above into a [`resnet_models::ResNet`].
//! - [`load_model`]: the net built for the weights, loaded, with the
//!   preprocessing they expect and its class names: what evaluation and
//!   prediction start from; [`Pretrained::classify`] names an image's classes.

mod classify;
mod error;
mod fetch;
mod load;
mod pretrained;
mod pth;
mod read;
pub mod registry;
mod rename;
mod source;

pub use classify::{classify, imagenet_classes, Prediction};
pub use error::{HubError, Result};
pub use fetch::{fetch, fetch_with, HubOptions, DEFAULT_ENDPOINT};
pub use load::{load_pretrained, load_pretrained_with, LoadedWeights};
pub use pretrained::{load_model, Pretrained};
pub use pth::read_pth;
pub use read::read_tensors;
pub use registry::Entry;
pub use rename::{detect_layout, to_torchvision, torchvision_name, Layout};
pub use source::{HfSpec, WeightsSource, DEFAULT_FILE, DEFAULT_REVISION};
