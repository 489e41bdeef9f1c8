//! Known pretrained weights, as data (like timm's pretrained configs).
//!
//! Every entry names its hub file, the architecture and stride placement it
//! was trained with, its evaluation preprocessing and the top-1 accuracy
//! reported for it on the ImageNet-1k validation set, with the source.

use resnet_data::{
    CropGeometry, ImageNetNormalization, Resample, ViewConfig, IMAGENET_MEAN, IMAGENET_STD,
};
use resnet_models::{ArchSpec, ModelError, StridePlacement};

use crate::{HfSpec, WeightsSource, DEFAULT_REVISION};

/// The evaluation preprocessing weights expect: resize the shorter side to
/// [`Preprocessing::resize`], center-crop `crop` x `crop`, scale to [0, 1],
/// then subtract `mean` and divide by `std` per RGB channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocessing {
    /// The fraction of the resized image the crop keeps (timm's `crop_pct`).
    pub crop_pct: f64,
    /// The side of the square center crop, the network's input size.
    pub crop: usize,
    /// The resampling of the resize.
    pub interpolation: Resample,
    /// Per-channel mean (RGB) subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB) divided by after the mean.
    pub std: [f32; 3],
}

impl Preprocessing {
    /// torchvision's evaluation transform for a `crop` x `crop` input:
    /// shorter side `crop / 0.875` (256 for 224), bilinear, centre crop,
    /// ImageNet mean and std. What weights the registry does not know are
    /// assumed to expect.
    pub const fn torchvision(crop: usize) -> Preprocessing {
        Preprocessing {
            crop_pct: 0.875,
            crop,
            interpolation: Resample::Bilinear,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// The evaluation views' crops and normalisation.
    pub fn view_config(&self) -> ViewConfig {
        ViewConfig {
            geometry: self.geometry(),
            normalization: ImageNetNormalization::PerChannel {
                mean: self.mean,
                std: self.std,
            },
        }
    }

    /// The shorter side before cropping, `floor(crop / crop_pct)` as timm
    /// computes it: 256 for crop 224 at 0.875.
    pub fn resize(&self) -> usize {
        (self.crop as f64 / self.crop_pct).floor() as usize
    }

    /// Where the evaluation crops are taken: [`Preprocessing::resize`]
    /// (at least `crop`), `crop`, with this preprocessing's resampling.
    pub fn geometry(&self) -> CropGeometry {
        CropGeometry {
            resize: self.resize().max(self.crop) as u32,
            crop: self.crop as u32,
            resample: self.interpolation,
        }
    }
}

/// One set of known pretrained weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The registry name (`resnet50.tv_in1k`, timm's naming).
    pub name: &'static str,
    /// The hub repository, `OWNER/REPO`.
    pub repo: &'static str,
    /// The weights file in the repository.
    pub file: &'static str,
    /// The architecture's zoo id.
    pub arch: &'static str,
    /// The stride placement the weights were trained with.
    pub stride_placement: StridePlacement,
    /// The evaluation preprocessing.
    pub preprocessing: Preprocessing,
    /// Reported ImageNet-1k validation top-1 accuracy in percent, if known.
    pub top1: Option<f64>,
    /// Where the top-1 figure (or its absence) comes from.
    pub top1_source: &'static str,
}

impl Entry {
    /// The hub source of the weights, at revision `main`.
    pub fn source(&self) -> WeightsSource {
        WeightsSource::Hf(HfSpec {
            repo: self.repo.to_string(),
            file: self.file.to_string(),
            revision: DEFAULT_REVISION.to_string(),
        })
    }

    /// The architecture the weights fit: the zoo's, with their stride placement.
    pub fn spec(&self) -> Result<ArchSpec, ModelError> {
        Ok(ArchSpec::from_id(self.arch)?.with_stride_placement(self.stride_placement))
    }
}

/// torchvision's evaluation transform: resize 256, crop 224, bilinear.
const TORCHVISION: Preprocessing = Preprocessing::torchvision(224);

/// Source of the torchvision V1 weights' accuracy.
const TV_V1_SOURCE: &str = "torchvision IMAGENET1K_V1 weights documentation (acc@1)";

/// Weights with v1.5 strides and torchvision's preprocessing (the other
/// fields are set by struct update where they differ).
const fn tv(
    name: &'static str,
    repo: &'static str,
    file: &'static str,
    arch: &'static str,
    top1: f64,
    top1_source: &'static str,
) -> Entry {
    Entry {
        name,
        repo,
        file,
        arch,
        stride_placement: StridePlacement::V1_5,
        preprocessing: TORCHVISION,
        top1: Some(top1),
        top1_source,
    }
}

/// Source of the lmz/candle-resnet figures. The files (candle's ResNet
/// example loads them) use torchvision's names; that they are torchvision's
/// V1 weights converted is assumed, not verified here.
const LMZ_SOURCE: &str =
    "torchvision IMAGENET1K_V1 (assumed: lmz/candle-resnet converts torchvision's weights)";

/// timm's `resnet50.a1_in1k` config (`_rcfg` in timm's resnet.py): bicubic,
/// crop_pct 0.95, input 224 (timm also lists a test size of 288 at crop_pct
/// 1.0, not used here).
const TIMM_A1: Preprocessing = Preprocessing {
    crop_pct: 0.95,
    interpolation: Resample::Bicubic,
    ..TORCHVISION
};

/// transformers' `microsoft/resnet-50`: v1.5 strides (transformers' ResNet
/// documentation). Unverified here: that the repository has
/// `model.safetensors` (it has `pytorch_model.bin` too) and this
/// preprocessing, recalled from its `preprocessor_config.json` (crop_pct
/// 0.875, bicubic); its model card states no accuracy.
const MICROSOFT: Preprocessing = Preprocessing {
    interpolation: Resample::Bicubic,
    ..TORCHVISION
};

#[rustfmt::skip]
static ENTRIES: [Entry; 12] = [
    tv("resnet18.tv_in1k", "timm/resnet18.tv_in1k", "model.safetensors", "resnet18", 69.758, TV_V1_SOURCE),
    tv("resnet34.tv_in1k", "timm/resnet34.tv_in1k", "model.safetensors", "resnet34", 73.314, TV_V1_SOURCE),
    tv("resnet50.tv_in1k", "timm/resnet50.tv_in1k", "model.safetensors", "resnet50", 76.130, TV_V1_SOURCE),
    tv("resnet101.tv_in1k", "timm/resnet101.tv_in1k", "model.safetensors", "resnet101", 77.374, TV_V1_SOURCE),
    tv("resnet152.tv_in1k", "timm/resnet152.tv_in1k", "model.safetensors", "resnet152", 78.312, TV_V1_SOURCE),
    Entry { preprocessing: TIMM_A1, ..tv("resnet50.a1_in1k", "timm/resnet50.a1_in1k", "model.safetensors", "resnet50", 80.4,
        "Wightman et al., ResNet strikes back (arXiv:2110.00476), procedure A1, 224 test") },
    tv("resnet18.candle_tv_in1k", "lmz/candle-resnet", "resnet18.safetensors", "resnet18", 69.758, LMZ_SOURCE),
    tv("resnet34.candle_tv_in1k", "lmz/candle-resnet", "resnet34.safetensors", "resnet34", 73.314, LMZ_SOURCE),
    tv("resnet50.candle_tv_in1k", "lmz/candle-resnet", "resnet50.safetensors", "resnet50", 76.130, LMZ_SOURCE),
    tv("resnet101.candle_tv_in1k", "lmz/candle-resnet", "resnet101.safetensors", "resnet101", 77.374, LMZ_SOURCE),
    tv("resnet152.candle_tv_in1k", "lmz/candle-resnet", "resnet152.safetensors", "resnet152", 78.312, LMZ_SOURCE),
    Entry { name: "resnet50.microsoft", repo: "microsoft/resnet-50", file: "model.safetensors", arch: "resnet50",
        stride_placement: StridePlacement::V1_5, preprocessing: MICROSOFT,
        top1: None, top1_source: "not stated on the model card; unverified" },
];

/// Every known set of weights.
pub fn entries() -> &'static [Entry] {
    &ENTRIES
}

/// The entry named `name_or_spec`, or whose file an `hf:` spec names (any revision).
pub fn find(name_or_spec: &str) -> Option<&'static Entry> {
    match WeightsSource::parse(name_or_spec) {
        Ok(source @ WeightsSource::Hf(_)) => find_source(&source),
        _ => ENTRIES.iter().find(|e| e.name == name_or_spec),
    }
}

/// The entry for the hub file `source` names (any revision); `None` for local files.
pub fn find_source(source: &WeightsSource) -> Option<&'static Entry> {
    match source {
        WeightsSource::Hf(spec) => ENTRIES
            .iter()
            .find(|e| e.repo == spec.repo && e.file == spec.file),
        WeightsSource::Local(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_unique_and_builds_its_architecture() {
        let mut names: Vec<_> = ENTRIES.iter().map(|e| e.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ENTRIES.len());
        for entry in entries() {
            let spec = entry.spec().unwrap();
            assert_eq!(
                spec.stride_placement, entry.stride_placement,
                "{}",
                entry.name
            );
            assert_eq!(spec.input_size, entry.preprocessing.crop, "{}", entry.name);
            assert_eq!(find(entry.name), Some(entry));
            assert_eq!(find_source(&entry.source()), Some(entry));
        }
    }

    #[test]
    fn lookup_by_name_or_hub_spec() {
        let entry = find("resnet50.tv_in1k").unwrap();
        assert_eq!(entry.top1, Some(76.130));
        assert_eq!(entry.preprocessing.resize(), 256);
        assert_eq!(find("hf:timm/resnet50.tv_in1k@main"), Some(entry));
        assert_eq!(
            find("hf:timm/resnet50.tv_in1k/model.safetensors@abc"),
            Some(entry)
        );
        let lmz = find("hf:lmz/candle-resnet/resnet34.safetensors").unwrap();
        assert_eq!(lmz.arch, "resnet34");
        assert_eq!(find("hf:lmz/candle-resnet"), None);
        assert_eq!(find("resnet50"), None);
    }

    #[test]
    fn timm_a1_weights_use_bicubic_crop_pct_095() {
        let a1 = find("resnet50.a1_in1k").unwrap();
        assert_eq!(a1.preprocessing.interpolation, Resample::Bicubic);
        assert_eq!(a1.preprocessing.resize(), 235);
        assert_eq!(a1.preprocessing.crop, 224);
        let geometry = a1.preprocessing.geometry();
        assert_eq!((geometry.resize, geometry.crop), (235, 224));
        assert_eq!(geometry.resample, Resample::Bicubic);
    }
}
