//! Saving and loading model tensors as safetensors, by torchvision name: the
//! one writer of the project's safetensors files, with their metadata.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::{BlockKind, ModelError, ResNet, Shortcut, Stem, StridePlacement, WeightsMetadata};

/// Suffix of PyTorch's batch-norm step counters (`<bn>.num_batches_tracked`),
/// which no model here uses: ignored when weights are read, written as 0 only
/// for torchvision's `load_state_dict(strict=True)`.
pub const BN_COUNTER_SUFFIX: &str = "num_batches_tracked";

/// Prefix of the SGD momentum buffers in a trainer checkpoint
/// (`momentum.<tensor name>`); such entries are skipped when a checkpoint is
/// loaded as weights.
pub const MOMENTUM_PREFIX: &str = "momentum.";
/// Prefix of the classifier head's tensors.
const HEAD_PREFIX: &str = "fc.";

impl ResNet {
    /// Every tensor (parameters and running statistics) by name, as saved.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        self.named_vars()
            .into_iter()
            .map(|v| (v.name, v.var.as_tensor().detach()))
            .collect()
    }

    /// The tensors of torchvision's `state_dict()` for this net, exactly: every
    /// tensor by name plus each batch norm's `num_batches_tracked` (an int64
    /// scalar, 0: the counter is not kept here and only matters to BN with
    /// `momentum=None`), so that `load_state_dict(strict=True)` accepts them.
    /// Only nets torchvision builds (ImageNet stem, option B, v1.5
    /// bottlenecks) compute there what they compute here; see
    /// [`ResNet::torchvision_compatible`].
    pub fn torchvision_state_dict(&self) -> Result<HashMap<String, Tensor>, ModelError> {
        let mut tensors = self.state_tensors();
        for v in self.named_vars() {
            if let Some(bn) = v.name.strip_suffix(".running_mean") {
                let counter = Tensor::new(0i64, &candle_core::Device::Cpu)?;
                tensors.insert(format!("{bn}.{BN_COUNTER_SUFFIX}"), counter);
            }
        }
        Ok(tensors)
    }

    /// Why torchvision's `resnetN` would compute another function than this
    /// net, if it would: a CIFAR stem, shortcuts other than option B, no
    /// shortcuts (plain nets) or the paper's v1 bottleneck strides
    /// (torchvision's bottlenecks stride their 3x3 conv, v1.5).
    pub fn torchvision_compatible(&self) -> Result<(), String> {
        let spec = self.spec();
        if spec.stem != Stem::ImageNet {
            return Err(format!(
                "{} has the CIFAR stem; torchvision's ResNets have the ImageNet one",
                spec.id
            ));
        }
        if spec.shortcut != Some(Shortcut::B) {
            return Err(format!(
                "{} has shortcut {:?}; torchvision's ResNets have option B",
                spec.id, spec.shortcut
            ));
        }
        if spec.block == BlockKind::Bottleneck && spec.stride_placement != StridePlacement::V1_5 {
            return Err(format!(
                "{} places its strides as the paper (v1); torchvision's bottlenecks are v1.5",
                spec.id
            ));
        }
        Ok(())
    }

    /// The metadata of this net's weights: its spec, without classes or normalisation.
    pub fn metadata(&self) -> WeightsMetadata {
        WeightsMetadata::for_spec(self.spec())
    }

    /// Writes every tensor, with the net's [`WeightsMetadata`], to a
    /// safetensors file, atomically (see [`save_safetensors`]).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        save_safetensors(path, &self.state_tensors(), Some(&self.metadata()))
    }

    /// Loads a safetensors file written by [`ResNet::save`] or by torchvision;
    /// metadata in the file that describe another net are an error.
    pub fn load(&self, path: &Path) -> Result<(), ModelError> {
        let (tensors, metadata) = read_safetensors(path)?;
        if let Some(metadata) = metadata {
            metadata.check(self.spec(), path)?;
        }
        self.load_tensors(&tensors, &path.display().to_string())
    }

    /// Sets every tensor except the fc head's from `tensors` (whose own
    /// `fc.*` entries are ignored), with the checks of
    /// [`ResNet::load_tensors`]: the start of fine-tuning, where the head is
    /// new and of another size.
    pub fn load_backbone(
        &self,
        tensors: &HashMap<String, Tensor>,
        source_name: &str,
    ) -> Result<(), ModelError> {
        let backbone = |name: &str| !name.starts_with(HEAD_PREFIX);
        self.load_selected(tensors, source_name, backbone)
    }

    /// Sets every model tensor from `tensors`, checking first that each one
    /// is present with the right shape and that nothing is left over (BN
    /// `num_batches_tracked` counters are ignored); `source_name` names the
    /// origin in errors. On error the model is left unchanged.
    pub fn load_tensors(
        &self,
        tensors: &HashMap<String, Tensor>,
        source_name: &str,
    ) -> Result<(), ModelError> {
        self.load_selected(tensors, source_name, |_| true)
    }

    /// [`ResNet::load_tensors`] for the model tensors whose names `select`
    /// accepts; the other names are neither required nor unexpected.
    fn load_selected(
        &self,
        tensors: &HashMap<String, Tensor>,
        source_name: &str,
        select: impl Fn(&str) -> bool,
    ) -> Result<(), ModelError> {
        let vars: Vec<_> = self
            .named_vars()
            .into_iter()
            .filter(|v| select(&v.name))
            .collect();
        let mut updates = Vec::with_capacity(vars.len());
        for v in &vars {
            let expected = v.var.dims().to_vec();
            let t = tensors
                .get(&v.name)
                .ok_or_else(|| ModelError::MissingTensor {
                    source_name: source_name.to_string(),
                    name: v.name.clone(),
                    expected: expected.clone(),
                })?;
            if t.dims() != expected.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    source_name: source_name.to_string(),
                    name: v.name.clone(),
                    expected,
                    found: t.dims().to_vec(),
                });
            }
            updates.push((&v.var, t));
        }
        let known: HashSet<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        let mut extra: Vec<_> = tensors
            .iter()
            .filter(|(name, _)| {
                select(name) && !name.ends_with(BN_COUNTER_SUFFIX) && !known.contains(name.as_str())
            })
            .collect();
        extra.sort_by(|a, b| a.0.cmp(b.0));
        if let Some((name, t)) = extra.first() {
            return Err(ModelError::UnexpectedTensor {
                source_name: source_name.to_string(),
                name: name.to_string(),
                found: t.dims().to_vec(),
            });
        }
        for (var, t) in updates {
            var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// Writes `tensors` and, if given, `metadata` (as the file's `__metadata__`)
/// to a safetensors file at `path`, atomically: a temporary file in the same
/// folder is written, synced and renamed over `path`, so a reader never sees
/// a half-written file. Every safetensors file of the project is written here.
pub fn save_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: Option<&WeightsMetadata>,
) -> Result<(), ModelError> {
    let tmp = temp_file_beside(path)?;
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize_to_file(sorted, metadata.map(WeightsMetadata::to_map), tmp.path())
        .map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            writing: true,
            source: candle_core::Error::wrap(e),
        })?;
    persist(tmp, path)
}

/// Writes `bytes` to `path` atomically, as [`save_safetensors`] does: into a
/// uniquely named temporary file in the same folder, synced, then renamed over
/// `path`, so a reader (or a crash) never sees a half-written file and two
/// writers never share a temporary file. The workspace's one atomic-write
/// routine: configs, metrics, checkpoints, reports and plots all go through it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(bytes).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    persist(tmp, path)
}

/// A temporary file in the folder of `path`, to be renamed over it.
fn temp_file_beside(path: &Path) -> Result<tempfile::NamedTempFile, ModelError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let prefix = format!(
        ".{}.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // What `File::create` asks for (the umask applies), not tempfile's 0o600.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Syncs the written temporary file and renames it to `path`.
fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<(), ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Reads every tensor of a safetensors file (onto the CPU) and its metadata,
/// if the file is one of ours (see [`WeightsMetadata::from_map`]).
pub fn read_safetensors(
    path: &Path,
) -> Result<(HashMap<String, Tensor>, Option<WeightsMetadata>), ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let unreadable = |source| ModelError::Safetensors {
        path: path.to_path_buf(),
        writing: false,
        source,
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu)
        .map_err(unreadable)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| unreadable(candle_core::Error::wrap(e)))?;
    let metadata = match header.metadata() {
        Some(map) => WeightsMetadata::from_map(map, path)?,
        None => None,
    };
    Ok((tensors, metadata))
}

/// Longest safetensors header read, as in the `safetensors` crate.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The metadata of a safetensors file, if it is one of ours, read from its
/// header alone: what looks up a file's architecture or classes needs, without
/// reading its tensors. The tensors are not checked; [`read_safetensors`] does.
pub fn read_safetensors_metadata(path: &Path) -> Result<Option<WeightsMetadata>, ModelError> {
    use safetensors::SafeTensorError;
    use std::io::{ErrorKind, Read};
    let unreadable = |e: SafeTensorError| ModelError::Safetensors {
        path: path.to_path_buf(),
        writing: false,
        source: candle_core::Error::wrap(e),
    };
    let io = |source: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => unreadable(SafeTensorError::HeaderTooSmall),
        _ => io(e),
    })?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(unreadable(SafeTensorError::HeaderTooLarge));
    }
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header).map_err(io)?;
    if header.len() as u64 != len {
        return Err(unreadable(SafeTensorError::InvalidHeaderLength));
    }
    let header: safetensors::tensor::Metadata = serde_json::from_slice(&header)
        .map_err(|e| unreadable(SafeTensorError::InvalidHeaderDeserialization(e)))?;
    match header.metadata() {
        Some(map) => WeightsMetadata::from_map(map, path),
        None => Ok(None),
    }
}
