//! The project's kernels and candle's own ops give the same model outputs and
//! gradients. (Its own test binary: the kernel switch is process-wide.)

use candle_core::{Device, Tensor};
use resnet_models::{ArchSpec, ResNet};

fn outputs_and_grads(model: &ResNet, x: &Tensor, labels: &Tensor) -> Vec<Vec<f32>> {
    let logits = model.forward_t(x, true).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, labels).unwrap();
    let grads = loss.backward().unwrap();
    let mut out = vec![logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
    for (_, var) in model.parameters() {
        out.push(
            grads
                .get(&var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
    out
}

/// A fixed input, so the comparison is the same on every run.
fn input() -> Tensor {
    resnet_test_support::random_tensor(&[4, 3, 64, 64], 7)
}

#[test]
fn fast_kernels_match_candle_ops_on_a_whole_network() {
    let x = input();
    let labels = Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu).unwrap();
    let spec = ArchSpec::from_id("resnet18").unwrap();
    assert!(resnet_ops::fast_kernels());
    let fast = outputs_and_grads(&ResNet::new(&spec, 0, &Device::Cpu).unwrap(), &x, &labels);
    resnet_ops::set_fast_kernels(false);
    let reference = outputs_and_grads(&ResNet::new(&spec, 0, &Device::Cpu).unwrap(), &x, &labels);
    resnet_ops::set_fast_kernels(true);
    for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            err <= 1e-3 * scale,
            "tensor #{i}: error {err} vs scale {scale}"
        );
    }
}
