//! The training loss: cross-entropy, optionally with label smoothing.

use candle_core::Tensor;

use crate::Result;

/// Mean cross-entropy of `logits` `(N, K)` against class indices `labels`
/// `(N,)`, with the targets smoothed by `smoothing` (ε) as PyTorch's
/// `CrossEntropyLoss(label_smoothing=ε)`: the target puts `1 - ε + ε/K` on
/// the labelled class and `ε/K` on every other one. ε = 0 is plain
/// cross-entropy (the paper's loss). One op each way
/// ([`resnet_ops::cross_entropy`]).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    Ok(resnet_ops::cross_entropy(logits, labels, smoothing)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn smoothing_mixes_the_labelled_class_with_the_uniform_target() {
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        // log-softmax by hand, then PyTorch's formula.
        let rows = [[2.0f64, 0.0, -1.0], [0.5, 0.5, 3.0]];
        let log_p: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let z = r.iter().map(|v| v.exp()).sum::<f64>().ln();
                r.iter().map(|v| v - z).collect()
            })
            .collect();
        let eps = 0.1;
        let expected = [0usize, 1]
            .iter()
            .zip(&log_p)
            .map(|(&y, lp)| -(1.0 - eps) * lp[y] - eps * lp.iter().sum::<f64>() / 3.0)
            .sum::<f64>()
            / 2.0;
        let got = cross_entropy(&logits, &labels, eps)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (f64::from(got) - expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
        let plain = cross_entropy(&logits, &labels, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let expected_plain = -(log_p[0][0] + log_p[1][1]) / 2.0;
        assert!((f64::from(plain) - expected_plain).abs() < 1e-6);
        assert!(
            got > plain,
            "smoothing raises the loss of confident right answers"
        );
    }
}
