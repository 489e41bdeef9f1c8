//! Normalisation (mean image, per-channel) and augmentation (pad, crop, flip).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resnet_data::{Augment, Cifar10, CropFlip, DataError, MeanImage, Normalization, Split};

fn sample() -> Cifar10 {
    Cifar10::load(&resnet_test_support::cifar_sample()).unwrap()
}

#[test]
fn mean_image_matches_a_hand_computed_mean() {
    let data = sample();
    let images = data.train.images()[..3 * 3072].to_vec();
    let few = Split::new(images.clone(), data.train.labels()[..3].to_vec()).unwrap();
    let mean = MeanImage::from_split(&few).unwrap();
    assert_eq!(mean.values().len(), 3072);
    for p in [0, 1, 1023, 1024, 2047, 2048, 3071] {
        let sum = images[p] as f32 + images[3072 + p] as f32 + images[2 * 3072 + p] as f32;
        assert!(
            (mean.values()[p] - sum / 3.0 / 255.0).abs() < 1e-6,
            "pixel {p}"
        );
    }
}

#[test]
fn mean_image_of_the_sample_is_sane() {
    let mean = MeanImage::from_split(&sample().train).unwrap();
    assert!(mean.values().iter().all(|v| (0.0..=1.0).contains(v)));
    // Per-channel averages close to the well-known CIFAR-10 ones (0.491, 0.482, 0.447).
    for (c, known) in [0.491f32, 0.482, 0.447].into_iter().enumerate() {
        let avg = mean.values()[c * 1024..(c + 1) * 1024].iter().sum::<f32>() / 1024.0;
        assert!((avg - known).abs() < 0.02, "channel {c}: {avg}");
    }
    assert!(MeanImage::from_split(&Split::default()).is_err());
}

#[test]
fn mean_image_save_load_roundtrip_and_bad_files() {
    let mean = MeanImage::from_split(&sample().test).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mean.bin");
    mean.save(&path).unwrap();
    assert_eq!(MeanImage::load(&path).unwrap(), mean);

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    assert!(matches!(
        MeanImage::load(&path),
        Err(DataError::BadMeanFile { .. })
    ));
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    std::fs::write(&path, wrong_magic).unwrap();
    let err = MeanImage::load(&path).unwrap_err();
    assert!(err.to_string().contains("mean.bin"), "{err}");
    assert!(matches!(
        MeanImage::load(&tmp.path().join("absent.bin")),
        Err(DataError::Io { .. })
    ));
    assert!(MeanImage::from_values(vec![0.0; 3071]).is_err());
}

#[test]
fn normalization_roundtrips_through_json() {
    let per_pixel = Normalization::PerPixelMean(MeanImage::from_split(&sample().test).unwrap());
    let per_channel = Normalization::PerChannel {
        mean: [0.1, 0.2, 0.3],
        std: [0.5, 0.25, 2.0],
    };
    for n in [per_pixel, per_channel] {
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Normalization>(&json).unwrap(), n);
    }
    let short = r#"{"PerPixelMean":[0.1,0.2]}"#;
    assert!(serde_json::from_str::<Normalization>(short).is_err());
}

#[test]
fn per_pixel_mean_subtracts_pixel_over_255() {
    let mut values = vec![0.25f32; 3072];
    values[5] = 1.0;
    let norm = Normalization::PerPixelMean(MeanImage::from_values(values).unwrap());
    let mut image = vec![0u8; 3072];
    image[0] = 255;
    image[5] = 51;
    image[3071] = 102;
    let mut out = vec![f32::NAN; 3072];
    norm.apply(&image, &mut out);
    assert!((out[0] - 0.75).abs() < 1e-6);
    assert!((out[1] + 0.25).abs() < 1e-6);
    assert!((out[5] - (0.2 - 1.0)).abs() < 1e-6);
    assert!((out[3071] - (0.4 - 0.25)).abs() < 1e-6);
}

#[test]
fn per_channel_standardises_each_plane() {
    let norm = Normalization::PerChannel {
        mean: [0.0, 0.5, 1.0],
        std: [1.0, 0.5, 0.25],
    };
    let image = vec![255u8; 3072];
    let mut out = vec![f32::NAN; 3072];
    norm.apply(&image, &mut out);
    assert!(out[..1024].iter().all(|&v| (v - 1.0).abs() < 1e-6));
    assert!(out[1024..2048].iter().all(|&v| (v - 1.0).abs() < 1e-6));
    assert!(out[2048..].iter().all(|&v| v.abs() < 1e-6));
    let zero_std = Normalization::PerChannel {
        mean: [0.0; 3],
        std: [1.0, 0.0, 1.0],
    };
    assert!(zero_std.checked().is_err());
}

#[test]
fn per_channel_statistics_of_a_two_image_split() {
    // Image A: R=0, G=51, B=255 everywhere; image B: R=255, G=153, B=0.
    let a = [vec![0u8; 1024], vec![51; 1024], vec![255; 1024]].concat();
    let b = [vec![255u8; 1024], vec![153; 1024], vec![0; 1024]].concat();
    let split = Split::new([a, b].concat(), vec![0, 1]).unwrap();
    match Normalization::per_channel_from_split(&split).unwrap() {
        Normalization::PerChannel { mean, std } => {
            let (want_mean, want_std) = ([0.5, 0.4, 0.5], [0.5, 0.2, 0.5]);
            for c in 0..3 {
                assert!(
                    (mean[c] - want_mean[c]).abs() < 1e-6,
                    "mean {c}: {}",
                    mean[c]
                );
                assert!((std[c] - want_std[c]).abs() < 1e-6, "std {c}: {}", std[c]);
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    // A constant image has zero deviation: it cannot standardise.
    let split = Split::new(vec![7; 3072], vec![0]).unwrap();
    assert!(Normalization::per_channel_from_split(&split).is_err());
}

/// A 3x32x32 image whose value encodes its coordinates, never 0.
fn coded_image() -> Vec<f32> {
    (0..3072).map(|i| (i + 1) as f32).collect()
}

fn at(img: &[f32], c: usize, y: usize, x: usize) -> f32 {
    img[c * 1024 + y * 32 + x]
}

#[test]
fn crop_offsets_and_flip_move_the_expected_pixels() {
    let src = coded_image();
    let mut out = vec![f32::NAN; 3072];

    // Crop at the padded image's top-left corner: 4 rows and columns of padding come in.
    CropFlip {
        dy: -4,
        dx: -4,
        flip: false,
    }
    .apply(&src, &mut out);
    assert_eq!(at(&out, 0, 0, 0), 0.0);
    assert_eq!(at(&out, 1, 3, 20), 0.0);
    assert_eq!(at(&out, 2, 20, 3), 0.0);
    assert_eq!(at(&out, 0, 4, 4), at(&src, 0, 0, 0));
    assert_eq!(at(&out, 2, 31, 31), at(&src, 2, 27, 27));

    // Bottom-right corner.
    CropFlip {
        dy: 4,
        dx: 4,
        flip: false,
    }
    .apply(&src, &mut out);
    assert_eq!(at(&out, 1, 0, 0), at(&src, 1, 4, 4));
    assert_eq!(at(&out, 1, 27, 27), at(&src, 1, 31, 31));
    assert_eq!(at(&out, 1, 28, 0), 0.0);
    assert_eq!(at(&out, 1, 0, 28), 0.0);

    // A pure flip mirrors each row.
    CropFlip {
        dy: 0,
        dx: 0,
        flip: true,
    }
    .apply(&src, &mut out);
    assert_eq!(at(&out, 0, 5, 0), at(&src, 0, 5, 31));
    assert_eq!(at(&out, 2, 9, 31), at(&src, 2, 9, 0));

    // Shifted then flipped: the crop's columns 2..34 of the padded image, mirrored.
    CropFlip {
        dy: 1,
        dx: 2,
        flip: true,
    }
    .apply(&src, &mut out);
    assert_eq!(at(&out, 0, 0, 0), 0.0); // padded column 33 = image column 33.
    assert_eq!(at(&out, 0, 0, 1), 0.0);
    assert_eq!(at(&out, 0, 0, 2), at(&src, 0, 1, 31));
    assert_eq!(at(&out, 0, 30, 31), at(&src, 0, 31, 2));
    assert_eq!(at(&out, 0, 31, 31), 0.0);

    CropFlip::IDENTITY.apply(&src, &mut out);
    assert_eq!(out, src);
}

#[test]
fn crop_flip_equals_pad_crop_flip_by_hand() {
    let src = coded_image();
    let pad = 4usize;
    let side = 32 + 2 * pad;
    let mut padded = vec![0f32; 3 * side * side];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                padded[(c * side + y + pad) * side + x + pad] = at(&src, c, y, x);
            }
        }
    }
    let mut out = vec![0f32; 3072];
    for top in 0..=2 * pad {
        for left in 0..=2 * pad {
            for flip in [false, true] {
                let aug = CropFlip {
                    dy: top as i32 - 4,
                    dx: left as i32 - 4,
                    flip,
                };
                aug.apply(&src, &mut out);
                for c in 0..3 {
                    for y in 0..32 {
                        for x in 0..32 {
                            let cx = if flip { 31 - x } else { x };
                            let want = padded[(c * side + top + y) * side + left + cx];
                            assert_eq!(at(&out, c, y, x), want, "{aug:?} at {c},{y},{x}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn sampled_augmentation_covers_the_paper_recipe() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut seen = [[false; 9]; 2];
    let mut flips = 0;
    for _ in 0..4000 {
        let a = Augment::PAPER.sample(&mut rng);
        assert!((-4..=4).contains(&a.dy) && (-4..=4).contains(&a.dx));
        seen[0][(a.dy + 4) as usize] = true;
        seen[1][(a.dx + 4) as usize] = true;
        flips += usize::from(a.flip);
    }
    assert!(seen.iter().flatten().all(|&s| s));
    assert!((1800..2200).contains(&flips), "{flips} flips");
    for _ in 0..100 {
        assert_eq!(Augment::NONE.sample(&mut rng), CropFlip::IDENTITY);
    }
    let flip_only = Augment { pad: 0, flip: true };
    assert!((0..100).all(|_| {
        let a = flip_only.sample(&mut rng);
        a.dy == 0 && a.dx == 0
    }));
}
