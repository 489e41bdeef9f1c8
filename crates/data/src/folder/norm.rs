//! Normalisation of ImageNet views: per-channel (torchvision) or per-pixel mean (the paper).
//!
//! Unlike the CIFAR-10 [`Normalization`](crate::Normalization), which works on
//! 32x32 bytes, this works on float views in 0..1 units of any size, after the
//! colour augmentation.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::folder::loader::ImageNetEvalLoader;
use crate::folder::ImageFolder;

/// torchvision's ImageNet per-channel mean (R, G, B), 0..1 units.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// torchvision's ImageNet per-channel standard deviation (R, G, B), 0..1 units.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A per-pixel mean image, CHW, 0..1 units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelMean {
    height: usize,
    width: usize,
    values: Vec<f32>,
}

impl PixelMean {
    /// Wraps `3 * height * width` CHW values (0..1 units).
    pub fn from_values(height: usize, width: usize, values: Vec<f32>) -> Result<Self> {
        Self {
            height,
            width,
            values,
        }
        .checked()
    }

    /// The mean of the centre views ([`center_view`](crate::center_view), 224x224)
    /// of `folder`'s images, decoded by `threads` workers.
    pub fn from_folder(folder: Arc<ImageFolder>, threads: usize) -> Result<Self> {
        let identity = ImageNetNormalization::PerChannel {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let mut sums: Vec<f64> = Vec::new();
        let mut count = 0usize;
        let (mut height, mut width) = (0, 0);
        for batch in ImageNetEvalLoader::new(folder, identity, 32, threads)? {
            let batch = batch?;
            (height, width) = (batch.height, batch.width);
            sums.resize(3 * height * width, 0.0);
            for image in batch.images.chunks_exact(sums.len()) {
                for (s, &v) in sums.iter_mut().zip(image) {
                    *s += f64::from(v);
                }
            }
            count += batch.batch_size;
        }
        let values = sums.iter().map(|s| (s / count as f64) as f32).collect();
        Self::from_values(height, width, values)
    }

    /// Height of the mean image.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Width of the mean image.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The `3 * height * width` mean values, CHW.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The average of each channel of the mean image.
    fn channel_means(&self) -> [f32; 3] {
        let mut means = [0f32; 3];
        let plane = self.height * self.width;
        for (m, c) in means.iter_mut().zip(self.values.chunks_exact(plane)) {
            *m = (c.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32;
        }
        means
    }

    /// Returns `self` if it is non-empty, its size matches and its values are finite.
    fn checked(self) -> Result<Self> {
        let plane = self.height * self.width;
        if plane == 0 || self.values.len() != 3 * plane {
            return Err(DataError::InvalidOption {
                name: "mean image size",
                value: format!(
                    "{} values for {}x{}",
                    self.values.len(),
                    self.height,
                    self.width
                ),
                expected: "3 * height * width values, height and width > 0".into(),
            });
        }
        if !self.values.iter().all(|v| v.is_finite()) {
            return Err(DataError::InvalidOption {
                name: "mean image",
                value: "non-finite values".into(),
                expected: "finite values".into(),
            });
        }
        Ok(self)
    }
}

/// How ImageNet views (0..1 units, after colour augmentation) become network inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ImageNetNormalization {
    /// torchvision's `Normalize`: `x = (v - mean[c]) / std[c]`.
    PerChannel {
        /// Per-channel mean (R, G, B), 0..1 units.
        mean: [f32; 3],
        /// Per-channel standard deviation (R, G, B), each > 0.
        std: [f32; 3],
    },
    /// The paper's per-pixel mean subtraction, `x = v - mean[c][y][x]`. A view
    /// whose size differs from the mean image's (the multi-scale test) has the
    /// mean image's per-channel averages subtracted instead.
    PerPixelMean(PixelMean),
}

impl ImageNetNormalization {
    /// torchvision's ImageNet normalisation, [`IMAGENET_MEAN`] and [`IMAGENET_STD`].
    pub const TORCHVISION: Self = Self::PerChannel {
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    };

    /// Returns `self` if every value is finite and every `std` is > 0.
    pub fn checked(self) -> Result<Self> {
        match self {
            Self::PerPixelMean(m) => Ok(Self::PerPixelMean(m.checked()?)),
            Self::PerChannel { mean, std } => {
                let finite = mean.iter().chain(&std).all(|v| v.is_finite());
                if finite && std.iter().all(|&s| s > 0.0) {
                    return Ok(self);
                }
                Err(DataError::InvalidOption {
                    name: "normalization",
                    value: format!("per-channel mean {mean:?} std {std:?}"),
                    expected: "finite means and finite standard deviations > 0".into(),
                })
            }
        }
    }

    /// Normalises a CHW view of `3 x height x width` floats in place.
    pub fn apply(&self, view: &mut [f32], height: usize, width: usize) {
        let plane = height * width;
        if plane == 0 {
            return;
        }
        match self {
            Self::PerPixelMean(m) if (m.height, m.width) == (height, width) => {
                for (v, mu) in view.iter_mut().zip(&m.values) {
                    *v -= mu;
                }
            }
            Self::PerPixelMean(m) => {
                for (c, mu) in view.chunks_mut(plane).zip(m.channel_means()) {
                    c.iter_mut().for_each(|v| *v -= mu);
                }
            }
            Self::PerChannel { mean, std } => {
                for ((c, mu), sd) in view.chunks_mut(plane).zip(mean).zip(std) {
                    c.iter_mut().for_each(|v| *v = (*v - mu) / sd);
                }
            }
        }
    }
}
