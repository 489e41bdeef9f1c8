//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, downloading or serving CIFAR-10 or image folders.
///
/// Every variant names the file, URL or option concerned and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation on a file or folder failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file the CIFAR-10 layout requires is absent.
    #[error("missing CIFAR-10 file {path} (expected data_batch_1.bin..data_batch_5.bin, test_batch.bin and batches.meta.txt)")]
    MissingFile {
        /// The file that should exist.
        path: PathBuf,
    },

    /// A folder holds none of the CIFAR-10 files.
    #[error("{path} is not a CIFAR-10 folder: expected data_batch_1.bin..data_batch_5.bin, test_batch.bin and batches.meta.txt in it, or a cifar-10-batches-bin/ subfolder holding them")]
    NotCifar10 {
        /// The folder that was given.
        path: PathBuf,
    },

    /// A batch file's size is not a positive multiple of the record size.
    #[error("{path}: size {size} bytes is not a positive multiple of 3073 (1 label byte + 3072 pixel bytes per record)")]
    BadFileSize {
        /// The batch file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },

    /// A record's label is outside 0..=9.
    #[error("{path}: record {index} has label {label}, expected 0..=9")]
    BadLabel {
        /// The batch file.
        path: PathBuf,
        /// The 0-based record index within the file.
        index: usize,
        /// The label byte found.
        label: u8,
    },

    /// `batches.meta.txt` does not list exactly 10 class names.
    #[error("{path}: found {found} class names, expected 10 (one per line)")]
    BadClassNames {
        /// The meta file.
        path: PathBuf,
        /// How many non-empty lines it has.
        found: usize,
    },

    /// Images and labels given to a split disagree in length.
    #[error("split has {images} image bytes and {labels} labels, expected 3072 bytes per label")]
    SplitShape {
        /// The number of image bytes.
        images: usize,
        /// The number of labels.
        labels: usize,
    },

    /// A validation split larger than the training split was requested.
    #[error("validation size {requested} exceeds the {available} training images")]
    ValidationTooLarge {
        /// The requested validation size.
        requested: usize,
        /// The training split's size.
        available: usize,
    },

    /// A configuration value is out of range.
    #[error("invalid {name} = {value}: expected {expected}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },

    /// A loader worker thread could not be started.
    #[error("spawning loader worker thread {name}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A mean-image file has the wrong header or size.
    #[error("{path}: not a mean-image file: {reason}")]
    BadMeanFile {
        /// The file.
        path: PathBuf,
        /// What was wrong, and what was expected.
        reason: String,
    },

    /// The HTTP request failed (connection, TLS, non-2xx status, ...).
    #[error("downloading {url}")]
    Http {
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },

    /// Reading the HTTP body failed part-way.
    #[error("downloading {url}: reading the body failed after {received} bytes")]
    DownloadIo {
        /// The URL.
        url: String,
        /// The bytes received before the failure.
        received: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The server closed the connection before sending `Content-Length` bytes.
    #[error("downloading {url}: truncated, received {received} of the {expected} bytes announced")]
    Truncated {
        /// The URL.
        url: String,
        /// The announced `Content-Length`.
        expected: u64,
        /// The bytes received.
        received: u64,
    },

    /// The downloaded archive's MD5 differs from the expected one.
    #[error("downloading {url}: md5 mismatch, expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The expected MD5, lowercase hex.
        expected: String,
        /// The MD5 of what was received, lowercase hex.
        actual: String,
    },

    /// Unpacking the downloaded archive failed.
    #[error("unpacking {url}")]
    Unpack {
        /// The URL the archive came from.
        url: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The unpacked archive is not a valid CIFAR-10 dataset.
    #[error("archive from {url} does not hold a valid cifar-10-batches-bin/")]
    BadArchive {
        /// The URL the archive came from.
        url: String,
        /// Why the unpacked folder does not load.
        #[source]
        source: Box<DataError>,
    },

    /// The destination already holds a dataset folder that does not load.
    #[error("{path} exists but is not a valid CIFAR-10 dataset (remove it to download again)")]
    ExistingInvalid {
        /// The existing folder.
        path: PathBuf,
        /// Why it does not load.
        #[source]
        source: Box<DataError>,
    },

    /// Image files that cannot be used, all found while opening an image folder.
    #[error("{} unreadable image file(s) in {root} (open with BadImagePolicy::Skip to drop them):{}", .bad.len(), list_bad(.bad))]
    BadImages {
        /// The folder that was opened.
        root: PathBuf,
        /// Every bad file, with what was wrong with it.
        bad: Vec<BadImage>,
    },

    /// An image file could not be decoded while loading it.
    #[error("decoding image {path}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: Box<image::ImageError>,
    },

    /// A line of a class-list or label file is malformed.
    #[error("{path}:{line}: {reason}")]
    BadListFile {
        /// The class-list or label file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What was wrong, and what was expected.
        reason: String,
    },

    /// An image folder holds no usable image.
    #[error("{path} holds no image: expected {expected}")]
    EmptyImageFolder {
        /// The folder.
        path: PathBuf,
        /// The layout that was looked for.
        expected: &'static str,
    },
}

/// One unusable image file: its path and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadImage {
    /// The file.
    pub path: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

/// Formats bad images one per line, for [`DataError::BadImages`].
fn list_bad(bad: &[BadImage]) -> String {
    bad.iter()
        .map(|b| format!("\n  {}: {}", b.path.display(), b.reason))
        .collect()
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, DataError>;

/// Builds a [`DataError::Io`] from an action and path, for use with `map_err`.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io {
        action,
        path,
        source,
    }
}
