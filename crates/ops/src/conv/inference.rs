//! A convolution prepared once for inference: a bias, an optional residual
//! and an optional ReLU applied as each output plane is written, and the
//! weights kept in the form the CPU kernels read, so that no forward pass
//! converts them again.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};

use super::epilogue::Epilogue;
use super::{cpu, direct, winograd, Geometry};
use crate::args::f32_data;
use crate::dispatch::has_kernel;
use crate::OpsError;

const OP: &str = "inference_conv2d";

/// The CPU form of an [`InferenceConv`]'s parameters.
#[derive(Debug)]
struct Packed {
    /// The weights as the im2col gemm reads them in place: `[O, C*K*K]`,
    /// row-major.
    weight: Vec<f32>,
    /// One value per output channel.
    bias: Vec<f32>,
    /// The weights transformed for Winograd's F(2x2, 3x3) (16/9 of their
    /// size), made by the first forward pass that runs Winograd and kept.
    winograd: OnceLock<Vec<f32>>,
    /// The weights in the direct 3x3 kernel's order, made by the first
    /// forward pass that runs it and kept.
    direct: OnceLock<Vec<f32>>,
}

/// A 2-d convolution with a per-output-channel bias, prepared once and run
/// many times in inference: `y = conv(x, weight) + bias`, then plus a
/// residual of `y`'s shape and a ReLU where asked, `max(y + residual, 0)`.
///
/// This is what a batch norm folded into the convolution before it leaves
/// (its scale in the weights, its shift in the bias), and what a residual
/// block's last convolution, its shortcut added and the ReLU after it
/// become. On f32 CPU tensors the bias, residual and ReLU are applied to
/// each output plane right after the convolution writes it (one pass over
/// values in cache instead of a pass over the whole output for each), and
/// the weights are stored as the kernels read them: the gemm's weight
/// matrix, and for convolutions that run Winograd's F(2x2, 3x3) or the
/// direct 3x3 kernel their transform or packing, made once on first use. Everywhere else (CUDA, other dtypes,
/// fast kernels switched off) it runs [`crate::conv2d`], then a broadcast add
/// of the bias and [`crate::add_relu`] or [`crate::relu`]: the same values,
/// in separate ops. No gradient flows through it.
#[derive(Debug, Clone)]
pub struct InferenceConv {
    /// The weight's dims, `[O, C, K, K]`.
    dims: [usize; 4],
    stride: usize,
    padding: usize,
    params: Params,
}

/// The parameters of an [`InferenceConv`], in one form only.
#[derive(Debug, Clone)]
enum Params {
    /// f32 on the CPU: as the kernels read them.
    Packed(Arc<Packed>),
    /// Anything else: the tensors, for candle's ops.
    Tensors { weight: Tensor, bias: Tensor },
}

impl InferenceConv {
    /// A convolution with `weight` `[O, C, K, K]` (square kernel), `bias`
    /// `[O]`, `stride` and zero `padding` on every side, as [`crate::conv2d`]
    /// takes them. A weight that is not 4-d is an [`OpsError::BadShape`]; a
    /// kernel that is not square, a bias of another length or a zero stride
    /// an [`OpsError::Incompatible`].
    pub fn new(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<InferenceConv, OpsError> {
        let &[o, c, k, k2] = weight.dims() else {
            return Err(OpsError::BadShape {
                op: OP,
                expected: "a 4-d [O, C, K, K] weight",
                got: weight.dims().to_vec(),
            });
        };
        let incompatible = |detail: String| Err(OpsError::Incompatible { op: OP, detail });
        if k != k2 || k == 0 {
            return incompatible(format!(
                "weight {:?} must have a square, non-empty kernel",
                weight.dims()
            ));
        }
        if bias.dims() != [o] {
            return incompatible(format!(
                "bias {:?} must have one value per output channel of weight {:?}",
                bias.dims(),
                weight.dims()
            ));
        }
        if stride == 0 {
            return incompatible("stride must be at least 1, got 0".to_string());
        }
        let on_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        let params = if on_cpu(weight) && on_cpu(bias) {
            Params::Packed(Arc::new(Packed {
                weight: weight.flatten_all()?.to_vec1()?,
                bias: bias.to_vec1()?,
                winograd: OnceLock::new(),
                direct: OnceLock::new(),
            }))
        } else {
            Params::Tensors {
                weight: weight.clone(),
                bias: bias.clone(),
            }
        };
        Ok(InferenceConv {
            dims: [o, c, k, k],
            stride,
            padding,
            params,
        })
    }

    /// `conv(x, weight) + bias`, plus `residual` if given (the output's
    /// shape), through a ReLU if `relu`. Shapes that do not fit are errors
    /// as for [`crate::conv2d`]; a residual of another shape than the output
    /// is an [`OpsError::Incompatible`] naming both.
    pub fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor, OpsError> {
        let g = Geometry::new(x.dims(), &self.dims, self.stride, self.padding)?;
        if let Some(r) = residual {
            if r.dims() != g.output_dims() {
                return Err(OpsError::Incompatible {
                    op: OP,
                    detail: format!(
                        "residual {:?} differs from the output {:?} of input {:?} and weight {:?}",
                        r.dims(),
                        g.output_dims(),
                        x.dims(),
                        self.dims
                    ),
                });
            }
        }
        let on_kernel = |t: &Tensor| has_kernel(t.device(), t.dtype());
        match &self.params {
            Params::Packed(packed) if on_kernel(x) && residual.is_none_or(on_kernel) => {
                let op = Fused { g, packed, relu };
                let x = x.contiguous()?;
                Ok(match residual {
                    Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op)?,
                    None => x.apply_op1_no_bwd(&op)?,
                })
            }
            _ => self.composed(x, residual, relu),
        }
    }

    /// The forward pass from separate ops, where there is no fused kernel
    /// (on the CPU, with the kernels switched off, from a copy of the
    /// packed parameters).
    fn composed(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor, OpsError> {
        let o = self.dims[0];
        let (weight, bias) = match &self.params {
            Params::Tensors { weight, bias } => (weight.clone(), bias.clone()),
            Params::Packed(p) => (
                Tensor::from_slice(&p.weight, &self.dims, &Device::Cpu)?,
                Tensor::from_slice(&p.bias, o, &Device::Cpu)?,
            ),
        };
        let y = crate::conv2d(x, &weight, self.stride, self.padding)?;
        let y = y.broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
        match (residual, relu) {
            (Some(r), true) => crate::add_relu(&y, r),
            (Some(r), false) => Ok((y + r)?),
            (None, true) => crate::relu(&y),
            (None, false) => Ok(y),
        }
    }
}

/// The fused forward pass on the CPU: `x -> y`, or `(x, residual) -> y`.
struct Fused<'a> {
    g: Geometry,
    packed: &'a Packed,
    relu: bool,
}

impl Fused<'_> {
    /// The output of input `x` with `residual` added, as the convolution
    /// kernels would compute it, Winograd, direct or im2col alike.
    fn run(&self, x: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
        let (g, p) = (&self.g, self.packed);
        let epilogue = Epilogue {
            bias: &p.bias,
            residual,
            relu: self.relu,
        };
        if winograd::applies_prepared(g) {
            let u = p
                .winograd
                .get_or_init(|| winograd::transform_weights(g, &p.weight));
            winograd::forward(g, x, u, Some(&epilogue))
        } else if direct::applies(g) {
            let packed = p.direct.get_or_init(|| direct::pack_weights(g, &p.weight));
            direct::forward(g, x, packed, Some(&epilogue))
        } else {
            cpu::im2col_forward(g, x, &p.weight, Some(&epilogue))
        }
    }

    fn output_shape(&self) -> Shape {
        Shape::from(self.g.output_dims().to_vec())
    }
}

impl CustomOp1 for Fused<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_data(OP, xs, xl, &self.g.input_dims())?;
        Ok((CpuStorage::F32(self.run(x, None)), self.output_shape()))
    }
}

impl CustomOp2 for Fused<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_data(OP, xs, xl, &self.g.input_dims())?;
        let residual = f32_data(OP, rs, rl, &self.g.output_dims())?;
        Ok((
            CpuStorage::F32(self.run(x, Some(residual))),
            self.output_shape(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close_above, random, values};

    /// `[n, c, h, w, o, k, stride, pad]`: 3x3 with and without stride, 1x1
    /// (pointwise and strided, as projection shortcuts), the 7x7/2 stem, one
    /// image (its gemm split over the threads), two for the direct 3x3
    /// kernel on CPUs with AVX-512 or AVX2 (cases 5 and 6: one image split over the
    /// threads, then a batch), and four that run Winograd's F(2x2, 3x3)
    /// (cases 7 to 10: odd sides, one image, a channel count that is not a
    /// multiple of 16, and one image too few tiles for Winograd in training).
    const CASES: [[usize; 8]; 13] = [
        [2, 3, 8, 8, 4, 3, 1, 1],
        [3, 5, 9, 7, 6, 3, 2, 1],
        [2, 8, 15, 15, 16, 1, 1, 0],
        [2, 8, 15, 15, 16, 1, 2, 0],
        [1, 3, 23, 21, 8, 7, 2, 3],
        [1, 16, 12, 12, 16, 3, 1, 1],
        [3, 32, 8, 8, 16, 3, 1, 1],
        [4, 64, 16, 15, 64, 3, 1, 1],
        [3, 64, 23, 17, 72, 3, 1, 1],
        [1, 72, 32, 32, 64, 3, 1, 1],
        [1, 64, 14, 14, 64, 3, 1, 1],
        // One image: the gemm split by blocks of output channels.
        [1, 24, 7, 7, 40, 1, 1, 0],
        [1, 16, 13, 13, 40, 3, 2, 1],
    ];

    /// candle's convolution, then the bias, the residual and the ReLU as
    /// separate candle ops.
    fn reference(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        [stride, pad]: [usize; 2],
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Tensor {
        let o = b.elem_count();
        let y = x.conv2d(w, pad, stride, 1, 1).unwrap();
        let mut y = y.broadcast_add(&b.reshape((1, o, 1, 1)).unwrap()).unwrap();
        if let Some(r) = residual {
            y = (y + r).unwrap();
        }
        if relu {
            y = y.relu().unwrap();
        }
        y
    }

    #[test]
    fn fused_conv_matches_candle_conv_then_bias_residual_and_relu() {
        for (i, &[n, c, h, w, o, k, s, p]) in CASES.iter().enumerate() {
            let g = Geometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
            assert_eq!(
                winograd::applies_prepared(&g),
                (7..11).contains(&i),
                "case {i} runs Winograd"
            );
            assert_eq!(winograd::applies(&g), (7..10).contains(&i), "case {i}");
            if direct::applies(&g) && !winograd::applies_prepared(&g) {
                assert!([5, 6].contains(&i), "case {i} runs the direct kernel");
            }
            let seed = 10 * i as u64;
            let (x, wt) = (random(&[n, c, h, w], seed), random(&[o, c, k, k], seed + 1));
            let (b, r) = (random(&[o], seed + 2), random(&g.output_dims(), seed + 3));
            let conv = InferenceConv::new(&wt, &b, s, p).unwrap();
            for (residual, relu) in [
                (None, false),
                (None, true),
                (Some(&r), false),
                (Some(&r), true),
            ] {
                let case = format!(
                    "case {i}: x {:?} w {:?} /{s} pad {p}, residual {}, relu {relu}",
                    [n, c, h, w],
                    [o, c, k, k],
                    residual.is_some()
                );
                let got = conv.forward(&x, residual, relu).unwrap();
                let want = reference(&x, &wt, &b, [s, p], residual, relu);
                assert_close_above(&got, &want, &case, 1e-6);
                // Again, with the Winograd or direct weights made by the
                // first call.
                let again = conv.forward(&x, residual, relu).unwrap();
                assert_eq!(values(&got), values(&again), "{case}: second call");
            }
        }
    }

    #[test]
    fn other_dtypes_run_the_composed_ops() {
        let (x, w, b) = (
            random(&[2, 4, 6, 5], 1),
            random(&[3, 4, 3, 3], 2),
            random(&[3], 3),
        );
        let r = random(&[2, 3, 3, 3], 4);
        let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let conv = InferenceConv::new(&f64(&w), &f64(&b), 2, 1).unwrap();
        let got = conv.forward(&f64(&x), Some(&f64(&r)), true).unwrap();
        assert_eq!(got.dtype(), DType::F64);
        let want = reference(&x, &w, &b, [2, 1], Some(&r), true);
        assert_close_above(&got.to_dtype(DType::F32).unwrap(), &want, "f64", 1e-6);
    }

    #[test]
    fn bad_shapes_are_errors_naming_them() {
        let (w, b) = (random(&[4, 3, 3, 3], 1), random(&[4], 2));
        let message =
            |r: Result<_, OpsError>| r.map(|_: InferenceConv| ()).unwrap_err().to_string();
        let err = message(InferenceConv::new(&w, &random(&[5], 3), 1, 1));
        assert!(err.contains("[5]") && err.contains("[4, 3, 3, 3]"), "{err}");
        let err = message(InferenceConv::new(&random(&[4, 27], 4), &b, 1, 1));
        assert!(err.contains("[4, 27]"), "{err}");
        let err = message(InferenceConv::new(&w, &b, 0, 1));
        assert!(err.contains("stride"), "{err}");
        let conv = InferenceConv::new(&w, &b, 2, 1).unwrap();
        let x = random(&[2, 3, 8, 8], 5);
        let err = conv
            .forward(&x, Some(&random(&[2, 4, 8, 8], 6)), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[2, 4, 8, 8]") && err.contains("[2, 4, 4, 4]"),
            "{err}"
        );
        let err = conv
            .forward(&random(&[2, 5, 8, 8], 7), None, true)
            .unwrap_err();
        assert!(err.to_string().contains("[2, 5, 8, 8]"), "{err}");
    }
}
