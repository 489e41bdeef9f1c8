//! ImageNet-style folders (layouts, bad files), the paper's augmentation and evaluation views.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{ImageFormat, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resnet_data::synthetic::test_pattern;
use resnet_data::{
    center_view, epoch_permutation, lighting_offset, multi_scale, resize_shorter_side, ten_crop,
    BadImagePolicy, ChwImage, DataError, ImageBatch, ImageFolder, ImageNetAugment,
    ImageNetEvalLoader, ImageNetNormalization, ImageNetTrainLoader, LoaderConfig, LoaderPosition,
    PixelMean, TrainView, TEST_SCALES,
};

/// Values in 0..1 units, unchanged.
const IDENTITY: ImageNetNormalization = ImageNetNormalization::PerChannel {
    mean: [0.0; 3],
    std: [1.0; 3],
};

/// Writes `test_pattern(w, h, seed)` to `path` in `format`, creating its folder.
fn write(path: &Path, w: u32, h: u32, seed: u32, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    test_pattern(w, h, seed)
        .save_with_format(path, format)
        .unwrap();
}

/// `ROOT/{a_cat,b_dog,c_bird}/...` with PNG and JPEG files of several sizes and
/// some files that are not images: returns the root.
fn class_tree(dir: &Path) -> PathBuf {
    let root = dir.join("train");
    write(&root.join("b_dog/z.png"), 300, 200, 1, ImageFormat::Png);
    write(&root.join("b_dog/a.JPEG"), 500, 375, 2, ImageFormat::Jpeg);
    write(&root.join("a_cat/cat.jpg"), 200, 300, 3, ImageFormat::Jpeg);
    write(&root.join("c_bird/bird.png"), 257, 256, 4, ImageFormat::Png);
    write(
        &root.join("c_bird/bird2.jpeg"),
        640,
        480,
        5,
        ImageFormat::Jpeg,
    );
    std::fs::write(root.join("b_dog/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("b_dog/.hidden.jpg"), "ignored").unwrap();
    std::fs::write(root.join("README"), "a file at the root").unwrap();
    root
}

fn names(folder: &ImageFolder) -> Vec<(String, u32)> {
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    folder
        .samples()
        .iter()
        .map(|s| (name(&s.path), s.label))
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn class_folders_are_sorted_or_follow_the_class_list() {
    let tmp = tempfile::tempdir().unwrap();
    let root = class_tree(tmp.path());
    let folder = ImageFolder::open(&root, None).unwrap();
    assert_eq!(folder.classes(), strings(&["a_cat", "b_dog", "c_bird"]));
    let expected = [
        ("cat.jpg", 0),
        ("a.JPEG", 1),
        ("z.png", 1),
        ("bird.png", 2),
        ("bird2.jpeg", 2),
    ];
    let expected: Vec<_> = expected.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    assert_eq!(names(&folder), expected);
    assert_eq!(folder.load(1).unwrap().dimensions(), (500, 375));

    let list = tmp.path().join("classes.txt");
    std::fs::write(&list, "# synsets\nc_bird\n\nb_dog\n").unwrap();
    let listed = ImageFolder::open(&root, Some(&list)).unwrap();
    assert_eq!(listed.classes(), strings(&["c_bird", "b_dog"]));
    assert_eq!(
        listed.samples().iter().map(|s| s.label).collect::<Vec<_>>(),
        [0, 0, 1, 1]
    );

    std::fs::write(&list, "a_cat\nmissing\n").unwrap();
    let err = ImageFolder::open(&root, Some(&list)).unwrap_err();
    assert!(
        matches!(err, DataError::BadListFile { line: 2, .. }),
        "{err}"
    );
    std::fs::write(&list, "a_cat\nb_dog\na_cat\n").unwrap();
    let err = ImageFolder::open(&root, Some(&list)).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = ImageFolder::open(&empty, None).unwrap_err();
    assert!(matches!(err, DataError::EmptyImageFolder { .. }), "{err}");
}

#[test]
fn evenly_spaced_subsets_keep_order_classes_and_the_whole_folder_when_asked_for_more() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = ImageFolder::open(&class_tree(tmp.path()), None).unwrap();
    let all = names(&folder);
    let pick = |limit: usize| names(&folder.evenly_spaced(limit));
    assert_eq!(pick(2), [all[0].clone(), all[2].clone()]);
    assert_eq!(pick(3), [all[0].clone(), all[1].clone(), all[3].clone()]);
    assert_eq!(pick(5), all);
    assert_eq!(pick(50), all);
    assert_eq!(pick(0), all);
    assert_eq!(folder.evenly_spaced(2).classes(), folder.classes());
}

#[test]
fn flat_folder_with_a_label_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("val");
    write(&dir.join("v1.png"), 300, 200, 6, ImageFormat::Png);
    write(&dir.join("v2.jpg"), 500, 375, 7, ImageFormat::Jpeg);
    write(&dir.join("unlisted.jpg"), 64, 64, 8, ImageFormat::Jpeg);
    let classes = strings(&["a_cat", "b_dog", "c_bird"]);
    let labels = tmp.path().join("labels.txt");
    std::fs::write(&labels, "# file label\nv2.jpg 2\nv1.png   b_dog\n").unwrap();
    let folder = ImageFolder::open_flat(&dir, &labels, &classes, BadImagePolicy::Reject).unwrap();
    assert_eq!(
        names(&folder),
        [("v2.jpg".to_string(), 2), ("v1.png".to_string(), 1)]
    );
    assert_eq!(folder.classes(), classes);

    for (text, line) in [
        ("v1.png 3\n", 1),
        ("v1.png\n", 1),
        ("v1.png 0\nv2.jpg zebra\n", 2),
        // Names that lead out of the folder.
        ("v1.png 0\n../labels.txt 1\n", 2),
        ("/etc/passwd 1\n", 1),
    ] {
        std::fs::write(&labels, text).unwrap();
        let err = ImageFolder::open_flat(&dir, &labels, &classes, BadImagePolicy::Reject);
        match err {
            Err(DataError::BadListFile { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    std::fs::write(&labels, "v1.png 0\ngone.jpg 1\n").unwrap();
    let err = ImageFolder::open_flat(&dir, &labels, &classes, BadImagePolicy::Reject).unwrap_err();
    assert!(err.to_string().contains("gone.jpg"), "{err}");
    let kept = ImageFolder::open_flat(&dir, &labels, &classes, BadImagePolicy::Skip).unwrap();
    assert_eq!(names(&kept), [("v1.png".to_string(), 0)]);
}

#[test]
fn an_image_too_elongated_to_resize_is_a_bad_image() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("train");
    write(&root.join("a/wide.png"), 300, 10, 1, ImageFormat::Png);
    write(&root.join("a/needle.png"), 4, 200, 2, ImageFormat::Png);
    let err = ImageFolder::open(&root, None).unwrap_err();
    let DataError::BadImages { bad, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(bad.len(), 1, "{err}");
    assert!(bad[0].path.ends_with("a/needle.png"), "{err}");
    assert!(err.to_string().contains("4x200"), "{err}");
    let kept = ImageFolder::open_with(&root, None, BadImagePolicy::Skip).unwrap();
    assert_eq!(kept.len(), 1, "a 30:1 image is kept");
}

#[test]
fn an_image_of_more_than_100_million_pixels_is_a_bad_image() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("train");
    std::fs::create_dir_all(root.join("a")).unwrap();
    // A header is all the check reads: a PNG that says 10001x10000 and has
    // no pixels, and one that says 10000x10000.
    let chunk = |bytes: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        let body = [kind, data].concat();
        bytes.extend((data.len() as u32).to_be_bytes());
        bytes.extend(&body);
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        bytes.extend(crc.sum().to_be_bytes());
    };
    let png = |w: u32, h: u32| {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        let header = [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
        chunk(&mut bytes, b"IHDR", &header);
        chunk(&mut bytes, b"IDAT", &[]);
        bytes
    };
    std::fs::write(root.join("a/huge.png"), png(10_001, 10_000)).unwrap();
    std::fs::write(root.join("a/large.png"), png(10_000, 10_000)).unwrap();
    let err = ImageFolder::open(&root, None).unwrap_err();
    let DataError::BadImages { bad, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(bad.len(), 1, "{err}");
    assert!(bad[0].path.ends_with("a/huge.png"), "{err}");
    assert!(err.to_string().contains("10001x10000"), "{err}");
}

#[test]
fn bad_files_are_all_listed_or_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = class_tree(tmp.path());
    let corrupt = root.join("a_cat/corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n garbage, not a header").unwrap();
    let text = root.join("c_bird/text.jpg");
    std::fs::write(&text, "just some text").unwrap();

    let err = ImageFolder::open(&root, None).unwrap_err();
    let DataError::BadImages { bad, .. } = &err else {
        panic!("{err:?}");
    };
    let paths: Vec<_> = bad.iter().map(|b| b.path.clone()).collect();
    assert_eq!(paths, [corrupt.clone(), text.clone()]);
    let message = err.to_string();
    assert!(
        message.contains("corrupt.png") && message.contains("text.jpg"),
        "{message}"
    );

    let kept = ImageFolder::open_with(&root, None, BadImagePolicy::Skip).unwrap();
    assert_eq!(kept.len(), 5);
    assert!(kept
        .samples()
        .iter()
        .all(|s| s.path != corrupt && s.path != text));
}

/// The `(c, y, x)` value of a view.
fn at(view: &ChwImage, c: usize, y: usize, x: usize) -> f32 {
    view.data[(c * view.height + y) * view.width + x]
}

#[test]
fn training_views_are_224_deterministic_and_scaled_within_256_480() {
    let image = test_pattern(500, 375, 9);
    let aug = ImageNetAugment::PAPER;
    let norm = ImageNetNormalization::TORCHVISION;
    let draw = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let view = aug.sample(&mut rng, image.width(), image.height());
        (view, view.apply(&image, &norm))
    };
    let (view, out) = draw(5);
    assert_eq!(
        (out.height, out.width, out.data.len()),
        (224, 224, 3 * 224 * 224)
    );
    assert_eq!(draw(5), (view, out.clone()));
    assert_ne!(draw(6).1, out);

    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut sides, mut flips) = (Vec::new(), 0);
    for (w, h) in [(500, 375), (300, 200), (200, 300), (1000, 50)] {
        for _ in 0..200 {
            let v = aug.sample(&mut rng, w, h);
            assert!((256..=480).contains(&v.short_side), "{v:?}");
            assert_eq!(v.resized_width.min(v.resized_height), v.short_side, "{v:?}");
            assert!(v.left + 224 <= v.resized_width && v.top + 224 <= v.resized_height);
            let ratio = f64::from(v.resized_width) / f64::from(v.resized_height);
            assert!(
                (ratio - f64::from(w) / f64::from(h)).abs() < 0.05 * ratio,
                "{v:?}"
            );
            sides.push(v.short_side);
            flips += usize::from(v.flip);
        }
    }
    assert!(sides.iter().any(|&s| s < 300) && sides.iter().any(|&s| s > 440));
    assert!((300..500).contains(&flips), "{flips} flips in 800");
    assert!(ImageNetAugment {
        min_side: 200,
        ..aug
    }
    .checked()
    .is_err());
}

#[test]
fn ten_crop_mirrors_and_contains_the_center_view() {
    let image = test_pattern(300, 200, 10);
    let norm = ImageNetNormalization::TORCHVISION;
    let views = ten_crop(&image, &norm);
    assert_eq!(views.len(), 10);
    for (plain, flipped) in views[..5].iter().zip(&views[5..]) {
        assert_eq!((plain.height, plain.width), (224, 224));
        assert_ne!(plain, flipped);
        for (c, y, x) in [(0, 0, 0), (1, 17, 200), (2, 223, 223), (0, 100, 5)] {
            assert_eq!(at(flipped, c, y, x), at(plain, c, y, 223 - x));
        }
    }
    assert_eq!(views[4], center_view(&image, &norm));
    // The corners of the 384x256 resized image.
    let resized = resize_shorter_side(&image, 256);
    assert_eq!(resized.dimensions(), (384, 256));
    let plain = ten_crop(&image, &IDENTITY);
    let pixel = |x, y| f32::from(resized.get_pixel(x, y)[1]) / 255.0;
    assert_eq!(at(&plain[0], 1, 0, 0), pixel(0, 0));
    assert_eq!(at(&plain[1], 1, 0, 223), pixel(383, 0));
    assert_eq!(at(&plain[2], 1, 223, 0), pixel(0, 255));
    assert_eq!(at(&plain[3], 1, 223, 223), pixel(383, 255));
    assert_eq!(at(&plain[4], 1, 0, 0), pixel(80, 16));
}

#[test]
fn multi_scale_resizes_the_whole_image_to_each_shorter_side() {
    let sizes = |image: &RgbImage| -> Vec<(usize, usize)> {
        multi_scale(image, &ImageNetNormalization::TORCHVISION, &TEST_SCALES)
            .iter()
            .map(|v| {
                assert_eq!(v.data.len(), 3 * v.height * v.width);
                (v.height, v.width)
            })
            .collect()
    };
    let landscape = [(224, 299), (256, 341), (384, 512), (480, 640), (640, 853)];
    assert_eq!(sizes(&test_pattern(500, 375, 11)), landscape);
    let portrait = [(336, 224), (384, 256), (576, 384), (720, 480), (960, 640)];
    assert_eq!(sizes(&test_pattern(200, 300, 12)), portrait);
}

#[test]
fn pca_lighting_shifts_colours_slightly_and_not_at_all_for_zero_alpha() {
    assert_eq!(lighting_offset([0.0; 3]), [0.0; 3]);
    let image = test_pattern(300, 200, 13);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let lit = ImageNetAugment::PAPER.sample(&mut rng, 300, 200);
    assert!(
        lit.alpha.iter().all(|a| a.abs() < 0.5 && *a != 0.0),
        "{lit:?}"
    );
    let dark = TrainView {
        alpha: [0.0; 3],
        ..lit
    };
    let unlit = ImageNetAugment {
        lighting_std: 0.0,
        ..ImageNetAugment::PAPER
    }
    .sample(&mut ChaCha8Rng::seed_from_u64(3), 300, 200);
    assert_eq!(unlit.alpha, [0.0; 3]);
    let (a, b) = (lit.apply(&image, &IDENTITY), dark.apply(&image, &IDENTITY));
    let offset = lighting_offset(lit.alpha);
    assert!(
        offset.iter().all(|o| o.abs() > 1e-5 && o.abs() < 0.1),
        "{offset:?}"
    );
    let plane = 224 * 224;
    for c in 0..3 {
        for i in (0..plane).step_by(997) {
            let shift = a.data[c * plane + i] - b.data[c * plane + i];
            assert!(
                (shift - offset[c]).abs() < 1e-5,
                "channel {c}: {shift} vs {offset:?}"
            );
        }
    }
    // The 0..1 image plus the offset, each pixel of the crop.
    let expected = b.data[0] + offset[0];
    assert!((a.data[0] - expected).abs() < 1e-6);
}

/// Seven images of several sizes and formats in two classes.
fn loader_folder(dir: &Path) -> Arc<ImageFolder> {
    let sizes = [
        (300, 200),
        (500, 375),
        (200, 300),
        (256, 256),
        (640, 480),
        (320, 240),
        (240, 320),
    ];
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let (class, ext, format) = match i % 2 {
            0 => ("even", "png", ImageFormat::Png),
            _ => ("odd", "jpg", ImageFormat::Jpeg),
        };
        let path = dir.join(format!("{class}/{i}.{ext}"));
        write(&path, w, h, 20 + i as u32, format);
    }
    Arc::new(ImageFolder::open(dir, None).unwrap())
}

fn train(
    folder: &Arc<ImageFolder>,
    threads: usize,
    start: LoaderPosition,
    n: usize,
) -> Vec<(LoaderPosition, ImageBatch)> {
    let config = LoaderConfig {
        threads,
        ..LoaderConfig::new(3, 7)
    };
    let norm = ImageNetNormalization::TORCHVISION;
    ImageNetTrainLoader::new(folder.clone(), norm, ImageNetAugment::PAPER, config, start)
        .unwrap()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

#[test]
fn train_loader_is_deterministic_whatever_the_thread_count_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = loader_folder(tmp.path());
    let one = train(&folder, 1, LoaderPosition::default(), 5);
    assert_eq!(one, train(&folder, 3, LoaderPosition::default(), 5));
    let positions: Vec<_> = one.iter().map(|(p, _)| (p.epoch, p.batch)).collect();
    assert_eq!(positions, [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
    let (_, first) = &one[0];
    assert_eq!((first.batch_size, first.height, first.width), (3, 224, 224));
    assert_eq!(first.images.len(), 3 * 3 * 224 * 224);
    let order = epoch_permutation(7, 0, 7);
    let labels: Vec<u32> = order[..3]
        .iter()
        .map(|&i| folder.samples()[i as usize].label)
        .collect();
    assert_eq!(first.labels, labels);
    let (x, y) = first.to_tensors(&candle_core::Device::Cpu).unwrap();
    assert_eq!((x.dims(), y.dims()), (&[3, 3, 224, 224][..], &[3][..]));

    let resumed = train(&folder, 2, one[1].0, 3);
    assert_eq!(resumed, one[2..]);
    assert_ne!(one[1].1, one[3].1);
}

#[test]
fn eval_loader_yields_center_views_in_order_and_a_mean_image() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = loader_folder(tmp.path());
    let norm = ImageNetNormalization::TORCHVISION;
    let loader = ImageNetEvalLoader::new(folder.clone(), norm.clone(), 3, 2).unwrap();
    assert_eq!(loader.num_batches(), 3);
    let batches: Vec<ImageBatch> = loader.map(Result::unwrap).collect();
    assert_eq!(
        batches.iter().map(|b| b.batch_size).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    let want: Vec<u32> = folder.samples().iter().map(|s| s.label).collect();
    assert_eq!(labels, want);
    let fifth = center_view(&folder.load(4).unwrap(), &norm);
    assert_eq!(
        batches[1].images[224 * 224 * 3..224 * 224 * 6],
        fifth.data[..]
    );

    let mean = PixelMean::from_folder(folder.clone(), 2).unwrap();
    assert_eq!((mean.height(), mean.width()), (224, 224));
    let views: Vec<_> = (0..7)
        .map(|i| center_view(&folder.load(i).unwrap(), &IDENTITY))
        .collect();
    for p in [0, 5000, 3 * 224 * 224 - 1] {
        let avg = views.iter().map(|v| v.data[p]).sum::<f32>() / 7.0;
        assert!((mean.values()[p] - avg).abs() < 1e-5, "pixel {p}");
    }
    let per_pixel = ImageNetNormalization::PerPixelMean(mean.clone());
    let centred = center_view(&folder.load(0).unwrap(), &per_pixel);
    assert!((centred.data[9] - (views[0].data[9] - mean.values()[9])).abs() < 1e-6);
    assert!(PixelMean::from_values(2, 2, vec![0.0; 11]).is_err());
    let zero_std = ImageNetNormalization::PerChannel {
        mean: [0.0; 3],
        std: [1.0, 0.0, 1.0],
    };
    assert!(ImageNetEvalLoader::new(folder, zero_std, 3, 1).is_err());
}

#[test]
fn a_file_that_fails_to_decode_stops_the_loaders_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let folder_dir = tmp.path().join("data");
    loader_folder(&folder_dir);
    // A valid header followed by truncated pixel data: accepted when opening.
    let truncated = folder_dir.join("odd/truncated.png");
    write(&truncated, 300, 200, 30, ImageFormat::Png);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let folder = Arc::new(ImageFolder::open(&folder_dir, None).unwrap());
    assert_eq!(folder.len(), 8);

    let config = LoaderConfig::new(3, 1);
    let norm = ImageNetNormalization::TORCHVISION;
    let start = LoaderPosition::default();
    let loader = ImageNetTrainLoader::new(
        folder.clone(),
        norm.clone(),
        ImageNetAugment::PAPER,
        config,
        start,
    );
    let items: Vec<_> = loader.unwrap().take(40).collect();
    assert!(items.len() < 40, "the loader should stop at the bad file");
    let (last, good) = items.split_last().unwrap();
    assert!(good.iter().all(Result::is_ok));
    match last {
        Err(DataError::Decode { path, .. }) => assert_eq!(path, &truncated),
        other => panic!("{other:?}"),
    }
    let eval: Vec<_> = ImageNetEvalLoader::new(folder, norm, 2, 2)
        .unwrap()
        .collect();
    let err = eval.last().unwrap().as_ref().unwrap_err();
    assert!(err.to_string().contains("truncated.png"), "{err}");
    assert!(eval[..eval.len() - 1].iter().all(Result::is_ok));
}
