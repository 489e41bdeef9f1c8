//! Architecture as data: the [`ArchSpec`] and the zoo of named nets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The residual function F of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet-18/34 and the CIFAR nets); output width = stage width.
    Basic,
    /// 1x1, 3x3, 1x1 convs (ResNet-50/101/152); output width = 4 x stage width.
    Bottleneck,
}

impl BlockKind {
    /// How many times wider the block's output is than its stage width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The layers before the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// 7x7/2 conv then 3x3/2 max pool (ImageNet nets, Table 1).
    ImageNet,
    /// A single 3x3/1 conv (CIFAR-10 nets, Section 4.2).
    Cifar,
}

/// How a residual block's shortcut is formed (paper, Section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "UPPER"))]
pub enum Shortcut {
    /// Identity; where the shape changes, stride-2 subsampling and zero-padded
    /// channels. No parameters.
    A,
    /// 1x1 conv + BN projection only where the shape changes, identity elsewhere.
    B,
    /// 1x1 conv + BN projection on every block.
    C,
}

impl FromStr for Shortcut {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "A" | "a" => Ok(Shortcut::A),
            "B" | "b" => Ok(Shortcut::B),
            "C" | "c" => Ok(Shortcut::C),
            _ => Err(ModelError::InvalidOption {
                what: "shortcut option",
                value: s.to_string(),
                expected: "A, B, C",
            }),
        }
    }
}

/// Where a downsampling bottleneck block puts its stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum StridePlacement {
    /// On the first 1x1 conv, as in the paper (ResNet-50 = 3.8 GFLOPs).
    #[serde(rename = "v1")]
    #[cfg_attr(feature = "clap", value(name = "v1"))]
    V1,
    /// On the 3x3 conv, as in torchvision's and timm's weights (ResNet-50 = 4.1 GFLOPs).
    #[serde(rename = "v1.5")]
    #[cfg_attr(feature = "clap", value(name = "v1.5"))]
    V1_5,
}

impl FromStr for StridePlacement {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "v1" => Ok(StridePlacement::V1),
            "v1.5" => Ok(StridePlacement::V1_5),
            _ => Err(ModelError::InvalidOption {
                what: "stride placement",
                value: s.to_string(),
                expected: "v1, v1.5",
            }),
        }
    }
}

impl fmt::Display for StridePlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StridePlacement::V1 => "v1",
            StridePlacement::V1_5 => "v1.5",
        })
    }
}

/// One network, described completely as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchSpec {
    /// The zoo id (`resnet50`, `plain20`, ...).
    pub id: String,
    /// The block type of every stage.
    pub block: BlockKind,
    /// Number of blocks in each stage.
    pub blocks_per_stage: Vec<usize>,
    /// Width of each stage (the 3x3 convs' filter count); the stem's width is the first.
    pub widths: Vec<usize>,
    /// The layers before the first stage.
    pub stem: Stem,
    /// The shortcut option, or `None` for a plain net (no shortcuts at all).
    pub shortcut: Option<Shortcut>,
    /// Stride placement of downsampling bottleneck blocks (ignored by basic blocks).
    pub stride_placement: StridePlacement,
    /// Outputs of the final fc layer.
    pub num_classes: usize,
    /// The input resolution the net was designed for (224 or 32).
    pub input_size: usize,
}

/// ImageNet rows of the zoo: id, block kind, blocks per stage, residual (Table 1).
const IMAGENET_NETS: [(&str, BlockKind, [usize; 4], bool); 7] = [
    ("resnet18", BlockKind::Basic, [2, 2, 2, 2], true),
    ("resnet34", BlockKind::Basic, [3, 4, 6, 3], true),
    ("resnet50", BlockKind::Bottleneck, [3, 4, 6, 3], true),
    ("resnet101", BlockKind::Bottleneck, [3, 4, 23, 3], true),
    ("resnet152", BlockKind::Bottleneck, [3, 8, 36, 3], true),
    ("plain18", BlockKind::Basic, [2, 2, 2, 2], false),
    ("plain34", BlockKind::Basic, [3, 4, 6, 3], false),
];

/// CIFAR-10 nets have 6n+2 layers; these are the paper's n for ResNets and plain nets.
const CIFAR_RESNET_N: [usize; 6] = [3, 5, 7, 9, 18, 200];
const CIFAR_PLAIN_N: [usize; 5] = [3, 5, 7, 9, 18];

fn imagenet(id: &str, block: BlockKind, blocks: [usize; 4], residual: bool) -> ArchSpec {
    ArchSpec {
        id: id.to_string(),
        block,
        blocks_per_stage: blocks.to_vec(),
        widths: vec![64, 128, 256, 512],
        stem: Stem::ImageNet,
        shortcut: residual.then_some(Shortcut::B),
        stride_placement: StridePlacement::V1,
        num_classes: 1000,
        input_size: 224,
    }
}

fn cifar(n: usize, residual: bool) -> ArchSpec {
    let kind = if residual { "resnet" } else { "plain" };
    ArchSpec {
        id: format!("{kind}{}", 6 * n + 2),
        block: BlockKind::Basic,
        blocks_per_stage: vec![n; 3],
        widths: vec![16, 32, 64],
        stem: Stem::Cifar,
        shortcut: residual.then_some(Shortcut::A),
        stride_placement: StridePlacement::V1,
        num_classes: 10,
        input_size: 32,
    }
}

/// Every named architecture of the paper, ImageNet nets first, with the
/// paper's defaults: option B shortcuts and v1 strides for ImageNet, option A
/// for CIFAR-10.
pub fn zoo() -> Vec<ArchSpec> {
    let imagenet_nets = IMAGENET_NETS
        .iter()
        .map(|&(id, block, blocks, res)| imagenet(id, block, blocks, res));
    let cifar_resnets = CIFAR_RESNET_N.iter().map(|&n| cifar(n, true));
    let cifar_plain = CIFAR_PLAIN_N.iter().map(|&n| cifar(n, false));
    imagenet_nets
        .chain(cifar_resnets)
        .chain(cifar_plain)
        .collect()
}

impl ArchSpec {
    /// Looks an id up in the [`zoo`]; an unknown id is an error listing the valid ones.
    pub fn from_id(id: &str) -> Result<ArchSpec, ModelError> {
        let zoo = zoo();
        zoo.iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| ModelError::UnknownArch {
                id: id.to_string(),
                valid: zoo
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The same net with another shortcut option (no effect on a plain net).
    pub fn with_shortcut(mut self, shortcut: Shortcut) -> ArchSpec {
        if self.shortcut.is_some() {
            self.shortcut = Some(shortcut);
        }
        self
    }

    /// The same net with another stride placement for bottleneck blocks.
    pub fn with_stride_placement(mut self, placement: StridePlacement) -> ArchSpec {
        self.stride_placement = placement;
        self
    }

    /// The same net with another number of output classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> ArchSpec {
        self.num_classes = num_classes;
        self
    }

    /// Whether the blocks have shortcuts (a ResNet) or not (a plain net).
    pub fn is_residual(&self) -> bool {
        self.shortcut.is_some()
    }

    /// Number of weighted layers (convs and fc) on the longest path, the
    /// paper's "depth": 18 for ResNet-18, 20 for ResNet-20, ...
    pub fn depth(&self) -> usize {
        let per_block = match self.block {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck => 3,
        };
        2 + per_block * self.blocks_per_stage.iter().sum::<usize>()
    }
}
