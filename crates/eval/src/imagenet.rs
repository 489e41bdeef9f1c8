//! Top-1 and top-5 error of one model or an ensemble on an ImageNet-style
//! image folder, over the centre crop, the ten crops or the multi-scale views
//! of every image.
//!
//! Each image's prediction is the mean, over its views and over the models,
//! of the softmax probabilities (the paper's 10-crop, multi-scale and
//! ensemble tests, Tables 3 to 5). Every model has its own [`ViewConfig`]
//! (crop sizes and normalisation, which differ between sets of pretrained
//! weights); models with equal configurations share the same prepared views.

use std::collections::VecDeque;
use std::sync::Arc;

use candle_core::{DType, Device};
use resnet_data::{DataError, ImageFolder, ImageNetViewLoader, TestViews, ViewBatch, ViewConfig};
use resnet_models::{InferenceNet, ResNet};

use crate::evaluate::rank;
use crate::{EvalError, EvalReport, Result};

/// One model of an evaluation, with how it sees the images.
#[derive(Clone, Debug)]
pub struct Member<'a> {
    /// The model, on the device the evaluation runs on.
    pub model: &'a ResNet,
    /// Its crop sizes and input normalisation.
    pub views: ViewConfig,
}

/// The prediction for one image of a folder.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePrediction {
    /// The image's index in the folder.
    pub index: usize,
    /// Its true class.
    pub label: u32,
    /// Natural log of each class's probability, the softmax averaged over
    /// the image's views and the models.
    pub log_probabilities: Vec<f64>,
}

impl ImagePrediction {
    /// Each class's probability, the softmax averaged over views and models.
    pub fn probabilities(&self) -> Vec<f64> {
        self.log_probabilities.iter().map(|l| l.exp()).collect()
    }
}

/// The predictions for every image of a folder, in folder order, computed
/// batch by batch as they are read; see [`predict_folder`].
///
/// Yields `Ok(prediction)`, or one `Err` (an image that fails to decode,
/// named, or a failed forward pass), after which it ends.
pub struct FolderPredictions {
    /// Each model, folded for inference, with the index of its view
    /// configuration in the loader.
    members: Vec<(InferenceNet, usize)>,
    loader: ImageNetViewLoader,
    classes: usize,
    views_per_image: usize,
    batch_size: usize,
    device: Device,
    ready: VecDeque<ImagePrediction>,
    failed: bool,
}

impl FolderPredictions {
    /// The predictions for the images of `batch`.
    fn predict(&self, batch: ViewBatch) -> Result<Vec<ImagePrediction>> {
        // Per image and class: the log of the summed softmax probabilities.
        let mut log_sums = vec![vec![f64::NEG_INFINITY; self.classes]; batch.labels.len()];
        for (model, config) in &self.members {
            for group in &batch.groups[*config] {
                let views = group.to_tensor(&self.device)?;
                for start in (0..group.owners.len()).step_by(self.batch_size) {
                    let len = self.batch_size.min(group.owners.len() - start);
                    let logits = model.forward(&views.narrow(0, start, len)?)?;
                    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                    for (row, &owner) in rows.iter().zip(&group.owners[start..]) {
                        add_log_softmax(&mut log_sums[owner], row);
                    }
                }
            }
        }
        let ln_count = ((self.views_per_image * self.members.len()) as f64).ln();
        Ok(log_sums
            .into_iter()
            .zip(batch.labels)
            .enumerate()
            .map(|(i, (mut sum, label))| {
                sum.iter_mut().for_each(|s| *s -= ln_count);
                ImagePrediction {
                    index: batch.first + i,
                    label,
                    log_probabilities: sum,
                }
            })
            .collect())
    }
}

impl Iterator for FolderPredictions {
    type Item = Result<ImagePrediction>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.ready.is_empty() {
            if self.failed {
                return None;
            }
            let predicted = match self.loader.next()? {
                Ok(batch) => self.predict(batch),
                Err(e) => Err(e.into()),
            };
            match predicted {
                Ok(predictions) => self.ready.extend(predictions),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.ready.pop_front().map(Ok)
    }
}

/// `sum[c] = ln(exp(sum[c]) + softmax(logits)[c])` for every class, in `f64`
/// and without overflow or underflow.
fn add_log_softmax(sum: &mut [f64], logits: &[f32]) {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let log_total = max
        + logits
            .iter()
            .map(|&v| (f64::from(v) - max).exp())
            .sum::<f64>()
            .ln();
    for (s, &v) in sum.iter_mut().zip(logits) {
        let log_p = f64::from(v) - log_total;
        *s = if *s == f64::NEG_INFINITY {
            log_p
        } else {
            s.max(log_p) + (-(*s - log_p).abs()).exp().ln_1p()
        };
    }
}

/// Starts predicting every image of `folder` with `members` (one model, or an
/// ensemble) over `views`, in eval mode (batch norm uses its running
/// statistics), on `device`. Each model is folded for inference
/// ([`ResNet::fold_for_inference`](resnet_models::ResNet::fold_for_inference))
/// here, once.
///
/// Images are decoded and cut into views by `threads` loader threads, each
/// image once for all models; a forward pass takes at most `batch_size`
/// views (of one size: multi-scale views of images of different aspect
/// ratios go in separate passes). Fails if there is no member, the members
/// output different numbers of classes, an image's label is not one of
/// their classes, or `views`, a member's view configuration, `batch_size` or
/// `threads` is invalid.
pub fn predict_folder(
    members: &[Member<'_>],
    folder: Arc<ImageFolder>,
    views: &TestViews,
    batch_size: usize,
    threads: usize,
    device: &Device,
) -> Result<FolderPredictions> {
    let views = views.clone().checked()?;
    let first = members.first().ok_or(EvalError::NoModels)?;
    let classes = first.model.spec().num_classes;
    if let Some((index, other)) = members
        .iter()
        .enumerate()
        .find(|(_, m)| m.model.spec().num_classes != classes)
    {
        return Err(EvalError::ClassCounts {
            index,
            arch: other.model.spec().id.clone(),
            found: other.model.spec().num_classes,
            expected: classes,
        });
    }
    if let Some(sample) = folder
        .samples()
        .iter()
        .find(|s| s.label as usize >= classes)
    {
        return Err(EvalError::LabelOutOfRange {
            path: sample.path.clone(),
            label: sample.label,
            classes,
        });
    }
    if batch_size == 0 {
        return Err(DataError::InvalidOption {
            name: "batch_size",
            value: "0".into(),
            expected: "a value > 0".into(),
        }
        .into());
    }
    let mut configs: Vec<ViewConfig> = Vec::new();
    let members = members
        .iter()
        .map(|m| {
            let index = match configs.iter().position(|c| *c == m.views) {
                Some(index) => index,
                None => {
                    configs.push(m.views.clone());
                    configs.len() - 1
                }
            };
            Ok((m.model.fold_for_inference()?, index))
        })
        .collect::<Result<_>>()?;
    let views_per_image = views.per_image();
    let images_per_batch = (batch_size / views_per_image).max(1);
    let loader = ImageNetViewLoader::new(folder, views, configs, images_per_batch, threads)?;
    Ok(FolderPredictions {
        members,
        loader,
        classes,
        views_per_image,
        batch_size,
        device: device.clone(),
        ready: VecDeque::new(),
        failed: false,
    })
}

/// Evaluates `members` (one model, or an ensemble) on every image of
/// `folder` over `views`: top-1 and top-5 error of the averaged softmax (ties
/// go to the lower class index, as in [`batch_errors`](crate::batch_errors))
/// and its mean cross-entropy. See [`predict_folder`] for the arguments and
/// errors; an image that fails to decode is an error naming its file.
pub fn evaluate_folder(
    members: &[Member<'_>],
    folder: Arc<ImageFolder>,
    views: &TestViews,
    batch_size: usize,
    threads: usize,
    device: &Device,
) -> Result<EvalReport> {
    let (mut images, mut top1, mut top5, mut loss) = (0usize, 0usize, 0usize, 0f64);
    for prediction in predict_folder(members, folder, views, batch_size, threads, device)? {
        let prediction = prediction?;
        let label = prediction.label as usize;
        let r = rank(&prediction.log_probabilities, label);
        top1 += usize::from(r >= 1);
        top5 += usize::from(r >= 5);
        loss -= prediction.log_probabilities[label];
        images += 1;
    }
    if images == 0 {
        return Err(EvalError::EmptySplit);
    }
    Ok(EvalReport::from_totals(top1, top5, loss, images))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_sums_are_the_log_of_summed_probabilities() {
        let mut sum = vec![f64::NEG_INFINITY; 3];
        let (a, b) = ([1.0f32, 2.0, 3.0], [0.0f32, -1.0, 5.0]);
        add_log_softmax(&mut sum, &a);
        add_log_softmax(&mut sum, &b);
        let softmax = |row: &[f32]| {
            let total: f64 = row.iter().map(|&v| f64::from(v).exp()).sum();
            row.iter()
                .map(|&v| f64::from(v).exp() / total)
                .collect::<Vec<_>>()
        };
        let (pa, pb) = (softmax(&a), softmax(&b));
        for c in 0..3 {
            assert!((sum[c].exp() - (pa[c] + pb[c])).abs() < 1e-12, "{sum:?}");
        }
        // Huge logit gaps neither overflow nor underflow to -inf.
        let mut sum = vec![f64::NEG_INFINITY; 2];
        add_log_softmax(&mut sum, &[1000.0, -1000.0]);
        add_log_softmax(&mut sum, &[1000.0, -1000.0]);
        assert!((sum[0] - 2f64.ln()).abs() < 1e-12, "{sum:?}");
        assert!((sum[1] - (2f64.ln() - 2000.0)).abs() < 1e-9, "{sum:?}");
    }
}
