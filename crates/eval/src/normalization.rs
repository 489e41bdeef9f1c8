//! The input normalisation as tensors, stored beside the model's in a weights file.
//!
//! - per-pixel mean: `normalization.mean_image`, `f32` `[3, 32, 32]`, 0..1 units;
//! - per-channel: `normalization.channel_mean` and `normalization.channel_std`, `f32` `[3]` each.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use resnet_data::{MeanImage, Normalization};

use crate::{EvalError, Result};

/// Prefix of every normalisation tensor in a weights file.
pub const NORMALIZATION_PREFIX: &str = "normalization.";

const MEAN_IMAGE: &str = "mean_image";
const CHANNEL_MEAN: &str = "channel_mean";
const CHANNEL_STD: &str = "channel_std";
const MEAN_IMAGE_SHAPE: [usize; 3] = [3, 32, 32];

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
    let tensors = match norm.clone().checked()? {
        Normalization::PerPixelMean(mean) => vec![(
            MEAN_IMAGE,
            Tensor::from_slice(mean.values(), &MEAN_IMAGE_SHAPE, &Device::Cpu)?,
        )],
        Normalization::PerChannel { mean, std } => vec![
            (CHANNEL_MEAN, Tensor::new(&mean, &Device::Cpu)?),
            (CHANNEL_STD, Tensor::new(&std, &Device::Cpu)?),
        ],
    };
    Ok(tensors
        .into_iter()
        .map(|(short, t)| (full_name(short), t))
        .collect())
}

/// The values of the tensor `short` as `f32`, checking its shape.
fn values(tensors: &HashMap<&str, &Tensor>, short: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = tensors
        .get(short)
        .ok_or_else(|| problem(short, format!("is missing (expected shape {shape:?})")))?;
    if t.dims() != shape {
        return Err(problem(
            short,
            format!("has shape {:?}, expected {shape:?}", t.dims()),
        ));
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn channel_values(tensors: &HashMap<&str, &Tensor>, short: &str) -> Result<[f32; 3]> {
    let v = values(tensors, short, &[3])?;
    Ok([v[0], v[1], v[2]])
}

/// Reads the normalisation stored in `tensors` (the entries named
/// `normalization.*`; others are ignored): `None` when there is none.
///
/// A partial, misshapen, unknown, ambiguous or invalid (non-finite, std <= 0)
/// entry is an error naming the tensor.
pub fn normalization_from_tensors(
    tensors: &HashMap<String, Tensor>,
) -> Result<Option<Normalization>> {
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
        let mean = values(&own, MEAN_IMAGE, &MEAN_IMAGE_SHAPE)?;
        if !mean.iter().all(|v| v.is_finite()) {
            return Err(problem(MEAN_IMAGE, "has non-finite values"));
        }
        return Ok(Some(Normalization::PerPixelMean(MeanImage::from_values(
            mean,
        )?)));
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
    Ok(Some(Normalization::PerChannel { mean, std }))
}
