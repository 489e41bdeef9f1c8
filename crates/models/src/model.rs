//! The [`ResNet`] module: any net of the zoo, built from its plan.

use std::num::NonZeroUsize;

use candle_core::{Device, Tensor, Var};
use candle_nn::ModuleT;

use resnet_ops::InferenceConv;

use crate::inference::InferenceNet;
use crate::init::Initializer;
use crate::layers::{After, ConvBn, Linear, NamedVar, Pass, RunningMoves, TensorKind, Trace};
use crate::plan::{BlockPlan, ShortcutPlan};
use crate::{ArchSpec, ModelError, Precision};

/// A block's shortcut as built: the plan's variants with their layers, a
/// conv of type `C` for projections ([`ConvBn`] as trained, [`InferenceConv`]
/// folded).
#[derive(Debug)]
pub(crate) enum ShortcutPath<C> {
    None,
    Identity,
    PadSubsample {
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
    Projection(C),
}

impl<C> ShortcutPath<C> {
    /// What the shortcut adds to the block's output for the block's input
    /// `x` (`project` runs a projection), or None in a plain block.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        project: impl FnOnce(&C) -> Result<Tensor, ModelError>,
    ) -> Result<Option<Tensor>, ModelError> {
        Ok(Some(match self {
            ShortcutPath::None => return Ok(None),
            ShortcutPath::Identity => x.clone(),
            ShortcutPath::PadSubsample {
                stride,
                pad_before,
                pad_after,
            } => resnet_ops::pad_subsample(x, *stride, *pad_before, *pad_after)?,
            ShortcutPath::Projection(conv) => project(conv)?,
        }))
    }
}

/// One residual (or plain) block, named `layerN.i`, of convs of type `C`
/// (see [`ShortcutPath`]).
#[derive(Debug)]
pub(crate) struct Block<C> {
    pub(crate) convs: Vec<C>,
    pub(crate) shortcut: ShortcutPath<C>,
}

impl Block<ConvBn> {
    fn new(prefix: &str, plan: &BlockPlan, init: &mut Initializer) -> Result<Self, ModelError> {
        let convs = plan
            .convs
            .iter()
            .enumerate()
            .map(|(k, conv)| {
                ConvBn::new(
                    format!("{prefix}.conv{}", k + 1),
                    format!("{prefix}.bn{}", k + 1),
                    *conv,
                    init,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shortcut = match plan.shortcut {
            ShortcutPlan::None => ShortcutPath::None,
            ShortcutPlan::Identity => ShortcutPath::Identity,
            ShortcutPlan::PadSubsample {
                stride,
                in_channels,
                out_channels,
            } => {
                // Symmetric zero channels, as the common PyTorch CIFAR ResNets
                // do, so that their weights behave identically here.
                let extra = out_channels - in_channels;
                ShortcutPath::PadSubsample {
                    stride,
                    pad_before: extra / 2,
                    pad_after: extra - extra / 2,
                }
            }
            ShortcutPlan::Projection(conv) => ShortcutPath::Projection(ConvBn::new(
                format!("{prefix}.downsample.0"),
                format!("{prefix}.downsample.1"),
                conv,
                init,
            )?),
        };
        Ok(Block { convs, shortcut })
    }

    fn forward_t(
        &self,
        x: &Tensor,
        pass: Pass,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor, ModelError> {
        // The shortcut first: the last batch norm adds it and applies the
        // block's ReLU in its own pass (without one, in plain nets, that
        // ReLU is the last conv's own).
        let project = |conv: &ConvBn| conv.forward_t(x, pass, trace.as_deref_mut(), After::Nothing);
        let shortcut = self.shortcut.forward(x, project)?;
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (k, conv) in self.convs.iter().enumerate() {
            let after = match &shortcut {
                Some(shortcut) if k == last => After::AddRelu(shortcut),
                _ => After::Relu,
            };
            y = conv.forward_t(&y, pass, trace.as_deref_mut(), after)?;
        }
        Ok(y)
    }

    /// The block with every batch norm folded into its conv.
    fn fold(&self) -> Result<Block<InferenceConv>, ModelError> {
        let convs = self
            .convs
            .iter()
            .map(ConvBn::fold)
            .collect::<Result<_, _>>()?;
        let shortcut = match &self.shortcut {
            ShortcutPath::None => ShortcutPath::None,
            ShortcutPath::Identity => ShortcutPath::Identity,
            &ShortcutPath::PadSubsample {
                stride,
                pad_before,
                pad_after,
            } => ShortcutPath::PadSubsample {
                stride,
                pad_before,
                pad_after,
            },
            ShortcutPath::Projection(conv) => ShortcutPath::Projection(conv.fold()?),
        };
        Ok(Block { convs, shortcut })
    }

    /// Every conv of the block (with its batch norm), the projection's too.
    fn convs_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        let projection = match &mut self.shortcut {
            ShortcutPath::Projection(conv) => Some(conv),
            _ => None,
        };
        self.convs.iter_mut().chain(projection)
    }

    fn collect(&self, out: &mut Vec<NamedVar>) {
        for conv in &self.convs {
            conv.collect(out);
        }
        if let ShortcutPath::Projection(conv) = &self.shortcut {
            conv.collect(out);
        }
    }
}

/// A ResNet or plain net of any spec, with torchvision tensor names.
///
/// `forward_t(x, train)` runs batch norm in train mode (batch statistics,
/// every running statistic updated once the pass has its output, all in one
/// pass of the update) or eval mode (running statistics).
#[derive(Debug)]
pub struct ResNet {
    spec: ArchSpec,
    stem: ConvBn,
    stem_max_pool: bool,
    stages: Vec<Vec<Block<ConvBn>>>,
    fc: Linear,
    frozen_backbone: bool,
    precision: Precision,
    channels_last: bool,
}

impl ResNet {
    /// Builds the net with freshly initialised weights (He fan-out for convs,
    /// BN weight 1 and bias 0, PyTorch's default for fc), drawn from `seed`.
    pub fn new(spec: &ArchSpec, seed: u64, device: &Device) -> Result<ResNet, ModelError> {
        let plan = spec.plan();
        let mut init = Initializer::new(seed, device);
        let stem = ConvBn::new("conv1".into(), "bn1".into(), plan.stem, &mut init)?;
        let mut stages = Vec::with_capacity(plan.stages.len());
        for (s, stage) in plan.stages.iter().enumerate() {
            let blocks = stage
                .iter()
                .enumerate()
                .map(|(i, block)| Block::new(&format!("layer{}.{i}", s + 1), block, &mut init))
                .collect::<Result<Vec<_>, _>>()?;
            stages.push(blocks);
        }
        let fc = Linear::new(plan.fc_in, plan.num_classes, &mut init)?;
        Ok(ResNet {
            spec: spec.clone(),
            stem,
            stem_max_pool: plan.stem_max_pool,
            stages,
            fc,
            frozen_backbone: false,
            precision: Precision::Fp32,
            channels_last: false,
        })
    }

    /// The net with train-mode batch norm computing its statistics over
    /// groups of `images` images of the batch instead of the whole batch:
    /// the paper's per-GPU batch norm on one device (CIFAR-10: 2 GPUs of 64
    /// images; ImageNet: 8 of 32). Each group is normalised exactly as if it
    /// were a batch of its own (a last, smaller group when the batch does not
    /// divide); the running statistics move once per step towards the mean
    /// of the groups' means and the mean of their unbiased variances. `None`
    /// (the default) uses the whole batch. Eval mode is unaffected.
    pub fn with_bn_group(mut self, images: Option<NonZeroUsize>) -> ResNet {
        for conv in self.convs_mut() {
            conv.set_bn_group(images);
        }
        self
    }

    /// The net with its convolutions and fc layer multiplying in `precision`
    /// (see [`Precision`]; the default is fp32). Its parameters stay f32.
    pub fn with_precision(mut self, precision: Precision) -> ResNet {
        for conv in self.convs_mut() {
            conv.set_precision(precision);
        }
        self.fc.precision = precision;
        self.precision = precision;
        self
    }

    /// The precision set by [`ResNet::with_precision`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The net with its activations channels-last or not (the default): its
    /// input is copied to channels-last ([`resnet_ops::to_channels_last`])
    /// and every layer keeps it so, as PyTorch's `channels_last` memory
    /// format does; cuDNN's tensor-core kernels want that layout on CUDA. The
    /// values are those of the NCHW net up to the order of sums; weights keep
    /// their `[O, C, K, K]` layout (each convolution reads a channels-last
    /// copy). On the CPU it costs a transposition around every convolution
    /// and batch norm.
    pub fn with_channels_last(mut self, channels_last: bool) -> ResNet {
        self.channels_last = channels_last;
        self
    }

    /// Whether the net runs channels-last ([`ResNet::with_channels_last`]).
    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// Every conv of the net with its batch norm, in network order.
    fn convs_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        let blocks = self.stages.iter_mut().flatten();
        std::iter::once(&mut self.stem).chain(blocks.flat_map(Block::convs_mut))
    }

    /// The net with its backbone (everything but the fc head) frozen or not:
    /// frozen, its batch norms run in eval mode even in training (their
    /// running statistics stay as loaded, as torchvision users get with
    /// `backbone.eval()`), no gradient flows into it, and
    /// [`ResNet::trainable_parameters`] is the head alone. Fine-tuning a
    /// pretrained net on a small dataset this way changes nothing but the head.
    pub fn with_frozen_backbone(mut self, frozen: bool) -> ResNet {
        self.frozen_backbone = frozen;
        self
    }

    /// The spec this net was built from.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// Logits `(N, num_classes)` for images `(N, 3, H, W)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.forward_impl(x, train, None)
    }

    /// Like [`ResNet::forward_t`], and also records every 3x3 layer's
    /// response and the multiply-adds in `trace` (used for the paper's Fig. 7).
    pub fn forward_traced(
        &self,
        x: &Tensor,
        train: bool,
        trace: &mut Trace,
    ) -> Result<Tensor, ModelError> {
        self.forward_impl(x, train, Some(trace))
    }

    fn forward_impl(
        &self,
        x: &Tensor,
        train: bool,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor, ModelError> {
        let moves = RunningMoves::default();
        let pass = if train && !self.frozen_backbone {
            Pass::Train(&moves)
        } else {
            Pass::Eval
        };
        let x = if self.channels_last {
            resnet_ops::to_channels_last(x)?
        } else {
            x.clone()
        };
        let mut y = self
            .stem
            .forward_t(&x, pass, trace.as_deref_mut(), After::Relu)?;
        if self.stem_max_pool {
            y = resnet_ops::max_pool_3x3_s2(&y)?;
        }
        for block in self.stages.iter().flatten() {
            y = block.forward_t(&y, pass, trace.as_deref_mut())?;
        }
        let mut features = resnet_ops::global_avg_pool(&y)?;
        if self.frozen_backbone {
            features = features.detach();
        }
        let logits = self.fc.forward(&features, trace)?;
        moves.apply()?;
        Ok(logits)
    }

    /// Every tensor of the model (parameters and BN running statistics) with
    /// its torchvision name, in network order.
    pub fn named_vars(&self) -> Vec<NamedVar> {
        let mut out = Vec::new();
        self.stem.collect(&mut out);
        for block in self.stages.iter().flatten() {
            block.collect(&mut out);
        }
        self.fc.collect(&mut out);
        out
    }

    /// The learnable parameters with their names: what an optimizer updates.
    pub fn parameters(&self) -> Vec<(String, Var)> {
        self.named_vars()
            .into_iter()
            .filter(|v| v.kind == TensorKind::Parameter)
            .map(|v| (v.name, v.var))
            .collect()
    }

    /// The parameters training updates: all of them, or the fc head's alone
    /// when the backbone is frozen ([`ResNet::with_frozen_backbone`]).
    pub fn trainable_parameters(&self) -> Vec<(String, Var)> {
        let mut params = self.parameters();
        if self.frozen_backbone {
            let head: Vec<String> = self.fc_names();
            params.retain(|(name, _)| head.contains(name));
        }
        params
    }

    /// The names of the fc head's tensors.
    fn fc_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.fc.collect(&mut out);
        out.into_iter().map(|v| v.name).collect()
    }

    /// Number of learnable scalars (BN running statistics excluded).
    pub fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The net as its eval mode computes it, prepared for inference: every
    /// batch norm folded into the conv before it (its running statistics,
    /// eps, weight and bias become the conv's weights and a per-channel
    /// bias, computed in f64 and rounded once), each residual block's
    /// shortcut and final ReLU fused into its last conv, the weights kept
    /// in the form the kernels read. Its logits are this net's
    /// `forward_t(x, false)` up to rounding, at less cost; see
    /// [`InferenceNet`] for what runs where.
    ///
    /// The folded net is a copy: later changes to this net's weights or
    /// statistics do not reach it.
    pub fn fold_for_inference(&self) -> Result<InferenceNet, ModelError> {
        let blocks = self
            .stages
            .iter()
            .flatten()
            .map(Block::fold)
            .collect::<Result<_, _>>()?;
        Ok(InferenceNet {
            spec: self.spec.clone(),
            stem: self.stem.fold()?,
            stem_max_pool: self.stem_max_pool,
            blocks,
            fc: self.fc.fold()?,
            precision: self.precision,
        })
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        ResNet::forward_t(self, xs, train).map_err(candle_core::Error::wrap)
    }
}
