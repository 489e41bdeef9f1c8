//! The fuzz targets: each writes its input where a reader expects a file
//! and reads it, the way the crates read what a user hands them.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use image::{ImageFormat, RgbImage};
use resnet_data::{BadImagePolicy, ImageFolder, ImageNetEvalLoader, ImageNetNormalization, Split};
use resnet_models::{ArchSpec, BlockKind, ResNet, Shortcut, Stem, StridePlacement};
use resnet_train::checkpoint::CheckpointState;
use resnet_train::config::RunConfigFile;
use resnet_train::TrainConfig;

/// The names of the targets, as the corpus folders are named.
pub const TARGETS: [&str; 6] = [
    "cifar",
    "safetensors",
    "pth",
    "label_file",
    "config",
    "image_folder",
];

/// The files and the model the targets share: a scratch folder, a small
/// network whose weights the `safetensors` target loads, and two valid
/// images a label file can name.
pub struct Targets {
    dir: tempfile::TempDir,
    model: ResNet,
}

/// A network small enough to load thousands of times a second, with every
/// kind of tensor the zoo has (stem, blocks, projections, BN, classifier).
fn tiny_spec() -> ArchSpec {
    ArchSpec {
        id: "tiny".into(),
        block: BlockKind::Basic,
        blocks_per_stage: vec![1, 1],
        widths: vec![4, 8],
        stem: Stem::Cifar,
        shortcut: Some(Shortcut::B),
        stride_placement: StridePlacement::V1_5,
        num_classes: 3,
        input_size: 8,
    }
}

/// A small picture encoded as `format`.
fn picture(format: ImageFormat, side: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(side, side + 3, |x, y| {
        image::Rgb([(x * 17) as u8, (y * 29) as u8, ((x ^ y) * 7) as u8])
    });
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, format)
        .expect("encoding to memory");
    bytes.into_inner()
}

impl Targets {
    /// Sets up the scratch folder and the model.
    pub fn new() -> Targets {
        let dir = tempfile::tempdir().expect("a scratch folder");
        let flat = dir.path().join("flat");
        std::fs::create_dir_all(&flat).expect("the flat folder");
        std::fs::write(flat.join("a.png"), picture(ImageFormat::Png, 5)).expect("a.png");
        std::fs::write(flat.join("b.jpg"), picture(ImageFormat::Jpeg, 6)).expect("b.jpg");
        let model = ResNet::new(&tiny_spec(), 0, &Device::Cpu).expect("the tiny model");
        Targets { dir, model }
    }

    /// Valid inputs of `target`: the files of `corpus/<target>/` and, for the
    /// targets whose files are binary encodings, some made here.
    pub fn corpus(&self, corpus_root: &Path, target: &str) -> std::io::Result<Vec<Vec<u8>>> {
        let mut inputs = Vec::new();
        let dir = corpus_root.join(target);
        if dir.is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            paths.sort();
            for path in paths {
                inputs.push(std::fs::read(path)?);
            }
        }
        match target {
            "safetensors" => {
                let path = self.dir.path().join("seed.safetensors");
                let norm = resnet_data::Normalization::PerChannel {
                    mean: [0.5, 0.4, 0.3],
                    std: [0.2, 0.25, 0.3],
                };
                for norm in [Some(&norm), None] {
                    resnet_eval::save_weights(&self.model, norm, &path)
                        .map_err(std::io::Error::other)?;
                    inputs.push(std::fs::read(&path)?);
                }
            }
            "image_folder" => {
                inputs.push(picture(ImageFormat::Png, 9));
                inputs.push(picture(ImageFormat::Jpeg, 9));
            }
            _ => {}
        }
        Ok(inputs)
    }

    /// Runs `target` on `input`.
    pub fn run(&self, target: &str, input: &[u8]) {
        match target {
            "cifar" => self.cifar(input),
            "safetensors" => self.safetensors(input),
            "pth" => self.pth(input),
            "label_file" => self.label_file(input),
            "config" => self.config(input),
            "image_folder" => self.image_folder(input),
            other => panic!("unknown fuzz target `{other}`"),
        }
    }

    fn write(&self, name: &str, input: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, input).expect("writing the input");
        path
    }

    /// A CIFAR-10 batch file.
    fn cifar(&self, input: &[u8]) {
        let _ = Split::read_bin(&self.write("test_batch.bin", input));
    }

    /// A weights file in our format (tensors and `normalization.*`
    /// metadata), read as `resnet eval --weights` reads it.
    fn safetensors(&self, input: &[u8]) {
        let path = self.write("weights.safetensors", input);
        if let Ok(tensors) = resnet_hub::read_tensors(&path) {
            let _ = resnet_eval::normalization_from_tensors(&tensors);
            let _ = resnet_eval::imagenet_normalization_from_tensors(&tensors);
        }
        let _ = resnet_eval::load_weights(&self.model, &path);
    }

    /// A PyTorch checkpoint.
    fn pth(&self, input: &[u8]) {
        let _ = resnet_hub::read_pth(&self.write("weights.pth", input));
    }

    /// The label file of a flat validation folder.
    fn label_file(&self, input: &[u8]) {
        let labels = self.write("labels.txt", input);
        let classes = ["cat".to_string(), "dog".to_string(), "owl".to_string()];
        let _ = ImageFolder::open_flat(
            &self.dir.path().join("flat"),
            &labels,
            &classes,
            BadImagePolicy::Skip,
        );
    }

    /// A TOML or JSON config, a run folder's `config.json` and
    /// `checkpoint.json`, and its metrics log.
    fn config(&self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        if let Ok(config) = toml::from_str::<TrainConfig>(&text) {
            if config.validate().is_ok() {
                let _ = config.with_absolute_paths();
            }
        }
        if let Ok(file) = serde_json::from_str::<RunConfigFile>(&text) {
            let _ = file.config.validate();
        }
        let _ = serde_json::from_str::<CheckpointState>(&text);
        let _ = serde_json::from_str::<HashMap<String, serde_json::Value>>(&text);
        let _ = resnet_train::read_metrics(&self.write("metrics.jsonl", input));
    }

    /// An image in an image folder, decoded by the evaluation loader.
    fn image_folder(&self, input: &[u8]) {
        let root = self.dir.path().join("folder");
        let class = root.join("cls");
        std::fs::create_dir_all(&class).expect("the class folder");
        // The file's extension says JPEG or PNG; the content decides.
        let name = if input.starts_with(&[0xff, 0xd8]) {
            "x.jpg"
        } else {
            "x.png"
        };
        for stale in ["x.jpg", "x.png"] {
            let _ = std::fs::remove_file(class.join(stale));
        }
        std::fs::write(class.join(name), input).expect("writing the image");
        let Ok(folder) = ImageFolder::open_with(&root, None, BadImagePolicy::Reject) else {
            return;
        };
        let Ok(loader) =
            ImageNetEvalLoader::new(Arc::new(folder), ImageNetNormalization::TORCHVISION, 1, 1)
        else {
            return;
        };
        for batch in loader {
            let _ = batch;
        }
    }
}

impl Default for Targets {
    fn default() -> Self {
        Targets::new()
    }
}
