//! The one loader of pretrained models: the net built for the weights, the
//! weights loaded into it, and the preprocessing they expect, together (as
//! torchvision's weight enums and timm's pretrained configs keep them).

use candle_core::Device;
use image::RgbImage;
use std::path::PathBuf;

use resnet_models::{
    read_safetensors_metadata, ArchSpec, BlockKind, ResNet, StridePlacement, WeightsMetadata,
};

use crate::classify::{classify, imagenet_classes, Prediction};
use crate::registry::{self, Entry, Preprocessing};
use crate::{load_pretrained_with, HubError, HubOptions, LoadedWeights, Result, WeightsSource};

/// A pretrained model, ready to evaluate.
#[derive(Debug)]
pub struct Pretrained {
    /// The net, with the weights loaded, on [`Pretrained::device`].
    pub model: ResNet,
    /// The device the net is on.
    pub device: Device,
    /// The names of the net's outputs: ImageNet-1k's for 1000-class nets.
    pub classes: Option<Vec<String>>,
    /// The evaluation preprocessing the weights expect: the registry's for
    /// known weights, else torchvision's for the net's input size.
    pub preprocessing: Preprocessing,
    /// The registry entry of known weights.
    pub entry: Option<&'static Entry>,
    /// What was loaded: the file, its naming layout.
    pub loaded: LoadedWeights,
}

impl Pretrained {
    /// The `k` most probable classes of `image`, with their names, most
    /// probable first: the centre view of the weights' preprocessing.
    ///
    /// Folds the net for inference on every call; to classify many images,
    /// fold it once ([`ResNet::fold_for_inference`]) and call [`classify`].
    pub fn classify(&self, image: &RgbImage, k: usize) -> Result<Vec<Prediction>> {
        let views = self.preprocessing.view_config();
        classify(
            &self.model.fold_for_inference()?,
            &self.device,
            image,
            &views,
            self.classes.as_deref(),
            k,
        )
    }
}

/// Builds the net for `weights` and loads them into it, on `device`.
///
/// `weights` is a registry name (`resnet50.tv_in1k`), `hf:OWNER/REPO[/FILE][@REV]`
/// or a weights file. `arch` is the net asked for. Weights the registry knows
/// must be of `arch`'s architecture ([`HubError::ArchMismatch`] otherwise) and
/// set its stride placement, which `stride_placement`, where the caller
/// chose one, must agree with for bottleneck nets
/// ([`HubError::StridePlacementContradicts`]).
/// Other weights load into `arch` as it is, with `stride_placement`, which
/// bottleneck nets must be given ([`HubError::AmbiguousStridePlacement`]
/// otherwise: their v1 and v1.5 forms have the same tensors, so loading
/// cannot tell them apart). Hub files are fetched as
/// [`crate::fetch_with`] does with `options`.
pub fn load_model(
    weights: &str,
    arch: &ArchSpec,
    stride_placement: Option<StridePlacement>,
    device: &Device,
    options: &HubOptions,
) -> Result<Pretrained> {
    let entry = registry::find(weights);
    let mut stored_classes = None;
    let (spec, source) = match entry {
        Some(entry) => {
            if arch.id != entry.arch {
                return Err(HubError::ArchMismatch {
                    weights: weights.to_string(),
                    expected: entry.arch,
                    found: arch.id.clone(),
                });
            }
            if let Some(asked) = stride_placement {
                if arch.block == BlockKind::Bottleneck && asked != entry.stride_placement {
                    return Err(HubError::StridePlacementContradicts {
                        name: entry.name,
                        expected: entry.stride_placement,
                        asked,
                    });
                }
            }
            let spec = arch.clone().with_stride_placement(entry.stride_placement);
            (spec, entry.source())
        }
        None => {
            let source = WeightsSource::parse(weights)?;
            let stored = stored_metadata(&source)?;
            let spec = match (&stored, stride_placement) {
                // Our own files say how they were built: that, checked
                // against what was asked, with the caller's placement if any.
                (Some((path, meta)), asked) => {
                    let placement = asked.unwrap_or(meta.stride_placement);
                    let spec = arch.clone().with_stride_placement(placement);
                    meta.check(&spec, path)?;
                    spec
                }
                (None, Some(placement)) => arch.clone().with_stride_placement(placement),
                // v1 and v1.5 bottleneck nets have the same tensors: weights
                // of either load into both, and one of them computes another
                // function. Nothing in the file tells which.
                (None, None) if arch.block == BlockKind::Bottleneck => {
                    return Err(HubError::AmbiguousStridePlacement {
                        weights: weights.to_string(),
                        arch: arch.id.clone(),
                    })
                }
                (None, None) => arch.clone(),
            };
            stored_classes = stored.and_then(|(_, meta)| meta.classes);
            (spec, source)
        }
    };
    let model = ResNet::new(&spec, 0, device)?;
    let loaded = load_pretrained_with(&model, &source, options)?;
    let preprocessing = entry.map_or_else(
        || Preprocessing::torchvision(spec.input_size),
        |e| e.preprocessing,
    );
    let names = imagenet_classes();
    let classes = stored_classes.or_else(|| {
        (spec.num_classes == names.len()).then(|| names.into_iter().map(str::to_string).collect())
    });
    Ok(Pretrained {
        model,
        device: device.clone(),
        classes,
        preprocessing,
        entry,
        loaded,
    })
}

/// The metadata of a local safetensors file written by this project, with its path.
fn stored_metadata(source: &WeightsSource) -> Result<Option<(PathBuf, WeightsMetadata)>> {
    match source {
        WeightsSource::Local(path)
            if path.is_file() && path.extension().is_some_and(|e| e == "safetensors") =>
        {
            Ok(read_safetensors_metadata(path)?.map(|meta| (path.clone(), meta)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use resnet_models::{ArchSpec, ResNet, StridePlacement};

    use super::load_model;
    use crate::registry::Preprocessing;
    use crate::{HubError, HubOptions};

    /// Options whose server does not listen (any request fails), with an
    /// empty cache in `dir`.
    fn offline(dir: &tempfile::TempDir) -> HubOptions {
        HubOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            cache_dir: Some(dir.path().join("hub")),
        }
    }

    #[test]
    fn a_weights_file_loads_into_the_net_asked_for_with_torchvision_preprocessing() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = ArchSpec::from_id("resnet20").unwrap();
        let source = ResNet::new(&spec, 7, &Device::Cpu).unwrap();
        let path = tmp.path().join("r20.safetensors");
        source.save(&path).unwrap();

        let weights = path.to_str().unwrap();
        let got = load_model(weights, &spec, None, &Device::Cpu, &offline(&tmp)).unwrap();
        assert_eq!(got.entry, None);
        assert_eq!(got.preprocessing, Preprocessing::torchvision(32));
        assert_eq!(got.loaded.path, path);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
        let logits = |m: &ResNet| m.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(logits(&got.model), logits(&source));

        // Ten classes have no names; the probabilities come most probable first.
        assert_eq!(got.classes, None);
        let image =
            image::RgbImage::from_fn(40, 36, |x, y| image::Rgb([x as u8 * 6, y as u8 * 7, 90]));
        let top = got.classify(&image, 3).unwrap();
        assert_eq!(top.len(), 3);
        assert!(top.windows(2).all(|p| p[0].probability >= p[1].probability));
        assert!(top.iter().all(|p| p.name.is_none() && p.class < 10));
        let all: f32 = got
            .classify(&image, 10)
            .unwrap()
            .iter()
            .map(|p| p.probability)
            .sum();
        assert!((all - 1.0).abs() < 1e-5, "{all}");
    }

    #[test]
    fn known_weights_fix_the_architecture_and_stride_placement_before_fetching() {
        let tmp = tempfile::tempdir().unwrap();
        let load = |arch: &str, placement| {
            let spec = ArchSpec::from_id(arch).unwrap();
            load_model(
                "resnet50.tv_in1k",
                &spec,
                placement,
                &Device::Cpu,
                &offline(&tmp),
            )
            .unwrap_err()
        };
        let err = load("resnet18", None);
        assert!(matches!(err, HubError::ArchMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("resnet18 does not fit"), "{err}");
        let err = load("resnet50", Some(StridePlacement::V1));
        assert!(
            matches!(err, HubError::StridePlacementContradicts { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("weights use v1.5"), "{err}");
        // With the placement left to the registry, the request reaches the
        // (absent) server: the spec was accepted.
        let err = load("resnet50", None);
        assert!(matches!(err, HubError::Download { .. }), "{err:?}");
    }

    #[test]
    fn unknown_bottleneck_weights_need_a_stride_placement_unless_their_metadata_say() {
        let tmp = tempfile::tempdir().unwrap();
        let v15 = ArchSpec::from_id("resnet50")
            .unwrap()
            .with_stride_placement(StridePlacement::V1_5)
            .with_num_classes(3);
        let model = ResNet::new(&v15, 1, &Device::Cpu).unwrap();
        // Without metadata (as torchvision writes them), v1.5 weights cannot
        // be told from v1 ones: refused, naming the flag.
        let bare = tmp.path().join("bare.safetensors");
        candle_core::safetensors::save(&model.state_tensors(), &bare).unwrap();
        let options = offline(&tmp);
        let load = |path: &std::path::Path, placement| {
            load_model(
                path.to_str().unwrap(),
                &v15,
                placement,
                &Device::Cpu,
                &options,
            )
        };
        let err = load(&bare, None).unwrap_err();
        assert!(
            matches!(err, HubError::AmbiguousStridePlacement { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("--stride-placement"), "{err}");
        let got = load(&bare, Some(StridePlacement::V1_5)).unwrap();
        assert_eq!(got.model.spec().stride_placement, StridePlacement::V1_5);

        // With metadata, the file says v1.5, and asking for v1 is refused.
        let ours = tmp.path().join("ours.safetensors");
        model.save(&ours).unwrap();
        let got = load(&ours, None).unwrap();
        assert_eq!(got.model.spec().stride_placement, StridePlacement::V1_5);
        let err = load(&ours, Some(StridePlacement::V1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ours.safetensors") && err.contains("stride_placement = v1.5"),
            "{err}"
        );
    }
}
