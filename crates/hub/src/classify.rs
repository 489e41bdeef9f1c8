//! Classifying an image: the centre view, the forward pass, softmax, the
//! most probable classes with their names.

use candle_core::{Device, Tensor};
use image::RgbImage;
use resnet_data::{TestViews, ViewConfig};
use resnet_models::InferenceNet;

use crate::{HubError, Result};

/// The 1000 ImageNet-1k class names, one per line in index order
/// (torchvision's list).
const IMAGENET_CLASSES: &str = include_str!("../imagenet_classes.txt");

/// The ImageNet-1k class names in index order (`tench`, `goldfish`, ...),
/// the names of every 1000-class net's outputs.
pub fn imagenet_classes() -> Vec<&'static str> {
    IMAGENET_CLASSES.lines().collect()
}

/// One class of a classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The output index.
    pub class: usize,
    /// Its name, where the net's classes have names.
    pub name: Option<String>,
    /// Its softmax probability.
    pub probability: f32,
}

/// The `k` most probable classes of `image` for `model` (a net folded for
/// inference, [`ResNet::fold_for_inference`](resnet_models::ResNet::fold_for_inference)),
/// most probable first: the centre view as `views` cuts and normalises it,
/// on `device` (the model's), with names from `names` (one per output)
/// where given.
pub fn classify(
    model: &InferenceNet,
    device: &Device,
    image: &RgbImage,
    views: &ViewConfig,
    names: Option<&[String]>,
    k: usize,
) -> Result<Vec<Prediction>> {
    let view = TestViews::Center
        .of(image, views)
        .into_iter()
        .next()
        .expect("the centre view is one view");
    let input = Tensor::from_slice(&view.data, (1, 3, view.height, view.width), device)
        .map_err(resnet_models::ModelError::from)?;
    let logits = model.forward(&input)?;
    let logits = logits
        .flatten_all()
        .and_then(|l| l.to_vec1::<f32>())
        .map_err(resnet_models::ModelError::from)?;
    if let Some(names) = names {
        if names.len() != logits.len() {
            return Err(HubError::ClassNames {
                names: names.len(),
                outputs: logits.len(),
            });
        }
    }
    Ok(top_k(&softmax(&logits), k)
        .into_iter()
        .map(|(class, probability)| Prediction {
            class,
            name: names.map(|n| n[class].clone()),
            probability,
        })
        .collect())
}

/// `exp(x - max) / sum`, which cannot overflow.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, most probable first.
fn top_k(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_sorts_by_probability_and_truncates() {
        assert_eq!(top_k(&[0.1, 0.6, 0.3], 2), vec![(1, 0.6), (2, 0.3)]);
        assert_eq!(top_k(&[1.0], 5).len(), 1);
    }

    #[test]
    fn softmax_sums_to_one_even_for_huge_logits() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(p[0], p[1]);
    }

    #[test]
    fn class_file_has_1000_names_in_torchvision_order() {
        let names = imagenet_classes();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(names[207], "golden retriever");
    }
}
