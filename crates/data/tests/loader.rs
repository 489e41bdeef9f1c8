//! The batch loaders: determinism across threads, resuming, epochs, eval order, errors, shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use resnet_data::{
    epoch_permutation, Augment, Batch, Cifar10, DataError, EvalLoader, LoaderConfig,
    LoaderPosition, MeanImage, Normalization, Shard, Split, TrainLoader,
};

/// The last 300 training images of the bundled sample, and their per-pixel-mean normalisation.
fn small_split() -> (Arc<Split>, Normalization) {
    let dir = resnet_test_support::cifar_sample();
    let (_, split) = Cifar10::load(&dir)
        .unwrap()
        .train
        .split_off_validation(300)
        .unwrap();
    let norm = Normalization::PerPixelMean(MeanImage::from_split(&split).unwrap());
    (Arc::new(split), norm)
}

fn config(batch_size: usize, seed: u64, threads: usize) -> LoaderConfig {
    LoaderConfig {
        threads,
        ..LoaderConfig::new(batch_size, seed)
    }
}

fn take(
    split: &Arc<Split>,
    norm: &Normalization,
    cfg: LoaderConfig,
    start: LoaderPosition,
    n: usize,
) -> Vec<(LoaderPosition, Batch)> {
    TrainLoader::new(split.clone(), norm.clone(), Augment::PAPER, cfg, start)
        .unwrap()
        .take(n)
        .collect()
}

/// The normalised, un-augmented image `i` of `split`.
fn normalised(split: &Split, norm: &Normalization, i: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3072];
    norm.apply(split.image(i).unwrap(), &mut out);
    out
}

#[test]
fn same_seed_gives_identical_batches_whatever_the_thread_count() {
    let (split, norm) = small_split();
    let one = take(
        &split,
        &norm,
        config(32, 11, 1),
        LoaderPosition::default(),
        25,
    );
    let three = take(
        &split,
        &norm,
        LoaderConfig {
            prefetch: 9,
            ..config(32, 11, 3)
        },
        LoaderPosition::default(),
        25,
    );
    assert_eq!(one.len(), 25);
    assert!(one == three, "1 and 3 threads disagree");
    // 300 / 32 = 9 full batches per epoch; 25 batches reach into epoch 2.
    assert_eq!(one[8].0, LoaderPosition { epoch: 1, batch: 0 });
    assert_eq!(one[24].0, LoaderPosition { epoch: 2, batch: 7 });
    assert!(one
        .iter()
        .all(|(_, b)| b.batch_size == 32 && b.images.len() == 32 * 3072));

    let other_seed = take(
        &split,
        &norm,
        config(32, 12, 2),
        LoaderPosition::default(),
        3,
    );
    assert_ne!(other_seed[0].1, one[0].1);
}

#[test]
fn resuming_at_a_position_continues_the_uninterrupted_sequence() {
    let (split, norm) = small_split();
    let full = take(
        &split,
        &norm,
        config(40, 5, 2),
        LoaderPosition::default(),
        30,
    );
    // 300 / 40 = 7 batches per epoch. Resume mid-epoch, at an epoch boundary and later.
    for k in [0, 3, 6, 13, 20] {
        let resume_at = full[k].0;
        let resumed = take(&split, &norm, config(40, 5, 3), resume_at, 30 - k - 1);
        assert!(
            resumed[..] == full[k + 1..],
            "resuming at {resume_at:?} differs"
        );
    }
    let explicit = LoaderPosition { epoch: 2, batch: 4 };
    let resumed = take(&split, &norm, config(40, 5, 1), explicit, 1);
    assert_eq!(resumed[0].1, full[2 * 7 + 4].1);
}

#[test]
fn an_epoch_visits_every_image_once_in_its_permutation_order() {
    let (split, norm) = small_split();
    let cfg = LoaderConfig {
        drop_last: false,
        ..config(64, 3, 2)
    };
    let start = LoaderPosition { epoch: 4, batch: 0 };
    let loader = TrainLoader::new(split.clone(), norm.clone(), Augment::NONE, cfg, start).unwrap();
    assert_eq!(loader.batches_per_epoch(), 5); // ceil(300 / 64)
    let batches: Vec<Batch> = loader.take(5).map(|(_, b)| b).collect();
    assert_eq!(batches[4].batch_size, 300 - 4 * 64);

    let order = epoch_permutation(3, 4, 300);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..300).collect::<Vec<u32>>());
    assert_ne!(order, epoch_permutation(3, 5, 300));
    assert_ne!(order, epoch_permutation(4, 4, 300));

    let images: Vec<f32> = batches.iter().flat_map(|b| b.images.clone()).collect();
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    for (pos, &i) in order.iter().enumerate() {
        let i = i as usize;
        assert_eq!(labels[pos], u32::from(split.label(i).unwrap()));
        assert_eq!(
            images[pos * 3072..(pos + 1) * 3072],
            normalised(&split, &norm, i)[..]
        );
    }
}

#[test]
fn augmentation_pads_with_zeros_in_normalised_space() {
    // White images with a mean of 0.25: normalised pixels are 0.75, padding is 0.
    let split = Arc::new(Split::new(vec![255; 64 * 3072], vec![1; 64]).unwrap());
    let norm = Normalization::PerPixelMean(MeanImage::from_values(vec![0.25; 3072]).unwrap());
    let loader = TrainLoader::new(
        split,
        norm,
        Augment {
            pad: 4,
            flip: false,
        },
        config(16, 9, 2),
        LoaderPosition::default(),
    )
    .unwrap();
    let mut shifted = 0;
    for (_, batch) in loader.take(4) {
        for img in batch.images.chunks_exact(3072) {
            let zeros = img.iter().filter(|&&v| v == 0.0).count();
            let ones = img.iter().filter(|&&v| (v - 0.75).abs() < 1e-6).count();
            assert_eq!(zeros + ones, 3072);
            // The kept part is a rectangle of (32 - |dy|) x (32 - |dx|) pixels per channel.
            assert_eq!(ones % 3, 0);
            let kept = ones / 3;
            assert!((0..=4).any(|a| (0..=4).any(|b| kept == (32 - a) * (32 - b))));
            shifted += usize::from(zeros > 0);
        }
    }
    assert!(shifted > 40, "only {shifted} of 64 crops were shifted");
}

#[test]
fn eval_loader_is_sequential_unaugmented_and_keeps_the_last_batch() {
    let (split, norm) = small_split();
    let loader = EvalLoader::new(split.clone(), norm.clone(), 128, 3).unwrap();
    assert_eq!(loader.num_batches(), 3);
    let batches: Vec<Batch> = loader.collect();
    let sizes: Vec<usize> = batches.iter().map(|b| b.batch_size).collect();
    assert_eq!(sizes, [128, 128, 44]);
    let images: Vec<f32> = batches.iter().flat_map(|b| b.images.clone()).collect();
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    for i in 0..300 {
        assert_eq!(labels[i], u32::from(split.label(i).unwrap()));
        assert_eq!(
            images[i * 3072..(i + 1) * 3072],
            normalised(&split, &norm, i)[..]
        );
    }
    let single: Vec<Batch> = EvalLoader::new(split, norm, 128, 1).unwrap().collect();
    assert_eq!(single, batches);
}

#[test]
fn the_shards_of_a_batch_are_its_contiguous_parts_in_order() {
    let (split, norm) = small_split();
    let start = LoaderPosition { epoch: 1, batch: 2 };
    let whole = take(&split, &norm, config(40, 5, 2), start, 9);
    // 40 images in 3 parts: 13, 13 and 14; the augmentation of each image
    // is that of its place in the whole batch.
    let parts: Vec<_> = (0..3)
        .map(|index| {
            let cfg = LoaderConfig {
                shard: Shard { index, count: 3 },
                ..config(40, 5, 1 + index)
            };
            take(&split, &norm, cfg, start, 9)
        })
        .collect();
    for (k, (position, batch)) in whole.iter().enumerate() {
        let mut joined = Batch {
            images: Vec::new(),
            labels: Vec::new(),
            batch_size: 0,
        };
        for part in &parts {
            assert_eq!(part[k].0, *position, "shards move together");
            joined.images.extend_from_slice(&part[k].1.images);
            joined.labels.extend_from_slice(&part[k].1.labels);
            joined.batch_size += part[k].1.batch_size;
        }
        assert_eq!(parts[0][k].1.batch_size, 13);
        assert_eq!(parts[2][k].1.batch_size, 14);
        assert!(joined == *batch, "the shards of batch {k} differ from it");
    }
}

#[test]
fn bad_options_are_errors() {
    let (split, norm) = small_split();
    let start = LoaderPosition::default();
    let train = |cfg: LoaderConfig, start: LoaderPosition| {
        TrainLoader::new(split.clone(), norm.clone(), Augment::PAPER, cfg, start).err()
    };
    let name_of = |e: Option<DataError>| match e {
        Some(DataError::InvalidOption { name, .. }) => name,
        other => panic!("expected an invalid option, got {other:?}"),
    };
    assert_eq!(name_of(train(config(0, 1, 1), start)), "batch_size");
    assert_eq!(name_of(train(config(32, 1, 0), start)), "threads");
    assert_eq!(name_of(train(config(301, 1, 1), start)), "batch_size");
    let past_end = LoaderPosition { epoch: 0, batch: 9 };
    assert_eq!(name_of(train(config(32, 1, 1), past_end)), "start batch");
    let huge = LoaderPosition {
        epoch: u64::MAX,
        batch: 0,
    };
    assert_eq!(name_of(train(config(32, 1, 1), huge)), "start epoch");
    let keep_last = LoaderConfig {
        drop_last: false,
        ..config(301, 1, 1)
    };
    assert!(train(keep_last, start).is_none());
    let past_parts = LoaderConfig {
        shard: Shard { index: 2, count: 2 },
        ..config(32, 1, 1)
    };
    assert_eq!(name_of(train(past_parts, start)), "shard");
    assert_eq!(
        name_of(EvalLoader::new(split.clone(), norm.clone(), 0, 1).err()),
        "batch_size"
    );
}

#[test]
fn dropping_the_loader_stops_its_threads() {
    let (split, norm) = small_split();
    let cfg = LoaderConfig {
        prefetch: 8,
        ..config(32, 1, 4)
    };
    let mut loader = TrainLoader::new(
        split.clone(),
        norm,
        Augment::PAPER,
        cfg,
        LoaderPosition::default(),
    )
    .unwrap();
    loader.next().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // Let the workers fill their queues.
    assert!(Arc::strong_count(&split) > 1);
    let t = Instant::now();
    drop(loader);
    assert!(t.elapsed() < Duration::from_secs(10));
    // Every worker's clone of the split is gone, so every worker thread has ended.
    assert_eq!(Arc::strong_count(&split), 1);
}

#[test]
fn batches_become_tensors() {
    let (split, norm) = small_split();
    let batch = EvalLoader::new(split, norm, 7, 1).unwrap().next().unwrap();
    let (x, y) = batch.to_tensors(&candle_core::Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[7, 3, 32, 32]);
    assert_eq!(x.dtype(), candle_core::DType::F32);
    assert_eq!(y.dtype(), candle_core::DType::U32);
    assert_eq!(y.to_vec1::<u32>().unwrap(), batch.labels);
    let pixel = x
        .get(6)
        .unwrap()
        .get(2)
        .unwrap()
        .get(31)
        .unwrap()
        .get(30)
        .unwrap();
    assert_eq!(
        pixel.to_scalar::<f32>().unwrap(),
        batch.images[6 * 3072 + 2 * 1024 + 31 * 32 + 30]
    );
    let bad = Batch {
        images: vec![0.0; 5],
        labels: vec![1],
        batch_size: 1,
    };
    assert!(bad.to_tensors(&candle_core::Device::Cpu).is_err());
}
