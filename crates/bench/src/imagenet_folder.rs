//! The ImageNet loader workload's data: a folder of typical ImageNet-sized
//! JPEGs (500x375, quality 90, 4:2:0 chroma subsampling), generated once per
//! run so the benchmark needs no dataset.
//!
//! 4:2:0 is how photos are commonly stored (libjpeg's and PIL's default, and
//! what cameras and photo sites write), and so how most of ImageNet is: it
//! has half the samples of 4:4:4 to decode. The `image` crate's encoder only
//! writes 4:4:4, which made every file twice as large (0.75 bytes per pixel)
//! and its decoding ~2x slower than a typical photo's; `jpeg-encoder` writes
//! 4:2:0.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
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
        let image = photo_like(&mut rng);
        let mut encoded = Vec::new();
        let mut encoder = Encoder::new(&mut encoded, QUALITY);
        encoder.set_sampling_factor(SamplingFactor::R_4_2_0);
        encoder.encode(image.as_raw(), WIDTH as u16, HEIGHT as u16, ColorType::Rgb)?;
        let path = dir.join(format!("{i:04}.jpg"));
        std::fs::write(&path, &encoded).with_context(|| format!("writing {}", path.display()))?;
        bytes += encoded.len() as u64;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::{write_jpeg_folder, HEIGHT, WIDTH};

    /// The sampling factors (`h << 4 | v`) of each component in a baseline
    /// JPEG's frame header (SOF0).
    fn sampling_factors(jpeg: &[u8]) -> Vec<u8> {
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline frame header");
        let components = usize::from(jpeg[sof + 9]);
        (0..components).map(|i| jpeg[sof + 11 + 3 * i]).collect()
    }

    #[test]
    fn the_images_are_photo_sized_4_2_0_jpegs() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = write_jpeg_folder(dir.path(), 2).unwrap();
        let path = dir.path().join("class_1/0001.jpg");
        let jpeg = std::fs::read(&path).unwrap();
        // Luma at 2x2, both chroma planes at 1x1: 4:2:0.
        assert_eq!(sampling_factors(&jpeg), [0x22, 0x11, 0x11]);
        let image = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((image.width(), image.height()), (WIDTH, HEIGHT));
        assert!(bytes > 2 * 40_000, "{bytes} bytes: not photo-like content");
    }
}
