use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};

use super::{
    batch_norm_add_relu_train, batch_norm_eval, batch_norm_relu_eval, batch_norm_relu_train,
    batch_norm_train, composed, saved, whole_batch, BatchNormOutput, Dims,
};
use crate::test_util::{assert_close_above, random, values};
use crate::OpsError;

const EPS: f64 = 1e-5;

/// `[n, c, h, w]`: batch 1, 1x1 planes, odd sizes, one channel, 64 channels.
const CASES: [[usize; 4]; 8] = [
    [2, 3, 8, 8],
    [1, 5, 7, 3],
    [4, 16, 1, 1],
    [2, 1, 1, 1],
    [3, 64, 9, 11],
    [1, 1, 2, 1],
    [5, 7, 3, 5],
    [128, 2, 2, 2],
];

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

/// The fixed cases, then random shapes with at least two values per channel.
fn shapes() -> Vec<[usize; 4]> {
    let mut rng = rng(99);
    let mut shapes = CASES.to_vec();
    while shapes.len() < 24 {
        let shape = [
            rng.random_range(1..=6),
            rng.random_range(1..=64),
            rng.random_range(1..=13),
            rng.random_range(1..=13),
        ];
        if shape[0] * shape[2] * shape[3] > 1 {
            shapes.push(shape);
        }
    }
    shapes
}

/// Closeness with a 0.01 floor: the input gradient of a channel with two
/// values cancels to rounding noise, so it is judged against 0.01.
fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_close_above(got, want, what, 1e-2);
}

/// The input (off-centre, not unit-scale), weight and bias of a case.
fn inputs(shape: [usize; 4], seed: u64) -> (Tensor, Tensor, Tensor) {
    let x = random(&shape, seed).affine(3.0, 1.5).unwrap();
    let weight = random(&[shape[1]], seed + 1).affine(1.0, 0.5).unwrap();
    (x, weight, random(&[shape[1]], seed + 2))
}

/// `[y, mean, var]` of `out`, then the gradient of `loss = sum(out.y * r)`
/// (`r` random from `seed`) with respect to each of `vars`.
fn with_gradients(out: BatchNormOutput, vars: &[Var], seed: u64) -> Vec<Tensor> {
    let r = random(out.y.dims(), seed);
    let grads = (&out.y * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut all = vec![out.y, out.mean, out.var];
    all.extend(vars.iter().map(|v| grads.get(v).unwrap().clone()));
    all
}

/// `[y, mean, var, dx, dweight, dbias]` of `loss = sum(bn(x) * r)`.
fn train_run(
    bn: impl Fn(&Tensor, &Tensor, &Tensor) -> BatchNormOutput,
    (x, weight, bias): &(Tensor, Tensor, Tensor),
    seed: u64,
) -> Vec<Tensor> {
    let vars = [x, weight, bias].map(|t| Var::from_tensor(t).unwrap());
    with_gradients(bn(&vars[0], &vars[1], &vars[2]), &vars, seed)
}

const TRAIN_NAMES: [&str; 6] = ["y", "mean", "var", "dx", "dweight", "dbias"];

#[test]
fn train_matches_the_composed_reference() {
    for (i, shape) in shapes().into_iter().enumerate() {
        let seed = 4 * i as u64;
        let args = inputs(shape, seed);
        let ours = train_run(
            |x, w, b| batch_norm_train(x, w, b, EPS).unwrap(),
            &args,
            seed + 3,
        );
        let theirs = train_run(
            |x, w, b| composed::train(x, w, b, EPS).unwrap(),
            &args,
            seed + 3,
        );
        for ((got, want), name) in ours.iter().zip(&theirs).zip(TRAIN_NAMES) {
            assert_close(got, want, &format!("{shape:?}: {name}"));
        }
        assert_eq!(ours[1].dims(), [shape[1]]);
    }
}

/// The saved-statistics form is what runs on CUDA (cuDNN computes the
/// values there); its ops, argument checks, packing and backward composition
/// are the same on the CPU, so running it here covers everything but the
/// launch.
#[test]
fn saved_statistics_form_matches_the_kernels() {
    for (i, shape) in shapes().into_iter().enumerate() {
        let seed = 4 * i as u64 + 500;
        let args = inputs(shape, seed);
        let dims = Dims::new(&args.0, &[]).unwrap();
        let saved = train_run(
            |x, w, b| whole_batch(saved::train(dims, x, w, b, EPS).unwrap()).unwrap(),
            &args,
            seed + 3,
        );
        let kernels = train_run(
            |x, w, b| batch_norm_train(x, w, b, EPS).unwrap(),
            &args,
            seed + 3,
        );
        for ((got, want), name) in saved.iter().zip(&kernels).zip(TRAIN_NAMES) {
            assert_close(got, want, &format!("{shape:?}: {name}"));
        }
        // In groups of 2 images, as CUDA runs `GroupedBatchNorm` (one cuDNN
        // call per group), against this crate's grouped kernels; where a
        // group has at least 8 values per channel (below that, the f32
        // statistics of this form and the kernels' f64 ones differ by more
        // than the tolerance).
        if 2 * shape[2] * shape[3] < 8 {
            continue;
        }
        let group = std::num::NonZeroUsize::new(2).unwrap();
        let grouped = super::GroupedBatchNorm { group, eps: EPS };
        let saved = train_run(
            |x, w, b| saved::train(dims.in_groups(2), x, w, b, EPS).unwrap(),
            &args,
            seed + 3,
        );
        let kernels = train_run(|x, w, b| grouped.train(x, w, b).unwrap(), &args, seed + 3);
        for ((got, want), name) in saved.iter().zip(&kernels).zip(TRAIN_NAMES) {
            assert_close(got, want, &format!("{shape:?} in groups of 2: {name}"));
        }
    }
}

#[test]
fn fused_relu_equals_batch_norm_then_relu_bit_for_bit() {
    for (i, shape) in shapes().into_iter().enumerate() {
        let seed = 4 * i as u64 + 1000;
        let args = inputs(shape, seed);
        let fused = train_run(
            |x, w, b| batch_norm_relu_train(x, w, b, EPS).unwrap(),
            &args,
            seed + 3,
        );
        let unfused = train_run(
            |x, w, b| {
                let out = batch_norm_train(x, w, b, EPS).unwrap();
                BatchNormOutput {
                    y: crate::relu(&out.y).unwrap(),
                    ..out
                }
            },
            &args,
            seed + 3,
        );
        assert!(
            values(&fused[0]).contains(&0.0),
            "{shape:?}: no value was clipped"
        );
        for ((got, want), name) in fused.iter().zip(&unfused).zip(TRAIN_NAMES) {
            assert_eq!(values(got), values(want), "{shape:?}: {name}");
        }
    }
}

/// `[y, mean, var, dx, dweight, dbias, dresidual]` of `loss = sum(f(x, w,
/// b, residual) * r)`, `f` a batch norm followed by the residual and a ReLU.
fn add_relu_run(
    f: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> BatchNormOutput,
    (x, weight, bias): &(Tensor, Tensor, Tensor),
    residual: &Tensor,
    seed: u64,
) -> Vec<Tensor> {
    let vars = [x, weight, bias, residual].map(|t| Var::from_tensor(t).unwrap());
    with_gradients(f(&vars[0], &vars[1], &vars[2], &vars[3]), &vars, seed)
}

#[test]
fn fused_add_relu_equals_batch_norm_then_add_relu_bit_for_bit() {
    let names = ["y", "mean", "var", "dx", "dweight", "dbias", "dresidual"];
    let (mut clipped, mut passed) = (0, 0);
    for (i, shape) in shapes().into_iter().enumerate() {
        let seed = 5 * i as u64 + 3000;
        let args = inputs(shape, seed);
        let residual = random(&shape, seed + 4);
        let fused = add_relu_run(
            |x, w, b, r| batch_norm_add_relu_train(x, w, b, r, EPS).unwrap(),
            &args,
            &residual,
            seed + 3,
        );
        let unfused = add_relu_run(
            |x, w, b, r| {
                let out = batch_norm_train(x, w, b, EPS).unwrap();
                BatchNormOutput {
                    y: crate::add_relu(&out.y, r).unwrap(),
                    ..out
                }
            },
            &args,
            &residual,
            seed + 3,
        );
        let y = values(&fused[0]);
        clipped += y.iter().filter(|&&v| v == 0.0).count();
        passed += y.iter().filter(|&&v| v > 0.0).count();
        for ((got, want), name) in fused.iter().zip(&unfused).zip(names) {
            assert_eq!(values(got), values(want), "{shape:?}: {name}");
        }
    }
    assert!(
        clipped > 0 && passed > 0,
        "{clipped} clipped, {passed} passed"
    );
}

#[test]
fn fused_add_relu_falls_back_for_other_dtypes_and_checks_the_residual() {
    let (x, w, b) = inputs([2, 3, 4, 4], 78);
    let r = random(&[2, 3, 4, 4], 79);
    let f64s = [&x, &w, &b, &r].map(|t| t.to_dtype(DType::F64).unwrap());
    let got = batch_norm_add_relu_train(&f64s[0], &f64s[1], &f64s[2], &f64s[3], EPS).unwrap();
    let want = batch_norm_add_relu_train(&x, &w, &b, &r, EPS).unwrap();
    assert_eq!(got.y.dtype(), DType::F64);
    assert_close(
        &got.y.to_dtype(DType::F32).unwrap(),
        &want.y,
        "f64 fallback",
    );
    let wrong = random(&[2, 3, 4, 5], 80);
    let err = batch_norm_add_relu_train(&x, &w, &b, &wrong, EPS).unwrap_err();
    assert!(matches!(err, OpsError::Incompatible { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("[2, 3, 4, 5]") && text.contains("[2, 3, 4, 4]"),
        "{text}"
    );
}

#[test]
fn fused_eval_relu_equals_batch_norm_then_relu_bit_for_bit() {
    let mut clipped = 0;
    for (i, shape) in shapes().into_iter().enumerate() {
        let seed = 6 * i as u64 + 2000;
        let fused = eval_run(
            |x, w, b, m, v| batch_norm_relu_eval(x, w, b, m, v, EPS).unwrap(),
            shape,
            seed,
        );
        let unfused = eval_run(
            |x, w, b, m, v| crate::relu(&batch_norm_eval(x, w, b, m, v, EPS).unwrap()).unwrap(),
            shape,
            seed,
        );
        clipped += values(&fused[0]).iter().filter(|&&v| v == 0.0).count();
        for ((got, want), name) in fused
            .iter()
            .zip(&unfused)
            .zip(["y", "dx", "dweight", "dbias"])
        {
            assert_eq!(values(got), values(want), "{shape:?}: {name}");
        }
    }
    assert!(clipped > 0, "no value was clipped");
}

#[test]
fn fused_relu_falls_back_to_candle_for_other_dtypes() {
    let (x, w, b) = inputs([2, 3, 4, 4], 77);
    let f64s = [&x, &w, &b].map(|t| t.to_dtype(DType::F64).unwrap());
    let got = batch_norm_relu_train(&f64s[0], &f64s[1], &f64s[2], EPS).unwrap();
    let want = batch_norm_relu_train(&x, &w, &b, EPS).unwrap();
    assert_eq!(got.y.dtype(), DType::F64);
    assert_close(
        &got.y.to_dtype(DType::F32).unwrap(),
        &want.y,
        "f64 fallback",
    );
}

#[test]
fn statistics_hold_for_a_mean_far_larger_than_the_spread() {
    // 1e4 + N(0, 1e-2): a one-pass E[x^2] - E[x]^2 in f32 would lose the
    // variance entirely; the statistics must match a two-pass f64 reference.
    let shape = [4, 3, 5, 5];
    let x = random(&shape, 7).affine(1e-2, 1e4).unwrap();
    let (w, b) = (
        Tensor::ones(3, DType::F32, x.device()).unwrap(),
        Tensor::zeros(3, DType::F32, x.device()).unwrap(),
    );
    let out = batch_norm_train(&x, &w, &b, EPS).unwrap();
    let data = values(&x);
    for ch in 0..shape[1] {
        let xs: Vec<f64> = data
            .chunks_exact(25)
            .skip(ch)
            .step_by(shape[1])
            .flatten()
            .map(|&v| f64::from(v))
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / xs.len() as f64;
        let (got_mean, got_var) = (values(&out.mean)[ch], values(&out.var)[ch]);
        assert!(
            (f64::from(got_mean) - mean).abs() < 1e-6 * mean,
            "channel {ch} mean {got_mean} vs {mean}"
        );
        assert!(
            (f64::from(got_var) - var).abs() < 1e-4 * var,
            "channel {ch} var {got_var} vs {var}"
        );
    }
}

/// `[y, dx, dweight, dbias]` of `loss = sum(bn(x) * r)` in eval mode.
fn eval_run(
    bn: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor, &Tensor) -> Tensor,
    shape: [usize; 4],
    seed: u64,
) -> Vec<Tensor> {
    let (x, weight, bias) = inputs(shape, seed);
    let vars = [&x, &weight, &bias].map(|t| Var::from_tensor(t).unwrap());
    let mean = random(&[shape[1]], seed + 3);
    let var = random(&[shape[1]], seed + 4).abs().unwrap();
    let y = bn(&vars[0], &vars[1], &vars[2], &mean, &var);
    let r = random(y.dims(), seed + 5);
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut all = vec![y];
    all.extend(vars.iter().map(|v| grads.get(v).unwrap().clone()));
    all
}

/// Eval mode written out with candle's broadcasts, as the formula reads.
fn eval_reference(x: &Tensor, w: &Tensor, b: &Tensor, mean: &Tensor, var: &Tensor) -> Tensor {
    let c = |t: &Tensor| t.reshape((1, t.elem_count(), 1, 1)).unwrap();
    let std = (c(var) + EPS).unwrap().sqrt().unwrap();
    let xhat = x.broadcast_sub(&c(mean)).unwrap().broadcast_div(&std);
    let y = xhat.unwrap().broadcast_mul(&c(w)).unwrap();
    y.broadcast_add(&c(b)).unwrap()
}

#[test]
fn eval_matches_the_formula() {
    for (i, shape) in shapes().into_iter().enumerate() {
        let seed = 6 * i as u64;
        let ours = eval_run(
            |x, w, b, m, v| batch_norm_eval(x, w, b, m, v, EPS).unwrap(),
            shape,
            seed,
        );
        let theirs = eval_run(eval_reference, shape, seed);
        for ((got, want), name) in ours.iter().zip(&theirs).zip(["y", "dx", "dw", "db"]) {
            assert_close(got, want, &format!("{shape:?}: {name}"));
        }
    }
}

#[test]
fn results_are_bit_identical_across_runs_and_thread_counts() {
    let shape = [37, 24, 9, 7];
    let args = inputs(shape, 20);
    let once = || {
        let mut all = train_run(|x, w, b| batch_norm_train(x, w, b, EPS).unwrap(), &args, 21);
        all.extend(eval_run(
            |x, w, b, m, v| batch_norm_eval(x, w, b, m, v, EPS).unwrap(),
            shape,
            22,
        ));
        all.iter().map(values).collect::<Vec<_>>()
    };
    let first = once();
    assert_eq!(first, once());
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_eq!(first, pool.install(once), "{threads} threads");
    }
}

#[test]
fn constants_views_and_other_dtypes_work() {
    let (x, weight, bias) = inputs([3, 4, 5, 6], 30);
    // A constant input: our ops skip its gradient, the weight's still flows.
    let w = Var::from_tensor(&weight).unwrap();
    let r = random(&[3, 4, 5, 6], 31);
    let grad_weight = |bn: &dyn Fn(&Tensor) -> Tensor, ours: bool| {
        let grads = (bn(&w) * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(!ours || grads.get(&x).is_none(), "gradient of a constant");
        grads.get(&w).unwrap().clone()
    };
    let ours = grad_weight(&|w| batch_norm_train(&x, w, &bias, EPS).unwrap().y, true);
    let theirs = grad_weight(&|w| composed::train(&x, w, &bias, EPS).unwrap().y, false);
    assert_close(&ours, &theirs, "train grad weight");
    let (mean, var) = (random(&[4], 32), random(&[4], 33).abs().unwrap());
    let ours = grad_weight(
        &|w| batch_norm_eval(&x, w, &bias, &mean, &var, EPS).unwrap(),
        true,
    );
    let theirs = grad_weight(&|w| eval_reference(&x, w, &bias, &mean, &var), false);
    assert_close(&ours, &theirs, "eval grad weight");

    // A transposed view runs as its contiguous copy would.
    let xt = x.transpose(2, 3).unwrap();
    let got = batch_norm_train(&xt, &weight, &bias, EPS).unwrap().y;
    let copy = batch_norm_train(&xt.contiguous().unwrap(), &weight, &bias, EPS).unwrap();
    assert_eq!(values(&got), values(&copy.y));

    // f64 falls back to the composed ops.
    let f64s = [&x, &weight, &bias, &mean, &var].map(|t| t.to_dtype(DType::F64).unwrap());
    let got = batch_norm_train(&f64s[0], &f64s[1], &f64s[2], EPS).unwrap();
    assert_eq!(got.y.dtype(), DType::F64);
    let want = batch_norm_train(&x, &weight, &bias, EPS).unwrap();
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    assert_close(&f32(&got.y), &want.y, "f64 train");
    assert_close(&f32(&got.var), &want.var, "f64 var");
    let got = batch_norm_eval(&f64s[0], &f64s[1], &f64s[2], &f64s[3], &f64s[4], EPS).unwrap();
    let want = batch_norm_eval(&x, &weight, &bias, &mean, &var, EPS).unwrap();
    assert_close(&f32(&got), &want, "f64 eval");
}

#[test]
fn bad_shapes_are_errors_naming_them() {
    let (x, weight, bias) = inputs([2, 3, 4, 4], 40);
    let message = |r: Result<Tensor, OpsError>| r.unwrap_err().to_string();
    let train = |x: &Tensor, w: &Tensor| batch_norm_train(x, w, &bias, EPS).map(|o| o.y);

    let err = message(train(&x.flatten_from(2).unwrap(), &weight));
    assert!(
        err.contains("batch_norm") && err.contains("[2, 3, 16]"),
        "{err}"
    );
    let err = message(train(&x, &random(&[4], 41)));
    assert!(
        err.contains("weight") && err.contains("[4]") && err.contains("[2, 3, 4, 4]"),
        "{err}"
    );
    let err = message(train(&x.narrow(0, 0, 0).unwrap(), &weight));
    assert!(err.contains("no values per channel"), "{err}");
    let err = message(batch_norm_eval(
        &x,
        &weight,
        &bias,
        &weight,
        &random(&[3, 1], 42),
        EPS,
    ));
    assert!(
        err.contains("running_var") && err.contains("[3, 1]"),
        "{err}"
    );
}
