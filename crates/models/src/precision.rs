//! The precision a net's convolutions and fc layer multiply in.

use std::fmt;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The precision of a net's convolutions and fc layer: `Bf16` is mixed
/// precision as PyTorch's bf16 autocast runs it. Their inputs and weights are
/// rounded to bf16 and multiplied with f32 sums; their outputs are bf16
/// values, read back as f32. Everything else stays f32 in both: the
/// parameters (the optimizer's master copy, and what checkpoints and weight
/// files hold), batch norm (its statistics and its output), the pools, the
/// loss and the update. Gradients flowing back through a convolution or the
/// fc layer are rounded to bf16 there, as on a GPU. A bf16 net folded for
/// inference ([`crate::InferenceNet`]) runs in bf16 throughout, its
/// activations too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Precision {
    /// f32 throughout (the default).
    #[default]
    Fp32,
    /// Convolutions and the fc layer in bf16 with f32 sums.
    Bf16,
}

impl Precision {
    /// The dtype a tensor stored as `stored` is multiplied in: `stored`
    /// itself in fp32, bf16 in bf16.
    pub(crate) fn operand_dtype(self, stored: DType) -> DType {
        match self {
            Precision::Fp32 => stored,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// `op` on `x` and `w` in this precision, its output in `x`'s dtype: in
    /// bf16 both are rounded to bf16 first and the output (a bf16 tensor) is
    /// read back; in fp32, `op` on them as they are.
    pub(crate) fn apply(
        self,
        x: &Tensor,
        w: &Tensor,
        op: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor, resnet_ops::OpsError>,
    ) -> Result<Tensor, ModelError> {
        let dtype = self.operand_dtype(x.dtype());
        if dtype == x.dtype() && dtype == w.dtype() {
            return Ok(op(x, w)?);
        }
        // Casts that keep a channels-last input channels-last.
        let y = op(&resnet_ops::to_dtype(x, dtype)?, &w.to_dtype(dtype)?)?;
        Ok(resnet_ops::to_dtype(&y, x.dtype())?)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}
