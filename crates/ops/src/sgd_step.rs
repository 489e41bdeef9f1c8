//! The SGD update of a network's parameters, in place.
//!
//! Composed from candle's ops, an update with momentum and weight decay runs
//! six element-wise ops, each allocating a tensor, then copies the result
//! into the parameter: seven passes and six buffers per parameter and step,
//! and on a GPU seven kernel launches for each of a network's tensors. Here
//! f32 tensors on the CPU or CUDA take one pass over every parameter at once
//! ([`crate::multi_tensor`]): on CUDA one launch a step, whatever the number
//! of tensors. Each value is rounded as candle's ops round it, so the
//! results are the composed update's bit for bit.

use candle_core::{Tensor, Var};

use crate::multi_tensor::{self, Kernel, Tensors};
use crate::OpsError;

const OP: &str = "sgd";

/// The coefficients of one SGD step with PyTorch's semantics (dampening 0, no
/// Nesterov): for a weight `w` with gradient `grad` and momentum buffer `v`,
///
/// ```text
/// v = momentum * v + (grad + weight_decay * w)
/// w = w - lr * v
/// ```
///
/// With `momentum` 0 the buffer is just the decayed gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// L2 weight-decay factor.
    pub weight_decay: f64,
}

/// One parameter of an update ([`SgdStep::apply_all`]): the weight, its
/// momentum buffer and its gradient, all of the weight's shape, dtype and
/// device.
#[derive(Debug, Clone, Copy)]
pub struct SgdParam<'a> {
    /// The weight, updated in place.
    pub weight: &'a Var,
    /// Its momentum buffer, updated in place.
    pub velocity: &'a Var,
    /// Its gradient.
    pub grad: &'a Tensor,
}

impl SgdStep {
    /// Updates the momentum buffer `velocity` and then `weight`, in place,
    /// from `grad`: [`SgdStep::apply_all`] of one parameter.
    pub fn apply(&self, weight: &Var, velocity: &Var, grad: &Tensor) -> Result<(), OpsError> {
        self.apply_all(&[SgdParam {
            weight,
            velocity,
            grad,
        }])
    }

    /// Updates every parameter's momentum buffer and then its weight, in
    /// place. Weights and buffers must not share storage with each other or
    /// with any gradient (an error says which do).
    ///
    /// When every tensor is f32 on one CPU or CUDA device, one pass of this
    /// crate's kernels updates them all (on CUDA one launch); otherwise each
    /// parameter runs candle's ops and writes its results with
    /// [`Var::set`].
    pub fn apply_all(&self, params: &[SgdParam]) -> Result<(), OpsError> {
        let tensors: Vec<Tensors<2, 1>> = params
            .iter()
            .map(|p| Tensors {
                written: [
                    ("weight", p.weight.as_tensor()),
                    ("momentum buffer", p.velocity.as_tensor()),
                ],
                read: [("gradient", p.grad)],
                words: &[],
            })
            .collect();
        if !multi_tensor::fits_one_pass(OP, "parameter", &tensors)? {
            return params.iter().try_for_each(|p| self.composed(p));
        }
        let (lr, momentum, decay) = (
            self.lr as f32,
            self.momentum as f32,
            self.weight_decay as f32,
        );
        let kernel = Kernel {
            name: "sgd_f32",
            scalars: &[momentum, decay, lr],
        };
        multi_tensor::update(OP, "parameter", &tensors, kernel, |_, [w, v], [g]| {
            for ((w, v), g) in w.iter_mut().zip(v).zip(g) {
                *v = *v * momentum + (*g + *w * decay);
                *w -= *v * lr;
            }
        })
    }

    /// The update with candle's ops (none for an empty tensor, which
    /// candle's ops hand back as it is, a value [`Var::set`] refuses).
    fn composed(&self, p: &SgdParam) -> Result<(), OpsError> {
        if p.weight.elem_count() == 0 {
            return Ok(());
        }
        let w = p.weight.as_tensor().detach();
        let mut g = p.grad.detach();
        if self.weight_decay != 0.0 {
            g = g.add(&w.affine(self.weight_decay, 0.0)?)?;
        }
        let v = if self.momentum != 0.0 {
            p.velocity.affine(self.momentum, 0.0)?.add(&g)?
        } else {
            g
        };
        p.weight.set(&w.sub(&v.affine(self.lr, 0.0)?)?)?;
        p.velocity.set(&v)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::test_util::{random, values};

    const STEPS: [SgdStep; 4] = [
        SgdStep {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
        },
        SgdStep {
            lr: 0.01,
            momentum: 0.0,
            weight_decay: 1e-4,
        },
        SgdStep {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
        },
        SgdStep {
            lr: 0.3,
            momentum: 0.0,
            weight_decay: 0.0,
        },
    ];

    /// A weight, its momentum buffer and three gradients, from `seed`.
    fn state(shape: &[usize], seed: u64) -> (Var, Var, Vec<Tensor>) {
        let weight = Var::from_tensor(&random(shape, seed)).unwrap();
        let velocity = Var::from_tensor(&random(shape, seed + 1)).unwrap();
        let grads = (2..5).map(|k| random(shape, seed + k)).collect();
        (weight, velocity, grads)
    }

    #[test]
    fn kernels_match_candle_ops_bit_for_bit() {
        // One chunk and less, several chunks with a tail.
        for (i, shape) in [&[10][..], &[64, 16, 3, 3], &[3, 70_001]]
            .iter()
            .enumerate()
        {
            for (j, step) in STEPS.iter().enumerate() {
                let seed = 10 * (i + j) as u64;
                let (w_fast, v_fast, grads) = state(shape, seed);
                let (w_ref, v_ref, _) = state(shape, seed);
                for grad in &grads {
                    step.apply(&w_fast, &v_fast, grad).unwrap();
                    step.composed(&param(&w_ref, &v_ref, grad)).unwrap();
                }
                let what = format!("{shape:?}, {step:?}");
                assert_eq!(values(&w_fast), values(&w_ref), "weights, {what}");
                assert_eq!(values(&v_fast), values(&v_ref), "momentum, {what}");
            }
        }
    }

    fn param<'a>(weight: &'a Var, velocity: &'a Var, grad: &'a Tensor) -> SgdParam<'a> {
        SgdParam {
            weight,
            velocity,
            grad,
        }
    }

    #[test]
    fn one_pass_over_many_parameters_is_each_ones_update() {
        // Several chunks with a tail, an empty tensor, one value, a strided
        // gradient, a gradient that starts inside its storage, and two
        // parameters with one gradient tensor.
        let shapes: [&[usize]; 6] = [&[3, 70_001], &[0, 4], &[1], &[5, 6], &[7, 3], &[7, 3]];
        let states: Vec<_> = shapes
            .iter()
            .zip(0..)
            .map(|(s, k)| state(s, 7 * k))
            .collect();
        let refs: Vec<_> = shapes
            .iter()
            .zip(0..)
            .map(|(s, k)| state(s, 7 * k))
            .collect();
        let strided = random(&[6, 5], 90).t().unwrap();
        let inside = random(&[30], 91)
            .narrow(0, 9, 21)
            .unwrap()
            .reshape((7, 3))
            .unwrap();
        let mut grads: Vec<Tensor> = states.iter().map(|s| s.2[0].clone()).collect();
        grads[3] = strided;
        grads[4] = inside.clone();
        grads[5] = inside;
        for step in STEPS {
            let params: Vec<_> = states
                .iter()
                .zip(&grads)
                .map(|((w, v, _), g)| param(w, v, g))
                .collect();
            step.apply_all(&params).unwrap();
            for ((w, v, _), g) in refs.iter().zip(&grads) {
                step.composed(&param(w, v, g)).unwrap();
            }
        }
        for (k, (got, want)) in states.iter().zip(&refs).enumerate() {
            assert_eq!(values(&got.0), values(&want.0), "weights of parameter {k}");
            assert_eq!(values(&got.1), values(&want.1), "momentum of parameter {k}");
        }
    }

    #[test]
    fn shared_storage_is_an_error_naming_both_tensors() {
        let (w, v, grads) = state(&[4, 3], 0);
        let (w2, v2, _) = state(&[4, 3], 5);
        let before = values(&w);
        let err = STEPS[0].apply(&w, &w, &grads[0]).unwrap_err().to_string();
        let want = "parameter 0's weight and parameter 0's momentum buffer share their storage";
        assert!(err.contains(want), "{err}");
        let twice = [
            param(&w2, &v2, &grads[0]),
            param(&w, &v, &grads[1]),
            param(&w, &v2, &grads[2]),
        ];
        let err = STEPS[0].apply_all(&twice).unwrap_err().to_string();
        assert!(err.contains("share their storage"), "{err}");
        let grad_is_weight = [param(&w, &v, w2.as_tensor()), param(&w2, &v2, &grads[0])];
        let err = STEPS[0].apply_all(&grad_is_weight).unwrap_err().to_string();
        assert!(
            err.contains("parameter 0's gradient and parameter 1's weight share their storage")
                || err.contains(
                    "parameter 1's weight and parameter 0's gradient share their storage"
                ),
            "{err}"
        );
        assert_eq!(values(&w), before, "nothing is written on an error");
    }

    #[test]
    fn one_step_is_the_formula() {
        let device = Device::Cpu;
        let weight = Var::new(&[1.0f32, -2.0], &device).unwrap();
        let velocity = Var::new(&[0.5f32, 0.0], &device).unwrap();
        let grad = Tensor::new(&[0.25f32, 1.0], &device).unwrap();
        let step = SgdStep {
            lr: 0.5,
            momentum: 0.5,
            weight_decay: 0.25,
        };
        step.apply(&weight, &velocity, &grad).unwrap();
        // v = 0.5 * v + grad + 0.25 * w = [0.25 + 0.25 + 0.25, 0 + 1 - 0.5]
        assert_eq!(values(&velocity), [0.75, 0.5]);
        // w = w - 0.5 * v
        assert_eq!(values(&weight), [0.625, -2.25]);
    }

    #[test]
    fn strided_gradient_gives_the_same_update() {
        let (w_a, v_a, _) = state(&[6, 5], 3);
        let (w_b, v_b, _) = state(&[6, 5], 3);
        let grad = random(&[5, 6], 9).t().unwrap();
        STEPS[0].apply(&w_a, &v_a, &grad).unwrap();
        STEPS[0]
            .apply(&w_b, &v_b, &grad.contiguous().unwrap())
            .unwrap();
        assert_eq!(values(&w_a), values(&w_b));
        assert_eq!(values(&v_a), values(&v_b));
    }

    #[test]
    fn mismatched_gradient_is_an_error_naming_both_shapes() {
        let (w, v, _) = state(&[4, 3], 0);
        let err = STEPS[0]
            .apply(&w, &v, &random(&[3, 4], 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gradient") && err.contains("[3, 4]") && err.contains("[4, 3]"));
        assert!(err.contains("parameter 0"), "{err}");
        let f64_grad = random(&[4, 3], 1).to_dtype(DType::F64).unwrap();
        let err = STEPS[0].apply(&w, &v, &f64_grad).unwrap_err().to_string();
        assert!(err.contains("F64") && err.contains("F32"), "{err}");
    }
}
