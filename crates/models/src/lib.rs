//! Every network of the ResNet paper, built from one spec table.
//!
//! An [`ArchSpec`] describes a net as data (block kind, blocks per stage,
//! widths, stem, shortcut option, stride placement); every named architecture
//! (`resnet18` ... `resnet152`, `plain18`/`plain34`, the CIFAR `resnet20` ...
//! `resnet1202` and `plain20` ... `plain110`) is a row of the [`zoo`]. The
//! spec expands into a [`NetPlan`] of convolutions, from which both the
//! [`ResNet`] module and the exact parameter and FLOP counts are derived.
//! Tensor names are torchvision's (`conv1`, `bn1`, `layerN.i.conv1`,
//! `layerN.i.downsample.0`, `fc`, ...), so its weights load as they are.

mod count;
mod error;
mod init;
mod io;
mod layers;
mod model;
mod plan;
mod spec;

pub use count::{count, layer_table, Counts, LayerRow};
pub use error::ModelError;
pub use layers::{NamedVar, TensorKind, Trace};
pub use model::ResNet;
pub use plan::{BlockPlan, ConvPlan, NetPlan, ShortcutPlan};
pub use spec::{zoo, ArchSpec, BlockKind, Shortcut, Stem, StridePlacement};
