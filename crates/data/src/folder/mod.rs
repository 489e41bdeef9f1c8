//! ImageNet-style image folders: JPEG and PNG files labelled by folder or by a label file,
//! see [`ImageFolder`]; and what the paper's ImageNet recipe does with them: the training
//! augmentation and test views ([`augment`]), the loaders ([`loader`]), the normalisation
//! ([`norm`]) and the multi-view evaluation batches ([`views`]).

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use image::{ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, BadImage, DataError, Result};

pub(crate) mod augment;
pub(crate) mod loader;
pub(crate) mod norm;
pub(crate) mod views;

/// File extensions (compared case-insensitively) of the files taken as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// What opening an [`ImageFolder`] does with files that are not readable images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BadImagePolicy {
    /// Fail with [`DataError::BadImages`], listing every bad file.
    #[default]
    Reject,
    /// Drop bad files, logging a warning for each.
    Skip,
}

/// One image of a folder: its file and its class index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSample {
    /// The image file.
    pub path: PathBuf,
    /// Its class, an index into [`ImageFolder::classes`].
    pub label: u32,
}

/// A labelled set of image files.
///
/// Two layouts are read:
///
/// - **class folders** ([`ImageFolder::open`]), the ILSVRC training layout
///   `ROOT/<class>/<image>`: the classes are the sub-folders of `ROOT`, in sorted
///   order, or in the order of a class-list file (one class name per line; blank
///   lines and lines starting with `#` are ignored; every listed class must have
///   a folder, and folders not listed are ignored);
/// - **a flat folder plus a label file** ([`ImageFolder::open_flat`]), as for the
///   ILSVRC validation set: each line of the label file is `<file name> <label>`,
///   separated by white space, where the file name is relative to the folder
///   (so it cannot contain spaces) and the label is either a class index
///   (digits only, from 0) or a class name; blank lines and `#` lines are ignored.
///
/// Images are the files whose extension is `jpg`, `jpeg` or `png` in any case;
/// other files and hidden entries (names starting with `.`) are ignored. Every
/// image's header is checked when the folder is opened, in parallel (a file whose
/// pixel data is damaged past a valid header fails later, when loaded); the
/// [`BadImagePolicy`] decides whether bad files fail the open (all of them
/// listed in one [`DataError::BadImages`]) or are dropped with a warning.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<ImageSample>,
}

impl ImageFolder {
    /// Opens `ROOT/<class>/<image>`, rejecting bad image files.
    ///
    /// Classes are the sorted sub-folder names, or the order of `class_list`.
    pub fn open(root: &Path, class_list: Option<&Path>) -> Result<Self> {
        Self::open_with(root, class_list, BadImagePolicy::Reject)
    }

    /// As [`ImageFolder::open`], with a choice of what to do with bad image files.
    pub fn open_with(
        root: &Path,
        class_list: Option<&Path>,
        on_bad: BadImagePolicy,
    ) -> Result<Self> {
        let classes = class_names(root, class_list)?;
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let mut files = visible_entries(&root.join(class))?;
            files.retain(|(_, p)| is_image_file(p));
            samples.extend(files.into_iter().map(|(_, path)| ImageSample {
                path,
                label: label as u32,
            }));
        }
        let expected = "ROOT/<class>/<image>.{jpg,jpeg,png}";
        Self::checked(root, classes, samples, on_bad, expected)
    }

    /// Opens a flat folder of images labelled by `label_file` over `classes`
    /// (typically the training folder's [`ImageFolder::classes`]).
    ///
    /// Samples keep the label file's order; listed files that are missing
    /// count as bad. A listed name must stay inside `dir`: an absolute path
    /// or a `..` is an error naming the line.
    pub fn open_flat(
        dir: &Path,
        label_file: &Path,
        classes: &[String],
        on_bad: BadImagePolicy,
    ) -> Result<Self> {
        let index: HashMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let mut samples = Vec::new();
        for (line, text) in list_lines(label_file)? {
            let bad = |reason: String| DataError::BadListFile {
                path: label_file.into(),
                line,
                reason,
            };
            let [name, label] = text.split_whitespace().collect::<Vec<_>>()[..] else {
                return Err(bad(format!(
                    "expected `<file name> <class index or name>`, found {text:?}"
                )));
            };
            // A name that leads out of `dir` (absolute, or with `..`) would
            // read files the folder does not hold.
            if !Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(bad(format!(
                    "expected a file name inside {}, found {name:?}",
                    dir.display()
                )));
            }
            let label = if label.bytes().all(|b| b.is_ascii_digit()) {
                label.parse().ok().filter(|&i| i < classes.len())
            } else {
                index.get(label).copied()
            }
            .ok_or_else(|| {
                let n = classes.len();
                bad(format!(
                    "unknown class {label:?}: expected a class name or an index below {n}"
                ))
            })?;
            samples.push(ImageSample {
                path: dir.join(name),
                label: label as u32,
            });
        }
        let expected = "the images named in the label file";
        Self::checked(dir, classes.to_vec(), samples, on_bad, expected)
    }

    /// Checks every sample's header and applies `on_bad`.
    fn checked(
        root: &Path,
        classes: Vec<String>,
        samples: Vec<ImageSample>,
        on_bad: BadImagePolicy,
        expected: &'static str,
    ) -> Result<Self> {
        let reasons = check_headers(&samples)?;
        let (mut good, mut bad) = (Vec::with_capacity(samples.len()), Vec::new());
        for (sample, reason) in samples.into_iter().zip(reasons) {
            match reason {
                None => good.push(sample),
                Some(reason) => bad.push(BadImage {
                    path: sample.path,
                    reason,
                }),
            }
        }
        if !bad.is_empty() && on_bad == BadImagePolicy::Reject {
            return Err(DataError::BadImages {
                root: root.into(),
                bad,
            });
        }
        for b in &bad {
            tracing::warn!(
                "skipping unreadable image {}: {}",
                b.path.display(),
                b.reason
            );
        }
        if good.is_empty() {
            return Err(DataError::EmptyImageFolder {
                path: root.into(),
                expected,
            });
        }
        Ok(Self {
            root: root.into(),
            classes,
            samples: good,
        })
    }

    /// The folder that was opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The images with their labels: class by class, by file name within a
    /// class (class folders), or in label-file order (flat folder).
    pub fn samples(&self) -> &[ImageSample] {
        &self.samples
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no images (never true of an opened folder).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// At most `limit` of the images, evenly spaced over the folder in
    /// order, so that every class keeps about its share: a deterministic
    /// subset for a quick evaluation. The whole folder if `limit` is 0 or `>= len`.
    pub fn evenly_spaced(&self, limit: usize) -> ImageFolder {
        let n = self.samples.len();
        if limit >= n || limit == 0 {
            return self.clone();
        }
        ImageFolder {
            root: self.root.clone(),
            classes: self.classes.clone(),
            samples: (0..limit)
                .map(|k| self.samples[k * n / limit].clone())
                .collect(),
        }
    }

    /// Decodes image `index` (below [`ImageFolder::len`]) as 8-bit RGB.
    pub fn load(&self, index: usize) -> Result<RgbImage> {
        let sample = self
            .samples
            .get(index)
            .ok_or_else(|| DataError::InvalidOption {
                name: "image index",
                value: index.to_string(),
                expected: format!("an index below the {} images", self.samples.len()),
            })?;
        load_rgb(&sample.path)
    }
}

/// Decodes the JPEG or PNG file at `path` (format guessed from its content) as 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let reader = ImageReader::open(path)
        .map_err(io_err("opening", path))?
        .with_guessed_format()
        .map_err(io_err("reading", path))?;
    let image = reader.decode().map_err(|source| DataError::Decode {
        path: path.into(),
        source: Box::new(source),
    })?;
    Ok(image.to_rgb8())
}

/// The classes of `ROOT/<class>/<image>`: the sorted sub-folders of `root`, or
/// those named in `class_list`, which must all exist.
fn class_names(root: &Path, class_list: Option<&Path>) -> Result<Vec<String>> {
    let Some(list) = class_list else {
        let mut dirs = visible_entries(root)?;
        dirs.retain(|(_, p)| p.is_dir());
        return Ok(dirs.into_iter().map(|(name, _)| name).collect());
    };
    let classes = read_class_list(list)?;
    for (line, class) in &classes {
        let dir = root.join(class);
        if !dir.is_dir() {
            return Err(DataError::BadListFile {
                path: list.into(),
                line: *line,
                reason: format!("class folder {} does not exist", dir.display()),
            });
        }
    }
    Ok(classes.into_iter().map(|(_, c)| c).collect())
}

/// Reads a class-list file: the class names with their 1-based line numbers,
/// checking that there is at least one and no duplicate.
fn read_class_list(path: &Path) -> Result<Vec<(usize, String)>> {
    let lines = list_lines(path)?;
    let mut seen = HashMap::new();
    for (line, name) in &lines {
        if let Some(first) = seen.insert(name.as_str(), *line) {
            return Err(DataError::BadListFile {
                path: path.into(),
                line: *line,
                reason: format!("class {name:?} is already listed on line {first}"),
            });
        }
    }
    if lines.is_empty() {
        return Err(DataError::BadListFile {
            path: path.into(),
            line: 0,
            reason: "no class names: expected one per line".into(),
        });
    }
    Ok(lines)
}

/// The trimmed non-empty, non-`#` lines of a text file, with their 1-based numbers.
fn list_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.to_string()))
        .collect())
}

/// The entries of `dir` not starting with `.`, as (name, path), sorted by name.
fn visible_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            entries.push((name, entry.path()));
        }
    }
    entries.sort();
    Ok(entries)
}

/// Whether `path` is a file with one of the [`IMAGE_EXTENSIONS`].
fn is_image_file(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(ext)) && path.is_file()
}

/// Why each sample's header is unusable (`None` if it is fine), checked in parallel.
fn check_headers(samples: &[ImageSample]) -> Result<Vec<Option<String>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = samples.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, part) in samples.chunks(chunk).enumerate() {
            let name = format!("image-check-{i}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(scope, move || {
                    part.iter()
                        .map(|s| check_header(&s.path))
                        .collect::<Vec<_>>()
                })
                .map_err(|source| DataError::Spawn { name, source })?;
            handles.push(handle);
        }
        let mut reasons = Vec::with_capacity(samples.len());
        for handle in handles {
            reasons.extend(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        Ok(reasons)
    })
}

/// Reads just enough of `path` to know its format and size: why it is unusable, if it is.
fn check_header(path: &Path) -> Option<String> {
    let reader = match ImageReader::open(path).and_then(|r| r.with_guessed_format()) {
        Ok(reader) => reader,
        Err(e) => return Some(e.to_string()),
    };
    match reader.into_dimensions() {
        Ok((w, h)) if w == 0 || h == 0 => Some(format!("empty image ({w}x{h})")),
        Ok((w, h)) if w.max(h) / w.min(h) >= MAX_ASPECT_RATIO => Some(format!(
            "{w}x{h} is longer than {MAX_ASPECT_RATIO} times its width or height, \
             which resizing its shorter side to 256 or more would blow up"
        )),
        Ok((w, h)) if u64::from(w) * u64::from(h) > MAX_PIXELS => Some(format!(
            "{w}x{h} is more than {} million pixels",
            MAX_PIXELS / 1_000_000
        )),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// The most elongated image accepted: resizing the shorter side of a 12x62985
/// image (a few hundred bytes of JPEG) to 256 pixels, as every view does,
/// makes a 256x1343680 image, a gigabyte and tens of seconds of work.
const MAX_ASPECT_RATIO: u32 = 32;

/// The largest image accepted, 300 MB decoded: a 637-byte JPEG whose header
/// says 2060x62985 took 15 s and 390 MB to decode into mostly nothing.
/// Photographs of datasets are far smaller (ImageNet's are below 40
/// million pixels).
const MAX_PIXELS: u64 = 100_000_000;
