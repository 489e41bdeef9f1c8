//! The SGD update of one parameter, in place.
//!
//! Composed from candle's ops, an update with momentum and weight decay runs
//! six element-wise ops, each allocating a tensor, then copies the result
//! into the parameter: seven passes and six buffers per parameter and step,
//! and on a GPU seven kernel launches for each of a network's tensors. Here
//! f32 tensors on the CPU or CUDA take two in-place passes: one updates the
//! momentum buffer, one the weights. Each value is rounded as candle's ops
//! round it, so the results are the composed update's bit for bit.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

use crate::args::{f32_data, update_in_place};
use crate::dispatch::has_native_kernel;
use crate::error::expect_like;
use crate::OpsError;

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

impl SgdStep {
    /// Updates the momentum buffer `velocity` and then `weight`, in place,
    /// from `grad`. All three must have the weight's shape, dtype and device;
    /// the weight and the buffer must not share storage with each other or
    /// with `grad`.
    ///
    /// f32 tensors on the CPU or CUDA run this crate's kernels; everything
    /// else runs candle's ops and writes the results with [`Var::set`].
    pub fn apply(&self, weight: &Var, velocity: &Var, grad: &Tensor) -> Result<(), OpsError> {
        let like = ("weight", weight.as_tensor());
        expect_like("sgd", ("momentum buffer", velocity.as_tensor()), like)?;
        expect_like("sgd", ("gradient", grad), like)?;
        let fast = [weight.as_tensor(), velocity.as_tensor(), grad]
            .iter()
            .all(|t| has_native_kernel(t.device(), t.dtype()));
        if fast {
            let grad = grad.contiguous()?;
            velocity.inplace_op3(&grad, weight, &Velocity(*self))?;
            weight.inplace_op2(velocity, &Descend(*self))?;
        } else {
            self.composed(weight, velocity, grad)?;
        }
        Ok(())
    }

    /// The update with candle's ops.
    fn composed(&self, weight: &Var, velocity: &Var, grad: &Tensor) -> Result<(), OpsError> {
        let w = weight.as_tensor().detach();
        let mut g = grad.detach();
        if self.weight_decay != 0.0 {
            g = g.add(&w.affine(self.weight_decay, 0.0)?)?;
        }
        let v = if self.momentum != 0.0 {
            velocity.affine(self.momentum, 0.0)?.add(&g)?
        } else {
            g
        };
        weight.set(&w.sub(&v.affine(self.lr, 0.0)?)?)?;
        velocity.set(&v)?;
        Ok(())
    }
}

/// The momentum buffer's update, in place: `(v, grad, w)`.
struct Velocity(SgdStep);

impl InplaceOp3 for Velocity {
    fn name(&self) -> &'static str {
        "sgd-velocity"
    }

    fn cpu_fwd(
        &self,
        sv: &mut CpuStorage,
        lv: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<()> {
        let grad = f32_data(self.name(), sg, lg, lv.dims())?;
        let w = f32_data(self.name(), sw, lw, lv.dims())?;
        let (momentum, decay) = (self.0.momentum as f32, self.0.weight_decay as f32);
        update_in_place(self.name(), (sv, lv), grad, w, |v, g, w| {
            v * momentum + (g + w * decay)
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sv: &mut candle_core::CudaStorage,
        lv: &Layout,
        sg: &candle_core::CudaStorage,
        lg: &Layout,
        sw: &candle_core::CudaStorage,
        lw: &Layout,
    ) -> candle_core::Result<()> {
        let scalars = [self.0.momentum as f32, self.0.weight_decay as f32];
        let inputs = [(sg, lg), (sw, lw)];
        crate::cuda::update(self.name(), "sgd_velocity_f32", (sv, lv), &inputs, &scalars)
    }
}

/// The weights' update, in place: `(w, v)`.
struct Descend(SgdStep);

impl InplaceOp2 for Descend {
    fn name(&self) -> &'static str {
        "sgd-descend"
    }

    fn cpu_fwd(
        &self,
        sw: &mut CpuStorage,
        lw: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<()> {
        let v = f32_data(self.name(), sv, lv, lw.dims())?;
        let lr = self.0.lr as f32;
        update_in_place(self.name(), (sw, lw), v, v, |w, v, _| w - v * lr)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sw: &mut candle_core::CudaStorage,
        lw: &Layout,
        sv: &candle_core::CudaStorage,
        lv: &Layout,
    ) -> candle_core::Result<()> {
        let lr = self.0.lr as f32;
        crate::cuda::update(self.name(), "sgd_descend_f32", (sw, lw), &[(sv, lv)], &[lr])
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
                    step.composed(&w_ref, &v_ref, grad).unwrap();
                }
                let what = format!("{shape:?}, {step:?}");
                assert_eq!(values(&w_fast), values(&w_ref), "weights, {what}");
                assert_eq!(values(&v_fast), values(&v_ref), "momentum, {what}");
            }
        }
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
        let f64_grad = random(&[4, 3], 1).to_dtype(DType::F64).unwrap();
        let err = STEPS[0].apply(&w, &v, &f64_grad).unwrap_err().to_string();
        assert!(err.contains("F64") && err.contains("F32"), "{err}");
    }
}
