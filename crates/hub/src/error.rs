//! Errors of the hub crate.

use std::path::PathBuf;

use resnet_models::{ModelError, StridePlacement};

use crate::Layout;

/// Result of the hub crate.
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// Everything that can go wrong when naming, fetching, reading or loading pretrained weights.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A weights source that cannot be parsed.
    #[error("invalid weights source `{spec}`: {reason}; expected a local path or hf:OWNER/REPO[/FILE][@REVISION]")]
    InvalidSpec {
        /// The source as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A local source that is not a file.
    #[error(
        "{path}: no such weights file (a run folder must be resolved to its model file first)"
    )]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The hub has no such repository, revision or file (or it is private).
    #[error("{endpoint}: file `{file}` of repository `{repo}` at revision `{revision}` not found (HTTP {status}: unknown or private repository, revision or file)")]
    NotOnHub {
        /// The server asked.
        endpoint: String,
        /// `OWNER/REPO`.
        repo: String,
        /// The file in the repository.
        file: String,
        /// The branch, tag or commit.
        revision: String,
        /// The HTTP status the server answered.
        status: u16,
    },
    /// Any other failure to download a file (network, server, cache folder).
    #[error("{endpoint}: downloading `{file}` of repository `{repo}` at revision `{revision}`: {reason}")]
    Download {
        /// The server asked.
        endpoint: String,
        /// `OWNER/REPO`.
        repo: String,
        /// The file in the repository.
        file: String,
        /// The branch, tag or commit.
        revision: String,
        /// What hf-hub reported.
        reason: String,
    },
    /// A weights file that cannot be read as safetensors or as a PyTorch checkpoint.
    #[error("{path}: {reason}")]
    Read {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A tensor name that no rename rule of the detected layout matches.
    #[error("{source_name}: tensor `{name}` matches no rule of the {layout} layout")]
    UnknownTensorName {
        /// The file or source the tensors came from.
        source_name: String,
        /// The layout detected.
        layout: Layout,
        /// The tensor's name in the file.
        name: String,
    },
    /// Known weights asked for as another architecture.
    #[error("{found} does not fit weights `{weights}`: they are {expected} weights")]
    ArchMismatch {
        /// The weights as named.
        weights: String,
        /// The architecture the weights are for.
        expected: &'static str,
        /// The architecture asked for.
        found: String,
    },
    /// Bottleneck weights the registry does not know, with no stride
    /// placement given: v1 and v1.5 have the same tensors.
    #[error("{weights}: unknown {arch} weights; v1 (the paper's) and v1.5 (torchvision's and timm's) bottleneck nets have the same tensors, so say which with --stride-placement v1|v1.5")]
    AmbiguousStridePlacement {
        /// The weights as named.
        weights: String,
        /// The architecture asked for.
        arch: String,
    },
    /// A stride placement asked for that known weights were not trained with.
    #[error("stride placement {asked} contradicts `{name}`: its weights use {expected}")]
    StridePlacementContradicts {
        /// The registry name of the weights.
        name: &'static str,
        /// The placement the weights need.
        expected: StridePlacement,
        /// The placement asked for.
        asked: StridePlacement,
    },
    /// Known weights loaded into a model built with the other stride placement.
    #[error("weights `{name}` were trained with {expected} stride placement, the model has {found}; build the model with {expected}")]
    StridePlacement {
        /// The registry name of the weights.
        name: &'static str,
        /// The placement the weights need.
        expected: StridePlacement,
        /// The model's placement.
        found: StridePlacement,
    },
    /// Class names that do not match the net's outputs.
    #[error("{names} class names for a net with {outputs} outputs")]
    ClassNames {
        /// How many names were given.
        names: usize,
        /// How many outputs the net has.
        outputs: usize,
    },
    /// A missing, unexpected or misshapen tensor, or another model error.
    #[error(transparent)]
    Model(#[from] ModelError),
}
