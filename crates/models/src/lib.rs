//! Every network of the ResNet paper, built from one spec table.
//!
//! An [`ArchSpec`] describes a net as data (block kind, blocks per stage,
//! widths, stem, shortcut option, stride placement); every named architecture
//! (`resnet18` ... `resnet152`, `plain18`/`plain34`, the CIFAR `resnet20` ...
//! `resnet1202` and `plain20` ... `plain110`) is a row of the [`zoo`]. The
//! spec expands into a [`NetPlan`] of convolutions, from which both the
//! [`ResNet`] module and the exact parameter and FLOP counts are derived.
//! [`ResNet::fold_for_inference`] prepares a net for evaluation and
//! prediction: an [`InferenceNet`] with its batch norms folded into its
//! convolutions.
//! Tensor names are torchvision's (`conv1`, `bn1`, `layerN.i.conv1`,
//! `layerN.i.downsample.0`, `fc`, ...), so its weights load as they are.
//!
//! A net of the zoo, and a custom one from the same fields:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use resnet_models::{count, ArchSpec, ResNet, Shortcut};
//!
//! let resnet20 = ArchSpec::from_id("resnet20")?;
//! assert_eq!(count(&resnet20, 32).params, 269_722); // the paper's 0.27M
//!
//! // A CIFAR ResNet with wider stages, projection shortcuts and 100 classes.
//! let wide = ArchSpec {
//!     id: "wide-resnet20".into(),
//!     widths: vec![32, 64, 128],
//!     ..resnet20.with_shortcut(Shortcut::B).with_num_classes(100)
//! };
//! let net = ResNet::new(&wide, 0, &Device::Cpu)?;
//! let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
//! assert_eq!(net.forward_t(&x, false)?.dims(), [2, 100]);
//! assert_eq!(net.num_parameters(), count(&wide, 32).params);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod count;
mod error;
mod inference;
mod init;
mod io;
mod layers;
mod meta;
mod model;
mod plan;
mod precision;
mod spec;

pub use count::{count, layer_table, Counts, LayerRow};
pub use error::ModelError;
pub use inference::InferenceNet;
pub use io::{
    read_safetensors, read_safetensors_metadata, save_safetensors, write_atomic, BN_COUNTER_SUFFIX,
    MOMENTUM_PREFIX,
};
pub use layers::{NamedVar, TensorKind, Trace};
pub use meta::{WeightsMetadata, FORMAT_VERSION};
pub use model::ResNet;
pub use plan::{BlockPlan, ConvPlan, NetPlan, ShortcutPlan};
pub use precision::Precision;
pub use spec::{zoo, ArchSpec, BlockKind, Shortcut, Stem, StridePlacement};
