//! A net prepared for inference: [`ResNet::fold_for_inference`](crate::ResNet::fold_for_inference).

use candle_core::Tensor;
use resnet_ops::InferenceConv;

use crate::model::Block;
use crate::{ArchSpec, ModelError, Precision};

/// A [`ResNet`](crate::ResNet) in eval mode, folded for inference: what
/// evaluation and prediction run.
///
/// Each conv + batch norm pair is one [`InferenceConv`] whose weights and
/// bias hold the batch norm (running statistics, eps, weight and bias), the
/// projection shortcut's too. The ReLU after a conv, and in a residual
/// block the shortcut added before the last ReLU (`relu(conv(x) * w' + b' +
/// shortcut)`, for `conv2` of a basic block and `conv3` of a bottleneck),
/// are applied as the conv writes its output. On the CPU (f32) that saves
/// the batch norm's pass over every conv output and the residual join's
/// over every block output, and the weights are never converted again. On
/// other devices (CUDA) the folded weights are used as they are, by the
/// device's convolution followed by a bias add and the join or ReLU as
/// separate ops: the batch norms are still gone, nothing is fused (no GPU
/// has run it yet; the CPU tests run this composed path with the kernels
/// switched off). The fc head runs as a 1x1 conv too. A net folded from a
/// bf16 [`ResNet`](crate::ResNet) (see [`Precision`]) holds bf16 weights and
/// biases and runs in bf16 throughout, activations included, by the same
/// composed path (on the CPU its convolutions compute the bf16 values in
/// f32).
///
/// Logits differ from [`ResNet::forward_t`](crate::ResNet::forward_t) in
/// eval mode by rounding only. Like the model's convolutions, they do not
/// depend on the number of threads; an image's logits are the same alone
/// and in a batch unless the batch's size changes which kernel runs a
/// convolution (a wide 3x3 convolution runs Winograd's F(2x2, 3x3) from 256
/// 2x2 tiles per batch on, see `resnet_ops`), which changes them by
/// rounding.
#[derive(Debug)]
pub struct InferenceNet {
    pub(crate) spec: ArchSpec,
    pub(crate) stem: InferenceConv,
    pub(crate) stem_max_pool: bool,
    pub(crate) blocks: Vec<Block<InferenceConv>>,
    /// The fc head as a 1x1 conv.
    pub(crate) fc: InferenceConv,
    /// The precision of the net it was folded from: in bf16 its weights and
    /// activations are bf16 throughout.
    pub(crate) precision: Precision,
}

impl InferenceNet {
    /// The spec of the net this was folded from.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// Logits `(N, num_classes)` for images `(N, 3, H, W)`, as the unfolded
    /// net's eval mode computes them (up to rounding), in the images' dtype
    /// (a bf16 net takes f32 images, rounds them to bf16 and returns f32
    /// logits). No gradient flows through them.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let dtype = x.dtype();
        let x = x.to_dtype(self.precision.operand_dtype(dtype))?;
        let mut y = self.stem.forward(&x, None, true)?;
        if self.stem_max_pool {
            y = resnet_ops::max_pool_3x3_s2(&y)?;
        }
        for block in &self.blocks {
            y = block.forward(&y)?;
        }
        let features = resnet_ops::global_avg_pool(&y)?;
        let (n, c) = features.dims2()?;
        let logits = self
            .fc
            .forward(&features.reshape((n, c, 1, 1))?, None, false)?;
        let logits = logits.reshape((n, self.spec.num_classes))?;
        Ok(logits.to_dtype(dtype)?)
    }
}

impl Block<InferenceConv> {
    /// The block's output for input `x`: every conv with its ReLU, the last
    /// one with the shortcut added before it.
    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (last, first) = self
            .convs
            .split_last()
            .expect("a block has at least one conv");
        let mut y = x.clone();
        for conv in first {
            y = conv.forward(&y, None, true)?;
        }
        let project = |conv: &InferenceConv| Ok(conv.forward(x, None, false)?);
        let shortcut = self.shortcut.forward(x, project)?;
        Ok(last.forward(&y, shortcut.as_ref(), true)?)
    }
}
