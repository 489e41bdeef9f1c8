//! `evaluate` on real CIFAR-10 images from the bundled sample.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use resnet_data::{Cifar10, Normalization, Split, IMAGE_BYTES, NUM_CLASSES};
use resnet_eval::{evaluate, EvalError};
use resnet_models::{ArchSpec, ResNet};

/// The first `n` images of the sample's test split.
fn test_images(n: usize) -> Split {
    let dir = resnet_test_support::cifar_sample();
    let test = Cifar10::load(&dir).unwrap().test;
    Split::new(
        test.images()[..n * IMAGE_BYTES].to_vec(),
        test.labels()[..n].to_vec(),
    )
    .unwrap()
}

fn resnet20(seed: u64) -> ResNet {
    ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), seed, &Device::Cpu).unwrap()
}

fn norm() -> Normalization {
    Normalization::PerChannel {
        mean: [0.49, 0.48, 0.45],
        std: [0.25, 0.24, 0.26],
    }
}

#[test]
fn fresh_model_gives_errors_in_range_over_every_image() {
    let split = Arc::new(test_images(40));
    // Batches of 16 leave a short last batch of 8.
    let report = evaluate(&resnet20(0), split, &norm(), 16, 2, &Device::Cpu).unwrap();
    assert_eq!(report.images, 40);
    for e in [report.top1_error, report.top5_error] {
        assert!((0.0..=1.0).contains(&e), "{report:?}");
    }
    assert!(report.top5_error <= report.top1_error, "{report:?}");
    assert!(report.loss.is_finite() && report.loss > 0.0, "{report:?}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["images"], 40);
}

#[test]
fn a_model_that_always_says_class_k_scores_exactly_what_the_labels_say() {
    // fc weight 0 makes the logits equal the fc bias for every image: class
    // K at 20, the rest 0. Top-5 is then K and (ties go to the lower index)
    // the four lowest other classes.
    const K: usize = 3;
    let split = test_images(64);
    let labels: Vec<usize> = split.labels().iter().map(|&l| usize::from(l)).collect();
    let mut tensors = resnet20(5).state_tensors();
    let fc = &tensors["fc.weight"];
    tensors.insert("fc.weight".into(), fc.zeros_like().unwrap());
    let mut bias = vec![0f32; NUM_CLASSES];
    bias[K] = 20.0;
    tensors.insert(
        "fc.bias".into(),
        Tensor::new(bias.as_slice(), &Device::Cpu).unwrap(),
    );
    let model = resnet20(6);
    model.load_tensors(&tensors, "test").unwrap();

    let report = evaluate(&model, Arc::new(split), &norm(), 25, 1, &Device::Cpu).unwrap();
    let n = labels.len() as f64;
    let top5: Vec<usize> = std::iter::once(K)
        .chain((0..NUM_CLASSES).filter(|&c| c != K).take(4))
        .collect();
    let top1_error = labels.iter().filter(|&&l| l != K).count() as f64 / n;
    let top5_error = labels.iter().filter(|l| !top5.contains(l)).count() as f64 / n;
    assert!(top1_error > 0.0 && top1_error < 1.0, "{labels:?}");
    assert_eq!(report.top1_error, top1_error);
    assert_eq!(report.top5_error, top5_error);
    // Cross-entropy of softmax(bias): lse - 20 for class K, lse for the others.
    let lse = (20f64.exp() + (NUM_CLASSES - 1) as f64).ln();
    let hits = labels.iter().filter(|&&l| l == K).count() as f64;
    let loss = (hits * (lse - 20.0) + (n - hits) * lse) / n;
    assert!(
        (report.loss - loss).abs() < 1e-6,
        "{} vs {loss}",
        report.loss
    );
}

#[test]
fn an_empty_split_is_an_error() {
    let err = evaluate(
        &resnet20(0),
        Arc::new(Split::default()),
        &norm(),
        8,
        1,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::EmptySplit), "{err}");
}
