//! The CIFAR-10 reader: the bundled real sample, synthetic folders and every error case.

mod common;

use std::fs;
use std::path::Path;

use resnet_data::{Cifar10, DataError, Split, DATASET_DIR, IMAGE_BYTES, RECORD_BYTES};
use resnet_test_support::cifar_sample;

fn histogram(labels: &[u8]) -> [usize; 10] {
    let mut h = [0; 10];
    for &l in labels {
        h[l as usize] += 1;
    }
    h
}

#[test]
fn reads_the_bundled_sample() {
    let data = Cifar10::load(&cifar_sample()).unwrap();
    assert_eq!(data.train.len(), 5438);
    assert_eq!(data.test.len(), 1017);
    assert_eq!(data.train.images().len(), 5438 * 3072);
    assert_eq!(&data.train.labels()[..10], &[6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert_eq!(&data.test.labels()[..10], &[3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    assert_eq!(data.classes, common::CLASSES);
    // Class histograms from the sample's README.
    let train = [541, 564, 524, 529, 563, 523, 540, 548, 572, 534];
    let test = [105, 93, 100, 104, 92, 87, 114, 102, 110, 110];
    assert_eq!(histogram(data.train.labels()), train);
    assert_eq!(histogram(data.test.labels()), test);
}

#[test]
fn training_files_are_concatenated_in_order() {
    let data = Cifar10::load(&cifar_sample()).unwrap();
    // Record 3 of data_batch_4.bin follows the 1102 + 1017 + 1017 records of files 1-3.
    let raw = fs::read(cifar_sample().join("data_batch_4.bin")).unwrap();
    let record = &raw[3 * RECORD_BYTES..4 * RECORD_BYTES];
    let i = 1102 + 1017 + 1017 + 3;
    assert_eq!(data.train.label(i), Some(record[0]));
    assert_eq!(data.train.image(i), Some(&record[1..]));
    // The first image of the test file.
    let raw = fs::read(cifar_sample().join("test_batch.bin")).unwrap();
    assert_eq!(data.test.image(0), Some(&raw[1..RECORD_BYTES]));
    assert_eq!(data.test.image(1017), None);
    assert_eq!(data.test.label(1017), None);
}

#[test]
fn accepts_the_parent_of_cifar_10_batches_bin() {
    let tmp = tempfile::tempdir().unwrap();
    let written = common::write_dataset(&tmp.path().join(DATASET_DIR), [3, 1, 2, 1, 4, 5]);
    let from_parent = Cifar10::load(tmp.path()).unwrap();
    assert_eq!(from_parent, written);
    assert_eq!(from_parent.train.len(), 11);
    assert_eq!(
        Cifar10::locate(tmp.path()).unwrap(),
        tmp.path().join(DATASET_DIR)
    );
    assert_eq!(
        Cifar10::load(&tmp.path().join(DATASET_DIR)).unwrap(),
        written
    );
}

#[test]
fn write_bin_uses_the_official_record_layout() {
    let image: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i % 251) as u8).collect();
    let split = Split::new([image.clone(), image.clone()].concat(), vec![7, 2]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.bin");
    split.write_bin(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 2 * 3073);
    assert_eq!(bytes[0], 7);
    assert_eq!(&bytes[1..3073], &image[..]);
    assert_eq!(bytes[3073], 2);
    assert_eq!(Split::read_bin(&path).unwrap(), split);
}

fn load_err(dir: &Path) -> DataError {
    Cifar10::load(dir).expect_err("loading should fail")
}

#[test]
fn truncated_file_is_reported_with_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_dataset(tmp.path(), [2; 6]);
    let path = tmp.path().join("data_batch_3.bin");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = load_err(tmp.path());
    match &err {
        DataError::BadFileSize { path: p, size } => {
            assert_eq!(p, &path);
            assert_eq!(*size, 2 * 3073 - 1);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("data_batch_3.bin") && msg.contains("6145") && msg.contains("3073"));
}

#[test]
fn empty_file_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_dataset(tmp.path(), [2; 6]);
    fs::write(tmp.path().join("test_batch.bin"), b"").unwrap();
    assert!(matches!(
        load_err(tmp.path()),
        DataError::BadFileSize { size: 0, .. }
    ));
}

#[test]
fn bad_label_names_file_record_and_label() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_dataset(tmp.path(), [3; 6]);
    let path = tmp.path().join("test_batch.bin");
    let mut bytes = fs::read(&path).unwrap();
    bytes[2 * RECORD_BYTES] = 10;
    fs::write(&path, bytes).unwrap();
    let err = load_err(tmp.path());
    match &err {
        DataError::BadLabel {
            path: p,
            index,
            label,
        } => {
            assert_eq!((p, *index, *label), (&path, 2, 10));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("test_batch.bin"));
}

#[test]
fn missing_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_dataset(tmp.path(), [1; 6]);
    fs::remove_file(tmp.path().join("data_batch_5.bin")).unwrap();
    match load_err(tmp.path()) {
        DataError::MissingFile { path } => assert_eq!(path, tmp.path().join("data_batch_5.bin")),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn folder_without_cifar_files_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
    let err = load_err(tmp.path());
    assert!(matches!(&err, DataError::NotCifar10 { path } if path == tmp.path()));
    assert!(err.to_string().contains("cifar-10-batches-bin"));
    assert!(matches!(
        load_err(&tmp.path().join("does-not-exist")),
        DataError::NotCifar10 { .. }
    ));
}

#[test]
fn wrong_number_of_class_names_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_dataset(tmp.path(), [1; 6]);
    fs::write(tmp.path().join("batches.meta.txt"), "a\nb\n\nc\n").unwrap();
    assert!(matches!(
        load_err(tmp.path()),
        DataError::BadClassNames { found: 3, .. }
    ));
}

#[test]
fn validation_is_the_last_n_training_images() {
    let data = Cifar10::load(&cifar_sample()).unwrap();
    let full = data.train.clone();
    let (train, val) = data.train.split_off_validation(1000).unwrap();
    assert_eq!((train.len(), val.len()), (4438, 1000));
    assert_eq!(train.image(0), full.image(0));
    assert_eq!(train.image(4437), full.image(4437));
    assert_eq!(train.image(4438), None);
    assert_eq!(val.image(0), full.image(4438));
    assert_eq!(val.image(999), full.image(5437));
    assert_eq!(val.labels(), &full.labels()[4438..]);

    let (train, val) = full.clone().split_off_validation(0).unwrap();
    assert_eq!(train, full);
    assert!(val.is_empty());
    let (train, val) = full.clone().split_off_validation(5438).unwrap();
    assert!(train.is_empty());
    assert_eq!(val, full);
    assert!(matches!(
        full.split_off_validation(5439),
        Err(DataError::ValidationTooLarge {
            requested: 5439,
            available: 5438
        })
    ));
}

#[test]
fn split_new_checks_shape_and_labels() {
    assert!(matches!(
        Split::new(vec![0; 3071], vec![1]),
        Err(DataError::SplitShape {
            images: 3071,
            labels: 1
        })
    ));
    assert!(Split::new(vec![0; 2 * 3072], vec![1, 10]).is_err());
    assert_eq!(Split::new(vec![0; 3072], vec![9]).unwrap().len(), 1);
}
