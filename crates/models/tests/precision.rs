//! Mixed precision (bf16 convolutions and fc) on a whole network: the same
//! f32 parameters and gradients, values within bf16's rounding of fp32's.

use candle_core::{DType, Device, Tensor};
use resnet_models::{ArchSpec, Precision, ResNet};

/// Logits and every parameter's gradient of one training pass, with their dtypes.
fn outputs_and_grads(model: &ResNet, x: &Tensor, labels: &Tensor) -> Vec<(DType, Vec<f32>)> {
    let logits = model.forward_t(x, true).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, labels).unwrap();
    let grads = loss.backward().unwrap();
    let values = |t: &Tensor| {
        (
            t.dtype(),
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        )
    };
    let mut out = vec![values(&logits)];
    for (name, var) in model.parameters() {
        let grad = grads
            .get(&var)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        out.push(values(grad));
    }
    out
}

fn input() -> Tensor {
    resnet_test_support::random_tensor(&[8, 3, 32, 32], 11)
}

#[test]
fn bf16_keeps_f32_parameters_and_gradients_within_bf16_rounding_of_fp32() {
    let (x, labels) = (
        input(),
        Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7], &Device::Cpu).unwrap(),
    );
    for id in ["resnet20", "resnet18"] {
        let spec = ArchSpec::from_id(id).unwrap();
        let fp32 = ResNet::new(&spec, 0, &Device::Cpu).unwrap();
        let bf16 = ResNet::new(&spec, 0, &Device::Cpu)
            .unwrap()
            .with_precision(Precision::Bf16);
        assert_eq!(bf16.precision(), Precision::Bf16);
        for (name, var) in bf16.parameters() {
            assert_eq!(var.dtype(), DType::F32, "{id}: {name}");
        }
        let (want, got) = (
            outputs_and_grads(&fp32, &x, &labels),
            outputs_and_grads(&bf16, &x, &labels),
        );
        // bf16 keeps 8 significant bits. The logits stay within a few percent
        // of fp32's; a gradient, a sum of many terms that batch norm makes
        // cancel, keeps its direction (cosine) but not every value. PyTorch's
        // bf16 autocast on the CPU, against its fp32, on this resnet18 pass:
        // logits within 4.8% of their largest value, gradient cosines 0.87 to
        // 1.0 (ours: 6.7%, 0.86 to 1.0).
        let mut differ = 0;
        for (i, ((got_dtype, a), (_, b))) in got.iter().zip(&want).enumerate() {
            assert_eq!(*got_dtype, DType::F32, "{id}: tensor #{i}");
            let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let err = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            let dot: f64 = a.iter().zip(b).map(|(p, q)| (p * q) as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|p| (p * p) as f64).sum::<f64>().sqrt();
            let cosine = dot / norm(a) / norm(b);
            assert!(
                cosine >= 0.75,
                "{id}: tensor #{i}: cosine {cosine} with fp32"
            );
            if i == 0 {
                assert!(
                    err <= 0.1 * scale,
                    "{id}: logits: error {err} vs scale {scale}"
                );
            }
            differ += usize::from(err > 1e-5 * scale);
        }
        assert!(
            differ == got.len(),
            "{id}: only {differ} of {} tensors changed",
            got.len()
        );
    }
}

/// A bf16 net folded for inference runs in bf16 throughout and returns f32
/// logits within bf16's rounding of the fp32 net's, on every block kind and
/// shortcut (option A's padding, projections, the max pool).
#[test]
fn a_folded_bf16_net_gives_the_fp32_logits_within_bf16_rounding() {
    let x = input();
    for id in ["resnet20", "resnet18", "resnet50"] {
        let spec = ArchSpec::from_id(id).unwrap();
        let fp32 = ResNet::new(&spec, 0, &Device::Cpu).unwrap();
        let bf16 = ResNet::new(&spec, 0, &Device::Cpu)
            .unwrap()
            .with_precision(Precision::Bf16);
        let want = fp32.fold_for_inference().unwrap().forward(&x).unwrap();
        let got = bf16.fold_for_inference().unwrap().forward(&x).unwrap();
        assert_eq!(got.dtype(), DType::F32, "{id}");
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (a, b) = (values(&got), values(&want));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        eprintln!("{id}: error {err} vs scale {scale}");
        assert!(
            err > 0.0 && err <= 0.1 * scale,
            "{id}: error {err} vs scale {scale}"
        );
    }
}
