//! The ops on an NVIDIA GPU against the same ops on the CPU, values and
//! gradients: the convolution (cuDNN's forward, backward-data and
//! backward-filter with the `cudnn` feature, candle's CUDA convolution
//! without it; f32 and bf16; NCHW and channels-last), batch norm, ReLU, pooling and the SGD update. Needs a GPU:
//! built by
//! `scripts/build-cuda.sh`, run by `scripts/gpu-check.sh`.
#![cfg(feature = "cuda")]

use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_ops::{
    add_relu, batch_norm_eval, batch_norm_train, conv2d, cross_entropy, global_avg_pool,
    is_channels_last, max_pool_3x3_s2, pad_subsample, relu, set_all, to_channels_last,
    update_running_stats, DeviceSpec, GroupedBatchNorm, HostStaging, RunningUpdate, SgdParam,
    SgdStep,
};
use resnet_test_support::{random_tensor as random, CONV_CASES};

/// cuDNN may run f32 convolutions on TF32 tensor cores (10-bit mantissa),
/// as PyTorch does by default: a relative error of about 1e-3.
const CONV_TOLERANCE: f32 = 5e-3;
/// Element-wise ops and reductions in f32, summed in another order.
const TOLERANCE: f32 = 1e-4;

/// The first GPU, opened once for all the tests.
fn gpu() -> Device {
    static GPU: OnceLock<Device> = OnceLock::new();
    GPU.get_or_init(|| {
        DeviceSpec::Cuda(0)
            .open()
            .expect("these tests need an NVIDIA GPU")
    })
    .clone()
}

/// Runs `f` on `inputs` moved to `device` and returns, on the CPU, its output
/// `y` followed by the gradient of `sum(y * r)` with respect to each input,
/// where `r` is random from `seed`.
fn value_and_grads(
    f: impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    seed: u64,
    device: &Device,
) -> Vec<Tensor> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(device).unwrap()).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&tensors);
    let r = random(y.dims(), seed).to_device(device).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![y.to_device(&Device::Cpu).unwrap()];
    for v in &vars {
        let g = grads.get(v).expect("a gradient for every input");
        out.push(g.to_device(&Device::Cpu).unwrap());
    }
    out
}

/// Asserts the largest difference is within `tolerance` of the largest
/// reference magnitude (or of 1e-6 where all are smaller).
fn assert_close(got: &Tensor, want: &Tensor, tolerance: f32, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (got, want) = (flat(got), flat(want));
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= tolerance * scale,
        "{what}: error {err}, scale {scale}"
    );
}

/// Compares `f` on the GPU with `f` on the CPU, output and every gradient.
fn check(
    f: impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    seed: u64,
    tolerance: f32,
    what: &str,
) {
    let gpu = value_and_grads(&f, inputs, seed, &gpu());
    let cpu = value_and_grads(&f, inputs, seed, &Device::Cpu);
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        let part = if i == 0 {
            "output".to_string()
        } else {
            format!("gradient {i}")
        };
        assert_close(g, c, tolerance, &format!("{what}: {part}"));
    }
}

/// Checks `conv2d` of an `[n, c, h, w]` input and an `[o, c, k, k]` weight.
fn check_conv([n, c, h, w, o, k, s, p]: [usize; 8], seed: u64) {
    let x = random(&[n, c, h, w], seed);
    let wt = random(&[o, c, k, k], seed + 1);
    let what = format!(
        "conv x {:?} w {:?} /{s} pad {p}",
        [n, c, h, w],
        [o, c, k, k]
    );
    check(
        |t| conv2d(&t[0], &t[1], s, p).unwrap(),
        &[x, wt],
        seed + 2,
        CONV_TOLERANCE,
        &what,
    );
}

#[test]
fn conv_matches_the_cpu_on_resnet_shapes() {
    for (i, case) in CONV_CASES.into_iter().enumerate() {
        check_conv(case, 10 * i as u64);
    }
}

#[test]
fn conv_matches_the_cpu_on_random_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(2015);
    for i in 0..40 {
        let k: usize = [1, 3, 3, 5, 7][rng.random_range(0..5)];
        let p = rng.random_range(0..=k / 2);
        let (h, w) = (
            rng.random_range(k.saturating_sub(2 * p).max(1)..=20),
            rng.random_range(k.saturating_sub(2 * p).max(1)..=20),
        );
        let case = [
            rng.random_range(1..=4),
            rng.random_range(1..=20),
            h,
            w,
            rng.random_range(1..=20),
            k,
            rng.random_range(1..=2),
            p,
        ];
        check_conv(case, 1000 + 10 * i);
    }
}

/// bf16 operands (mixed precision): cuDNN on tensor cores against the CPU's
/// f32 convolution of the same bf16 values, both rounding their outputs and
/// gradients to bf16, so that they differ by a bf16 rounding (2^-8) where
/// their f32 sums round to neighbouring bf16 values.
#[test]
fn bf16_conv_matches_the_cpu_on_resnet_shapes() {
    let bf16 = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    for (i, [n, c, h, w, o, k, s, p]) in CONV_CASES.into_iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let (x, wt) = (random(&[n, c, h, w], seed), random(&[o, c, k, k], seed + 1));
        check(
            |t| {
                let y = conv2d(&bf16(&t[0]), &bf16(&t[1]), s, p).unwrap();
                y.to_dtype(DType::F32).unwrap()
            },
            &[x, wt],
            seed + 2,
            2e-2,
            &format!(
                "bf16 conv x {:?} w {:?} /{s} pad {p}",
                [n, c, h, w],
                [o, c, k, k]
            ),
        );
    }
}

#[test]
fn conv_of_a_non_contiguous_input_matches_the_cpu() {
    // Transposed inside the op, so that conv2d sees a strided view (the
    // inputs themselves become contiguous variables).
    let x = random(&[2, 4, 9, 7], 1);
    let w = random(&[5, 4, 3, 3], 2);
    check(
        |t| conv2d(&t[0].transpose(2, 3).unwrap(), &t[1], 2, 1).unwrap(),
        &[x, w],
        3,
        CONV_TOLERANCE,
        "conv of a transposed input",
    );
}

/// Channels-last inputs on both devices: cuDNN's NHWC convolutions (f32
/// and bf16) and batch norm on the GPU, the same ops on transposed values on
/// the CPU; outputs stay channels-last on the GPU.
#[test]
fn channels_last_ops_match_the_cpu() {
    let cl = |t: &Tensor| to_channels_last(t).unwrap();
    let bf16 = |t: &Tensor| resnet_ops::to_dtype(&cl(t), DType::BF16).unwrap();
    for (i, [n, c, h, w, o, k, s, p]) in CONV_CASES.into_iter().enumerate() {
        let seed = 900 + 10 * i as u64;
        let (x, wt) = (random(&[n, c, h, w], seed), random(&[o, c, k, k], seed + 1));
        let what = format!(
            "channels-last conv x {:?} w {:?} /{s} pad {p}",
            [n, c, h, w],
            [o, c, k, k]
        );
        let f32_conv = |t: &[Tensor]| {
            let y = conv2d(&cl(&t[0]), &t[1], s, p).unwrap();
            assert!(
                y.dim(1).unwrap() == 1
                    || y.dims()[2..].iter().product::<usize>() == 1
                    || is_channels_last(&y)
            );
            y
        };
        check(
            f32_conv,
            &[x.clone(), wt.clone()],
            seed + 2,
            CONV_TOLERANCE,
            &what,
        );
        let bf16_conv = |t: &[Tensor]| {
            let y = conv2d(&bf16(&t[0]), &bf16(&t[1]), s, p).unwrap();
            y.to_dtype(DType::F32).unwrap()
        };
        check(bf16_conv, &[x, wt], seed + 3, 2e-2, &format!("bf16 {what}"));
    }
    for (i, shape) in [[4, 3, 5, 7], [2, 16, 8, 8], [8, 64, 4, 4]]
        .iter()
        .enumerate()
    {
        let c = shape[1];
        let seed = 1200 + 10 * i as u64;
        let inputs = [
            random(shape, seed),
            random(&[c], seed + 1),
            random(&[c], seed + 2),
            random(shape, seed + 3),
        ];
        let train = |t: &[Tensor]| {
            let out =
                resnet_ops::batch_norm_add_relu_train(&cl(&t[0]), &t[1], &t[2], &cl(&t[3]), 1e-5)
                    .unwrap();
            assert!(is_channels_last(&out.y), "channels-last batch norm output");
            out.y
        };
        check(
            train,
            &inputs,
            seed + 4,
            TOLERANCE,
            &format!("channels-last batch norm {shape:?}"),
        );
    }
}

#[test]
fn grouped_batch_norm_matches_the_cpu() {
    // Groups of 4 of 10 images (the last one of 2), NCHW and channels-last:
    // one cuDNN call per group, each on its part of the batch, the weight
    // and bias gradients summed over the groups by cuDNN itself.
    let bn = GroupedBatchNorm {
        group: NonZeroUsize::new(4).unwrap(),
        eps: 1e-5,
    };
    for channels_last in [false, true] {
        let (shape, c) = ([10, 16, 5, 5], 16);
        let seed = 1200 + u64::from(channels_last);
        let inputs = [
            random(&shape, seed),
            random(&[c], seed + 1),
            random(&[c], seed + 2),
        ];
        let layout = |x: &Tensor| match channels_last {
            true => to_channels_last(x).unwrap(),
            false => x.clone(),
        };
        let what = format!("grouped batch norm, channels-last {channels_last}");
        let train = |t: &[Tensor]| bn.train(&layout(&t[0]), &t[1], &t[2]).unwrap().y;
        check(train, &inputs, seed + 3, TOLERANCE, &what);
        let relu = |t: &[Tensor]| bn.train_relu(&layout(&t[0]), &t[1], &t[2]).unwrap().y;
        check(relu, &inputs, seed + 4, TOLERANCE, &format!("{what}, ReLU"));
        let stats = |d: &Device| {
            let moved: Vec<Tensor> = inputs.iter().map(|t| t.to_device(d).unwrap()).collect();
            let out = bn.train(&layout(&moved[0]), &moved[1], &moved[2]).unwrap();
            assert_eq!(out.mean.dims(), [3, c], "{what}");
            Tensor::cat(&[out.mean, out.var], 0)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap()
        };
        assert_close(&stats(&gpu()), &stats(&Device::Cpu), TOLERANCE, &what);
    }
}

#[test]
fn batch_norm_matches_the_cpu() {
    for (i, shape) in [[4, 3, 5, 7], [1, 16, 8, 8], [8, 64, 4, 4]]
        .iter()
        .enumerate()
    {
        let c = shape[1];
        let seed = 100 * i as u64;
        let inputs = [
            random(shape, seed),
            random(&[c], seed + 1),
            random(&[c], seed + 2),
        ];
        let train = |t: &[Tensor]| batch_norm_train(&t[0], &t[1], &t[2], 1e-5).unwrap().y;
        check(
            train,
            &inputs,
            seed + 3,
            TOLERANCE,
            &format!("batch norm train {shape:?}"),
        );
        let stats = |t: &[Tensor]| {
            let out = batch_norm_train(&t[0], &t[1], &t[2], 1e-5).unwrap();
            Tensor::cat(&[out.mean, out.var], 0).unwrap()
        };
        let on = |d: &Device| {
            let moved: Vec<Tensor> = inputs.iter().map(|t| t.to_device(d).unwrap()).collect();
            stats(&moved).to_device(&Device::Cpu).unwrap()
        };
        assert_close(
            &on(&gpu()),
            &on(&Device::Cpu),
            TOLERANCE,
            "batch statistics",
        );
        let running = [
            random(&[c], seed + 4),
            random(&[c], seed + 5).abs().unwrap(),
        ];
        let eval = |t: &[Tensor]| {
            let dev = t[0].device();
            let (mean, var) = (
                running[0].to_device(dev).unwrap(),
                running[1].to_device(dev).unwrap(),
            );
            batch_norm_eval(&t[0], &t[1], &t[2], &mean, &var, 1e-5).unwrap()
        };
        check(
            eval,
            &inputs,
            seed + 6,
            TOLERANCE,
            &format!("batch norm eval {shape:?}"),
        );
    }
}

/// An op of one tensor.
type UnaryOp = fn(&Tensor) -> Tensor;

#[test]
fn activations_and_pooling_match_the_cpu() {
    let x = random(&[2, 3, 11, 10], 7);
    let y = random(&[2, 3, 11, 10], 8);
    check(
        |t| add_relu(&t[0], &t[1]).unwrap(),
        &[x.clone(), y],
        10,
        TOLERANCE,
        "add_relu",
    );
    let unary: [(&str, UnaryOp); 5] = [
        ("relu", |t| relu(t).unwrap()),
        ("max pool", |t| max_pool_3x3_s2(t).unwrap()),
        ("option-A shortcut /2", |t| {
            pad_subsample(t, 2, 1, 2).unwrap()
        }),
        ("option-A shortcut /1", |t| {
            pad_subsample(t, 1, 2, 0).unwrap()
        }),
        ("average pool", |t| global_avg_pool(t).unwrap()),
    ];
    for (i, (what, op)) in unary.into_iter().enumerate() {
        check(
            |t| op(&t[0]),
            std::slice::from_ref(&x),
            11 + i as u64,
            TOLERANCE,
            what,
        );
    }
    // Values in steps of 1/2: many windows tie, and both devices must give
    // the gradient to the same (first) maximum.
    let tied = x
        .affine(2.0, 0.0)
        .unwrap()
        .round()
        .unwrap()
        .affine(0.5, 0.0)
        .unwrap();
    check(
        |t| max_pool_3x3_s2(&t[0]).unwrap(),
        &[tied],
        20,
        TOLERANCE,
        "max pool with tied maxima",
    );
}

#[test]
fn sgd_update_matches_the_cpu() {
    // The kernels round as the CPU does (no fused multiply-adds): the
    // values should be equal, the tolerance only allows for a surprise.
    const SGD_TOLERANCE: f32 = 1e-6;
    let step = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-4,
    };
    // One launch over tensors of less than a block of threads and of
    // several chunks with a tail, and an empty one.
    let shapes: [&[usize]; 4] = [&[7], &[64, 16, 3, 3], &[0, 3], &[3, 70_001]];
    let run = |device: &Device| {
        let on = |t: Tensor| Var::from_tensor(&t.to_device(device).unwrap()).unwrap();
        let state: Vec<_> = (0..)
            .zip(shapes)
            .map(|(i, shape)| {
                let seed = 200 + 10 * i;
                let grads: Vec<_> = (2..5)
                    .map(|k| random(shape, seed + k).to_device(device).unwrap())
                    .collect();
                (on(random(shape, seed)), on(random(shape, seed + 1)), grads)
            })
            .collect();
        for k in 0..3 {
            let params: Vec<_> = state
                .iter()
                .map(|(weight, velocity, grads)| SgdParam {
                    weight,
                    velocity,
                    grad: &grads[k],
                })
                .collect();
            step.apply_all(&params).unwrap();
        }
        state
            .into_iter()
            .map(|(w, v, _)| [w, v].map(|v| v.as_tensor().to_device(&Device::Cpu).unwrap()))
            .collect::<Vec<_>>()
    };
    let (gpu, cpu) = (run(&gpu()), run(&Device::Cpu));
    for ((gpu, cpu), shape) in gpu.iter().zip(&cpu).zip(shapes) {
        assert_close(
            &gpu[0],
            &cpu[0],
            SGD_TOLERANCE,
            &format!("sgd weights {shape:?}"),
        );
        assert_close(
            &gpu[1],
            &cpu[1],
            SGD_TOLERANCE,
            &format!("sgd momentum {shape:?}"),
        );
    }
}

#[test]
fn staged_batches_arrive_whole() {
    // Batches in turn through the two page-locked buffers, one of another
    // size (a buffer replaced), each read back after the next is queued.
    let dev = gpu();
    let mut staging = HostStaging::default();
    let sizes = [
        [4, 3, 32, 32],
        [4, 3, 32, 32],
        [3, 3, 32, 32],
        [4, 3, 32, 32],
        [4, 3, 32, 32],
    ];
    let mut previous: Option<(Tensor, Vec<f32>)> = None;
    for (k, dims) in sizes.iter().enumerate() {
        let n: usize = dims.iter().product();
        let host: Vec<f32> = (0..n).map(|i| (i + 7 * k) as f32).collect();
        let batch = staging.to_device(&host, dims, &dev).unwrap();
        if let Some((t, want)) = previous.replace((batch, host)) {
            let got = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, want, "batch {}", k - 1);
        }
    }
    let (t, want) = previous.unwrap();
    assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
}

#[test]
fn a_staging_buffer_is_refilled_only_once_its_copy_has_left_it() {
    // Work queued ahead keeps the copies waiting on the stream while the
    // third batch is written into the first one's buffer: written before the
    // first copy has run, the first batch would arrive with the third's
    // values.
    let dev = gpu();
    let a = Tensor::ones((4096, 4096), DType::F32, &dev).unwrap();
    let mut busy = a.clone();
    for _ in 0..8 {
        busy = busy.matmul(&a).unwrap().affine(1.0 / 4096.0, 0.0).unwrap();
    }
    let dims = [8, 3, 224, 224];
    let n: usize = dims.iter().product();
    let mut staging = HostStaging::default();
    let batches: Vec<Tensor> = (0..3)
        .map(|k| staging.to_device(&vec![k as f32; n], &dims, &dev).unwrap())
        .collect();
    for (k, batch) in batches.iter().enumerate() {
        let got = batch.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let wrong = got.iter().filter(|&&v| v != k as f32).count();
        assert_eq!(
            wrong, 0,
            "batch {k}: {wrong} of {n} values from another batch"
        );
    }
    let busy = busy.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(busy, 4096.0 * 4096.0);
}

#[test]
fn set_all_copies_every_value() {
    // One launch over variables of less than a block and of several chunks,
    // their values views of one tensor, as the data-parallel step's are.
    let sizes = [7usize, 70_001, 16];
    let dev = gpu();
    let vars: Vec<Var> = (0..)
        .zip(sizes)
        .map(|(k, n)| Var::from_tensor(&random(&[n], 500 + k).to_device(&dev).unwrap()).unwrap())
        .collect();
    let flat = random(&[sizes.iter().sum()], 510);
    let starts = [0, sizes[0], sizes[0] + sizes[1]];
    let part = |t: &Tensor, k: usize| t.narrow(0, starts[k], sizes[k]).unwrap();
    let parts: Vec<Tensor> = (0..3).map(|k| part(&flat, k)).collect();
    let on_gpu = flat.to_device(&dev).unwrap();
    let gpu_parts: Vec<Tensor> = (0..3).map(|k| part(&on_gpu, k)).collect();
    let pairs: Vec<_> = vars.iter().zip(&gpu_parts).collect();
    set_all(&pairs).unwrap();
    for ((var, want), n) in vars.iter().zip(&parts).zip(sizes) {
        let got = var.as_tensor().to_device(&Device::Cpu).unwrap();
        assert_close(&got, want, 0.0, &format!("set_all, {n} values"));
    }
}

#[test]
fn cross_entropy_matches_the_cpu() {
    // The same order of operations; the GPU's expf and logf may differ from
    // the CPU's in the last bit.
    const LOSS_TOLERANCE: f32 = 1e-5;
    for (i, (n, k)) in [(1, 1), (128, 10), (300, 1000)].into_iter().enumerate() {
        for smoothing in [0.0, 0.1] {
            let logits = (random(&[n, k], 400 + i as u64) * 4.0).unwrap();
            let labels: Vec<u32> = (0..n as u32).map(|r| (r * 7) % k as u32).collect();
            let run = |device: &Device| {
                let z = Var::from_tensor(&logits.to_device(device).unwrap()).unwrap();
                let y = Tensor::new(labels.as_slice(), device).unwrap();
                let loss = cross_entropy(&z, &y, smoothing).unwrap();
                let grads = (&loss * 3.0).unwrap().backward().unwrap();
                let grad = grads.get(&z).unwrap().to_device(&Device::Cpu).unwrap();
                (loss.to_device(&Device::Cpu).unwrap(), grad)
            };
            let (gpu, cpu) = (run(&gpu()), run(&Device::Cpu));
            let what = format!("cross-entropy {n}x{k}, smoothing {smoothing}");
            assert_close(&gpu.0, &cpu.0, LOSS_TOLERANCE, &format!("{what}: loss"));
            assert_close(&gpu.1, &cpu.1, LOSS_TOLERANCE, &format!("{what}: gradient"));
        }
    }
}

#[test]
fn running_statistics_update_matches_the_cpu() {
    // Rounded as on the CPU, as the SGD update. One launch over statistics
    // of less than a block and of several chunks, each with its own scale.
    const RUNNING_TOLERANCE: f32 = 1e-6;
    let channels = [16, 2048, 70_001];
    let scales = [1.0, 128.0 / 127.0, 3.0 / 2.0];
    let run = |device: &Device| {
        let on = |t: Tensor| t.to_device(device).unwrap();
        let state: Vec<_> = (0..)
            .zip(channels)
            .map(|(i, c)| {
                let seed = 300 + 10 * i;
                let batches: Vec<_> = (1..4).map(|k| on(random(&[c], seed + k))).collect();
                (Var::from_tensor(&on(random(&[c], seed))).unwrap(), batches)
            })
            .collect();
        for k in 0..3 {
            let updates: Vec<_> = state
                .iter()
                .zip(scales)
                .map(|((running, batches), scale)| RunningUpdate {
                    running,
                    batch: &batches[k],
                    scale,
                })
                .collect();
            update_running_stats(&updates, 0.1).unwrap();
        }
        state
            .into_iter()
            .map(|(r, _)| r.as_tensor().to_device(&Device::Cpu).unwrap())
            .collect::<Vec<_>>()
    };
    let (gpu, cpu) = (run(&gpu()), run(&Device::Cpu));
    for ((gpu, cpu), c) in gpu.iter().zip(&cpu).zip(channels) {
        let what = format!("running statistic, {c} channels");
        assert_close(gpu, cpu, RUNNING_TOLERANCE, &what);
    }
}

/// Milliseconds per forward + backward pass of `f` on `device`, the inputs
/// already there, after a warm-up pass; at most 20 passes or about a second.
fn time_ms(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], device: &Device) -> f64 {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(device).unwrap()).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let r = random(f(&tensors).dims(), 0).to_device(device).unwrap();
    let pass = || {
        let y = f(&tensors);
        (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    };
    pass();
    device.synchronize().unwrap();
    let (start, mut runs) = (Instant::now(), 0);
    while runs < 20 && start.elapsed().as_secs_f64() < 1.0 {
        pass();
        device.synchronize().unwrap();
        runs += 1;
    }
    start.elapsed().as_secs_f64() * 1e3 / runs as f64
}

/// Not a check: prints the time of a convolution's forward and backward pass
/// through `conv2d` and through candle's own CUDA convolution, on ResNet
/// layer shapes (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn time_conv_against_candles_cuda_conv() {
    let dev = gpu();
    for [n, c, h, w, o, k, s, p] in [
        [128, 16, 32, 32, 16, 3, 1, 1],
        [128, 64, 8, 8, 64, 3, 1, 1],
        [128, 64, 56, 56, 64, 3, 1, 1],
        [128, 3, 224, 224, 64, 7, 2, 3],
    ] {
        let inputs = [random(&[n, c, h, w], 1), random(&[o, c, k, k], 2)];
        let ours = time_ms(|t| conv2d(&t[0], &t[1], s, p).unwrap(), &inputs, &dev);
        let candle = time_ms(|t| t[0].conv2d(&t[1], p, s, 1, 1).unwrap(), &inputs, &dev);
        println!(
            "conv x {:?} w {:?} /{s}: ours {ours:.2} ms, candle {candle:.2} ms",
            [n, c, h, w],
            [o, c, k, k]
        );
    }
}
