//! Seeded, deterministic, resumable, multi-threaded loaders over an [`ImageFolder`].
//!
//! They follow the CIFAR-10 loaders exactly (same [`LoaderConfig`],
//! [`LoaderPosition`], permutations and per-sample generators seeded with
//! `(seed, epoch, position in the epoch)`), so batches do not depend on the
//! thread count. Each worker decodes and augments whole batches. Decoding can
//! fail, so they yield `Result`s: after an error naming the file, they stop.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::folder::augment::{center_view, ChwImage, ImageNetAugment};
use crate::folder::norm::ImageNetNormalization;
use crate::folder::ImageFolder;
use crate::loader::{positive, LoaderConfig, LoaderPosition, Schedule};
use crate::prefetch::FallibleFetcher;

/// A batch of equally sized views in NCHW `f32` layout with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    /// `batch_size * 3 * height * width` floats, NCHW.
    pub images: Vec<f32>,
    /// `batch_size` class indices.
    pub labels: Vec<u32>,
    /// Number of images in the batch (the last evaluation batch may be short).
    pub batch_size: usize,
    /// Rows of each image.
    pub height: usize,
    /// Columns of each image.
    pub width: usize,
}

impl ImageBatch {
    /// Collects views, which must all be `height x width`, with their labels.
    fn collect(views: impl ExactSizeIterator<Item = Result<(ChwImage, u32)>>) -> Result<Self> {
        let n = views.len();
        let mut batch = Self {
            images: Vec::new(),
            labels: Vec::with_capacity(n),
            batch_size: 0,
            height: 0,
            width: 0,
        };
        for view in views {
            let (view, label) = view?;
            (batch.height, batch.width) = (view.height, view.width);
            if batch.images.is_empty() {
                batch.images.reserve_exact(view.data.len() * n);
            }
            batch.images.extend_from_slice(&view.data);
            batch.labels.push(label);
            batch.batch_size += 1;
        }
        Ok(batch)
    }

    /// The images' dims, `[B, 3, H, W]`, checked against what the batch
    /// holds: fails if `images` or `labels` do not hold `batch_size` items.
    pub fn dims(&self) -> candle_core::Result<[usize; 4]> {
        let dims = [self.batch_size, 3, self.height, self.width];
        let want = dims.iter().product::<usize>();
        if self.images.len() != want || self.labels.len() != self.batch_size {
            candle_core::bail!(
                "batch of {} images {}x{}: expected {want} floats and {} labels, found {} and {}",
                self.batch_size,
                self.height,
                self.width,
                self.batch_size,
                self.images.len(),
                self.labels.len()
            );
        }
        Ok(dims)
    }

    /// The images as an `f32` tensor `[B, 3, H, W]` and the labels as a `u32` tensor `[B]`.
    ///
    /// Fails if `images` or `labels` do not hold `batch_size` items.
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let images = Tensor::from_slice(&self.images, &self.dims()?, device)?;
        let labels = Tensor::from_slice(&self.labels, self.batch_size, device)?;
        Ok((images, labels))
    }
}

/// An endless, shuffled, augmented sequence of training batches of an
/// [`ImageFolder`], decoded and augmented in background threads.
///
/// Yields `Ok((resume_position, batch))` as [`TrainLoader`](crate::TrainLoader)
/// does, or one `Err` naming a file that failed to decode, after which it ends.
/// Dropping the loader stops its threads.
pub struct ImageNetTrainLoader {
    schedule: Schedule,
    next_global: u64,
    inner: FallibleFetcher<ImageBatch>,
}

impl ImageNetTrainLoader {
    /// Starts a loader over `folder` at position `start`.
    pub fn new(
        folder: Arc<ImageFolder>,
        normalization: ImageNetNormalization,
        augment: ImageNetAugment,
        config: LoaderConfig,
        start: LoaderPosition,
    ) -> Result<Self> {
        let norm = Arc::new(normalization.checked()?);
        let augment = augment.checked()?;
        let schedule = Schedule::new(folder.len(), &config, start)?;
        let inner =
            FallibleFetcher::spawn("imagenet-train", config.threads, config.prefetch, || {
                let (folder, norm) = (Arc::clone(&folder), Arc::clone(&norm));
                let mut schedule = schedule.clone();
                move |k| {
                    let samples = schedule.batch(k)?;
                    let views = samples.into_iter().map(|(i, mut rng)| {
                        let image = folder.load(i)?;
                        let view = augment.sample(&mut rng, image.width(), image.height());
                        Ok((view.apply(&image, &norm), folder.samples()[i].label))
                    });
                    Some(ImageBatch::collect(views))
                }
            })?;
        Ok(Self {
            next_global: schedule.first(),
            schedule,
            inner,
        })
    }

    /// Number of batches in one epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.schedule.per_epoch()
    }
}

impl Iterator for ImageNetTrainLoader {
    type Item = Result<(LoaderPosition, ImageBatch)>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.inner.next()? {
            Ok(batch) => batch,
            Err(e) => return Some(Err(e)),
        };
        self.next_global += 1;
        Some(Ok((self.schedule.position(self.next_global), batch)))
    }
}

/// The centre views ([`center_view`]) of an [`ImageFolder`] in order, in
/// batches (the last possibly short), decoded in background threads.
///
/// Yields `Ok(batch)`, or one `Err` naming a file that failed to decode, after which it ends.
pub struct ImageNetEvalLoader {
    num_batches: usize,
    inner: FallibleFetcher<ImageBatch>,
}

impl ImageNetEvalLoader {
    /// Starts a loader over `folder` with `threads` workers.
    pub fn new(
        folder: Arc<ImageFolder>,
        normalization: ImageNetNormalization,
        batch_size: usize,
        threads: usize,
    ) -> Result<Self> {
        let norm = Arc::new(normalization.checked()?);
        positive("batch_size", batch_size)?;
        positive("threads", threads)?;
        let num_batches = folder.len().div_ceil(batch_size);
        let inner = FallibleFetcher::spawn("imagenet-eval", threads, 2 * threads, || {
            let (folder, norm) = (Arc::clone(&folder), Arc::clone(&norm));
            move |k| {
                let lo = usize::try_from(k).ok()?.checked_mul(batch_size)?;
                if lo >= folder.len() {
                    return None;
                }
                let hi = (lo + batch_size).min(folder.len());
                let views = (lo..hi).map(|i| {
                    let view = center_view(&folder.load(i)?, &norm);
                    Ok((view, folder.samples()[i].label))
                });
                Some(ImageBatch::collect(views))
            }
        })?;
        Ok(Self { num_batches, inner })
    }

    /// Number of batches this loader yields when no image fails to decode.
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }
}

impl Iterator for ImageNetEvalLoader {
    type Item = Result<ImageBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}
