use candle_core::{DType, Device, Tensor, Var};

use super::conv2d;
use crate::test_util::{assert_close_above, random, values};
use crate::OpsError;
use resnet_test_support::CONV_CASES;

/// Closeness relative to the largest reference magnitude.
fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_close_above(got, want, what, 1e-6);
}

/// `(y, dx, dw)` of `loss = sum(conv(x, w) * r)`, by `conv`.
fn run(
    conv: impl Fn(&Tensor, &Tensor) -> Tensor,
    x: &Tensor,
    w: &Tensor,
    seed: u64,
) -> (Tensor, Tensor, Tensor) {
    let (x, w) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
    let y = conv(x.as_tensor(), w.as_tensor());
    let r = random(y.dims(), seed);
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(&x).unwrap().clone();
    let dw = grads.get(&w).unwrap().clone();
    (y, dx, dw)
}

#[test]
fn forward_and_gradients_match_candle() {
    for (i, &[n, c, h, w, o, k, s, p]) in CONV_CASES.iter().enumerate() {
        let case = format!(
            "case {i}: x {:?} w {:?} /{s} pad {p}",
            [n, c, h, w],
            [o, c, k, k]
        );
        let x = random(&[n, c, h, w], 3 * i as u64);
        let wt = random(&[o, c, k, k], 3 * i as u64 + 1);
        let seed = 3 * i as u64 + 2;
        let ours = run(|x, w| conv2d(x, w, s, p).unwrap(), &x, &wt, seed);
        let theirs = run(|x, w| x.conv2d(w, p, s, 1, 1).unwrap(), &x, &wt, seed);
        assert_close(&ours.0, &theirs.0, &format!("{case}: output"));
        assert_close(&ours.1, &theirs.1, &format!("{case}: grad input"));
        assert_close(&ours.2, &theirs.2, &format!("{case}: grad weight"));
    }
}

#[test]
fn gradients_match_finite_differences() {
    // The loss is linear in x and in w, so central differences are exact up
    // to rounding whatever the step. A strided convolution (im2col and
    // col2im), and a 3x3 one that runs the direct kernel for the forward
    // pass and both gradients on CPUs with AVX-512 or AVX2.
    // [x dims, w dims, [stride; 4], the x values and the w values nudged].
    let cases: [[[usize; 4]; 5]; 2] = [
        [
            [1, 2, 5, 6],
            [3, 2, 3, 3],
            [2; 4],
            [0, 7, 29, 59],
            [0, 4, 17, 53],
        ],
        [
            [1, 8, 2, 8],
            [8, 8, 3, 3],
            [1; 4],
            [0, 9, 64, 127],
            [0, 40, 300, 575],
        ],
    ];
    for (i, [x_dims, w_dims, [stride, ..], x_at, w_at]) in cases.into_iter().enumerate() {
        let seed = 10 + 3 * i as u64;
        let (x, w) = (random(&x_dims, seed), random(&w_dims, seed + 1));
        let y_dims = conv2d(&x, &w, stride, 1).unwrap().dims().to_vec();
        let r = random(&y_dims, seed + 2);
        let loss = |x: &Tensor, w: &Tensor| -> f32 {
            let y = conv2d(x, w, stride, 1).unwrap();
            (y * &r).unwrap().sum_all().unwrap().to_scalar().unwrap()
        };
        let (_, dx, dw) = run(|x, w| conv2d(x, w, stride, 1).unwrap(), &x, &w, seed + 2);
        let nudge = |t: &Tensor, at: usize, by: f32| {
            let mut v = values(t);
            v[at] += by;
            Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
        };
        for at in x_at {
            let numeric = (loss(&nudge(&x, at, 0.5), &w) - loss(&nudge(&x, at, -0.5), &w)) / 1.0;
            let analytic = values(&dx)[at];
            assert!(
                (numeric - analytic).abs() < 1e-4,
                "case {i}: dx[{at}]: {numeric} vs {analytic}"
            );
        }
        for at in w_at {
            let numeric = (loss(&x, &nudge(&w, at, 0.5)) - loss(&x, &nudge(&w, at, -0.5))) / 1.0;
            let analytic = values(&dw)[at];
            assert!(
                (numeric - analytic).abs() < 1e-4,
                "case {i}: dw[{at}]: {numeric} vs {analytic}"
            );
        }
    }
}

#[test]
fn results_are_bit_identical_across_runs_and_thread_counts() {
    // A batch of 37, split over the threads; batches of 1, whose products
    // are split instead: Winograd's, and im2col's gemm by blocks of output
    // channels (200 of them in blocks of 80, 80 and 40; 128 in two of 64),
    // for a 1x1 and a strided 3x3 convolution; and a batch of 5 that the
    // direct 3x3 kernel takes on CPUs with AVX-512 or AVX2.
    // [n, side, channels, kernel, stride]
    for [n, side, channels, k, s] in [
        [37, 9, 8, 3, 1],
        [1, 40, 64, 3, 1],
        [1, 12, 200, 1, 1],
        [1, 13, 128, 3, 2],
        [5, 8, 16, 3, 1],
    ] {
        let x = random(&[n, channels, side, side], 20);
        let w = random(&[channels, channels, k, k], 21);
        let once = || {
            let (y, dx, dw) = run(|x, w| conv2d(x, w, s, k / 2).unwrap(), &x, &w, 22);
            (values(&y), values(&dx), values(&dw))
        };
        let first = once();
        assert_eq!(first, once());
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(
                first,
                pool.install(once),
                "batch {n}, {k}x{k}/{s}, {threads} threads"
            );
        }
    }
}

#[test]
fn an_image_has_the_same_output_alone_and_in_a_batch() {
    // Output channels in blocks of rows whose gemms are smaller than the
    // whole: gemm sums the inner dimension in one pass or in two depending on
    // the size of the product, so the blocks must not depend on the batch or
    // on the threads. [in channels, out channels, side, kernel, stride]
    for [c, o, side, k, s] in [[64, 128, 8, 3, 2], [576, 128, 8, 1, 1], [32, 200, 6, 3, 1]] {
        let x = random(&[3, c, side, side], 23);
        let w = random(&[o, c, k, k], 24);
        let first = x.narrow(0, 0, 1).unwrap();
        let batch = values(&conv2d(&x, &w, s, k / 2).unwrap().narrow(0, 0, 1).unwrap());
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let alone = pool.install(|| values(&conv2d(&first, &w, s, k / 2).unwrap()));
            assert_eq!(batch, alone, "{c}->{o} {k}x{k}/{s}, {threads} threads");
        }
    }
}

#[test]
fn constant_inputs_strided_views_and_other_dtypes_work() {
    // A constant input needs no gradient: only the weight gets one.
    let x = random(&[2, 3, 7, 5], 30);
    let w = Var::from_tensor(&random(&[4, 3, 3, 3], 31)).unwrap();
    let grads = conv2d(&x, &w, 2, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let want = x
        .conv2d(&w, 1, 2, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(grads.get(&w).unwrap(), want.get(&w).unwrap(), "grad weight");

    // A transposed view runs as its contiguous copy would.
    let xt = x.transpose(2, 3).unwrap();
    let got = conv2d(&xt, &w, 1, 1).unwrap();
    assert_close(
        &got,
        &conv2d(&xt.contiguous().unwrap(), &w, 1, 1).unwrap(),
        "view",
    );

    // f64 falls back to candle's own convolution.
    let x64 = x.to_dtype(DType::F64).unwrap();
    let w64 = w.to_dtype(DType::F64).unwrap();
    let got = conv2d(&x64, &w64, 1, 0).unwrap();
    assert_eq!(got.dtype(), DType::F64);
    let want = conv2d(&x, &w, 1, 0).unwrap();
    assert_close(&got.to_dtype(DType::F32).unwrap(), &want, "f64 fallback");
}

/// bf16 on the CPU: the f32 convolution of the operands' bf16 values,
/// rounded to bf16, and gradients that flow back through it into bf16
/// tensors (rounded there too).
#[test]
fn bf16_convolves_the_rounded_values_in_f32_and_rounds_the_output() {
    let bf16 = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let (x, w) = (random(&[2, 3, 7, 5], 50), random(&[4, 3, 3, 3], 51));
    let seed = 52;
    let got = run(
        |x, w| f32(&conv2d(&bf16(x), &bf16(w), 2, 1).unwrap()),
        &x,
        &w,
        seed,
    );
    let rounded = |x: &Tensor, w: &Tensor| {
        f32(&bf16(
            &conv2d(&f32(&bf16(x)), &f32(&bf16(w)), 2, 1).unwrap(),
        ))
    };
    let want = run(rounded, &x, &w, seed);
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(values(&got.0), values(&want.0), "output");
    assert_eq!(
        values(&got.0),
        values(&f32(&bf16(&got.0))),
        "output is bf16"
    );
    let full = run(|x, w| conv2d(x, w, 2, 1).unwrap(), &x, &w, seed);
    for (name, got, full) in [("input", &got.1, &full.1), ("weight", &got.2, &full.2)] {
        assert_eq!(
            got.dtype(),
            DType::F32,
            "{name} gradient reaches the f32 tensor"
        );
        assert_eq!(
            values(got),
            values(&f32(&bf16(got))),
            "{name} gradient is bf16"
        );
        // Within a few bf16 roundings (2^-8 relative) of the f32 gradient.
        let (got, full) = (values(got), values(full));
        let scale = full.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&full)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err > 0.0 && err <= 2e-2 * scale,
            "{name} gradient: error {err}, scale {scale}"
        );
    }
}

#[test]
fn bad_shapes_are_errors_naming_them() {
    let x = random(&[2, 3, 8, 8], 40);
    let w = random(&[4, 3, 3, 3], 41);
    let message = |r: Result<Tensor, OpsError>| r.unwrap_err().to_string();

    let err = message(conv2d(&x.flatten_from(2).unwrap(), &w, 1, 1));
    assert!(
        err.contains("conv2d") && err.contains("[2, 3, 64]"),
        "{err}"
    );
    let err = message(conv2d(&x, &random(&[4, 5, 3, 3], 42), 1, 1));
    assert!(
        err.contains("[2, 3, 8, 8]") && err.contains("[4, 5, 3, 3]"),
        "{err}"
    );
    let err = message(conv2d(&x, &random(&[4, 3, 3, 2], 43), 1, 1));
    assert!(
        err.contains("square") && err.contains("[4, 3, 3, 2]"),
        "{err}"
    );
    let err = message(conv2d(&x, &random(&[4, 3, 11, 11], 44), 1, 1));
    assert!(
        err.contains("larger") && err.contains("[2, 3, 8, 8]"),
        "{err}"
    );
    let err = message(conv2d(&x, &w, 0, 1));
    assert!(err.contains("stride"), "{err}");
}
