//! Input normalisation: the paper's per-pixel mean subtraction, or per-channel standardisation.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cifar::{Split, IMAGE_BYTES};
use crate::error::{io_err, DataError, Result};

/// The magic bytes that start a mean-image file.
const MEAN_MAGIC: &[u8; 8] = b"RNMEAN01";
/// Size of a mean-image file: magic, `u32` count, then the little-endian `f32` values.
const MEAN_FILE_BYTES: usize = MEAN_MAGIC.len() + 4 + IMAGE_BYTES * 4;

/// The per-pixel mean of a training split: 3072 values in CHW order, in 0..1 units (pixel / 255).
///
/// Serialises as a plain list of 3072 numbers; deserialising checks the length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f32>", into = "Vec<f32>")]
pub struct MeanImage {
    values: Vec<f32>,
}

impl MeanImage {
    /// Computes the per-pixel mean of `split`, which must not be empty.
    pub fn from_split(split: &Split) -> Result<Self> {
        if split.is_empty() {
            return Err(DataError::InvalidOption {
                name: "split",
                value: "0 images".into(),
                expected: "at least one image to average".into(),
            });
        }
        let mut sums = vec![0u64; IMAGE_BYTES];
        for image in split.images().chunks_exact(IMAGE_BYTES) {
            for (s, &p) in sums.iter_mut().zip(image) {
                *s += u64::from(p);
            }
        }
        let denom = split.len() as f64 * 255.0;
        let values = sums.iter().map(|&s| (s as f64 / denom) as f32).collect();
        Ok(Self { values })
    }

    /// Wraps 3072 CHW values (0..1 units).
    pub fn from_values(values: Vec<f32>) -> Result<Self> {
        if values.len() != IMAGE_BYTES {
            return Err(DataError::InvalidOption {
                name: "mean image length",
                value: values.len().to_string(),
                expected: "3072 values (3x32x32, CHW)".into(),
            });
        }
        Ok(Self { values })
    }

    /// The 3072 mean values, CHW.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Writes the mean image: `RNMEAN01`, `u32` 3072, then 3072 `f32`, all little-endian.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(MEAN_FILE_BYTES);
        bytes.extend_from_slice(MEAN_MAGIC);
        bytes.extend_from_slice(&(IMAGE_BYTES as u32).to_le_bytes());
        for v in &self.values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        fs::write(path, bytes).map_err(io_err("writing", path))
    }

    /// Reads a file written by [`MeanImage::save`], checking its header and size.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(io_err("reading", path))?;
        let bad = |reason: String| DataError::BadMeanFile {
            path: path.into(),
            reason,
        };
        if bytes.len() != MEAN_FILE_BYTES {
            return Err(bad(format!(
                "size {} bytes, expected {MEAN_FILE_BYTES}",
                bytes.len()
            )));
        }
        let (magic, rest) = bytes.split_at(MEAN_MAGIC.len());
        let (count, data) = rest.split_at(4);
        if magic != MEAN_MAGIC {
            return Err(bad("expected the header RNMEAN01".into()));
        }
        let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]);
        if count as usize != IMAGE_BYTES {
            return Err(bad(format!("count {count}, expected {IMAGE_BYTES}")));
        }
        let values = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self { values })
    }
}

impl TryFrom<Vec<f32>> for MeanImage {
    type Error = DataError;

    fn try_from(values: Vec<f32>) -> Result<Self> {
        Self::from_values(values)
    }
}

impl From<MeanImage> for Vec<f32> {
    fn from(mean: MeanImage) -> Self {
        mean.values
    }
}

/// How raw pixels become network inputs. Serialisable, to be stored with a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Normalization {
    /// The paper's recipe: `x = pixel / 255 - mean[pixel]`.
    PerPixelMean(MeanImage),
    /// torchvision's `Normalize`: `x = (pixel / 255 - mean[c]) / std[c]`.
    PerChannel {
        /// Per-channel mean (R, G, B), 0..1 units.
        mean: [f32; 3],
        /// Per-channel standard deviation (R, G, B), 0..1 units, each > 0.
        std: [f32; 3],
    },
}

impl Normalization {
    /// Per-channel mean and (population) standard deviation of `split`, which must not be empty.
    pub fn per_channel_from_split(split: &Split) -> Result<Self> {
        if split.is_empty() {
            return Err(DataError::InvalidOption {
                name: "split",
                value: "0 images".into(),
                expected: "at least one image to take statistics of".into(),
            });
        }
        let plane = IMAGE_BYTES / 3;
        let count = (split.len() * plane) as f64;
        let (mut mean, mut std) = ([0f32; 3], [0f32; 3]);
        for c in 0..3 {
            // Exact integer sums, so a constant channel has exactly zero deviation.
            let (mut sum, mut sum_sq) = (0u64, 0u64);
            for img in split.images().chunks_exact(IMAGE_BYTES) {
                for &p in &img[c * plane..(c + 1) * plane] {
                    sum += u64::from(p);
                    sum_sq += u64::from(p) * u64::from(p);
                }
            }
            let m = sum as f64 / count;
            let var = (sum_sq as f64 / count - m * m).max(0.0);
            mean[c] = (m / 255.0) as f32;
            std[c] = (var.sqrt() / 255.0) as f32;
        }
        Self::PerChannel { mean, std }.checked()
    }

    /// Returns `self` if every value is finite and every `std` is > 0.
    pub fn checked(self) -> Result<Self> {
        let ok = match &self {
            Self::PerPixelMean(m) => m.values.iter().all(|v| v.is_finite()),
            Self::PerChannel { mean, std } => {
                mean.iter().all(|v| v.is_finite()) && std.iter().all(|v| v.is_finite() && *v > 0.0)
            }
        };
        if ok {
            return Ok(self);
        }
        let value = match &self {
            Self::PerPixelMean(_) => "a per-pixel mean with non-finite values".into(),
            Self::PerChannel { mean, std } => format!("per-channel mean {mean:?} std {std:?}"),
        };
        Err(DataError::InvalidOption {
            name: "normalization",
            value,
            expected: "finite means and finite standard deviations > 0".into(),
        })
    }

    /// Normalises one CHW image of 3072 bytes into `out` (3072 floats, CHW).
    ///
    /// Both slices should hold 3072 elements; only their common prefix is written.
    pub fn apply(&self, image: &[u8], out: &mut [f32]) {
        match self {
            Self::PerPixelMean(m) => {
                for ((o, &p), &mu) in out.iter_mut().zip(image).zip(&m.values) {
                    *o = f32::from(p) / 255.0 - mu;
                }
            }
            Self::PerChannel { mean, std } => {
                let plane = IMAGE_BYTES / 3;
                for (c, (o, px)) in out.chunks_mut(plane).zip(image.chunks(plane)).enumerate() {
                    for (o, &p) in o.iter_mut().zip(px) {
                        *o = (f32::from(p) / 255.0 - mean[c]) / std[c];
                    }
                }
            }
        }
    }
}
