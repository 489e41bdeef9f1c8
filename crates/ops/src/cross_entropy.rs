//! The training loss: mean cross-entropy over a batch's logits, with label
//! smoothing, as one op each way.
//!
//! Composed from candle's ops, the loss and its gradient take about twenty
//! passes (the log-softmax's maximum, difference, exponential, sum and
//! logarithm, the gather of the labelled classes, the mean; then each one's
//! gradient), on a GPU as many kernel launches a step. Here f32 logits on
//! the CPU or CUDA take one pass forward and one backward: each row's
//! maximum, sum of exponentials and loss in index order, on CUDA one thread
//! a row (`kernels/loss.cu`), then the rows' losses summed in order.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::args::{contiguous_range, f32_data};
use crate::dispatch::{has_own_kernel, CudaKernel};
use crate::OpsError;

const OP: &str = "cross_entropy";

/// Mean cross-entropy of `logits` `(N, K)` against class indices `labels`
/// `(N,)`, with the targets smoothed by `smoothing` (ε) as PyTorch's
/// `CrossEntropyLoss(label_smoothing=ε)`: the target puts `1 - ε + ε/K` on
/// the labelled class and `ε/K` on every other one. ε = 0 is plain
/// cross-entropy (the paper's loss). A scalar, differentiable in `logits`.
///
/// f32 logits with u32 labels on the CPU or CUDA run this crate's kernels;
/// anything else runs candle's ops. A label of `K` or more is an error on
/// the CPU; on CUDA, where reading the labels back would stall the GPU, it
/// makes the loss NaN (a training run stops on it).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor, OpsError> {
    let (n, k) = match (logits.dims(), labels.dims()) {
        (&[n, k], &[m]) if n == m && k > 0 && n > 0 => (n, k),
        _ => {
            return Err(OpsError::Incompatible {
                op: OP,
                detail: format!(
                    "expected logits (N, K) with K > 0 and N > 0 labels (N,), got logits {:?} and labels {:?}",
                    logits.dims(),
                    labels.dims()
                ),
            })
        }
    };
    let fast = logits.dtype() == DType::F32
        && labels.dtype() == DType::U32
        && has_own_kernel(CudaKernel::Loss, logits.device(), DType::F32)
        && logits.device().same_device(labels.device());
    if !fast {
        return composed(logits, labels, smoothing);
    }
    let op = CrossEntropy(Loss {
        rows: n,
        classes: k,
        smoothing: smoothing as f32,
    });
    Ok(logits.contiguous()?.apply_op2(&labels.contiguous()?, op)?)
}

/// The loss with candle's ops.
fn composed(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor, OpsError> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_sum)?;
    let labels = labels.to_dtype(DType::U32)?.unsqueeze(1)?;
    let nll = log_p.gather(&labels, 1)?.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = log_p.mean(D::Minus1)?.neg()?.mean_all()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// The loss of one row of `k` logits `z` with label `label` (checked to be
/// below `k`), and the row's maximum and sum of exponentials, which the
/// gradient reuses; in index order, as the CUDA kernel computes them.
fn row_loss(z: &[f32], label: usize, smoothing: f32) -> (f32, f32, f32) {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum_exp = z.iter().fold(0f32, |s, &v| s + (v - max).exp());
    let total = z.iter().fold(0f32, |s, &v| s + v);
    let lse = max + sum_exp.ln();
    let loss = lse - (1.0 - smoothing) * z[label] - smoothing * (total / z.len() as f32);
    (loss, max, sum_exp)
}

/// What both ops of the loss know: the logits' dims `(rows, classes)` and
/// the smoothing.
#[derive(Debug, Clone, Copy)]
struct Loss {
    rows: usize,
    classes: usize,
    smoothing: f32,
}

impl Loss {
    /// The logits and the labels on the CPU, checked to hold the dims and
    /// each label to be below `classes`.
    fn cpu_args<'a>(
        self,
        op: &'static str,
        (s1, l1): (&'a CpuStorage, &Layout),
        (s2, l2): (&'a CpuStorage, &Layout),
    ) -> candle_core::Result<(&'a [f32], &'a [u32])> {
        let (n, k) = (self.rows, self.classes);
        let logits = f32_data(op, s1, l1, &[n, k])?;
        let CpuStorage::U32(data) = s2 else {
            candle_core::bail!("{op}: expected u32 labels, got {:?}", s2.dtype());
        };
        let (start, end) = contiguous_range(op, l2, &[n])?;
        let labels = &data[start..end];
        if let Some((row, label)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= k) {
            candle_core::bail!("{op}: label {label} of row {row} is not one of the {k} classes");
        }
        Ok((logits, labels))
    }

    /// The logits and the labels on CUDA, checked to hold the dims.
    #[cfg(feature = "cuda")]
    fn cuda_args<'a>(
        self,
        op: &'static str,
        (s1, l1): (&'a candle_core::CudaStorage, &Layout),
        (s2, l2): (&'a candle_core::CudaStorage, &Layout),
    ) -> candle_core::Result<(
        candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>,
        candle_core::cuda_backend::cudarc::driver::CudaView<'a, u32>,
    )> {
        let logits = crate::args::cuda_view::<f32>(op, s1, l1, &[self.rows, self.classes])?;
        let labels = crate::args::cuda_view::<u32>(op, s2, l2, &[self.rows])?;
        Ok((logits, labels))
    }
}

/// The forward op: `(logits, labels)` to the mean loss.
struct CrossEntropy(Loss);

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Loss {
            rows: n,
            classes: k,
            smoothing,
        } = self.0;
        let (logits, labels) = self.0.cpu_args(self.name(), (s1, l1), (s2, l2))?;
        let rows: Vec<f32> = logits
            .par_chunks(k)
            .zip(labels)
            .map(|(z, &label)| row_loss(z, label as usize, smoothing).0)
            .collect();
        let total = rows.iter().fold(0f32, |s, &v| s + v);
        Ok((CpuStorage::F32(vec![total / n as f32]), Shape::from(())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let Loss {
            rows: n,
            classes: k,
            smoothing,
        } = self.0;
        let (logits, labels) = self.0.cuda_args(self.name(), (s1, l1), (s2, l2))?;
        let loss = crate::cuda::cross_entropy(&s1.device, (&logits, &labels), (n, k), smoothing)?;
        Ok((loss, Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        _loss: &Tensor,
        dloss: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = CrossEntropyGrad(self.0);
        let dlogits = logits.apply_op3_no_bwd(labels, &dloss.contiguous()?, &grad)?;
        Ok((Some(dlogits), None))
    }
}

/// The backward op: `(logits, labels, dloss)` to the logits' gradient,
/// `(softmax(z) - target) * dloss / N` row by row.
struct CrossEntropyGrad(Loss);

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k, eps) = (self.0.rows, self.0.classes, self.0.smoothing);
        let (logits, labels) = self.0.cpu_args(self.name(), (s1, l1), (s2, l2))?;
        let scale = f32_data(self.name(), s3, l3, &[])?[0] / n as f32;
        let uniform = eps / k as f32;
        let mut out = vec![0f32; n * k];
        out.par_chunks_mut(k)
            .zip(logits.par_chunks(k))
            .zip(labels)
            .for_each(|((g, z), &label)| {
                let (_, max, sum_exp) = row_loss(z, label as usize, eps);
                for (j, (g, &v)) in g.iter_mut().zip(z).enumerate() {
                    let p = (v - max).exp() / sum_exp;
                    let target = (if j == label as usize { 1.0 - eps } else { 0.0 }) + uniform;
                    *g = (p - target) * scale;
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (n, k) = (self.0.rows, self.0.classes);
        let (logits, labels) = self.0.cuda_args(self.name(), (s1, l1), (s2, l2))?;
        let dloss = crate::args::cuda_view::<f32>(self.name(), s3, l3, &[])?;
        let grad = crate::cuda::cross_entropy_grad(
            &s1.device,
            (&logits, &labels, &dloss),
            (n, k),
            self.0.smoothing,
        )?;
        Ok((grad, Shape::from((n, k))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::test_util::{assert_close_above, random, values};

    fn labels(n: usize, k: usize, seed: u32) -> Tensor {
        let l: Vec<u32> = (0..n as u32).map(|i| (i * 7 + seed) % k as u32).collect();
        Tensor::new(l, &Device::Cpu).unwrap()
    }

    #[test]
    fn kernels_match_candle_ops_values_and_gradients() {
        for (i, (n, k)) in [(1, 1), (4, 10), (128, 10), (33, 1000)]
            .into_iter()
            .enumerate()
        {
            for smoothing in [0.0, 0.1] {
                let logits = (random(&[n, k], i as u64) * 4.0).unwrap();
                let labels = labels(n, k, i as u32);
                let run = |f: &dyn Fn(&Tensor) -> Tensor| {
                    let var = Var::from_tensor(&logits).unwrap();
                    let loss = f(var.as_tensor());
                    let grads = (&loss * 3.0).unwrap().backward().unwrap();
                    (loss, grads.get(&var).unwrap().clone())
                };
                let fast = run(&|z| cross_entropy(z, &labels, smoothing).unwrap());
                let slow = run(&|z| composed(z, &labels, smoothing).unwrap());
                let what = format!("{n}x{k}, smoothing {smoothing}");
                assert_eq!(fast.0.dims(), [0usize; 0], "{what}: a scalar");
                assert_close_above(&fast.0, &slow.0, &format!("loss, {what}"), 1e-3);
                assert_close_above(&fast.1, &slow.1, &format!("gradient, {what}"), 1e-6);
            }
        }
    }

    #[test]
    fn one_row_is_the_formula() {
        // logits [0, ln 3]: softmax [1/4, 3/4]; label 1.
        let z = Tensor::new(&[[0f32, 3f32.ln()]], &Device::Cpu).unwrap();
        let label = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let loss = cross_entropy(&z, &label, 0.0).unwrap();
        let want = -(0.75f32.ln());
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
        let var = Var::from_tensor(&z).unwrap();
        let grads = cross_entropy(&var, &label, 0.0)
            .unwrap()
            .backward()
            .unwrap();
        let g = values(grads.get(&var).unwrap());
        assert!(
            (g[0] - 0.25).abs() < 1e-6 && (g[1] + 0.25).abs() < 1e-6,
            "{g:?}"
        );
    }

    #[test]
    fn other_dtypes_take_candle_ops() {
        let z = random(&[3, 5], 1).to_dtype(DType::F64).unwrap();
        let loss = cross_entropy(&z, &labels(3, 5, 0), 0.1).unwrap();
        let want = composed(&z, &labels(3, 5, 0), 0.1).unwrap();
        assert_eq!(loss.dtype(), DType::F64);
        assert_eq!(
            loss.to_scalar::<f64>().unwrap(),
            want.to_scalar::<f64>().unwrap()
        );
        let i64_labels = labels(3, 5, 0).to_dtype(DType::I64).unwrap();
        let z = random(&[3, 5], 1);
        let a = cross_entropy(&z, &i64_labels, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let b = cross_entropy(&z, &labels(3, 5, 0), 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn bad_shapes_and_labels_are_errors_naming_them() {
        let z = random(&[3, 5], 1);
        let err = cross_entropy(&z, &labels(4, 5, 0), 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[3, 5]") && err.contains("[4]"), "{err}");
        let err = cross_entropy(&random(&[3], 1), &labels(3, 5, 0), 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("logits (N, K)"), "{err}");
        let bad = Tensor::new(&[0u32, 5, 1], &Device::Cpu).unwrap();
        let err = cross_entropy(&z, &bad, 0.0).unwrap_err().to_string();
        assert!(
            err.contains("label 5 of row 1") && err.contains("5 classes"),
            "{err}"
        );
    }
}
