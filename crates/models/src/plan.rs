//! The spec expanded into concrete layers: every conv with its channels,
//! kernel and stride. The model and the counters are both built from this.

use crate::{ArchSpec, BlockKind, Shortcut, Stem, StridePlacement};

/// One convolution (always bias-free and followed by batch norm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPlan {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

impl ConvPlan {
    fn new(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> ConvPlan {
        ConvPlan {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
        }
    }

    /// Output side length for an input side length.
    pub fn output_size(&self, input: usize) -> usize {
        (input + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Learnable parameters of the conv alone (weights, no bias).
    pub fn params(&self) -> usize {
        self.in_channels * self.out_channels * self.kernel * self.kernel
    }

    /// Multiply-adds for one image with the given input side length.
    pub fn macs(&self, input: usize) -> usize {
        let out = self.output_size(input);
        out * out * self.params()
    }
}

/// How a block's input reaches its addition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortcutPlan {
    /// A plain block: no shortcut, no addition.
    None,
    /// The input unchanged.
    Identity,
    /// Option A where the shape changes: subsample by `stride`, zero-pad channels.
    PadSubsample {
        /// Spatial subsampling factor (1 or 2).
        stride: usize,
        /// Channels of the block's input.
        in_channels: usize,
        /// Channels of the block's output.
        out_channels: usize,
    },
    /// A 1x1 conv + BN projection (`downsample.0` and `downsample.1`).
    Projection(ConvPlan),
}

/// One block: its convs in order (`conv1`, `conv2`[, `conv3`]) and its shortcut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPlan {
    /// The residual function's convs, each followed by BN (and ReLU but the last).
    pub convs: Vec<ConvPlan>,
    /// How the input is added back.
    pub shortcut: ShortcutPlan,
}

impl BlockPlan {
    /// Channels of the block's output.
    pub fn out_channels(&self) -> usize {
        self.convs.last().map_or(0, |c| c.out_channels)
    }
}

/// A whole network as layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// `conv1` (followed by `bn1` and ReLU).
    pub stem: ConvPlan,
    /// Whether a 3x3/2 max pool follows the stem (ImageNet nets).
    pub stem_max_pool: bool,
    /// `layer1`, `layer2`, ...: the blocks of each stage.
    pub stages: Vec<Vec<BlockPlan>>,
    /// Input features of `fc`.
    pub fc_in: usize,
    /// Output features of `fc`.
    pub num_classes: usize,
}

fn shortcut_plan(
    spec: &ArchSpec,
    in_channels: usize,
    out_channels: usize,
    stride: usize,
) -> ShortcutPlan {
    let reshapes = stride != 1 || in_channels != out_channels;
    match spec.shortcut {
        None => ShortcutPlan::None,
        Some(Shortcut::C) => {
            ShortcutPlan::Projection(ConvPlan::new(in_channels, out_channels, 1, stride))
        }
        Some(Shortcut::B) if reshapes => {
            ShortcutPlan::Projection(ConvPlan::new(in_channels, out_channels, 1, stride))
        }
        Some(Shortcut::A) if reshapes => ShortcutPlan::PadSubsample {
            stride,
            in_channels,
            out_channels,
        },
        Some(_) => ShortcutPlan::Identity,
    }
}

fn block_plan(spec: &ArchSpec, in_channels: usize, width: usize, stride: usize) -> BlockPlan {
    let out_channels = width * spec.block.expansion();
    let convs = match spec.block {
        BlockKind::Basic => vec![
            ConvPlan::new(in_channels, width, 3, stride),
            ConvPlan::new(width, width, 3, 1),
        ],
        BlockKind::Bottleneck => {
            let (s1, s3) = match spec.stride_placement {
                StridePlacement::V1 => (stride, 1),
                StridePlacement::V1_5 => (1, stride),
            };
            vec![
                ConvPlan::new(in_channels, width, 1, s1),
                ConvPlan::new(width, width, 3, s3),
                ConvPlan::new(width, out_channels, 1, 1),
            ]
        }
    };
    BlockPlan {
        convs,
        shortcut: shortcut_plan(spec, in_channels, out_channels, stride),
    }
}

impl ArchSpec {
    /// Expands the spec into its layers. The first stage keeps the stem's
    /// resolution; every later stage halves it in its first block.
    pub fn plan(&self) -> NetPlan {
        let stem_width = self.widths[0];
        let (stem, stem_max_pool) = match self.stem {
            Stem::ImageNet => (ConvPlan::new(3, stem_width, 7, 2), true),
            Stem::Cifar => (ConvPlan::new(3, stem_width, 3, 1), false),
        };
        let mut channels = stem_width;
        let mut stages = Vec::with_capacity(self.widths.len());
        for (stage, (&width, &blocks)) in self.widths.iter().zip(&self.blocks_per_stage).enumerate()
        {
            let mut stage_blocks = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let block = block_plan(self, channels, width, stride);
                channels = block.out_channels();
                stage_blocks.push(block);
            }
            stages.push(stage_blocks);
        }
        NetPlan {
            stem,
            stem_max_pool,
            stages,
            fc_in: channels,
            num_classes: self.num_classes,
        }
    }
}

/// Output side length of the stem's 3x3/2 max pool with padding 1.
pub(crate) fn max_pool_output_size(input: usize) -> usize {
    (input - 1) / 2 + 1
}
