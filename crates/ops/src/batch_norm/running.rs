//! The update of a batch norm's running statistics, in place.

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var};

use crate::args::{f32_data, update_in_place};
use crate::dispatch::has_native_kernel;
use crate::error::expect_like;
use crate::OpsError;

const OP: &str = "update_running_stat";

/// Moves a running statistic towards a batch's, as PyTorch's batch norm does:
/// `running = (1 - momentum) * running + momentum * (scale * batch)`, in
/// place. `scale` is 1 for the mean and `n / (n - 1)` for the variance,
/// which a running variance keeps unbiased.
///
/// f32 tensors on the CPU or CUDA take one pass of this crate's kernels;
/// everything else runs candle's ops and [`Var::set`]. Both round the same.
/// `batch` must have the shape and dtype of `running`, and not share its
/// storage.
pub fn update_running_stat(
    running: &Var,
    batch: &Tensor,
    momentum: f64,
    scale: f64,
) -> Result<(), OpsError> {
    let running_one = ("running one", running.as_tensor());
    expect_like(OP, ("batch statistic", batch), running_one)?;
    let batch = batch.detach();
    let fast = [running.as_tensor(), &batch]
        .iter()
        .all(|t| has_native_kernel(t.device(), t.dtype()));
    if fast {
        let batch = batch.contiguous()?;
        running.inplace_op2(&batch, &RunningStat { momentum, scale })?;
    } else {
        composed(running, &batch, momentum, scale)?;
    }
    Ok(())
}

/// The update with candle's ops.
fn composed(running: &Var, batch: &Tensor, momentum: f64, scale: f64) -> Result<(), OpsError> {
    let kept = running.as_tensor().affine(1.0 - momentum, 0.0)?;
    let added = batch.affine(scale, 0.0)?.affine(momentum, 0.0)?;
    running.set(&(kept + added)?)?;
    Ok(())
}

/// The in-place update `(running, batch)`.
struct RunningStat {
    momentum: f64,
    scale: f64,
}

impl InplaceOp2 for RunningStat {
    fn name(&self) -> &'static str {
        "update-running-stat"
    }

    fn cpu_fwd(
        &self,
        sr: &mut CpuStorage,
        lr: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<()> {
        let batch = f32_data(self.name(), sb, lb, lr.dims())?;
        let keep = (1.0 - self.momentum) as f32;
        let (momentum, scale) = (self.momentum as f32, self.scale as f32);
        update_in_place(self.name(), (sr, lr), batch, batch, |r, b, _| {
            r * keep + b * scale * momentum
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sr: &mut candle_core::CudaStorage,
        lr: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> candle_core::Result<()> {
        let scalars = [
            (1.0 - self.momentum) as f32,
            self.scale as f32,
            self.momentum as f32,
        ];
        crate::cuda::update(
            self.name(),
            "running_stat_f32",
            (sr, lr),
            &[(sb, lb)],
            &scalars,
        )
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::test_util::{random, values};

    #[test]
    fn kernel_matches_candle_ops_bit_for_bit() {
        for (i, channels) in [1, 16, 2048, 70_001].into_iter().enumerate() {
            for (momentum, scale) in [(0.1, 1.0), (0.1, 128.0 / 127.0), (0.01, 3.0 / 2.0)] {
                let seed = 10 * i as u64;
                let fast = Var::from_tensor(&random(&[channels], seed)).unwrap();
                let reference = Var::from_tensor(&random(&[channels], seed)).unwrap();
                for k in 1..4 {
                    let batch = random(&[channels], seed + k);
                    update_running_stat(&fast, &batch, momentum, scale).unwrap();
                    composed(&reference, &batch, momentum, scale).unwrap();
                }
                assert_eq!(
                    values(&fast),
                    values(&reference),
                    "{channels} channels, momentum {momentum}, scale {scale}"
                );
            }
        }
    }

    #[test]
    fn one_update_is_the_formula() {
        let running = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let batch = Tensor::new(&[3.0f32, -2.0], &Device::Cpu).unwrap();
        update_running_stat(&running, &batch, 0.25, 2.0).unwrap();
        // 0.75 * [1, 2] + 0.25 * 2 * [3, -2]
        assert_eq!(values(&running), [2.25, 0.5]);
    }

    #[test]
    fn other_dtypes_take_candle_ops() {
        let running = Var::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        let batch = Tensor::new(&[3.0f64, -2.0], &Device::Cpu).unwrap();
        update_running_stat(&running, &batch, 0.25, 2.0).unwrap();
        let got = running.as_tensor().to_vec1::<f64>().unwrap();
        assert_eq!(got, [2.25, 0.5]);
    }

    #[test]
    fn a_batch_of_another_shape_or_dtype_is_an_error_naming_both() {
        let running = Var::from_tensor(&random(&[4], 0)).unwrap();
        let err = update_running_stat(&running, &random(&[5], 1), 0.1, 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[5]") && err.contains("[4]"), "{err}");
        let f64_batch = random(&[4], 1).to_dtype(DType::F64).unwrap();
        let err = update_running_stat(&running, &f64_batch, 0.1, 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("F64") && err.contains("F32"), "{err}");
    }
}
