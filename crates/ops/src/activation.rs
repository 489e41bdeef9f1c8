//! ReLU and the residual join `relu(a + b)` as single-pass kernels, on the
//! CPU and (with the `cuda` feature) on NVIDIA GPUs.
//!
//! candle's `relu` runs on one core and its backward builds a mask with three
//! temporaries (`zeros_like`, `ge`, a dtype cast) before the multiply; a
//! residual join adds one more tensor and one more backward node for the sum.
//! Here each forward is one parallel pass writing one output, and each
//! backward is one parallel pass `dx = dy where y > 0, else 0` reading the
//! saved output. Element-wise, so results are bit-identical to candle's and
//! independent of the thread count, except the gradient where the input is
//! exactly 0: 0 here, as in PyTorch (candle's `relu` passes it through).
//! The CUDA kernels (`kernels/elementwise.cu`) compute the same values.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::args::{f32_data, CHUNK};
use crate::buffer::filled_by;
use crate::dispatch::{has_own_kernel, CudaKernel};
use crate::format::{in_memory_order, Format};
use crate::OpsError;

/// `max(x, 0)`, element-wise; channels-last if `x` is.
///
/// f32 tensors on the CPU or on CUDA run this crate's kernel, forward and
/// backward; everything else runs candle's `relu`.
pub fn relu(x: &Tensor) -> Result<Tensor, OpsError> {
    in_memory_order(x, |x| {
        if has_own_kernel(CudaKernel::Elementwise, x.device(), x.dtype()) {
            Ok(x.contiguous()?.apply_op1(Relu)?)
        } else {
            Ok(x.relu()?)
        }
    })
}

/// `max(a + b, 0)`, element-wise: the join of a residual block. `a` and `b`
/// must have the same shape. The output is channels-last if `a` is (`b` is
/// then copied to channels-last if it is not).
///
/// f32 tensors on the CPU or on CUDA run this crate's kernel, forward and
/// backward; everything else runs candle's `add` and `relu`.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor, OpsError> {
    if a.dims() != b.dims() {
        return Err(OpsError::Incompatible {
            op: "add_relu",
            detail: format!("shapes {:?} and {:?} differ", a.dims(), b.dims()),
        });
    }
    let fast = has_own_kernel(CudaKernel::Elementwise, a.device(), a.dtype())
        && has_own_kernel(CudaKernel::Elementwise, b.device(), b.dtype());
    // In `a`'s format: `b` is copied into it if it differs.
    let format = Format::of(a);
    let (a, b) = (format.arg(a)?, format.arg(b)?);
    format.result(if fast {
        a.apply_op2(&b, AddRelu)?
    } else {
        (a + b)?.relu()?
    })
}

/// `f(a[i], b[i])` for every `i`, in parallel chunks.
fn par_zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "par_zip_map: operands differ in length");
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(k, chunk)| {
                let at = k * CHUNK;
                for ((o, u), v) in chunk.iter_mut().zip(&a[at..]).zip(&b[at..]) {
                    o.write(f(*u, *v));
                }
            })
    };
    // SAFETY: the chunks cover `out`, and each is zipped with inputs at least
    // as long (`a` and `b` have its length), so every value is written.
    unsafe { filled_by(a.len(), fill) }
}

/// A binary custom op's CPU forward: `f` over two tensors of the first's shape.
fn zip_forward(
    op: &'static str,
    (sa, la): (&CpuStorage, &Layout),
    (sb, lb): (&CpuStorage, &Layout),
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let a = f32_data(op, sa, la, la.dims())?;
    let b = f32_data(op, sb, lb, la.dims())?;
    Ok((CpuStorage::F32(par_zip_map(a, b, f)), la.shape().clone()))
}

/// The forward ReLU.
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_forward(self.name(), (s, l), (s, l), |x, _| x.max(0.0))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::map(self.name(), "relu_f32", &[(s, l)])?;
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(relu_grad(dy, y)?))
    }
}

/// The forward residual join `max(a + b, 0)`.
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add_relu"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_forward(self.name(), (sa, la), (sb, lb), |a, b| (a + b).max(0.0))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sa: &candle_core::CudaStorage,
        la: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::map(self.name(), "add_relu_f32", &[(sa, la), (sb, lb)])?;
        Ok((y, la.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_grad(dy, y)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// The gradient through a ReLU whose output was `y`: `dy` where `y > 0`,
/// else 0, in one pass (f32 tensors on the CPU or CUDA only).
pub(crate) fn relu_grad(dy: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    dy.contiguous()?.apply_op2_no_bwd(y, &ReluGrad)
}

/// The ReLU gradient `(dy, y) -> dy where y > 0, else 0`.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu_grad"
    }

    fn cpu_fwd(
        &self,
        sd: &CpuStorage,
        ld: &Layout,
        sy: &CpuStorage,
        ly: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_forward(self.name(), (sd, ld), (sy, ly), |g, y| {
            if y > 0.0 {
                g
            } else {
                0.0
            }
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sd: &candle_core::CudaStorage,
        ld: &Layout,
        sy: &candle_core::CudaStorage,
        ly: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let dx = crate::cuda::map(self.name(), "relu_grad_f32", &[(sd, ld), (sy, ly)])?;
        Ok((dx, ld.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::test_util::{random, values};

    /// Shapes with odd sizes, one below a chunk, and several chunks with a tail.
    const SHAPES: [&[usize]; 4] = [
        &[1, 1, 1, 1],
        &[3, 5, 7, 9],
        &[2, 16, 32, 32],
        &[5, 17, 31, 29],
    ];

    #[test]
    fn relu_matches_candle_values_and_gradients() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let x = Var::from_tensor(&random(shape, i as u64)).unwrap();
            let dy = random(shape, 100 + i as u64);
            let ours = relu(&x).unwrap();
            let theirs = x.relu().unwrap();
            assert_eq!(values(&ours), values(&theirs), "relu {shape:?}");
            let g_ours = (&ours * &dy)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_theirs = (&theirs * &dy)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert_eq!(
                values(g_ours.get(&x).unwrap()),
                values(g_theirs.get(&x).unwrap()),
                "relu gradient {shape:?}"
            );
        }
    }

    #[test]
    fn add_relu_matches_candle_values_and_both_gradients() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let a = Var::from_tensor(&random(shape, i as u64)).unwrap();
            let b = Var::from_tensor(&random(shape, 10 + i as u64)).unwrap();
            let dy = random(shape, 100 + i as u64);
            let ours = add_relu(&a, &b).unwrap();
            let theirs = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
            assert_eq!(values(&ours), values(&theirs), "add_relu {shape:?}");
            let g_ours = (&ours * &dy)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_theirs = (&theirs * &dy)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, v) in [("a", &a), ("b", &b)] {
                assert_eq!(
                    values(g_ours.get(v).unwrap()),
                    values(g_theirs.get(v).unwrap()),
                    "add_relu gradient of {name} {shape:?}"
                );
            }
        }
    }

    #[test]
    fn add_relu_rejects_different_shapes_naming_both() {
        let err = add_relu(&random(&[1, 2, 3, 3], 0), &random(&[1, 2, 3, 4], 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[1, 2, 3, 3]") && err.contains("[1, 2, 3, 4]"),
            "{err}"
        );
    }

    #[test]
    fn gradient_at_exactly_zero_is_zero_as_in_pytorch() {
        let x = Var::new(&[-1f32, 0.0, 2.0], &candle_core::Device::Cpu).unwrap();
        let grads = relu(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(values(grads.get(&x).unwrap()), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn non_contiguous_input_gives_the_same_result() {
        let x = random(&[2, 3, 4, 5], 7);
        let transposed = x.transpose(2, 3).unwrap();
        assert_eq!(
            values(&relu(&transposed).unwrap()),
            values(&transposed.relu().unwrap())
        );
    }
}
