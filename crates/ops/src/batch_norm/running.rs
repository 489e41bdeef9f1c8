//! The update of batch norms' running statistics, in place.

use candle_core::{Tensor, Var};

use crate::multi_tensor::{self, Kernel, Tensors};
use crate::OpsError;

const OP: &str = "update_running_stat";

/// One running statistic's move ([`update_running_stats`]): towards the
/// batch's statistic `batch` times `scale`.
#[derive(Debug, Clone, Copy)]
pub struct RunningUpdate<'a> {
    /// The running statistic, updated in place.
    pub running: &'a Var,
    /// The batch's statistic, of `running`'s shape and dtype.
    pub batch: &'a Tensor,
    /// 1 for a mean, `n / (n - 1)` for a variance over `n` values, which a
    /// running variance keeps unbiased.
    pub scale: f64,
}

/// Moves a running statistic towards a batch's, as PyTorch's batch norm does:
/// `running = (1 - momentum) * running + momentum * (scale * batch)`, in
/// place: [`update_running_stats`] of one statistic.
pub fn update_running_stat(
    running: &Var,
    batch: &Tensor,
    momentum: f64,
    scale: f64,
) -> Result<(), OpsError> {
    update_running_stats(
        &[RunningUpdate {
            running,
            batch,
            scale,
        }],
        momentum,
    )
}

/// Moves every running statistic of `updates` towards its batch's:
/// `running = (1 - momentum) * running + momentum * (scale * batch)`, in
/// place. No running statistic may share storage with another or with a
/// batch statistic (an error says which do).
///
/// When every tensor is f32 on one CPU or CUDA device, one pass of this
/// crate's kernels updates them all (on CUDA one launch, for all of a
/// network's batch norms at once); otherwise each runs candle's ops and
/// [`Var::set`]. Both round the same.
pub fn update_running_stats(updates: &[RunningUpdate], momentum: f64) -> Result<(), OpsError> {
    let scales: Vec<[u64; 1]> = updates
        .iter()
        .map(|u| [u64::from((u.scale as f32).to_bits())])
        .collect();
    let tensors: Vec<Tensors<1, 1>> = updates
        .iter()
        .zip(&scales)
        .map(|(u, scale)| Tensors {
            written: [("running one", u.running.as_tensor())],
            read: [("batch statistic", u.batch)],
            words: scale,
        })
        .collect();
    if !multi_tensor::fits_one_pass(OP, "statistic", &tensors)? {
        return updates
            .iter()
            .try_for_each(|u| composed(u.running, &u.batch.detach(), momentum, u.scale));
    }
    let keep = (1.0 - momentum) as f32;
    let momentum = momentum as f32;
    let kernel = Kernel {
        name: "running_stats_f32",
        scalars: &[keep, momentum],
    };
    multi_tensor::update(OP, "statistic", &tensors, kernel, |chunk, [r], [b]| {
        let scale = f32::from_bits(scales[chunk.tensor][0] as u32);
        for (r, b) in r.iter_mut().zip(b) {
            *r = *r * keep + *b * scale * momentum;
        }
    })
}

/// The update with candle's ops (none for an empty tensor, which candle's
/// ops hand back as it is, a value [`Var::set`] refuses).
fn composed(running: &Var, batch: &Tensor, momentum: f64, scale: f64) -> Result<(), OpsError> {
    if running.elem_count() == 0 {
        return Ok(());
    }
    let kept = running.as_tensor().affine(1.0 - momentum, 0.0)?;
    let added = batch.affine(scale, 0.0)?.affine(momentum, 0.0)?;
    running.set(&(kept + added)?)?;
    Ok(())
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
    fn one_pass_over_many_statistics_is_each_ones_update() {
        // Several chunks with a tail, an empty statistic, one value, a
        // strided batch statistic, and two statistics with one batch tensor.
        let lens = [70_001, 0, 1, 6, 5, 5];
        let scales = [1.0, 2.0, 128.0 / 127.0, 3.0 / 2.0, 1.0, 5.0 / 4.0];
        let fresh = || -> Vec<Var> {
            (0..)
                .zip(lens)
                .map(|(k, n)| Var::from_tensor(&random(&[n], k)).unwrap())
                .collect()
        };
        let (fast, reference) = (fresh(), fresh());
        for step in 0..3 {
            let mut batches: Vec<Tensor> = (0..)
                .zip(lens)
                .map(|(k, n)| random(&[n], 100 * (step + 1) + k))
                .collect();
            let strided = random(&[6, 2], 50 + step).narrow(1, 0, 1).unwrap();
            batches[3] = strided.squeeze(1).unwrap();
            assert!(!batches[3].is_contiguous());
            batches[5] = batches[4].clone();
            let momentum = [0.1, 0.01, 0.5][step as usize];
            let updates: Vec<_> = fast
                .iter()
                .zip(&batches)
                .zip(scales)
                .map(|((running, batch), scale)| RunningUpdate {
                    running,
                    batch,
                    scale,
                })
                .collect();
            update_running_stats(&updates, momentum).unwrap();
            for ((running, batch), scale) in reference.iter().zip(&batches).zip(scales) {
                composed(running, batch, momentum, scale).unwrap();
            }
        }
        for (k, (got, want)) in fast.iter().zip(&reference).enumerate() {
            assert_eq!(values(got), values(want), "statistic {k}");
        }
    }

    #[test]
    fn a_running_statistic_shared_with_another_operand_is_an_error() {
        let running = Var::from_tensor(&random(&[4], 0)).unwrap();
        let other = Var::from_tensor(&random(&[4], 1)).unwrap();
        let update = |running, batch| RunningUpdate {
            running,
            batch,
            scale: 1.0,
        };
        let before = values(&running);
        let err = update_running_stats(&[update(&running, running.as_tensor())], 0.1)
            .unwrap_err()
            .to_string();
        let want = "statistic 0's running one and statistic 0's batch statistic share";
        assert!(err.contains(want), "{err}");
        let twice = [
            update(&running, other.as_tensor()),
            update(&running, other.as_tensor()),
        ];
        let err = update_running_stats(&twice, 0.1).unwrap_err().to_string();
        assert!(err.contains("share their storage"), "{err}");
        assert_eq!(values(&running), before, "nothing is written on an error");
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
