//! The `--arch` flag and the flags that adjust a zoo spec.

use anyhow::{anyhow, Result};
use clap::Args;
use resnet_models::{ArchSpec, Shortcut, StridePlacement, WeightsMetadata};

use crate::weights_source::named_arch;

/// Which network: a zoo id plus optional changes to its spec.
#[derive(Debug, Clone, Args)]
pub struct ArchArgs {
    /// Architecture id, e.g. resnet20, resnet50, plain34 (default: the one
    /// --weights name: a registry entry's, or the one saved with this
    /// project's weights; `train` without --weights: resnet20).
    #[arg(long)]
    pub arch: Option<String>,
    /// Shortcut option (default: A for CIFAR nets, B for ImageNet nets).
    #[arg(long, ignore_case = true)]
    pub shortcut: Option<Shortcut>,
    /// Stride placement of bottleneck blocks: v1 (the paper's) or v1.5
    /// (torchvision's and timm's); needed for bottleneck weights that carry
    /// no metadata and are not in the registry.
    #[arg(long)]
    pub stride_placement: Option<StridePlacement>,
    /// Outputs of the fc head (default: the weights', else 1000 for ImageNet
    /// nets and 10 for CIFAR nets). `train --weights` with another number
    /// puts a fresh head of this size on them; on an image folder, its
    /// number of class folders.
    #[arg(long, value_name = "K")]
    pub num_classes: Option<usize>,
}

impl ArchArgs {
    /// The zoo spec with the requested changes applied; needs --arch.
    pub fn spec(&self) -> Result<ArchSpec> {
        self.spec_for(None)
    }

    /// The --arch given; an error saying it is needed otherwise.
    pub fn id(&self) -> Result<&str> {
        self.arch
            .as_deref()
            .ok_or_else(|| anyhow!("--arch is required here"))
    }

    /// These flags with --arch, where it was not given, taken from
    /// `weights`: the architecture of a registry entry, or the one saved in
    /// the metadata of this project's weights file (or run folder).
    pub fn for_weights(&self, weights: &str) -> Result<Self> {
        if self.arch.is_some() {
            return Ok(self.clone());
        }
        let arch = named_arch(weights)?.ok_or_else(|| {
            anyhow!(
                "--arch is needed: --weights {weights} is neither a registry name nor \
                 weights saved with their architecture"
            )
        })?;
        Ok(Self {
            arch: Some(arch),
            ..self.clone()
        })
    }

    /// The spec for weights with `metadata`: the net they describe where
    /// they are of this arch (their head, shortcut and stride placement),
    /// with the requested changes applied on top (a change that contradicts
    /// the metadata is refused when the weights are loaded).
    pub fn spec_for(&self, metadata: Option<&WeightsMetadata>) -> Result<ArchSpec> {
        let mut spec = match metadata {
            Some(m) if m.arch == self.id()? => m.spec()?,
            _ => ArchSpec::from_id(self.id()?)?,
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
