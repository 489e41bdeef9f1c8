//! The input normalisation as tensors, stored beside the model's in a weights file.
//!
//! - per-pixel mean: `normalization.mean_image`, `f32` `[3, H, W]`, 0..1 units;
//!   `[3, 32, 32]` for CIFAR-10 ([`Normalization`]), any size for ImageNet-style
//!   inputs ([`ImageNetNormalization`]; 224x224 when the trainer computes it);
//! - per-channel: `normalization.channel_mean` and `normalization.channel_std`, `f32` `[3]` each.
//!
//! Both kinds mean the same for CIFAR-10 and ImageNet-style inputs (pixels in
//! 0..1 units, minus the mean, divided by the standard deviation), so a file
//! stores either with the same names: [`normalization_tensors`] and
//! [`normalization_from_tensors`] convert CIFAR-10's, and
//! [`imagenet_normalization_tensors`] and [`imagenet_normalization_from_tensors`]
//! ImageNet's.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use resnet_data::{ImageNetNormalization, MeanImage, Normalization, PixelMean};

use crate::{EvalError, Result};

/// Prefix of every normalisation tensor in a weights file.
pub const NORMALIZATION_PREFIX: &str = "normalization.";

const MEAN_IMAGE: &str = "mean_image";
const CHANNEL_MEAN: &str = "channel_mean";
const CHANNEL_STD: &str = "channel_std";
const CIFAR_MEAN_IMAGE_SHAPE: [usize; 3] = [3, 32, 32];

/// A normalisation as stored: what the tensors say, before it becomes a
/// CIFAR-10 or an ImageNet normalisation.
enum Stored {
    /// `normalization.mean_image`, CHW values of a `height x width` image.
    MeanImage {
        height: usize,
        width: usize,
        values: Vec<f32>,
    },
    /// `normalization.channel_mean` and `normalization.channel_std`.
    PerChannel { mean: [f32; 3], std: [f32; 3] },
}

/// The mean-image shapes a reader accepts.
#[derive(Clone, Copy)]
enum MeanImageShape {
    /// Exactly this shape.
    Exactly([usize; 3]),
    /// `[3, H, W]` with `H, W > 0`.
    AnySize,
}

fn full_name(short: &str) -> String {
    format!("{NORMALIZATION_PREFIX}{short}")
}

fn problem(short: &str, problem: impl Into<String>) -> EvalError {
    EvalError::Normalization {
        name: full_name(short),
        problem: problem.into(),
    }
}

/// The tensors that store `norm` (on the CPU), keyed by their full names.
///
/// Fails if `norm` has non-finite values or a standard deviation <= 0.
pub fn normalization_tensors(norm: &Normalization) -> Result<HashMap<String, Tensor>> {
    stored_tensors(match norm.clone().checked()? {
        Normalization::PerPixelMean(mean) => Stored::MeanImage {
            height: CIFAR_MEAN_IMAGE_SHAPE[1],
            width: CIFAR_MEAN_IMAGE_SHAPE[2],
            values: mean.values().to_vec(),
        },
        Normalization::PerChannel { mean, std } => Stored::PerChannel { mean, std },
    })
}

/// The tensors that store an ImageNet normalisation (on the CPU), keyed by
/// their full names: a per-pixel mean of any size as `normalization.mean_image`
/// `[3, H, W]`, per-channel values as for CIFAR-10.
///
/// Fails if `norm` has non-finite values or a standard deviation <= 0.
pub fn imagenet_normalization_tensors(
    norm: &ImageNetNormalization,
) -> Result<HashMap<String, Tensor>> {
    stored_tensors(match norm.clone().checked()? {
        ImageNetNormalization::PerPixelMean(mean) => Stored::MeanImage {
            height: mean.height(),
            width: mean.width(),
            values: mean.values().to_vec(),
        },
        ImageNetNormalization::PerChannel { mean, std } => Stored::PerChannel { mean, std },
    })
}

fn stored_tensors(stored: Stored) -> Result<HashMap<String, Tensor>> {
    let tensors = match stored {
        Stored::MeanImage {
            height,
            width,
            values,
        } => vec![(
            MEAN_IMAGE,
            Tensor::from_vec(values, (3, height, width), &Device::Cpu)?,
        )],
        Stored::PerChannel { mean, std } => vec![
            (CHANNEL_MEAN, Tensor::new(&mean, &Device::Cpu)?),
            (CHANNEL_STD, Tensor::new(&std, &Device::Cpu)?),
        ],
    };
    Ok(tensors
        .into_iter()
        .map(|(short, t)| (full_name(short), t))
        .collect())
}

/// The tensor `short`, which must exist, as `f32` values.
fn values(tensors: &HashMap<&str, &Tensor>, short: &str, expected: &str) -> Result<Vec<f32>> {
    let t = tensors
        .get(short)
        .ok_or_else(|| problem(short, format!("is missing (expected shape {expected})")))?;
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn channel_values(tensors: &HashMap<&str, &Tensor>, short: &str) -> Result<[f32; 3]> {
    if let Some(t) = tensors.get(short).filter(|t| t.dims() != [3]) {
        return Err(problem(
            short,
            format!("has shape {:?}, expected [3]", t.dims()),
        ));
    }
    let v = values(tensors, short, "[3]")?;
    Ok([v[0], v[1], v[2]])
}

/// The mean image's `(height, width, values)`, checking its shape and values.
fn mean_image(
    tensors: &HashMap<&str, &Tensor>,
    shape: MeanImageShape,
) -> Result<(usize, usize, Vec<f32>)> {
    let dims = tensors.get(MEAN_IMAGE).map_or(&[][..], |t| t.dims());
    let (height, width) = match (shape, dims) {
        (MeanImageShape::Exactly(want), found) if found == want => (want[1], want[2]),
        (MeanImageShape::Exactly(want), found) => {
            return Err(problem(
                MEAN_IMAGE,
                format!("has shape {found:?}, expected {want:?}"),
            ))
        }
        (MeanImageShape::AnySize, &[3, h, w]) if h > 0 && w > 0 => (h, w),
        (MeanImageShape::AnySize, found) => {
            return Err(problem(
                MEAN_IMAGE,
                format!("has shape {found:?}, expected [3, H, W] with H, W > 0"),
            ))
        }
    };
    let values = values(tensors, MEAN_IMAGE, "[3, H, W]")?;
    if !values.iter().all(|v| v.is_finite()) {
        return Err(problem(MEAN_IMAGE, "has non-finite values"));
    }
    Ok((height, width, values))
}

/// Reads the stored normalisation: `None` when there is none.
fn read_stored(tensors: &HashMap<String, Tensor>, shape: MeanImageShape) -> Result<Option<Stored>> {
    let own: HashMap<&str, &Tensor> = tensors
        .iter()
        .filter_map(|(name, t)| Some((name.strip_prefix(NORMALIZATION_PREFIX)?, t)))
        .collect();
    let mut unknown: Vec<&&str> = own
        .keys()
        .filter(|k| ![MEAN_IMAGE, CHANNEL_MEAN, CHANNEL_STD].contains(k))
        .collect();
    unknown.sort();
    if let Some(short) = unknown.first() {
        return Err(problem(
            short,
            format!(
                "is unknown: expected {} or {} with {}",
                full_name(MEAN_IMAGE),
                full_name(CHANNEL_MEAN),
                full_name(CHANNEL_STD)
            ),
        ));
    }
    if own.is_empty() {
        return Ok(None);
    }
    if own.contains_key(MEAN_IMAGE) {
        if let Some(short) = [CHANNEL_MEAN, CHANNEL_STD]
            .into_iter()
            .find(|k| own.contains_key(k))
        {
            return Err(problem(
                short,
                format!(
                    "is given together with {}: expected one normalisation",
                    full_name(MEAN_IMAGE)
                ),
            ));
        }
        let (height, width, values) = mean_image(&own, shape)?;
        return Ok(Some(Stored::MeanImage {
            height,
            width,
            values,
        }));
    }
    let mean = channel_values(&own, CHANNEL_MEAN)?;
    let std = channel_values(&own, CHANNEL_STD)?;
    if !mean.iter().all(|v| v.is_finite()) {
        return Err(problem(
            CHANNEL_MEAN,
            format!("is {mean:?}: expected finite values"),
        ));
    }
    if !std.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(problem(
            CHANNEL_STD,
            format!("is {std:?}: expected finite values > 0"),
        ));
    }
    Ok(Some(Stored::PerChannel { mean, std }))
}

/// Reads the CIFAR-10 normalisation stored in `tensors` (the entries named
/// `normalization.*`; others are ignored): `None` when there is none.
///
/// A partial, misshapen (a mean image other than `[3, 32, 32]` included),
/// unknown, ambiguous or invalid (non-finite, std <= 0) entry is an error
/// naming the tensor.
pub fn normalization_from_tensors(
    tensors: &HashMap<String, Tensor>,
) -> Result<Option<Normalization>> {
    let shape = MeanImageShape::Exactly(CIFAR_MEAN_IMAGE_SHAPE);
    Ok(match read_stored(tensors, shape)? {
        None => None,
        Some(Stored::MeanImage { values, .. }) => {
            Some(Normalization::PerPixelMean(MeanImage::from_values(values)?))
        }
        Some(Stored::PerChannel { mean, std }) => Some(Normalization::PerChannel { mean, std }),
    })
}

/// Reads the ImageNet normalisation stored in `tensors` (the entries named
/// `normalization.*`; others are ignored): `None` when there is none. A mean
/// image of any size `[3, H, W]` becomes a per-pixel mean of that size.
///
/// A partial, misshapen, unknown, ambiguous or invalid (non-finite, std <= 0)
/// entry is an error naming the tensor.
pub fn imagenet_normalization_from_tensors(
    tensors: &HashMap<String, Tensor>,
) -> Result<Option<ImageNetNormalization>> {
    Ok(match read_stored(tensors, MeanImageShape::AnySize)? {
        None => None,
        Some(Stored::MeanImage {
            height,
            width,
            values,
        }) => Some(ImageNetNormalization::PerPixelMean(PixelMean::from_values(
            height, width, values,
        )?)),
        Some(Stored::PerChannel { mean, std }) => {
            Some(ImageNetNormalization::PerChannel { mean, std })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel_mean(height: usize, width: usize) -> ImageNetNormalization {
        let values = (0..3 * height * width).map(|i| i as f32 / 1000.0).collect();
        ImageNetNormalization::PerPixelMean(PixelMean::from_values(height, width, values).unwrap())
    }

    #[test]
    fn imagenet_normalizations_of_any_size_round_trip() {
        for norm in [
            pixel_mean(224, 224),
            pixel_mean(5, 7),
            ImageNetNormalization::TORCHVISION,
        ] {
            let tensors = imagenet_normalization_tensors(&norm).unwrap();
            assert!(tensors.keys().all(|k| k.starts_with(NORMALIZATION_PREFIX)));
            assert_eq!(
                imagenet_normalization_from_tensors(&tensors).unwrap(),
                Some(norm)
            );
        }
        let tensors = imagenet_normalization_tensors(&pixel_mean(5, 7)).unwrap();
        assert_eq!(tensors["normalization.mean_image"].dims(), [3, 5, 7]);
        assert_eq!(
            imagenet_normalization_from_tensors(&HashMap::new()).unwrap(),
            None
        );
    }

    #[test]
    fn cifar_files_read_as_imagenet_normalizations_and_not_the_reverse() {
        let cifar = Normalization::PerPixelMean(MeanImage::from_values(vec![0.25; 3072]).unwrap());
        let tensors = normalization_tensors(&cifar).unwrap();
        let Some(ImageNetNormalization::PerPixelMean(mean)) =
            imagenet_normalization_from_tensors(&tensors).unwrap()
        else {
            panic!("expected a per-pixel mean");
        };
        assert_eq!((mean.height(), mean.width()), (32, 32));
        assert_eq!(mean.values(), &[0.25; 3072][..]);

        let imagenet = imagenet_normalization_tensors(&pixel_mean(224, 224)).unwrap();
        let err = normalization_from_tensors(&imagenet)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "`normalization.mean_image` has shape [3, 224, 224], expected [3, 32, 32]"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_imagenet_entries_are_errors_naming_the_tensor() {
        let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        let one = |name: &str, tensor: Tensor| HashMap::from([(name.to_string(), tensor)]);
        let cases = [
            (
                one("normalization.mean_image", t(vec![0.5; 12], &[4, 3])),
                "`normalization.mean_image` has shape [4, 3], expected [3, H, W]",
            ),
            (
                one("normalization.mean_image", t(vec![0.0; 0], &[3, 0, 4])),
                "`normalization.mean_image` has shape [3, 0, 4]",
            ),
            (
                one(
                    "normalization.mean_image",
                    t(vec![f32::NAN; 12], &[3, 2, 2]),
                ),
                "`normalization.mean_image` has non-finite values",
            ),
            (
                one("normalization.channel_mean", t(vec![0.5; 3], &[3])),
                "`normalization.channel_std` is missing",
            ),
            (
                HashMap::from([
                    (
                        "normalization.channel_mean".to_string(),
                        t(vec![0.5; 3], &[3]),
                    ),
                    (
                        "normalization.channel_std".to_string(),
                        t(vec![0.5; 4], &[4]),
                    ),
                ]),
                "`normalization.channel_std` has shape [4], expected [3]",
            ),
            (
                one("normalization.scale", t(vec![1.0], &[1])),
                "`normalization.scale` is unknown",
            ),
        ];
        for (tensors, needle) in cases {
            let err = imagenet_normalization_from_tensors(&tensors)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let mut both = imagenet_normalization_tensors(&pixel_mean(2, 2)).unwrap();
        both.extend(imagenet_normalization_tensors(&ImageNetNormalization::TORCHVISION).unwrap());
        let err = imagenet_normalization_from_tensors(&both)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is given together with"), "{err}");
        let bad_std = ImageNetNormalization::PerChannel {
            mean: [0.5; 3],
            std: [0.0; 3],
        };
        assert!(imagenet_normalization_tensors(&bad_std).is_err());
    }
}
