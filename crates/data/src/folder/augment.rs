//! The paper's ImageNet augmentation (Sec. 3.4) and its evaluation views.
//!
//! Training ([`ImageNetAugment`]): the shorter side is resized to a random
//! length in `[256, 480]` (triangle filter, i.e. bilinear with antialiasing),
//! a random 224x224 crop is taken, flipped horizontally with probability 1/2,
//! and AlexNet's PCA colour augmentation adds
//! `PCA_EIGVEC · (alpha ⊙ PCA_EIGVAL)` to every pixel (0..1 units), `alpha ~ N(0, 0.1)`.
//! Then the [`ImageNetNormalization`] is applied.
//!
//! Evaluation: [`center_view`] (shorter side 256, centre 224 crop), [`ten_crop`]
//! (the four corners and the centre, and their mirror images) and
//! [`multi_scale`] (the whole image at each shorter side of [`TEST_SCALES`]).

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::folder::norm::ImageNetNormalization;
use crate::resample::resize_window;

/// Eigenvalues of the ImageNet RGB covariance (0..1 units), as in AlexNet and fb.resnet.torch.
pub const PCA_EIGVAL: [f32; 3] = [0.2175, 0.0188, 0.0045];
/// Eigenvectors of the ImageNet RGB covariance: column `j` goes with `PCA_EIGVAL[j]`.
pub const PCA_EIGVEC: [[f32; 3]; 3] = [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
];
/// Side of the square training and evaluation crops.
pub const CROP_SIDE: u32 = 224;
/// Shorter side of the image the evaluation crops are taken from.
pub const EVAL_SHORT_SIDE: u32 = 256;
/// The shorter sides of the paper's multi-scale fully-convolutional test.
pub const TEST_SCALES: [u32; 5] = [224, 256, 384, 480, 640];

/// A float image, CHW.
#[derive(Clone, Debug, PartialEq)]
pub struct ChwImage {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `3 * height * width` values, CHW.
    pub data: Vec<f32>,
}

/// Training augmentation options. [`ImageNetAugment::PAPER`] is the paper's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageNetAugment {
    /// Smallest shorter side after resizing (at least `crop`).
    pub min_side: u32,
    /// Largest shorter side after resizing (at least `min_side`).
    pub max_side: u32,
    /// Side of the square crop (> 0).
    pub crop: u32,
    /// Whether to flip horizontally with probability 1/2.
    pub flip: bool,
    /// Standard deviation of the PCA colour weights `alpha` (0 disables it).
    pub lighting_std: f32,
}

impl ImageNetAugment {
    /// The paper's recipe: scale 256..=480, 224 crop, flip, lighting 0.1.
    pub const PAPER: Self = Self {
        min_side: 256,
        max_side: 480,
        crop: CROP_SIDE,
        flip: true,
        lighting_std: 0.1,
    };

    /// Returns `self` if `0 < crop <= min_side <= max_side` and `lighting_std` is finite and >= 0.
    pub fn checked(self) -> Result<Self> {
        let sizes_ok =
            0 < self.crop && self.crop <= self.min_side && self.min_side <= self.max_side;
        if sizes_ok && self.lighting_std.is_finite() && self.lighting_std >= 0.0 {
            return Ok(self);
        }
        Err(DataError::InvalidOption {
            name: "ImageNet augmentation",
            value: format!("{self:?}"),
            expected: "0 < crop <= min_side <= max_side and a finite lighting_std >= 0".into(),
        })
    }

    /// Draws the augmentation of one `width x height` image.
    pub fn sample(&self, rng: &mut impl Rng, width: u32, height: u32) -> TrainView {
        let short_side = rng.random_range(self.min_side..=self.max_side);
        let (resized_width, resized_height) = scaled_size(width, height, short_side);
        let left = rng.random_range(0..=resized_width.saturating_sub(self.crop));
        let top = rng.random_range(0..=resized_height.saturating_sub(self.crop));
        let flip = self.flip && rng.random_bool(0.5);
        let alpha = [(); 3].map(|_| self.lighting_std * rng.sample::<f32, _>(StandardNormal));
        TrainView {
            short_side,
            resized_width,
            resized_height,
            left,
            top,
            crop: self.crop,
            flip,
            alpha,
        }
    }
}

/// One training sample's augmentation, as drawn by [`ImageNetAugment::sample`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainView {
    /// The shorter side after resizing.
    pub short_side: u32,
    /// Width after resizing.
    pub resized_width: u32,
    /// Height after resizing.
    pub resized_height: u32,
    /// Left column of the crop in the resized image.
    pub left: u32,
    /// Top row of the crop in the resized image.
    pub top: u32,
    /// Side of the square crop.
    pub crop: u32,
    /// Whether the crop is mirrored left-right.
    pub flip: bool,
    /// The PCA colour weights (multiplying [`PCA_EIGVAL`]).
    pub alpha: [f32; 3],
}

impl TrainView {
    /// Resizes `image`, crops, flips, adds the colour shift and normalises: a
    /// `3 x crop x crop` view. A crop reaching outside the resized image is moved inside it.
    pub fn apply(&self, image: &RgbImage, norm: &ImageNetNormalization) -> ChwImage {
        let (w, h) = (
            self.resized_width.max(self.crop),
            self.resized_height.max(self.crop),
        );
        let (left, top) = (self.left.min(w - self.crop), self.top.min(h - self.crop));
        let window = [left, top, self.crop, self.crop];
        let cropped = resize_window(image, (w, h), window, Resample::Bilinear);
        crop_view(
            &cropped,
            [0, 0, self.crop, self.crop],
            self.flip,
            lighting_offset(self.alpha),
            norm,
        )
    }
}

/// The RGB shift of AlexNet's PCA colour augmentation for weights `alpha`:
/// `PCA_EIGVEC · (alpha ⊙ PCA_EIGVAL)`, in 0..1 units.
pub fn lighting_offset(alpha: [f32; 3]) -> [f32; 3] {
    PCA_EIGVEC.map(|row| (0..3).map(|j| row[j] * alpha[j] * PCA_EIGVAL[j]).sum())
}

/// How an image is resampled when resized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resample {
    /// Bilinear (a triangle filter, widened when shrinking): torchvision's default.
    #[default]
    Bilinear,
    /// Bicubic (Catmull-Rom, as PIL's bicubic), which timm's newer weights expect.
    Bicubic,
}

/// `image` resized (bilinear) so that its shorter side is `side`, keeping its aspect ratio.
pub fn resize_shorter_side(image: &RgbImage, side: u32) -> RgbImage {
    resize_shorter_side_with(image, side, Resample::Bilinear)
}

/// [`resize_shorter_side`] with the resampling `resample`.
pub fn resize_shorter_side_with(image: &RgbImage, side: u32, resample: Resample) -> RgbImage {
    let (w, h) = scaled_size(image.width(), image.height(), side);
    let filter = match resample {
        Resample::Bilinear => FilterType::Triangle,
        Resample::Bicubic => FilterType::CatmullRom,
    };
    imageops::resize(image, w, h, filter)
}

/// The standard evaluation view: shorter side resized to 256, centre 224x224 crop.
pub fn center_view(image: &RgbImage, norm: &ImageNetNormalization) -> ChwImage {
    let cropped = center_crop(image, EVAL_SHORT_SIDE, CROP_SIDE, Resample::Bilinear);
    let region = [0, 0, CROP_SIDE, CROP_SIDE];
    crop_view(&cropped, region, false, [0.0; 3], norm)
}

/// The centre `crop x crop` square of `image` resized with `resample` so that
/// its shorter side is `side` (at least `crop`), resampling only that square.
pub(crate) fn center_crop(image: &RgbImage, side: u32, crop: u32, resample: Resample) -> RgbImage {
    let (w, h) = scaled_size(image.width(), image.height(), side.max(crop));
    let window = [(w - crop) / 2, (h - crop) / 2, crop, crop];
    resize_window(image, (w, h), window, resample)
}

/// The standard 10-crop test: the 224x224 top-left, top-right, bottom-left,
/// bottom-right and centre crops of the image resized to shorter side 256, then
/// the mirror images of these five, in the same order. View 4 is [`center_view`].
pub fn ten_crop(image: &RgbImage, norm: &ImageNetNormalization) -> Vec<ChwImage> {
    let resized = resize_shorter_side(image, EVAL_SHORT_SIDE);
    let (dx, dy) = (resized.width() - CROP_SIDE, resized.height() - CROP_SIDE);
    let corners = [(0, 0), (dx, 0), (0, dy), (dx, dy), (dx / 2, dy / 2)];
    let square =
        |(x, y), flip| crop_view(&resized, [x, y, CROP_SIDE, CROP_SIDE], flip, [0.0; 3], norm);
    let plain = corners.map(|corner| square(corner, false));
    let mirrored = corners.map(|corner| square(corner, true));
    plain.into_iter().chain(mirrored).collect()
}

/// The multi-scale fully-convolutional test: the whole image resized to each
/// shorter side in `scales` (e.g. [`TEST_SCALES`]), normalised, in that order.
pub fn multi_scale(
    image: &RgbImage,
    norm: &ImageNetNormalization,
    scales: &[u32],
) -> Vec<ChwImage> {
    scales
        .iter()
        .map(|&side| {
            let resized = resize_shorter_side(image, side);
            let region = [0, 0, resized.width(), resized.height()];
            crop_view(&resized, region, false, [0.0; 3], norm)
        })
        .collect()
}

/// The size of a `width x height` image whose shorter side is scaled to `side` (at least 1).
fn scaled_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    let side = side.max(1);
    let scale = |long: u32, short: u32| {
        let short = u64::from(short.max(1));
        ((u64::from(long) * u64::from(side) + short / 2) / short) as u32
    };
    if width <= height {
        (side, scale(height, width).max(side))
    } else {
        (scale(width, height).max(side), side)
    }
}

/// The `[left, top, width, height]` region of `image` (which must lie inside it),
/// mirrored if `flip`, in 0..1 units plus `offset`, normalised.
pub(crate) fn crop_view(
    image: &RgbImage,
    [left, top, width, height]: [u32; 4],
    flip: bool,
    offset: [f32; 3],
    norm: &ImageNetNormalization,
) -> ChwImage {
    let (w, h) = (width as usize, height as usize);
    let (left, top, stride) = (left as usize, top as usize, image.width() as usize * 3);
    let raw = image.as_raw();
    let mut data = vec![0f32; 3 * w * h];
    for (c, plane) in data.chunks_exact_mut(w * h).enumerate() {
        for (y, row) in plane.chunks_exact_mut(w).enumerate() {
            let src = &raw[(top + y) * stride..];
            for (x, v) in row.iter_mut().enumerate() {
                let sx = left + if flip { w - 1 - x } else { x };
                *v = f32::from(src[sx * 3 + c]) / 255.0 + offset[c];
            }
        }
    }
    norm.apply(&mut data, h, w);
    ChwImage {
        height: h,
        width: w,
        data,
    }
}
