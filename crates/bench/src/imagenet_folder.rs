//! The ImageNet loader workload's data: a folder of typical ImageNet-sized
//! JPEGs (500x375, quality 90), generated once per run so the benchmark needs
//! no dataset.

use std::path::Path;

use anyhow::{Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Width of each generated image (a typical ImageNet photo).
pub const WIDTH: u32 = 500;
/// Height of each generated image.
pub const HEIGHT: u32 = 375;
/// JPEG quality of the generated images (ImageNet's files are mostly 75..95).
const QUALITY: u8 = 90;
/// Class folders of the generated set.
const CLASSES: usize = 4;

/// A photo-like image: smooth colour gradients plus noise, so that the JPEG
/// decoder does as much work per pixel as on a real photo (a flat image
/// would decode unrealistically fast).
fn photo_like(rng: &mut ChaCha8Rng) -> RgbImage {
    let phase: [f32; 3] = [rng.random(), rng.random(), rng.random()];
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (u, v) = (x as f32 / WIDTH as f32, y as f32 / HEIGHT as f32);
        Rgb(std::array::from_fn(|c| {
            let smooth = 0.5 + 0.4 * ((u * 6.0 + v * 3.0 + phase[c] * 6.3).sin());
            let noise: f32 = rng.random_range(-0.08..0.08);
            ((smooth + noise).clamp(0.0, 1.0) * 255.0) as u8
        }))
    })
}

/// Writes `images` JPEGs into `root/class_K/` (K < 4), seeded, and returns
/// their total size in bytes.
pub fn write_jpeg_folder(root: &Path, images: usize) -> Result<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut bytes = 0;
    for i in 0..images {
        let dir = root.join(format!("class_{}", i % CLASSES));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut encoded = Vec::new();
        JpegEncoder::new_with_quality(&mut encoded, QUALITY).encode_image(&photo_like(&mut rng))?;
        let path = dir.join(format!("{i:04}.jpg"));
        std::fs::write(&path, &encoded).with_context(|| format!("writing {}", path.display()))?;
        bytes += encoded.len() as u64;
    }
    Ok(bytes)
}
