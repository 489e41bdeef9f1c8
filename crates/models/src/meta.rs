//! What a weights file says about itself: the safetensors `__metadata__` of
//! the files this project writes (architecture, shortcut, stride placement,
//! classes, normalisation, format version), encoded and decoded here only.
//!
//! Every value is a string, as safetensors requires: numbers and names as
//! they are, lists as JSON. A file without `format_version` is not ours
//! (torchvision, timm) and has no [`WeightsMetadata`].

use std::collections::HashMap;
use std::path::Path;

use crate::{ArchSpec, BlockKind, ModelError, Shortcut, StridePlacement};

/// Version of the metadata layout written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// The metadata of a weights file: enough to rebuild the net and feed it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsMetadata {
    /// Version of the layout ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// The zoo id the net was built from (`resnet18`, `resnet20`, ...).
    pub arch: String,
    /// The shortcut option; `None` for a plain net.
    pub shortcut: Option<Shortcut>,
    /// Stride placement of downsampling bottleneck blocks.
    pub stride_placement: StridePlacement,
    /// Outputs of the fc head.
    pub num_classes: usize,
    /// The input side the net was designed for (224 or 32).
    pub input_size: usize,
    /// The name of each output class, in output order, where known.
    pub classes: Option<Vec<String>>,
    /// Per-channel input mean (RGB, of pixels in [0, 1]) when the weights
    /// expect per-channel normalisation; a per-pixel mean image travels as a
    /// tensor of the file instead.
    pub mean: Option<[f32; 3]>,
    /// Per-channel input standard deviation, with `mean`.
    pub std: Option<[f32; 3]>,
}

impl WeightsMetadata {
    /// The metadata of a net built from `spec`, without classes or normalisation.
    pub fn for_spec(spec: &ArchSpec) -> WeightsMetadata {
        WeightsMetadata {
            format_version: FORMAT_VERSION,
            arch: spec.id.clone(),
            shortcut: spec.shortcut,
            stride_placement: spec.stride_placement,
            num_classes: spec.num_classes,
            input_size: spec.input_size,
            classes: None,
            mean: None,
            std: None,
        }
    }

    /// With the names of the output classes.
    pub fn with_classes(mut self, classes: Option<Vec<String>>) -> WeightsMetadata {
        self.classes = classes;
        self
    }

    /// With a per-channel normalisation.
    pub fn with_mean_std(mut self, mean: [f32; 3], std: [f32; 3]) -> WeightsMetadata {
        self.mean = Some(mean);
        self.std = Some(std);
        self
    }

    /// The spec of the net these weights belong to: the zoo row of `arch`
    /// with the file's shortcut, stride placement, classes and input size.
    pub fn spec(&self) -> Result<ArchSpec, ModelError> {
        let mut spec = ArchSpec::from_id(&self.arch)?
            .with_stride_placement(self.stride_placement)
            .with_num_classes(self.num_classes);
        spec.shortcut = self.shortcut;
        spec.input_size = self.input_size;
        Ok(spec)
    }

    /// Checks that the net `spec` is the one these weights (read from
    /// `path`) were saved from; the first field that differs is an error
    /// naming the file, the field and both values. Stride placement is
    /// compared for bottleneck nets only (basic blocks have no such choice).
    pub fn check(&self, spec: &ArchSpec, path: &Path) -> Result<(), ModelError> {
        let shortcut = |s: Option<Shortcut>| s.map_or("none".to_string(), |s| format!("{s:?}"));
        let mut pairs = vec![
            ("arch", self.arch.clone(), spec.id.clone()),
            ("shortcut", shortcut(self.shortcut), shortcut(spec.shortcut)),
            (
                "num_classes",
                self.num_classes.to_string(),
                spec.num_classes.to_string(),
            ),
        ];
        if spec.block == BlockKind::Bottleneck {
            pairs.push((
                "stride_placement",
                self.stride_placement.to_string(),
                spec.stride_placement.to_string(),
            ));
        }
        match pairs.into_iter().find(|(_, file, asked)| file != asked) {
            Some((field, in_file, asked)) => Err(ModelError::MetadataMismatch {
                path: path.to_path_buf(),
                field,
                in_file,
                asked,
            }),
            None => Ok(()),
        }
    }

    /// The safetensors `__metadata__` map. `format: pt` tells other tools
    /// (Hugging Face, timm) that the tensors are in PyTorch's layout.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            ("format_version".into(), self.format_version.to_string()),
            ("arch".into(), self.arch.clone()),
            (
                "shortcut".into(),
                self.shortcut.map_or("none".into(), |s| format!("{s:?}")),
            ),
            ("stride_placement".into(), self.stride_placement.to_string()),
            ("num_classes".into(), self.num_classes.to_string()),
            ("input_size".into(), self.input_size.to_string()),
        ]);
        if let Some(classes) = &self.classes {
            map.insert("classes".into(), json(classes));
        }
        if let (Some(mean), Some(std)) = (&self.mean, &self.std) {
            map.insert("mean".into(), json(mean));
            map.insert("std".into(), json(std));
        }
        map
    }

    /// The metadata in a safetensors `__metadata__` map read from `path`:
    /// `None` when the map is not ours (no `format_version`); a malformed or
    /// missing field, or a newer format, is an error naming the file and field.
    pub fn from_map(
        map: &HashMap<String, String>,
        path: &Path,
    ) -> Result<Option<WeightsMetadata>, ModelError> {
        let Some(version) = map.get("format_version") else {
            return Ok(None);
        };
        let bad = |field: &'static str, reason: String| ModelError::BadMetadata {
            path: path.to_path_buf(),
            field,
            reason,
        };
        let get = |field: &'static str| {
            map.get(field)
                .ok_or_else(|| bad(field, "missing".to_string()))
        };
        let number = |field: &'static str, text: &str| {
            text.parse::<usize>()
                .map_err(|_| bad(field, format!("`{text}` is not a whole number")))
        };
        let format_version = number("format_version", version)? as u32;
        if format_version > FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!("{format_version} is newer than this build reads ({FORMAT_VERSION})"),
            ));
        }
        let shortcut = match get("shortcut")?.as_str() {
            "none" => None,
            other => Some(
                other
                    .parse::<Shortcut>()
                    .map_err(|_| bad("shortcut", format!("`{other}` is not A, B, C or none")))?,
            ),
        };
        let stride_placement = get("stride_placement")?
            .parse::<StridePlacement>()
            .map_err(|e| bad("stride_placement", e.to_string()))?;
        let classes = list_field(map, "classes", "a list of class names", path)?;
        let mean = list_field(map, "mean", "three numbers", path)?;
        let std = list_field(map, "std", "three numbers", path)?;
        let meta = WeightsMetadata {
            format_version,
            arch: get("arch")?.clone(),
            shortcut,
            stride_placement,
            num_classes: number("num_classes", get("num_classes")?)?,
            input_size: number("input_size", get("input_size")?)?,
            classes,
            mean,
            std,
        };
        if let Some(classes) = &meta.classes {
            if classes.len() != meta.num_classes {
                return Err(bad(
                    "classes",
                    format!(
                        "{} names for num_classes = {}",
                        classes.len(),
                        meta.num_classes
                    ),
                ));
            }
        }
        Ok(Some(meta))
    }
}

/// The JSON list `field` of `map`, if present, as a `T` (`what` says what
/// is expected, in the error).
fn list_field<T: serde::de::DeserializeOwned>(
    map: &HashMap<String, String>,
    field: &'static str,
    what: &str,
    path: &Path,
) -> Result<Option<T>, ModelError> {
    map.get(field)
        .map(|text| {
            serde_json::from_str(text).map_err(|_| ModelError::BadMetadata {
                path: path.to_path_buf(),
                field,
                reason: format!("expected {what}, found `{text}`"),
            })
        })
        .transpose()
}

/// JSON text of a list value (a list of strings or numbers always serialises).
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("w.safetensors")
    }

    #[test]
    fn metadata_round_trips_through_the_string_map() {
        let spec = ArchSpec::from_id("resnet50")
            .unwrap()
            .with_stride_placement(StridePlacement::V1_5)
            .with_num_classes(3);
        let meta = WeightsMetadata::for_spec(&spec)
            .with_classes(Some(vec!["cat_a".into(), "dog_b".into(), "eel_c".into()]))
            .with_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let map = meta.to_map();
        assert_eq!(map["classes"], r#"["cat_a","dog_b","eel_c"]"#);
        assert_eq!(map["stride_placement"], "v1.5");
        let back = WeightsMetadata::from_map(&map, path()).unwrap().unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.spec().unwrap(), spec);
        back.check(&spec, path()).unwrap();
    }

    #[test]
    fn a_map_without_a_format_version_is_not_ours() {
        let map = HashMap::from([("format".to_string(), "pt".to_string())]);
        assert_eq!(WeightsMetadata::from_map(&map, path()).unwrap(), None);
    }

    #[test]
    fn a_spec_that_differs_is_refused_naming_the_file_and_field() {
        let v15 = ArchSpec::from_id("resnet50")
            .unwrap()
            .with_stride_placement(StridePlacement::V1_5);
        let meta = WeightsMetadata::for_spec(&v15);
        let v1 = ArchSpec::from_id("resnet50").unwrap();
        let err = meta.check(&v1, path()).unwrap_err().to_string();
        assert!(
            err.contains("w.safetensors") && err.contains("stride_placement"),
            "{err}"
        );
        assert!(err.contains("v1.5") && err.contains("v1"), "{err}");
        let other = ArchSpec::from_id("resnet50").unwrap().with_num_classes(10);
        let err = WeightsMetadata::for_spec(&other)
            .check(&v15, path())
            .unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::MetadataMismatch {
                    field: "num_classes",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn malformed_fields_name_the_field() {
        let spec = ArchSpec::from_id("resnet20").unwrap();
        let mut map = WeightsMetadata::for_spec(&spec).to_map();
        map.insert("classes".into(), r#"["only one"]"#.into());
        let err = WeightsMetadata::from_map(&map, path()).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::BadMetadata {
                    field: "classes",
                    ..
                }
            ),
            "{err}"
        );
        map.remove("classes");
        map.insert("num_classes".into(), "ten".into());
        let err = WeightsMetadata::from_map(&map, path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_classes") && err.contains("ten"), "{err}");
        map.insert("num_classes".into(), "10".into());
        map.insert("format_version".into(), "99".into());
        let err = WeightsMetadata::from_map(&map, path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
