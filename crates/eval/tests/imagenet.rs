//! `evaluate_folder` and `predict_folder` on small image folders written by the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::RgbImage;
use resnet_data::synthetic::test_pattern;
use resnet_data::{
    center_view, load_rgb, multi_scale, ChwImage, DataError, ImageFolder, ImageNetNormalization,
    Resample,
};
use resnet_eval::{
    batch_errors, evaluate_folder, predict_folder, CropGeometry, EvalError, ImagePrediction,
    Member, TestViews, ViewConfig,
};
use resnet_models::{ArchSpec, ResNet};

/// A small geometry for the 32x32 CIFAR nets: shorter side 36, 32x32 crops.
const SMALL: CropGeometry = CropGeometry {
    resize: 36,
    crop: 32,
    resample: Resample::Bilinear,
};

fn net(arch: &str, seed: u64) -> ResNet {
    ResNet::new(&ArchSpec::from_id(arch).unwrap(), seed, &Device::Cpu).unwrap()
}

fn config(geometry: CropGeometry) -> ViewConfig {
    ViewConfig {
        geometry,
        normalization: ImageNetNormalization::TORCHVISION,
    }
}

/// Saves each `(class, file, image)` as `root/class/file` (PNG) and opens the folder.
fn folder(root: &Path, images: &[(&str, &str, RgbImage)]) -> Arc<ImageFolder> {
    for (class, file, image) in images {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        image.save(dir.join(file)).unwrap();
    }
    Arc::new(ImageFolder::open(root, None).unwrap())
}

fn predictions(
    members: &[Member<'_>],
    folder: &Arc<ImageFolder>,
    views: &TestViews,
    batch_size: usize,
) -> Vec<ImagePrediction> {
    predict_folder(
        members,
        Arc::clone(folder),
        views,
        batch_size,
        2,
        &Device::Cpu,
    )
    .unwrap()
    .collect::<resnet_eval::Result<_>>()
    .unwrap()
}

/// The logits of `model` for each view, one forward pass per view, of the
/// net folded for inference as evaluation runs it.
fn logits(model: &ResNet, views: &[ChwImage]) -> Vec<Vec<f32>> {
    let net = model.fold_for_inference().unwrap();
    views
        .iter()
        .map(|v| {
            let x = Tensor::from_slice(&v.data, (1, 3, v.height, v.width), &Device::Cpu).unwrap();
            let y = net.forward(&x).unwrap();
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .collect()
}

/// The mean over `rows` of their softmax, computed directly.
fn mean_softmax(rows: &[Vec<f32>]) -> Vec<f64> {
    let mut mean = vec![0f64; rows[0].len()];
    for row in rows {
        let total: f64 = row.iter().map(|&v| f64::from(v).exp()).sum();
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v).exp() / total / rows.len() as f64;
        }
    }
    mean
}

fn assert_close(got: &[f64], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len());
    for (c, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance,
            "class {c}: {g} vs {w}\n{got:?}\n{want:?}"
        );
    }
}

fn paths(folder: &ImageFolder) -> Vec<PathBuf> {
    folder.samples().iter().map(|s| s.path.clone()).collect()
}

#[test]
fn center_crop_counts_every_image_and_scores_the_logits_of_its_views() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = folder(
        tmp.path(),
        &[
            ("a", "1.png", test_pattern(40, 30, 1)),
            ("a", "2.png", test_pattern(30, 40, 2)),
            ("a", "3.png", test_pattern(48, 36, 3)),
            ("b", "4.png", test_pattern(37, 50, 4)),
            ("b", "5.png", test_pattern(40, 30, 5)),
        ],
    );
    let model = net("resnet20", 3);
    let members = [Member {
        model: &model,
        views: config(SMALL),
    }];
    // Batches of 2 leave a short last batch.
    let report = evaluate_folder(
        &members,
        Arc::clone(&folder),
        &TestViews::Center,
        2,
        2,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(report.images, 5);

    let mut rows = Vec::new();
    for path in paths(&folder) {
        let views = TestViews::Center.of(&load_rgb(&path).unwrap(), &config(SMALL));
        rows.extend(logits(&model, &views));
    }
    let labels: Vec<u32> = folder.samples().iter().map(|s| s.label).collect();
    assert_eq!(labels, [0, 0, 0, 1, 1]);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let logits_tensor = Tensor::from_vec(flat, (5, 10), &Device::Cpu).unwrap();
    let (top1, top5) = batch_errors(
        &logits_tensor,
        &Tensor::new(&labels[..], &Device::Cpu).unwrap(),
    )
    .unwrap();
    assert_eq!(report.top1_error, top1 as f64 / 5.0, "{report:?}");
    assert_eq!(report.top5_error, top5 as f64 / 5.0, "{report:?}");
    let loss: f64 = rows
        .iter()
        .zip(&labels)
        .map(|(row, &l)| -mean_softmax(std::slice::from_ref(row))[l as usize].ln())
        .sum::<f64>()
        / 5.0;
    assert!(
        (report.loss - loss).abs() < 1e-6,
        "{} vs {loss}",
        report.loss
    );
}

#[test]
fn ten_crop_of_a_mirror_symmetric_image_averages_its_five_plain_crops() {
    // 48x36 images are already at shorter side 36, so the crops are exact
    // (no resampling) and the centre crop sits symmetrically (48 - 32 is even).
    let symmetric = RgbImage::from_fn(48, 36, |x, y| {
        let x = x.min(47 - x);
        image::Rgb([(9 * x) as u8, (7 * y) as u8, (x * y) as u8])
    });
    let plain = test_pattern(48, 36, 7);
    let mirrored = image::imageops::flip_horizontal(&plain);
    let tmp = tempfile::tempdir().unwrap();
    let folder = folder(
        tmp.path(),
        &[
            ("a", "1_symmetric.png", symmetric.clone()),
            ("a", "2_plain.png", plain),
            ("a", "3_mirrored.png", mirrored),
        ],
    );
    let model = net("resnet20", 4);
    let members = [Member {
        model: &model,
        views: config(SMALL),
    }];

    let views = TestViews::TenCrop.of(&symmetric, &config(SMALL));
    // Mirrored corners are the opposite corners; the mirrored centre is the centre.
    for (mirror, plain) in [(5, 1), (6, 0), (7, 3), (8, 2), (9, 4)] {
        assert_eq!(views[mirror], views[plain], "view {mirror}");
    }
    let by_hand = mean_softmax(&logits(&model, &views[..5]));

    let ten = predictions(&members, &folder, &TestViews::TenCrop, 25);
    assert_close(&ten[0].probabilities(), &by_hand, 1e-6);
    // A mirrored image has the same ten views, so the same prediction ...
    assert_close(&ten[1].log_probabilities, &ten[2].log_probabilities, 1e-6);
    // ... which its centre crop alone does not have.
    let center = predictions(&members, &folder, &TestViews::Center, 25);
    let gap = center[1]
        .log_probabilities
        .iter()
        .zip(&center[2].log_probabilities)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    assert!(gap > 1e-4, "centre crops of mirror images agree: {gap}");
    // One view per forward pass gives the same predictions.
    let one_by_one = predictions(&members, &folder, &TestViews::TenCrop, 1);
    for (a, b) in one_by_one.iter().zip(&ten) {
        assert_eq!((a.index, a.label), (b.index, b.label));
        assert_close(&a.log_probabilities, &b.log_probabilities, 1e-5);
    }
}

#[test]
fn an_ensemble_of_one_model_twice_is_that_model() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = folder(
        tmp.path(),
        &[
            ("a", "1.png", test_pattern(40, 30, 11)),
            ("b", "2.png", test_pattern(30, 40, 12)),
            ("c", "3.png", test_pattern(36, 36, 13)),
        ],
    );
    let model = net("resnet20", 5);
    let one = Member {
        model: &model,
        views: config(SMALL),
    };
    let single = evaluate_folder(
        std::slice::from_ref(&one),
        Arc::clone(&folder),
        &TestViews::TenCrop,
        8,
        2,
        &Device::Cpu,
    )
    .unwrap();
    let twice = evaluate_folder(
        &[one.clone(), one.clone()],
        Arc::clone(&folder),
        &TestViews::TenCrop,
        8,
        1,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(single.images, 3);
    assert_eq!(
        (single.top1_error, single.top5_error),
        (twice.top1_error, twice.top5_error)
    );
    assert!(
        (single.loss - twice.loss).abs() < 1e-9,
        "{single:?} {twice:?}"
    );
    let a = predictions(std::slice::from_ref(&one), &folder, &TestViews::Center, 4);
    let b = predictions(&[one.clone(), one], &folder, &TestViews::Center, 4);
    for (a, b) in a.iter().zip(&b) {
        assert_close(&a.log_probabilities, &b.log_probabilities, 1e-9);
    }
}

#[test]
fn an_ensemble_averages_the_softmax_of_each_model_on_its_own_views() {
    // The standard geometry, checked against the data crate's `center_view`.
    let tmp = tempfile::tempdir().unwrap();
    let folder = folder(
        tmp.path(),
        &[
            ("a", "1.png", test_pattern(40, 30, 21)),
            ("b", "2.png", test_pattern(30, 44, 22)),
        ],
    );
    let (first, second) = (net("resnet20", 6), net("plain20", 7));
    let other = ImageNetNormalization::PerChannel {
        mean: [0.5, 0.4, 0.3],
        std: [0.2, 0.3, 0.25],
    };
    let members = [
        Member {
            model: &first,
            views: ViewConfig::TORCHVISION,
        },
        Member {
            model: &second,
            views: ViewConfig {
                geometry: CropGeometry::STANDARD,
                normalization: other.clone(),
            },
        },
    ];
    let got = predictions(&members, &folder, &TestViews::Center, 4);
    assert_eq!(got.len(), 2);
    for (prediction, path) in got.iter().zip(paths(&folder)) {
        let image = load_rgb(&path).unwrap();
        let a = logits(
            &first,
            &[center_view(&image, &ImageNetNormalization::TORCHVISION)],
        );
        let b = logits(&second, &[center_view(&image, &other)]);
        let want: Vec<f64> = mean_softmax(&a)
            .iter()
            .zip(mean_softmax(&b))
            .map(|(p, q)| (p + q) / 2.0)
            .collect();
        assert_close(&prediction.probabilities(), &want, 1e-6);
        let total: f64 = prediction.probabilities().iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }
}

#[test]
fn multi_scale_averages_whole_images_of_every_size() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = folder(
        tmp.path(),
        &[
            ("a", "1.png", test_pattern(40, 30, 31)),
            ("a", "2.png", test_pattern(30, 40, 32)),
            ("b", "3.png", test_pattern(45, 30, 33)),
        ],
    );
    let model = net("resnet20", 8);
    let members = [Member {
        model: &model,
        views: config(SMALL),
    }];
    let scales = vec![24, 36, 48];
    // 6 views per pass: two images per batch, of different aspect ratios.
    let got = predictions(&members, &folder, &TestViews::MultiScale(scales.clone()), 6);
    assert_eq!(got.len(), 3);
    for (prediction, path) in got.iter().zip(paths(&folder)) {
        let views = multi_scale(
            &load_rgb(&path).unwrap(),
            &ImageNetNormalization::TORCHVISION,
            &scales,
        );
        let sizes: Vec<u32> = views.iter().map(|v| v.height.min(v.width) as u32).collect();
        assert_eq!(sizes, scales);
        let want = mean_softmax(&logits(&model, &views));
        assert_close(&prediction.probabilities(), &want, 1e-6);
    }
    let report = evaluate_folder(
        &members,
        folder,
        &TestViews::MultiScale(scales),
        1,
        2,
        &Device::Cpu,
    );
    assert_eq!(report.unwrap().images, 3);
}

#[test]
fn a_file_that_fails_to_decode_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let good = test_pattern(40, 30, 41);
    let folder = folder(
        tmp.path(),
        &[
            ("a", "1.png", good.clone()),
            ("a", "2.png", good.clone()),
            ("b", "3.png", good),
        ],
    );
    // A valid header with the pixel data cut short: the folder opens, decoding fails.
    let broken = tmp.path().join("a").join("2.png");
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let folder = Arc::new(ImageFolder::open(folder.root(), None).unwrap());
    let model = net("resnet20", 9);
    let members = [Member {
        model: &model,
        views: config(SMALL),
    }];
    let err =
        evaluate_folder(&members, folder, &TestViews::Center, 1, 2, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, EvalError::Data(DataError::Decode { path, .. }) if *path == broken),
        "{err:?}"
    );
    assert!(err.to_string().contains("2.png"), "{err}");
}

#[test]
fn models_labels_and_options_that_do_not_fit_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = folder(
        tmp.path(),
        &[
            ("a", "1.png", test_pattern(40, 30, 51)),
            ("b", "2.png", test_pattern(40, 30, 52)),
            ("c", "3.png", test_pattern(40, 30, 53)),
        ],
    );
    let ten = net("resnet20", 1);
    let spec = ArchSpec::from_id("resnet20").unwrap().with_num_classes(2);
    let two = ResNet::new(&spec, 1, &Device::Cpu).unwrap();
    let member = |model| Member {
        model,
        views: config(SMALL),
    };
    let run = |members: &[Member<'_>], views: &TestViews, batch_size| {
        evaluate_folder(
            members,
            Arc::clone(&folder),
            views,
            batch_size,
            1,
            &Device::Cpu,
        )
        .unwrap_err()
        .to_string()
    };
    let center = TestViews::Center;
    assert!(run(&[], &center, 4).contains("at least one model"));
    let err = run(&[member(&ten), member(&two)], &center, 4);
    assert!(
        err.contains("model 1 of the ensemble (resnet20) outputs 2 classes"),
        "{err}"
    );
    let err = run(&[member(&two)], &center, 4);
    assert!(
        err.contains("3.png: label 2 is not one of the model's 2 classes"),
        "{err}"
    );
    let err = run(&[member(&ten)], &center, 0);
    assert!(err.contains("batch_size"), "{err}");
    let err = run(&[member(&ten)], &TestViews::MultiScale(vec![]), 4);
    assert!(err.contains("multi-scale sides"), "{err}");
    let bad = Member {
        model: &ten,
        views: config(CropGeometry {
            resize: 30,
            ..SMALL
        }),
    };
    let err = run(&[bad], &center, 4);
    assert!(err.contains("crop <= resize"), "{err}");
}
