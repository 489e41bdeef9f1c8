//! Channels-last inputs against NCHW ones, on the CPU: every op a ResNet
//! runs gives the same values and gradients, and hands its output back
//! channels-last. On the CPU the convolution and the training-mode batch
//! norm then run the same ops, with NHWC buffers, as on CUDA, so these
//! tests cover everything of the channels-last CUDA path but the launches.

use candle_core::{DType, Tensor, Var};
use resnet_ops::{
    add_relu, batch_norm_add_relu_train, batch_norm_eval, batch_norm_relu_eval,
    batch_norm_relu_train, batch_norm_train, conv2d, global_avg_pool, is_channels_last,
    max_pool_3x3_s2, pad_subsample, relu, to_channels_last, to_dtype,
};
use resnet_test_support::{max_abs, max_abs_diff, random_tensor as random, CONV_CASES};

/// `f`'s output on `inputs` (the first `layouts` of them made channels-last
/// if `channels_last`) and the gradients of `sum(y * r)` with respect to
/// every input, `r` random from `seed`.
fn value_and_grads(
    f: &impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    layouts: usize,
    channels_last: bool,
    seed: u64,
) -> Vec<Tensor> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if channels_last && i < layouts {
                to_channels_last(v.as_tensor()).unwrap()
            } else {
                v.as_tensor().clone()
            }
        })
        .collect();
    let y = f(&tensors);
    if let (true, &[_, c, h, w]) = (channels_last, y.dims()) {
        // One channel or one pixel per image: both layouts are one.
        let either = c == 1 || h * w == 1;
        assert!(
            either || is_channels_last(&y),
            "the output {:?} stays channels-last",
            y.dims()
        );
    }
    let r = random(y.dims(), seed);
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![y];
    out.extend(
        vars.iter()
            .map(|v| grads.get(v).expect("a gradient").clone()),
    );
    out
}

/// Asserts `f` gives the same output and gradients (within `tolerance` of
/// the largest value, 0 for bit-identical) with its first `layouts` inputs
/// channels-last as with them NCHW.
fn check(
    what: &str,
    f: impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    layouts: usize,
    tolerance: f32,
) {
    let nchw = value_and_grads(&f, inputs, layouts, false, 99);
    let cl = value_and_grads(&f, inputs, layouts, true, 99);
    for (i, (a, b)) in cl.iter().zip(&nchw).enumerate() {
        let scale = max_abs(b);
        let err = max_abs_diff(a, b);
        assert!(
            err <= tolerance * scale.max(1e-6),
            "{what}: {} differs by {err} (scale {scale})",
            if i == 0 {
                "the output".to_string()
            } else {
                format!("gradient {i}")
            },
        );
    }
}

#[test]
fn convolutions_match_nchw_bit_for_bit() {
    for (i, [n, c, h, w, o, k, s, p]) in CONV_CASES.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let inputs = [random(&[n, c, h, w], seed), random(&[o, c, k, k], seed + 1)];
        let what = format!("conv {:?}", [n, c, h, w, o, k, s, p]);
        check(
            &what,
            |t| conv2d(&t[0], &t[1], s, p).unwrap(),
            &inputs,
            1,
            0.0,
        );
    }
}

#[test]
fn bf16_convolutions_keep_channels_last() {
    let inputs = [random(&[2, 8, 9, 9], 1), random(&[16, 8, 3, 3], 2)];
    let bf16 = |t: &Tensor| to_dtype(t, DType::BF16).unwrap();
    check(
        "bf16 conv",
        |t| {
            to_dtype(
                &conv2d(&bf16(&t[0]), &bf16(&t[1]), 2, 1).unwrap(),
                DType::F32,
            )
            .unwrap()
        },
        &inputs,
        1,
        0.0,
    );
}

#[test]
fn training_batch_norms_match_nchw() {
    // Channels-last runs the saved-statistics form (f32 statistics), NCHW
    // the fused kernels (f64 statistics): the gradients differ in the last
    // bits.
    const TOLERANCE: f32 = 1e-5;
    for (i, [n, c, h, w]) in [[4, 3, 5, 7], [2, 16, 8, 8], [8, 64, 1, 1], [3, 5, 2, 9]]
        .into_iter()
        .enumerate()
    {
        let seed = 100 * i as u64;
        let x = random(&[n, c, h, w], seed);
        let (g, b) = (random(&[c], seed + 1), random(&[c], seed + 2));
        let r = random(&[n, c, h, w], seed + 3);
        let plain = [x.clone(), g.clone(), b.clone()];
        check(
            &format!("batch norm {:?}", [n, c, h, w]),
            |t| batch_norm_train(&t[0], &t[1], &t[2], 1e-5).unwrap().y,
            &plain,
            1,
            TOLERANCE,
        );
        check(
            &format!("batch norm + relu {:?}", [n, c, h, w]),
            |t| batch_norm_relu_train(&t[0], &t[1], &t[2], 1e-5).unwrap().y,
            &plain,
            1,
            TOLERANCE,
        );
        let inputs = [x, r, g, b];
        check(
            &format!("batch norm + residual + relu {:?}", [n, c, h, w]),
            |t| {
                batch_norm_add_relu_train(&t[0], &t[2], &t[3], &t[1], 1e-5)
                    .unwrap()
                    .y
            },
            &inputs,
            2,
            TOLERANCE,
        );
    }
}

#[test]
fn the_batch_statistics_do_not_depend_on_the_layout() {
    let x = random(&[4, 6, 5, 3], 7);
    let (g, b) = (random(&[6], 8), random(&[6], 9));
    let nchw = batch_norm_train(&x, &g, &b, 1e-5).unwrap();
    let cl = batch_norm_train(&to_channels_last(&x).unwrap(), &g, &b, 1e-5).unwrap();
    assert_eq!(max_abs_diff(&cl.mean, &nchw.mean), 0.0);
    assert!(max_abs_diff(&cl.var, &nchw.var) < 1e-6);
}

#[test]
fn element_wise_ops_pools_and_eval_batch_norm_match_nchw_bit_for_bit() {
    let x = random(&[3, 8, 9, 7], 1);
    let other = random(&[3, 8, 9, 7], 2);
    let stats = [8, 8, 8, 8].map(|c| random(&[c], c as u64 + 3));
    let var = stats[3].abs().unwrap();
    check(
        "relu",
        |t| relu(&t[0]).unwrap(),
        std::slice::from_ref(&x),
        1,
        0.0,
    );
    check(
        "add_relu",
        |t| add_relu(&t[0], &t[1]).unwrap(),
        &[x.clone(), other.clone()],
        2,
        0.0,
    );
    // A channels-last `a` makes the result channels-last whatever `b` is.
    check(
        "add_relu, NCHW b",
        |t| add_relu(&t[0], &t[1]).unwrap(),
        &[x.clone(), other],
        1,
        0.0,
    );
    check(
        "max pool",
        |t| max_pool_3x3_s2(&t[0]).unwrap(),
        std::slice::from_ref(&x),
        1,
        0.0,
    );
    check(
        "option A",
        |t| pad_subsample(&t[0], 2, 4, 4).unwrap(),
        std::slice::from_ref(&x),
        1,
        0.0,
    );
    check(
        "average pool",
        |t| global_avg_pool(&t[0]).unwrap(),
        std::slice::from_ref(&x),
        1,
        0.0,
    );
    check(
        "eval batch norm",
        |t| batch_norm_eval(&t[0], &stats[0], &stats[1], &stats[2], &var, 1e-5).unwrap(),
        std::slice::from_ref(&x),
        1,
        0.0,
    );
    check(
        "eval batch norm + relu",
        |t| batch_norm_relu_eval(&t[0], &stats[0], &stats[1], &stats[2], &var, 1e-5).unwrap(),
        &[x],
        1,
        0.0,
    );
}
