//! Top-1 and top-5 error and mean cross-entropy of a model on a split.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use resnet_data::{EvalLoader, Normalization, Split};
use resnet_models::ResNet;
use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

/// The result of [`evaluate`]: errors as fractions in 0..=1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Fraction of images whose true class is not the top-ranked one.
    pub top1_error: f64,
    /// Fraction of images whose true class is not among the five top-ranked ones.
    pub top5_error: f64,
    /// Mean cross-entropy (natural log) of the softmax of the logits.
    pub loss: f64,
    /// Number of images evaluated.
    pub images: usize,
}

impl EvalReport {
    /// The report of `images` (> 0) images of which `top1_wrong` missed the
    /// top-1 and `top5_wrong` the top-5 class, with cross-entropies summing to `loss_sum`.
    pub fn from_totals(top1_wrong: usize, top5_wrong: usize, loss_sum: f64, images: usize) -> Self {
        let n = images as f64;
        EvalReport {
            top1_error: top1_wrong as f64 / n,
            top5_error: top5_wrong as f64 / n,
            loss: loss_sum / n,
            images,
        }
    }
}

/// The rank (0 = best) of `label` among `row`'s logits.
///
/// Classes are ranked by logit, highest first; a tie goes to the lower class
/// index (as a stable sort by descending logit would order them). A row whose
/// true logit is NaN (the one value not comparable to itself) ranks the label
/// last, so it counts as wrong.
pub(crate) fn rank<T: PartialOrd + Copy>(row: &[T], label: usize) -> usize {
    let own = row[label];
    if own.partial_cmp(&own).is_none() {
        return row.len();
    }
    row.iter()
        .enumerate()
        .filter(|&(c, &v)| v > own || (v == own && c < label))
        .count()
}

/// `ln(sum(exp(row))) - row[label]`, computed stably in `f64`.
fn cross_entropy(row: &[f32], label: usize) -> f64 {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    max + sum.ln() - f64::from(row[label])
}

/// Host copies of `(logits [N, C], labels [N])`, checking that they fit.
fn host_batch(logits: &Tensor, labels: &Tensor) -> Result<(Vec<Vec<f32>>, Vec<u32>)> {
    let shape_error = || EvalError::BatchShape {
        logits: logits.dims().to_vec(),
        labels: labels.dims().to_vec(),
    };
    match (logits.dims(), labels.dims()) {
        (&[n, c], &[m]) if n == m && c > 0 => {}
        _ => return Err(shape_error()),
    }
    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let classes = logits.dims()[1];
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(EvalError::BadLabel {
            label,
            index,
            classes,
        });
    }
    Ok((rows, labels))
}

/// Counts the top-1 and top-5 mistakes in a batch: `(top-1 wrong, top-5
/// wrong)` for `logits` `[N, classes]` and class-index `labels` `[N]`.
///
/// Ties are broken deterministically in favour of the lower class index: the
/// true class's rank is the number of classes with a strictly higher logit
/// plus the number with an equal logit and a lower index. A NaN true logit
/// counts as wrong. With fewer than five classes top-5 is never wrong.
pub fn batch_errors(logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    let (rows, labels) = host_batch(logits, labels)?;
    Ok(count_errors(&rows, &labels))
}

fn count_errors(rows: &[Vec<f32>], labels: &[u32]) -> (usize, usize) {
    rows.iter()
        .zip(labels)
        .map(|(row, &label)| rank(row, label as usize))
        .fold((0, 0), |(t1, t5), r| {
            (t1 + usize::from(r >= 1), t5 + usize::from(r >= 5))
        })
}

/// Evaluates `model` on every image of `split`, in eval mode (batch norm uses
/// its running statistics), in batches of `batch_size` prepared by `threads`
/// loader threads and normalised with `norm`. The model is folded for
/// inference ([`ResNet::fold_for_inference`]) once per call. An empty split
/// is an error.
pub fn evaluate(
    model: &ResNet,
    split: Arc<Split>,
    norm: &Normalization,
    batch_size: usize,
    threads: usize,
    device: &Device,
) -> Result<EvalReport> {
    let images = split.len();
    if images == 0 {
        return Err(EvalError::EmptySplit);
    }
    let net = model.fold_for_inference()?;
    let (mut top1, mut top5, mut loss) = (0usize, 0usize, 0f64);
    for batch in EvalLoader::new(split, norm.clone(), batch_size, threads)? {
        let (x, y) = batch.to_tensors(device)?;
        let logits = net.forward(&x)?;
        let (rows, labels) = host_batch(&logits, &y)?;
        let (t1, t5) = count_errors(&rows, &labels);
        top1 += t1;
        top5 += t5;
        loss += rows
            .iter()
            .zip(&labels)
            .map(|(row, &l)| cross_entropy(row, l as usize))
            .sum::<f64>();
    }
    Ok(EvalReport::from_totals(top1, top5, loss, images))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(rows: &[&[f32]], labels: &[u32]) -> (usize, usize) {
        let n = rows.len();
        let c = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let logits = Tensor::from_vec(flat, (n, c), &Device::Cpu).unwrap();
        let labels = Tensor::new(labels, &Device::Cpu).unwrap();
        batch_errors(&logits, &labels).unwrap()
    }

    #[test]
    fn counts_top1_and_top5_mistakes() {
        let row: &[f32] = &[0.0, 9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0];
        // Ranks: class 1 -> 0, 3 -> 1, 5 -> 2, 7 -> 3, 9 -> 4, 8 -> 5, 0 -> 9.
        assert_eq!(errors(&[row], &[1]), (0, 0));
        assert_eq!(errors(&[row], &[3]), (1, 0));
        assert_eq!(errors(&[row], &[9]), (1, 0));
        assert_eq!(errors(&[row], &[8]), (1, 1));
        assert_eq!(errors(&[row, row, row, row], &[1, 9, 8, 0]), (3, 2));
    }

    #[test]
    fn ties_go_to_the_lower_class_index() {
        let flat: &[f32] = &[1.0; 10];
        // All equal: class c has rank c.
        assert_eq!(errors(&[flat], &[0]), (0, 0));
        assert_eq!(errors(&[flat], &[4]), (1, 0));
        assert_eq!(errors(&[flat], &[5]), (1, 1));
        // A tie for first place between classes 2 and 6.
        let tie: &[f32] = &[0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0];
        assert_eq!(errors(&[tie, tie], &[2, 6]), (1, 0));
    }

    #[test]
    fn nan_true_logit_is_wrong_and_few_classes_never_miss_top5() {
        let nan: &[f32] = &[f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(errors(&[nan], &[0]), (1, 1));
        let three: &[f32] = &[3.0, 2.0, 1.0];
        assert_eq!(errors(&[three], &[2]), (1, 0));
    }

    #[test]
    fn mismatched_shapes_and_labels_are_errors() {
        let logits = Tensor::zeros((2, 10), DType::F32, &Device::Cpu).unwrap();
        let three = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let err = batch_errors(&logits, &three).unwrap_err().to_string();
        assert!(err.contains("[2, 10]") && err.contains("[3]"), "{err}");
        let bad = Tensor::new(&[0u32, 10], &Device::Cpu).unwrap();
        let err = batch_errors(&logits, &bad).unwrap_err().to_string();
        assert!(err.contains("label 10 at index 1"), "{err}");
    }

    #[test]
    fn cross_entropy_matches_the_formula() {
        let row = [1.0f32, 2.0, 3.0];
        let expected = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 2.0;
        assert!((cross_entropy(&row, 1) - expected).abs() < 1e-12);
        // Large logits do not overflow.
        assert!((cross_entropy(&[1000.0, 0.0], 0)).abs() < 1e-12);
    }
}
