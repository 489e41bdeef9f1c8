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
    /// The images' dims, `[B, 3, 32, 32]`, checked against what the batch
    /// holds: fails if `images` or `labels` do not hold `batch_size` items.
    pub fn dims(&self) -> candle_core::Result<[usize; 4]> {
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
        Ok([self.batch_size, 3, 32, 32])
    }

    /// The images as an `f32` tensor `[B, 3, 32, 32]` and the labels as a `u32` tensor `[B]`.
    ///
    /// Fails if `images` or `labels` do not hold `batch_size` items.
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let images = Tensor::from_slice(&self.images, &self.dims()?, device)?;
        let labels = Tensor::from_slice(&self.labels, self.batch_size, device)?;
        Ok((images, labels))
    }
}
