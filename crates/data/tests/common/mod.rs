//! Helpers shared by the tests that build CIFAR-10 folders of their own.

use std::path::Path;

use resnet_data::{Cifar10, Split, IMAGE_BYTES, META_FILE, TEST_FILE, TRAIN_FILES};

/// The class names written to `batches.meta.txt`.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Writes a CIFAR-10 folder into `dir` with `counts[i]` records in the i-th file
/// (the five training files, then the test file) and returns what it wrote.
/// Pixels are pseudo-random; labels cycle through the classes.
pub fn write_dataset(dir: &Path, counts: [usize; 6]) -> Cifar10 {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut splits = counts.iter().enumerate().map(|(f, &n)| {
        let images = (0..n * IMAGE_BYTES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let labels = (0..n).map(|i| ((i + 3 * f) % 10) as u8).collect();
        Split::new(images, labels).unwrap()
    });
    let mut train_images = Vec::new();
    let mut train_labels = Vec::new();
    for name in TRAIN_FILES {
        let split = splits.next().unwrap();
        split.write_bin(&dir.join(name)).unwrap();
        train_images.extend_from_slice(split.images());
        train_labels.extend_from_slice(split.labels());
    }
    let test = splits.next().unwrap();
    test.write_bin(&dir.join(TEST_FILE)).unwrap();
    // The official file ends with an empty line.
    std::fs::write(dir.join(META_FILE), CLASSES.join("\n") + "\n\n").unwrap();
    Cifar10 {
        train: Split::new(train_images, train_labels).unwrap(),
        test,
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
    }
}
