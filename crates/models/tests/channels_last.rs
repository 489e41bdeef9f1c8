//! Channels-last nets (`ResNet::with_channels_last`) against NCHW ones on
//! the CPU, where they run the ops CUDA runs with NHWC buffers: the same
//! logits, gradients and running statistics, and activations that stay
//! channels-last from the stem to the last block.

use std::num::NonZeroUsize;

use candle_core::{Device, Tensor};
use resnet_models::{ArchSpec, Precision, ResNet, TensorKind, Trace};
use resnet_test_support::{max_abs, max_abs_diff, random_tensor as random};

/// A net of `arch` from seed 5, channels-last or not.
fn net(arch: &str, channels_last: bool) -> ResNet {
    ResNet::new(&ArchSpec::from_id(arch).unwrap(), 5, &Device::Cpu)
        .unwrap()
        .with_channels_last(channels_last)
}

/// Train-mode logits of `x`, the gradients of `sum(logits * r)` for every
/// parameter, and the running statistics after the step, in network order.
fn step(model: &ResNet, x: &Tensor) -> Vec<(String, Tensor)> {
    let logits = model.forward_t(x, true).unwrap();
    let r = random(logits.dims(), 77);
    let grads = (&logits * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut out = vec![("logits".to_string(), logits)];
    for v in model.named_vars() {
        let value = match v.kind {
            TensorKind::Parameter => grads.get(&v.var).expect("a gradient").clone(),
            TensorKind::RunningStat => v.var.as_tensor().clone(),
        };
        out.push((v.name, value));
    }
    out
}

/// Asserts that every tensor of `got` is within `tolerance` of the largest
/// value of its counterpart in `want`.
fn assert_close(got: &[(String, Tensor)], want: &[(String, Tensor)], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    for ((name, a), (_, b)) in got.iter().zip(want) {
        let scale = max_abs(b);
        let err = max_abs_diff(a, b);
        assert!(
            err <= tolerance * scale.max(1e-6),
            "{what}: {name} differs by {err} (largest value {scale})"
        );
    }
}

#[test]
fn channels_last_nets_match_nchw_nets() {
    // The channels-last batch norms keep f32 statistics (cuDNN's form), the
    // NCHW ones f64: gradients differ in their last bits.
    for (arch, size) in [("resnet20", 16), ("resnet18", 32), ("resnet50", 32)] {
        let x = random(&[4, 3, size, size], 3);
        let nchw = step(&net(arch, false), &x);
        let cl = step(&net(arch, true), &x);
        assert_close(&cl, &nchw, 1e-4, arch);
    }
}

#[test]
fn activations_stay_channels_last_through_the_net() {
    for arch in ["resnet20", "resnet18", "resnet50"] {
        let model = net(arch, true);
        let mut trace = Trace::default();
        model
            .forward_traced(&random(&[2, 3, 64, 64], 4), true, &mut trace)
            .unwrap();
        assert!(!trace.responses.is_empty());
        for (name, y) in &trace.responses {
            let pixels = y.dim(2).unwrap() * y.dim(3).unwrap();
            assert!(
                pixels == 1 || resnet_ops::is_channels_last(y),
                "{arch}: {name} {:?} is not channels-last",
                y.dims()
            );
        }
    }
}

#[test]
fn bf16_and_bn_groups_work_channels_last() {
    let x = random(&[8, 3, 16, 16], 6);
    let bf16 = |cl| net("resnet20", cl).with_precision(Precision::Bf16);
    // bf16 roundings of values a last bit apart can differ by 2^-8.
    assert_close(
        &step(&bf16(true), &x),
        &step(&bf16(false), &x),
        5e-2,
        "bf16",
    );
    let grouped = |cl| net("resnet20", cl).with_bn_group(NonZeroUsize::new(4));
    assert_close(
        &step(&grouped(true), &x),
        &step(&grouped(false), &x),
        1e-4,
        "groups",
    );
}
