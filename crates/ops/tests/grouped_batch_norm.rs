//! `GroupedBatchNorm` against separate batch norms of each group of images:
//! the same outputs, statistics (a row per group) and gradients, for the
//! three forms (alone, with a ReLU, with the residual join), NCHW and
//! channels-last (the cuDNN form's op on the CPU), f32 (this crate's
//! kernels) and f64 (candle's ops).

use std::num::NonZeroUsize;

use candle_core::{DType, Tensor, Var};
use resnet_ops::{
    batch_norm_add_relu_train, batch_norm_relu_train, batch_norm_train, is_channels_last,
    to_channels_last, BatchNormOutput, GroupedBatchNorm, OpsError,
};
use resnet_test_support::{max_abs, max_abs_diff, random_tensor as random};

const EPS: f64 = 1e-5;

/// Which batch norm: alone, with a ReLU, or with the join of `t[3]`.
#[derive(Clone, Copy, Debug)]
enum Form {
    Plain,
    Relu,
    AddRelu,
}

impl Form {
    /// The whole-batch op on `t = [x, weight, bias, residual]`.
    fn whole(self, t: &[Tensor]) -> Result<BatchNormOutput, OpsError> {
        match self {
            Form::Plain => batch_norm_train(&t[0], &t[1], &t[2], EPS),
            Form::Relu => batch_norm_relu_train(&t[0], &t[1], &t[2], EPS),
            Form::AddRelu => batch_norm_add_relu_train(&t[0], &t[1], &t[2], &t[3], EPS),
        }
    }

    /// The grouped op.
    fn grouped(self, bn: GroupedBatchNorm, t: &[Tensor]) -> Result<BatchNormOutput, OpsError> {
        match self {
            Form::Plain => bn.train(&t[0], &t[1], &t[2]),
            Form::Relu => bn.train_relu(&t[0], &t[1], &t[2]),
            Form::AddRelu => bn.train_add_relu(&t[0], &t[1], &t[2], &t[3]),
        }
    }
}

/// `y`, the statistics and the gradients of `sum(y * r)` for `[x, weight,
/// bias, residual]`, from `run` on the inputs (the 4-d ones channels-last if
/// `channels_last`).
fn outputs(
    inputs: &[Tensor],
    channels_last: bool,
    run: impl Fn(&[Tensor]) -> (Tensor, Tensor, Tensor),
) -> Vec<Tensor> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars
        .iter()
        .map(|v| match (channels_last, v.rank()) {
            (true, 4) => to_channels_last(v.as_tensor()).unwrap(),
            _ => v.as_tensor().clone(),
        })
        .collect();
    let (y, mean, var) = run(&tensors);
    assert_eq!(
        is_channels_last(&y),
        channels_last,
        "the output keeps the layout"
    );
    let r = random(y.dims(), 41).to_dtype(y.dtype()).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![y, mean, var];
    // The residual has no gradient where the form does not use it.
    out.extend(vars.iter().map(|v| match grads.get(v) {
        Some(g) => g.clone(),
        None => v.zeros_like().unwrap(),
    }));
    out
}

fn check(form: Form, [n, c, h, w]: [usize; 4], group: usize, dtype: DType, channels_last: bool) {
    let shape = [n, c, h, w];
    let inputs: Vec<Tensor> = [
        random(&shape, 1),
        random(&[c], 2),
        random(&[c], 3),
        random(&shape, 4),
    ]
    .into_iter()
    .map(|t| t.to_dtype(dtype).unwrap())
    .collect();
    let bn = GroupedBatchNorm {
        group: NonZeroUsize::new(group).unwrap(),
        eps: EPS,
    };
    let grouped = outputs(&inputs, channels_last, |t| {
        let out = form.grouped(bn, t).unwrap();
        (out.y, out.mean, out.var)
    });
    let separate = outputs(&inputs, channels_last, |t| {
        let (mut ys, mut means, mut vars) = (Vec::new(), Vec::new(), Vec::new());
        for start in (0..n).step_by(group) {
            let len = group.min(n - start);
            let part = |i: usize| t[i].narrow(0, start, len).unwrap();
            let out = form
                .whole(&[part(0), t[1].clone(), t[2].clone(), part(3)])
                .unwrap();
            ys.push(out.y);
            means.push(out.mean);
            vars.push(out.var);
        }
        let y = Tensor::cat(&ys, 0).unwrap();
        let y = if channels_last {
            to_channels_last(&y).unwrap()
        } else {
            y
        };
        (
            y,
            Tensor::stack(&means, 0).unwrap(),
            Tensor::stack(&vars, 0).unwrap(),
        )
    });
    let names = ["y", "mean", "var", "dx", "dweight", "dbias", "dresidual"];
    for ((a, b), name) in grouped.iter().zip(&separate).zip(names) {
        assert_eq!(a.dims(), b.dims(), "{form:?} {shape:?} by {group}: {name}");
        let (a, b) = (
            a.to_dtype(DType::F32).unwrap(),
            b.to_dtype(DType::F32).unwrap(),
        );
        let scale = max_abs(&b);
        let err = max_abs_diff(&a, &b);
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "{form:?} {shape:?} by {group}, {dtype:?}, channels-last {channels_last}: {name} differs by {err}"
        );
    }
}

#[test]
fn groups_normalise_as_separate_batches() {
    for form in [Form::Plain, Form::Relu, Form::AddRelu] {
        for (shape, group) in [([8, 3, 5, 7], 4), ([10, 16, 4, 4], 4), ([6, 5, 3, 2], 1)] {
            for channels_last in [false, true] {
                check(form, shape, group, DType::F32, channels_last);
            }
            check(form, shape, group, DType::F64, false);
        }
    }
}

#[test]
fn a_group_as_large_as_the_batch_is_the_whole_batch() {
    let (x, g, b) = (random(&[4, 3, 5, 5], 1), random(&[3], 2), random(&[3], 3));
    let whole = batch_norm_train(&x, &g, &b, EPS).unwrap();
    for group in [4, 9] {
        let bn = GroupedBatchNorm {
            group: NonZeroUsize::new(group).unwrap(),
            eps: EPS,
        };
        let grouped = bn.train(&x, &g, &b).unwrap();
        assert_eq!(max_abs_diff(&grouped.y, &whole.y), 0.0);
        assert_eq!(grouped.mean.dims(), [1, 3]);
        assert_eq!(
            max_abs_diff(&grouped.mean.squeeze(0).unwrap(), &whole.mean),
            0.0
        );
    }
}
