//! Per-group batch norm (`ResNet::with_bn_group`): a batch split into groups
//! behaves exactly as if each group went through batch norm on its own, as on
//! the paper's GPUs.

use std::num::NonZeroUsize;

use candle_core::{Device, Tensor};
use resnet_models::{ArchSpec, ResNet, TensorKind};
use resnet_test_support::{max_abs_diff, random_tensor as random};

fn model(group: Option<usize>) -> ResNet {
    ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), 3, &Device::Cpu)
        .unwrap()
        .with_bn_group(group.and_then(NonZeroUsize::new))
}

/// Train-mode logits of `x`, and the gradient of `sum(logits * weights)`
/// for every parameter, in parameter order.
fn logits_and_grads(model: &ResNet, x: &Tensor, weights: &Tensor) -> (Tensor, Vec<Tensor>) {
    let logits = model.forward_t(x, true).unwrap();
    let loss = (&logits * weights).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grads = model
        .parameters()
        .iter()
        .map(|(name, var)| {
            grads
                .get(var)
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .clone()
        })
        .collect();
    (logits, grads)
}

fn running_stats(model: &ResNet) -> Vec<(String, Tensor)> {
    model
        .named_vars()
        .into_iter()
        .filter(|v| v.kind == TensorKind::RunningStat)
        .map(|v| (v.name, v.var.as_tensor().clone()))
        .collect()
}

/// Runs a batch of `sizes.sum()` images through a net grouped by
/// `sizes[0]`, and each group through a fresh net of its own; checks that
/// logits, gradients and running statistics agree.
fn check_groups(sizes: &[usize]) {
    let images: usize = sizes.iter().sum();
    let x = random(&[images, 3, 16, 16], 11);
    let weights = random(&[images, 10], 12);
    let grouped = model(Some(sizes[0]));
    let (logits, grads) = logits_and_grads(&grouped, &x, &weights);

    let mut start = 0;
    let mut separate_logits = Vec::new();
    let mut separate_grads: Vec<Tensor> = Vec::new();
    let mut separate_stats: Vec<Vec<(String, Tensor)>> = Vec::new();
    for &size in sizes {
        let alone = model(None);
        let (l, g) = logits_and_grads(
            &alone,
            &x.narrow(0, start, size).unwrap(),
            &weights.narrow(0, start, size).unwrap(),
        );
        separate_logits.push(l);
        separate_grads = if separate_grads.is_empty() {
            g
        } else {
            separate_grads
                .iter()
                .zip(&g)
                .map(|(a, b)| (a + b).unwrap())
                .collect()
        };
        separate_stats.push(running_stats(&alone));
        start += size;
    }

    let separate = Tensor::cat(&separate_logits, 0).unwrap();
    let diff = max_abs_diff(&logits, &separate);
    assert!(diff < 1e-4, "{sizes:?}: logits differ by {diff}");
    for (((name, _), g), s) in grouped.parameters().iter().zip(&grads).zip(&separate_grads) {
        let diff = max_abs_diff(g, s);
        let scale = s.abs().unwrap().max_keepdim(0).unwrap().max_all().unwrap();
        let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
        assert!(
            diff < 1e-3 * scale,
            "{sizes:?}: gradient of {name} differs by {diff}"
        );
    }
    // The running statistics move towards the mean of the groups'.
    for (k, (name, ours)) in running_stats(&grouped).iter().enumerate() {
        let parts: Vec<Tensor> = separate_stats.iter().map(|s| s[k].1.clone()).collect();
        let mean = Tensor::stack(&parts, 0).unwrap().mean(0).unwrap();
        let diff = max_abs_diff(ours, &mean);
        assert!(diff < 1e-5, "{sizes:?}: {name} differs by {diff}");
    }
}

#[test]
fn grouped_batch_norm_equals_separate_passes_of_each_group() {
    check_groups(&[4, 4]);
}

#[test]
fn a_last_smaller_group_is_normalised_on_its_own() {
    check_groups(&[4, 4, 2]);
}

#[test]
fn grouping_changes_train_mode_but_not_eval_mode() {
    let x = random(&[8, 3, 16, 16], 5);
    let (whole, grouped) = (model(None), model(Some(4)));
    let a = whole.forward_t(&x, true).unwrap();
    let b = grouped.forward_t(&x, true).unwrap();
    assert!(
        max_abs_diff(&a, &b) > 1e-3,
        "groups of 4 should normalise differently from the batch of 8"
    );
    let (whole, grouped) = (model(None), model(Some(4)));
    let a = whole.forward_t(&x, false).unwrap();
    let b = grouped.forward_t(&x, false).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}
