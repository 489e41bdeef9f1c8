//! The folded inference net against the eval-mode forward pass it replaces,
//! on nets with random weights and random batch-norm statistics and affine
//! parameters (folding the defaults, mean 0, variance 1, weight 1, bias 0,
//! would hide a wrong formula).

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_models::{ArchSpec, BlockKind, InferenceNet, ResNet, Shortcut, StridePlacement};

/// `spec`'s net with weights from `seed` and every batch norm's running
/// mean, running variance, weight and bias drawn at random. The last batch
/// norm of each block gets smaller weights, as trained nets have them, so
/// that the residual sums of ResNet-50 keep its logits of order 1 to 10.
fn randomised(spec: &ArchSpec, seed: u64) -> ResNet {
    let model = ResNet::new(spec, seed, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vars = model.named_vars();
    let norms: Vec<&str> = vars
        .iter()
        .filter_map(|v| v.name.strip_suffix(".running_mean"))
        .collect();
    let last = match spec.block {
        BlockKind::Basic => ".bn2",
        BlockKind::Bottleneck => ".bn3",
    };
    for v in &vars {
        let Some((layer, field)) = v.name.rsplit_once('.') else {
            continue;
        };
        let range = match field {
            _ if !norms.contains(&layer) => continue,
            "running_mean" | "bias" => -0.3..0.3,
            "running_var" => 0.5..2.0,
            "weight" if layer.ends_with(last) => 0.3..0.8,
            "weight" => 0.5..1.5,
            other => panic!("unexpected batch-norm tensor {other}"),
        };
        let values: Vec<f32> = (0..v.var.elem_count())
            .map(|_| rng.random_range(range.clone()))
            .collect();
        v.var
            .set(&Tensor::from_vec(values, v.var.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    model
}

fn images(n: usize, side: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..n * 3 * side * side)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    Tensor::from_vec(data, (n, 3, side, side), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn fold(model: &ResNet) -> InferenceNet {
    model.fold_for_inference().unwrap()
}

/// The nets of the comparisons, with their input sides: the CIFAR ResNet
/// (option A), with projections (B, C) and plain, the ImageNet basic-block
/// nets, and ResNet-50 with the stride on the 3x3 (v1.5) and on the first
/// 1x1 (v1, a strided 1x1 conv).
fn nets() -> Vec<(ArchSpec, usize)> {
    let id = |id: &str| ArchSpec::from_id(id).unwrap();
    vec![
        (id("resnet20"), 32),
        (id("resnet20").with_shortcut(Shortcut::B), 32),
        (id("resnet20").with_shortcut(Shortcut::C), 32),
        (id("plain20"), 32),
        (id("resnet18"), 64),
        (id("plain18"), 64),
        (
            id("resnet50").with_stride_placement(StridePlacement::V1_5),
            64,
        ),
        (
            id("resnet50").with_stride_placement(StridePlacement::V1),
            64,
        ),
    ]
}

/// Folding changes the rounding alone: `conv(x, w * s) + b` instead of
/// `conv(x, w) * s + b'`, the fc head as a 1x1 conv. Each op rounds at
/// f32's 6e-8 relative to the values involved; through 20 to 50 layers and
/// sums of up to 4608 products the differences stay around 1e-6 of the
/// logits' scale (measured: at most 2.3e-6 here, on logits whose largest
/// magnitude is 0.2 for plain-20 to 2.9 for ResNet-50). 1e-4 absolute on
/// logits of order 0.1 to 10 leaves a margin of 40x or more, while a wrong
/// fold (a missing shift or shortcut, a scale applied to the wrong axis)
/// moves them by 1e-2 or more. The eps is checked where it matters, on
/// variances near it, in `layers.rs`.
#[test]
fn folded_logits_match_the_eval_forward_pass() {
    for (i, (spec, side)) in nets().into_iter().enumerate() {
        let model = randomised(&spec, 10 + i as u64);
        let x = images(2, side, i as u64);
        let want = values(&model.forward_t(&x, false).unwrap());
        let got = values(&fold(&model).forward(&x).unwrap());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            (0.1..10.0).contains(&scale),
            "{}: logits of magnitude {scale}",
            spec.id
        );
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-4,
            "{} ({:?}, {:?}): error {err} on logits up to {scale}",
            spec.id,
            spec.shortcut,
            spec.stride_placement
        );
    }
}

/// The kernels split work over threads without changing any sum, so the
/// logits are bit-identical with 1, 2 or 3 threads: for ResNet-20 and for
/// ResNet-18 on a batch whose 3x3 convolutions of 64 channels run Winograd
/// (4 images of 16x16 maps, 256 tiles).
#[test]
fn folded_logits_do_not_depend_on_the_thread_count() {
    for (id, n, side) in [("resnet20", 3, 32), ("resnet18", 4, 64)] {
        let net = fold(&randomised(&ArchSpec::from_id(id).unwrap(), 3));
        let x = images(n, side, 4);
        let runs: Vec<Vec<f32>> = [1, 2, 3]
            .into_iter()
            .map(|threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| values(&net.forward(&x).unwrap()))
            })
            .collect();
        assert_eq!(runs[0], runs[1], "{id}: 1 and 2 threads");
        assert_eq!(runs[0], runs[2], "{id}: 1 and 3 threads");
    }
}

/// Each image is convolved on its own, so its logits are the same alone
/// and in a batch, as long as the batch does not make a convolution switch
/// to Winograd (ResNet-18's 64-channel 3x3 convolutions on 16x16 maps
/// switch at 4 images).
#[test]
fn an_image_has_the_same_logits_alone_and_in_a_batch() {
    for (id, n, side) in [("resnet20", 5, 32), ("resnet18", 3, 64)] {
        let net = fold(&randomised(&ArchSpec::from_id(id).unwrap(), 5));
        let x = images(n, side, 6);
        let batch = net.forward(&x).unwrap();
        for i in 0..n {
            let alone = net.forward(&x.narrow(0, i, 1).unwrap()).unwrap();
            assert_eq!(
                values(&alone),
                values(&batch.narrow(0, i, 1).unwrap()),
                "{id}: image {i} of {n}"
            );
        }
    }
}

#[test]
fn the_folded_net_is_a_copy() {
    let spec = ArchSpec::from_id("resnet20").unwrap();
    let model = randomised(&spec, 7);
    let net = fold(&model);
    let x = images(1, 32, 8);
    let before = values(&net.forward(&x).unwrap());
    for v in model.named_vars() {
        v.var.set(&v.var.zeros_like().unwrap()).unwrap();
    }
    assert_eq!(values(&net.forward(&x).unwrap()), before);
    assert_eq!(net.spec(), &spec);
}
