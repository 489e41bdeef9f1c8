//! The data pipelines of the ResNet reproduction.
//!
//! CIFAR-10:
//!
//! - [`Cifar10::load`] reads the official binary format (full dataset or a prefix sample);
//! - [`fetch_cifar10`] downloads and unpacks it atomically, checking its MD5;
//! - [`Normalization`] turns pixels into inputs (the paper's per-pixel mean, or per-channel);
//! - [`Augment`] is the paper's pad-4 random crop and horizontal flip;
//! - [`TrainLoader`] / [`EvalLoader`] prepare [`Batch`]es in background threads,
//!   deterministically from a seed, resumable at any [`LoaderPosition`].
//!
//! ImageNet-style folders of JPEG and PNG files:
//!
//! - [`ImageFolder`] reads `ROOT/<class>/<image>` or a flat folder plus a label
//!   file, checking every image's header when opened ([`BadImagePolicy`]);
//! - [`ImageNetAugment`] is the paper's scale augmentation, 224 crop, flip and
//!   PCA colour augmentation; [`center_view`], [`ten_crop`] and [`multi_scale`]
//!   are the evaluation views; [`ImageNetNormalization`] turns views into inputs;
//! - [`ImageNetTrainLoader`] / [`ImageNetEvalLoader`] prepare [`ImageBatch`]es
//!   like the CIFAR-10 loaders, yielding an error naming any file that fails to decode;
//! - [`synthetic::test_pattern`] generates images to try it all without a data set.
//!
//! ```no_run
//! use std::sync::Arc;
//! use resnet_data::*;
//!
//! # fn main() -> Result<()> {
//! let dir = fetch_cifar10(CIFAR10_URL, "data".as_ref(), CIFAR10_MD5)?;
//! let data = Cifar10::load(&dir)?;
//! let (train, val) = data.train.split_off_validation(5000)?; // the paper's 45k/5k
//! let norm = Normalization::PerPixelMean(MeanImage::from_split(&train)?);
//! let config = LoaderConfig::new(128, 42);
//! let start = LoaderPosition::default(); // or the position saved in a checkpoint
//! let loader = TrainLoader::new(Arc::new(train), norm.clone(), Augment::PAPER, config, start)?;
//! for (resume_at, batch) in loader.take(64_000) {
//!     let (x, y) = batch.to_tensors(&candle_core::Device::Cpu).expect("tensors");
//!     // ... forward, backward, step; store `resume_at` and `norm` in checkpoints ...
//! #   let _ = (resume_at, x, y);
//! }
//! for batch in EvalLoader::new(Arc::new(val), norm, 500, 2)? {
//!     // ... accuracy ...
//! #   let _ = batch;
//! }
//! # Ok(())
//! # }
//! ```

mod augment;
mod batch;
mod cifar;
mod download;
mod error;
mod folder;
mod loader;
mod normalize;
mod prefetch;
mod resample;
pub mod synthetic;

pub use augment::{Augment, CropFlip};
pub use batch::Batch;
pub use cifar::{
    Cifar10, Split, DATASET_DIR, IMAGE_BYTES, META_FILE, NUM_CLASSES, RECORD_BYTES, TEST_FILE,
    TRAIN_FILES,
};
pub use download::{fetch_cifar10, fetch_cifar10_with_progress, CIFAR10_MD5, CIFAR10_URL};
pub use error::{BadImage, DataError, Result};
pub use folder::augment::{
    center_view, lighting_offset, multi_scale, resize_shorter_side, resize_shorter_side_with,
    ten_crop, ChwImage, ImageNetAugment, Resample, TrainView, CROP_SIDE, EVAL_SHORT_SIDE,
    PCA_EIGVAL, PCA_EIGVEC, TEST_SCALES,
};
pub use folder::loader::{ImageBatch, ImageNetEvalLoader, ImageNetTrainLoader};
pub use folder::norm::{ImageNetNormalization, PixelMean, IMAGENET_MEAN, IMAGENET_STD};
pub use folder::views::{
    CropGeometry, ImageNetViewLoader, TestViews, ViewBatch, ViewConfig, ViewGroup,
};
pub use folder::{load_rgb, BadImagePolicy, ImageFolder, ImageSample, IMAGE_EXTENSIONS};
pub use loader::{epoch_permutation, EvalLoader, LoaderConfig, LoaderPosition, Shard, TrainLoader};
pub use normalize::{MeanImage, Normalization};
