//! Test-time views of an [`ImageFolder`] for one or more models: the centre
//! crop, the ten crops or the multi-scale views of every image
//! ([`TestViews`]), each model's with its own crop sizes and normalisation
//! ([`ViewConfig`]), decoded in background threads ([`ImageNetViewLoader`]).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::{DataError, Result};
use crate::folder::augment::{
    center_crop, crop_view, multi_scale, resize_shorter_side_with, ChwImage, Resample, CROP_SIDE,
    EVAL_SHORT_SIDE, TEST_SCALES,
};
use crate::folder::norm::ImageNetNormalization;
use crate::folder::ImageFolder;
use crate::loader::positive;
use crate::prefetch::FallibleFetcher;

/// Where the centre crop and the ten crops are taken: the shorter side is
/// resized to `resize` with `resample`, then `crop` x `crop` squares are cut out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropGeometry {
    /// Shorter side of the resized image (at least `crop`).
    pub resize: u32,
    /// Side of the square crops (> 0).
    pub crop: u32,
    /// The resampling of the resize.
    pub resample: Resample,
}

impl CropGeometry {
    /// The standard evaluation geometry: shorter side 256, 224x224 crops.
    pub const STANDARD: Self = Self {
        resize: EVAL_SHORT_SIDE,
        crop: CROP_SIDE,
        resample: Resample::Bilinear,
    };

    /// Returns `self` if `0 < crop <= resize`.
    pub fn checked(self) -> Result<Self> {
        if 0 < self.crop && self.crop <= self.resize {
            return Ok(self);
        }
        Err(DataError::InvalidOption {
            name: "crop geometry",
            value: format!("resize {} crop {}", self.resize, self.crop),
            expected: "0 < crop <= resize".into(),
        })
    }
}

/// How one model sees an image: where its crops are taken and how views are normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewConfig {
    /// Crop sizes of the centre and ten-crop views (unused by multi-scale views).
    pub geometry: CropGeometry,
    /// Normalisation of every view.
    pub normalization: ImageNetNormalization,
}

impl ViewConfig {
    /// torchvision's evaluation input: [`CropGeometry::STANDARD`] and
    /// [`ImageNetNormalization::TORCHVISION`].
    pub const TORCHVISION: Self = Self {
        geometry: CropGeometry::STANDARD,
        normalization: ImageNetNormalization::TORCHVISION,
    };

    /// Returns `self` if its geometry and normalisation are valid.
    pub fn checked(self) -> Result<Self> {
        Ok(Self {
            geometry: self.geometry.checked()?,
            normalization: self.normalization.checked()?,
        })
    }
}

/// Which views of each image are evaluated (their softmax is averaged per image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestViews {
    /// One view: the centre crop.
    Center,
    /// The four corner crops and the centre crop, and their mirror images, in
    /// the order of [`ten_crop`](crate::ten_crop).
    TenCrop,
    /// The whole image resized to each of these shorter sides, for a fully
    /// convolutional network (the paper's are [`TEST_SCALES`]).
    MultiScale(Vec<u32>),
}

impl TestViews {
    /// The paper's multi-scale test, at the shorter sides of [`TEST_SCALES`].
    pub fn paper_multi_scale() -> Self {
        Self::MultiScale(TEST_SCALES.to_vec())
    }

    /// Returns `self` if it has at least one view and every scale is > 0.
    pub fn checked(self) -> Result<Self> {
        match &self {
            Self::MultiScale(scales) if scales.is_empty() || scales.contains(&0) => {
                Err(DataError::InvalidOption {
                    name: "multi-scale sides",
                    value: format!("{scales:?}"),
                    expected: "at least one shorter side, each > 0".into(),
                })
            }
            _ => Ok(self),
        }
    }

    /// Number of views of each image.
    pub fn per_image(&self) -> usize {
        match self {
            Self::Center => 1,
            Self::TenCrop => 10,
            Self::MultiScale(scales) => scales.len(),
        }
    }

    /// A short name: `center crop`, `ten-crop` or `multi-scale`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Center => "center crop",
            Self::TenCrop => "ten-crop",
            Self::MultiScale(_) => "multi-scale",
        }
    }

    /// The views of `image` as `config` sees them, in order.
    ///
    /// With [`CropGeometry::STANDARD`], the centre view is
    /// [`center_view`](crate::center_view)'s and the ten crops are
    /// [`ten_crop`](crate::ten_crop)'s.
    pub fn of(&self, image: &RgbImage, config: &ViewConfig) -> Vec<ChwImage> {
        let norm = &config.normalization;
        let CropGeometry {
            resize,
            crop,
            resample,
        } = config.geometry;
        if let Self::MultiScale(scales) = self {
            return multi_scale(image, norm, scales);
        }
        if *self == Self::Center {
            let cropped = center_crop(image, resize, crop, resample);
            return vec![crop_view(
                &cropped,
                [0, 0, crop, crop],
                false,
                [0.0; 3],
                norm,
            )];
        }
        let resized = resize_shorter_side_with(image, resize.max(crop), resample);
        let (dx, dy) = (resized.width() - crop, resized.height() - crop);
        let center = (dx / 2, dy / 2);
        let square =
            |(left, top), flip| crop_view(&resized, [left, top, crop, crop], flip, [0.0; 3], norm);
        let corners = [(0, 0), (dx, 0), (0, dy), (dx, dy), center];
        [false, true]
            .into_iter()
            .flat_map(|flip| corners.map(|corner| square(corner, flip)))
            .collect()
    }
}

/// Equally sized views of some images of a [`ViewBatch`], stacked NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewGroup {
    /// `owners.len() * 3 * height * width` floats, NCHW.
    pub views: Vec<f32>,
    /// Rows of each view.
    pub height: usize,
    /// Columns of each view.
    pub width: usize,
    /// For each view, the index in its [`ViewBatch`] of the image it shows.
    pub owners: Vec<usize>,
}

impl ViewGroup {
    /// An empty group of `height x width` views.
    fn new(height: usize, width: usize) -> Self {
        Self {
            views: Vec::new(),
            height,
            width,
            owners: Vec::new(),
        }
    }

    /// The views as an `f32` tensor `[N, 3, H, W]`, `N = owners.len()`.
    ///
    /// Fails if `views` does not hold `N * 3 * H * W` floats.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        let shape = (self.owners.len(), 3, self.height, self.width);
        Tensor::from_slice(&self.views, shape, device)
    }
}

/// All test views of consecutive images of a folder, for each [`ViewConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct ViewBatch {
    /// Index in the folder of the batch's first image.
    pub first: usize,
    /// The images' labels, in folder order.
    pub labels: Vec<u32>,
    /// For each view configuration, in the loader's order, its views grouped
    /// by size (in order of first appearance; image by image, view by view
    /// within a group).
    pub groups: Vec<Vec<ViewGroup>>,
}

impl ViewBatch {
    /// Decodes images `first..end` of `folder` and cuts their views.
    fn load(
        folder: &ImageFolder,
        views: &TestViews,
        configs: &[ViewConfig],
        first: usize,
        end: usize,
    ) -> Result<Self> {
        let mut groups: Vec<Vec<ViewGroup>> = vec![Vec::new(); configs.len()];
        for i in first..end {
            let image = folder.load(i)?;
            for (config, groups) in configs.iter().zip(&mut groups) {
                for view in views.of(&image, config) {
                    let size = (view.height, view.width);
                    let index = match groups.iter().position(|g| (g.height, g.width) == size) {
                        Some(index) => index,
                        None => {
                            groups.push(ViewGroup::new(view.height, view.width));
                            groups.len() - 1
                        }
                    };
                    groups[index].views.extend_from_slice(&view.data);
                    groups[index].owners.push(i - first);
                }
            }
        }
        let labels = folder.samples()[first..end]
            .iter()
            .map(|s| s.label)
            .collect();
        Ok(Self {
            first,
            labels,
            groups,
        })
    }
}

/// The test views of every image of an [`ImageFolder`], in order, for each
/// of several view configurations, in [`ViewBatch`]es of up to
/// `images_per_batch` images, decoded in background threads.
///
/// Each image is decoded once for all configurations. Yields `Ok(batch)`, or
/// one `Err` naming a file that failed to decode, after which it ends.
/// Dropping the loader stops its threads.
pub struct ImageNetViewLoader {
    inner: FallibleFetcher<ViewBatch>,
}

impl ImageNetViewLoader {
    /// Starts a loader over `folder` with `threads` workers.
    ///
    /// Fails if `configs` is empty, a configuration or `views` is invalid, or
    /// `images_per_batch` or `threads` is 0.
    pub fn new(
        folder: Arc<ImageFolder>,
        views: TestViews,
        configs: Vec<ViewConfig>,
        images_per_batch: usize,
        threads: usize,
    ) -> Result<Self> {
        if configs.is_empty() {
            return Err(DataError::InvalidOption {
                name: "view configurations",
                value: "none".into(),
                expected: "at least one".into(),
            });
        }
        let configs = configs
            .into_iter()
            .map(ViewConfig::checked)
            .collect::<Result<Vec<_>>>()?;
        let (views, configs) = (Arc::new(views.checked()?), Arc::new(configs));
        positive("images_per_batch", images_per_batch)?;
        positive("threads", threads)?;
        let inner = FallibleFetcher::spawn("imagenet-views", threads, 2 * threads, || {
            let (folder, views, configs) = (
                Arc::clone(&folder),
                Arc::clone(&views),
                Arc::clone(&configs),
            );
            move |k| {
                let first = usize::try_from(k).ok()?.checked_mul(images_per_batch)?;
                if first >= folder.len() {
                    return None;
                }
                let end = (first + images_per_batch).min(folder.len());
                Some(ViewBatch::load(&folder, &views, &configs, first, end))
            }
        })?;
        Ok(Self { inner })
    }
}

impl Iterator for ImageNetViewLoader {
    type Item = Result<ViewBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{center_view, ten_crop};

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(7 * x) as u8, (5 * y) as u8, (x * y) as u8])
        })
    }

    fn config(geometry: CropGeometry) -> ViewConfig {
        ViewConfig {
            geometry,
            normalization: ImageNetNormalization::TORCHVISION,
        }
    }

    #[test]
    fn standard_geometry_reproduces_center_view_and_ten_crop() {
        let norm = ImageNetNormalization::TORCHVISION;
        for image in [gradient(300, 260), gradient(250, 333)] {
            let standard = config(CropGeometry::STANDARD);
            assert_eq!(
                TestViews::Center.of(&image, &standard),
                vec![center_view(&image, &norm)]
            );
            assert_eq!(
                TestViews::TenCrop.of(&image, &standard),
                ten_crop(&image, &norm)
            );
        }
    }

    #[test]
    fn other_geometries_crop_their_own_sizes_and_mirror() {
        // Shorter side already 36: the resize is a copy, crops are exact.
        let image = gradient(48, 36);
        let views = TestViews::TenCrop.of(
            &image,
            &config(CropGeometry {
                resize: 36,
                crop: 32,
                resample: Resample::Bilinear,
            }),
        );
        assert_eq!(views.len(), 10);
        assert!(views.iter().all(|v| (v.height, v.width) == (32, 32)));
        let plane = 32 * 32;
        // Top-right corner of the red plane: column 47 of the image.
        let red = |v: &ChwImage, y: usize, x: usize| v.data[y * 32 + x];
        let expected = (f32::from((7 * 47) as u8) / 255.0 - 0.485) / 0.229;
        assert!((red(&views[1], 0, 31) - expected).abs() < 1e-6);
        // The mirror of the top-right crop starts with that column.
        assert!((red(&views[6], 0, 0) - expected).abs() < 1e-6);
        assert_eq!(views[0].data.len(), 3 * plane);
        let scales =
            TestViews::MultiScale(vec![36, 72]).of(&image, &config(CropGeometry::STANDARD));
        let sizes: Vec<_> = scales.iter().map(|v| (v.height, v.width)).collect();
        assert_eq!(sizes, [(36, 48), (72, 96)]);
    }

    #[test]
    fn bicubic_geometries_resample_bicubically() {
        // A 64x48 image resized to shorter side 36: the filters differ.
        let image = gradient(64, 48);
        let geometry = |resample| CropGeometry {
            resize: 36,
            crop: 32,
            resample,
        };
        let bilinear = TestViews::Center.of(&image, &config(geometry(Resample::Bilinear)));
        let bicubic = TestViews::Center.of(&image, &config(geometry(Resample::Bicubic)));
        assert_ne!(bilinear, bicubic);
        let norm = config(CropGeometry::STANDARD).normalization;
        let resized = resize_shorter_side_with(&image, 36, Resample::Bicubic);
        assert_eq!(
            bicubic[0],
            crop_view(&resized, [8, 2, 32, 32], false, [0.0; 3], &norm)
        );
    }

    #[test]
    fn invalid_geometries_and_scales_are_errors() {
        let bad = CropGeometry {
            resize: 200,
            crop: 224,
            ..CropGeometry::STANDARD
        };
        assert!(bad
            .checked()
            .unwrap_err()
            .to_string()
            .contains("crop <= resize"));
        assert!(TestViews::MultiScale(vec![]).checked().is_err());
        assert!(TestViews::MultiScale(vec![224, 0]).checked().is_err());
        assert_eq!(TestViews::paper_multi_scale().per_image(), 5);
    }
}
