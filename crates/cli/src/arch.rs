//! The `--arch` flag and the flags that adjust a zoo spec.

use anyhow::Result;
use clap::Args;
use resnet_models::{ArchSpec, Shortcut, StridePlacement, WeightsMetadata};

/// Which network: a zoo id plus optional changes to its spec.
#[derive(Debug, Clone, Args)]
pub struct ArchArgs {
    /// Architecture id, e.g. resnet20, resnet50, plain34.
    #[arg(long)]
    pub arch: String,
    /// Shortcut option (default: A for CIFAR nets, B for ImageNet nets).
    #[arg(long, ignore_case = true)]
    pub shortcut: Option<Shortcut>,
    /// Stride placement of bottleneck blocks.
    #[arg(long)]
    pub stride_placement: Option<StridePlacement>,
    /// Number of output classes (default: 1000 for ImageNet nets, 10 for CIFAR nets).
    #[arg(long)]
    pub num_classes: Option<usize>,
}

impl ArchArgs {
    /// The zoo spec with the requested changes applied.
    pub fn spec(&self) -> Result<ArchSpec> {
        self.spec_for(None)
    }

    /// The spec for weights with `metadata`: the net they describe where
    /// they are of this arch (their head, shortcut and stride placement),
    /// with the requested changes applied on top (a change that contradicts
    /// the metadata is refused when the weights are loaded).
    pub fn spec_for(&self, metadata: Option<&WeightsMetadata>) -> Result<ArchSpec> {
        let mut spec = match metadata {
            Some(m) if m.arch == self.arch => m.spec()?,
            _ => ArchSpec::from_id(&self.arch)?,
        };
        if let Some(s) = self.shortcut {
            spec = spec.with_shortcut(s);
        }
        if let Some(s) = self.stride_placement {
            spec = spec.with_stride_placement(s);
        }
        if let Some(n) = self.num_classes {
            anyhow::ensure!(n > 0, "--num-classes must be at least 1");
            spec = spec.with_num_classes(n);
        }
        Ok(spec)
    }
}
