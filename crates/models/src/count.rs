//! Exact parameter and FLOP counts from the spec, and the paper's Table 1
//! layer rows.
//!
//! FLOPs are counted as the paper counts them: multiply-adds of the convs
//! and the fc layer. Batch norm, ReLU, pooling and the shortcut additions are
//! not counted. Parameters are the learnable tensors only (conv and fc
//! weights, fc bias, BN weight and bias), never BN running statistics.

use serde::Serialize;

use crate::plan::{max_pool_output_size, BlockPlan, ConvPlan, ShortcutPlan};
use crate::{ArchSpec, Stem};

/// Learnable parameters and multiply-adds of a net or a part of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Learnable parameters.
    pub params: usize,
    /// Multiply-adds for one image (the paper's "FLOPs").
    pub macs: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, rhs: Counts) {
        self.params += rhs.params;
        self.macs += rhs.macs;
    }
}

/// A conv followed by its batch norm (gamma and beta per output channel).
fn conv_bn(conv: &ConvPlan, input: usize) -> Counts {
    Counts {
        params: conv.params() + 2 * conv.out_channels,
        macs: conv.macs(input),
    }
}

/// Counts of one block for an input side length; also returns the output side.
fn block_counts(block: &BlockPlan, input: usize) -> (Counts, usize) {
    let mut counts = Counts::default();
    let mut side = input;
    for conv in &block.convs {
        counts += conv_bn(conv, side);
        side = conv.output_size(side);
    }
    if let ShortcutPlan::Projection(conv) = &block.shortcut {
        counts += conv_bn(conv, input);
    }
    (counts, side)
}

/// One row of the paper's Table 1 layout: the stem, a stage, or the head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerRow {
    /// The paper's layer name: `conv1`, `conv2_x` ... `conv5_x`, `fc`.
    pub name: String,
    /// Output side length (the output is `output x output`).
    pub output: usize,
    /// The paper's description, e.g. `[3x3, 64; 3x3, 64] x2`.
    pub description: String,
    /// Number of blocks in the row (0 for the stem and the head).
    pub blocks: usize,
    /// Parameters and multiply-adds of the row.
    pub counts: Counts,
}

fn conv_text(conv: &ConvPlan) -> String {
    format!("{k}x{k}, {c}", k = conv.kernel, c = conv.out_channels)
}

fn stage_text(blocks: &[BlockPlan]) -> String {
    let convs: Vec<String> = blocks[0].convs.iter().map(conv_text).collect();
    format!("[{}] x{}", convs.join("; "), blocks.len())
}

/// The net's layers as Table 1 rows for an input of `input x input` pixels.
pub fn layer_table(spec: &ArchSpec, input: usize) -> Vec<LayerRow> {
    let plan = spec.plan();
    let mut side = plan.stem.output_size(input);
    let mut rows = vec![LayerRow {
        name: "conv1".to_string(),
        output: side,
        description: match spec.stem {
            Stem::ImageNet => format!("{}, stride {}", conv_text(&plan.stem), plan.stem.stride),
            Stem::Cifar => conv_text(&plan.stem),
        },
        blocks: 0,
        counts: conv_bn(&plan.stem, input),
    }];
    for (i, stage) in plan.stages.iter().enumerate() {
        let mut description = stage_text(stage);
        if i == 0 && plan.stem_max_pool {
            side = max_pool_output_size(side);
            description = format!("3x3 max pool, stride 2; {description}");
        }
        let mut counts = Counts::default();
        for block in stage {
            let (block_counts, out) = block_counts(block, side);
            counts += block_counts;
            side = out;
        }
        rows.push(LayerRow {
            name: format!("conv{}_x", i + 2),
            output: side,
            description,
            blocks: stage.len(),
            counts,
        });
    }
    rows.push(LayerRow {
        name: "fc".to_string(),
        output: 1,
        description: format!("average pool, {}-d fc", plan.num_classes),
        blocks: 0,
        counts: Counts {
            params: plan.fc_in * plan.num_classes + plan.num_classes,
            macs: plan.fc_in * plan.num_classes,
        },
    });
    rows
}

/// Total parameters and multiply-adds of a net for an `input x input` image.
pub fn count(spec: &ArchSpec, input: usize) -> Counts {
    let mut total = Counts::default();
    for row in layer_table(spec, input) {
        total += row.counts;
    }
    total
}
