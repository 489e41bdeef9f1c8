//! Reading (and writing) the CIFAR-10 binary format.
//!
//! A CIFAR-10 folder holds `data_batch_1.bin`..`data_batch_5.bin`, `test_batch.bin`
//! and `batches.meta.txt`. Each `.bin` file is a sequence of 3073-byte records:
//! one label byte (0..=9) then 3072 pixel bytes, channel-planar (1024 red, 1024
//! green, 1024 blue, each plane 32x32 row-major). Only the record count differs
//! between the full dataset (10000 per file) and a prefix sample.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{io_err, DataError, Result};

/// Bytes in one image: 3 channels of 32x32 pixels.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes in one record of a batch file: the label byte then the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Number of CIFAR-10 classes.
pub const NUM_CLASSES: usize = 10;
/// The training batch files, in the order they are concatenated.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The class-name file (one name per line).
pub const META_FILE: &str = "batches.meta.txt";
/// The folder the official archive unpacks to.
pub const DATASET_DIR: &str = "cifar-10-batches-bin";

/// A set of labelled images, stored contiguously.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Split {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl Split {
    /// Builds a split from `N*3072` channel-planar image bytes and `N` labels (each 0..=9).
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if images.len() != labels.len() * IMAGE_BYTES {
            return Err(DataError::SplitShape {
                images: images.len(),
                labels: labels.len(),
            });
        }
        if let Some(index) = labels.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
            return Err(DataError::InvalidOption {
                name: "label",
                value: format!("{} (at index {index})", labels[index]),
                expected: "a class index in 0..=9".into(),
            });
        }
        Ok(Self { images, labels })
    }

    /// Reads one batch file in the CIFAR-10 binary format.
    pub fn read_bin(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(DataError::MissingFile { path: path.into() });
        }
        let bytes = fs::read(path).map_err(io_err("reading", path))?;
        if bytes.is_empty() || bytes.len() % RECORD_BYTES != 0 {
            return Err(DataError::BadFileSize {
                path: path.into(),
                size: bytes.len() as u64,
            });
        }
        let count = bytes.len() / RECORD_BYTES;
        let mut images = Vec::with_capacity(count * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(count);
        for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let label = record[0];
            if usize::from(label) >= NUM_CLASSES {
                return Err(DataError::BadLabel {
                    path: path.into(),
                    index,
                    label,
                });
            }
            labels.push(label);
            images.extend_from_slice(&record[1..]);
        }
        Ok(Self { images, labels })
    }

    /// Writes the split as one batch file in the CIFAR-10 binary format.
    pub fn write_bin(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.len() * RECORD_BYTES);
        for (label, image) in self
            .labels
            .iter()
            .zip(self.images.chunks_exact(IMAGE_BYTES))
        {
            bytes.push(*label);
            bytes.extend_from_slice(image);
        }
        fs::write(path, bytes).map_err(io_err("writing", path))
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 3072 channel-planar bytes of image `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        self.images.get(i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES)
    }

    /// The label of image `i`, or `None` past the end.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// All images, `len() * 3072` bytes, each CHW.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels, one per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Appends another split's images after this one's.
    fn extend(&mut self, other: Split) {
        self.images.extend(other.images);
        self.labels.extend(other.labels);
    }

    /// Splits off the LAST `n` images as a validation split: returns `(train, validation)`.
    ///
    /// This is the paper's 45k/5k split of the 50k training images. `n = 0` gives an
    /// empty validation split; `n > len()` is an error.
    pub fn split_off_validation(mut self, n: usize) -> Result<(Split, Split)> {
        if n > self.len() {
            return Err(DataError::ValidationTooLarge {
                requested: n,
                available: self.len(),
            });
        }
        let keep = self.len() - n;
        let val = Split {
            images: self.images.split_off(keep * IMAGE_BYTES),
            labels: self.labels.split_off(keep),
        };
        Ok((self, val))
    }
}

/// The CIFAR-10 dataset: the five training batches concatenated, the test batch and the class names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cifar10 {
    /// `data_batch_1.bin`..`data_batch_5.bin`, in that order.
    pub train: Split,
    /// `test_batch.bin`.
    pub test: Split,
    /// The 10 class names of `batches.meta.txt`, indexed by label.
    pub classes: Vec<String>,
}

impl Cifar10 {
    /// Finds the folder holding the CIFAR-10 files: `dir` itself if it holds any of
    /// them, else `dir/cifar-10-batches-bin` (what the official archive unpacks to).
    pub fn locate(dir: &Path) -> Result<PathBuf> {
        let holds_any = |d: &Path| {
            TRAIN_FILES
                .iter()
                .chain([&TEST_FILE, &META_FILE])
                .any(|f| d.join(f).is_file())
        };
        if holds_any(dir) {
            return Ok(dir.to_path_buf());
        }
        let nested = dir.join(DATASET_DIR);
        if nested.is_dir() {
            return Ok(nested);
        }
        Err(DataError::NotCifar10 { path: dir.into() })
    }

    /// Loads the dataset from `dir` (see [`Cifar10::locate`] for which folders are accepted).
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = Self::locate(dir)?;
        let meta = dir.join(META_FILE);
        // Check every file exists before reading any, so a missing one is named quickly.
        for f in TRAIN_FILES.iter().chain([&TEST_FILE, &META_FILE]) {
            let path = dir.join(f);
            if !path.is_file() {
                return Err(DataError::MissingFile { path });
            }
        }
        let text = fs::read_to_string(&meta).map_err(io_err("reading", &meta))?;
        let classes: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if classes.len() != NUM_CLASSES {
            return Err(DataError::BadClassNames {
                path: meta,
                found: classes.len(),
            });
        }
        let mut train = Split::default();
        for f in TRAIN_FILES {
            train.extend(Split::read_bin(&dir.join(f))?);
        }
        let test = Split::read_bin(&dir.join(TEST_FILE))?;
        tracing::debug!(
            dir = %dir.display(),
            train = train.len(),
            test = test.len(),
            "loaded CIFAR-10"
        );
        Ok(Self {
            train,
            test,
            classes,
        })
    }
}
