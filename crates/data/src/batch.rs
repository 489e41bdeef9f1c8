//! A ready-to-use batch of normalised (and possibly augmented) images.

use candle_core::{Device, Tensor};

use crate::cifar::IMAGE_BYTES;

/// A batch of images in NCHW `f32` layout with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `batch_size * 3 * 32 * 32` floats, NCHW.
    pub images: Vec<f32>,
    /// `batch_size` labels, each 0..=9.
    pub labels: Vec<u32>,
    /// Number of images in the batch (the last evaluation batch may be short).
    pub batch_size: usize,
}

impl Batch {
    /// The images as an `f32` tensor `[B, 3, 32, 32]` and the labels as a `u32` tensor `[B]`.
    ///
    /// Fails if `images` or `labels` do not hold `batch_size` items.
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let want = self.batch_size * IMAGE_BYTES;
        if self.images.len() != want || self.labels.len() != self.batch_size {
            candle_core::bail!(
                "batch of size {}: expected {want} image floats and {} labels, found {} and {}",
                self.batch_size,
                self.batch_size,
                self.images.len(),
                self.labels.len()
            );
        }
        let images = Tensor::from_slice(&self.images, (self.batch_size, 3, 32, 32), device)?;
        let labels = Tensor::from_slice(&self.labels, self.batch_size, device)?;
        Ok((images, labels))
    }
}
