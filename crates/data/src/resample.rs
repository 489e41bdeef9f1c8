//! A window of a resized image, computed without resizing the rest.
//!
//! The training augmentation resizes a whole image (to a shorter side of up
//! to 480) and keeps a 224x224 crop of it: most of the resampling work is
//! thrown away. [`resize_window`] computes only the kept pixels, with the
//! same separable filter, the same weights and the same order of f32
//! operations as `image::imageops::resize` (a vertical pass into f32, then a
//! horizontal pass rounded to u8), so its result equals cropping that
//! function's output, byte for byte (tested against it).

use std::ops::Range;

use image::RgbImage;

use crate::folder::augment::Resample;

/// The filter of a [`Resample`]: its kernel and its support in output pixels.
fn filter(resample: Resample) -> (fn(f32) -> f32, f32) {
    match resample {
        Resample::Bilinear => (triangle, 1.0),
        Resample::Bicubic => (catmull_rom, 2.0),
    }
}

/// The triangle (bilinear) kernel.
fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 {
        1.0 - x.abs()
    } else {
        0.0
    }
}

/// The Catmull-Rom cubic (Mitchell-Netravali with b = 0, c = 0.5), written
/// as the image crate writes it so that it rounds the same.
fn catmull_rom(x: f32) -> f32 {
    let (b, c) = (0.0f32, 0.5f32);
    let a = x.abs();
    let k = if a < 1.0 {
        (12.0 - 9.0 * b - 6.0 * c) * a.powi(3)
            + (-18.0 + 12.0 * b + 6.0 * c) * a.powi(2)
            + (6.0 - 2.0 * b)
    } else if a < 2.0 {
        (-b - 6.0 * c) * a.powi(3)
            + (6.0 * b + 30.0 * c) * a.powi(2)
            + (-12.0 * b - 48.0 * c) * a
            + (8.0 * b + 24.0 * c)
    } else {
        0.0
    };
    k / 6.0
}

/// The input pixels one output pixel reads along one axis, and their weights.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// The taps of output pixel `out` when `size` input pixels are resampled to
/// `new_size`.
fn taps(out: u32, size: u32, new_size: u32, (kernel, support): (fn(f32) -> f32, f32)) -> Taps {
    let ratio = size as f32 / new_size as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let src_support = support * sratio;
    let centre = (out as f32 + 0.5) * ratio;
    let left = ((centre - src_support).floor() as i64).clamp(0, i64::from(size) - 1);
    let right = ((centre + src_support).ceil() as i64).clamp(left + 1, i64::from(size));
    let centre = centre - 0.5;
    let mut weights: Vec<f32> = (left..right)
        .map(|i| kernel((i as f32 - centre) / sratio))
        .collect();
    let sum: f32 = weights.iter().fold(0.0, |s, w| s + w);
    for w in &mut weights {
        *w /= sum;
    }
    Taps {
        first: left as usize,
        weights,
    }
}

/// The `[left, top, width, height]` window of `image` resized to `new_width
/// x new_height` with `resample`: equal to `imageops::resize` followed by a
/// crop of the window, which must lie inside the resized image.
pub(crate) fn resize_window(
    image: &RgbImage,
    (new_width, new_height): (u32, u32),
    [left, top, width, height]: [u32; 4],
    resample: Resample,
) -> RgbImage {
    assert!(
        left + width <= new_width && top + height <= new_height,
        "resize window outside the resized image"
    );
    let (src_width, src_height) = image.dimensions();
    if (new_width, new_height) == (src_width, src_height) || src_width == 0 || src_height == 0 {
        // What `imageops::resize` returns unresampled: a copy, or black.
        return RgbImage::from_fn(width, height, |x, y| {
            if src_width == 0 || src_height == 0 {
                image::Rgb([0; 3])
            } else {
                *image.get_pixel(left + x, top + y)
            }
        });
    }
    let f = filter(resample);
    let rows: Vec<Taps> = (top..top + height)
        .map(|y| taps(y, src_height, new_height, f))
        .collect();
    let cols: Vec<Taps> = (left..left + width)
        .map(|x| taps(x, src_width, new_width, f))
        .collect();
    // The input columns the horizontal pass reads.
    let span: Range<usize> = cols.iter().map(|t| t.first).min().unwrap_or(0)
        ..cols
            .iter()
            .map(|t| t.first + t.weights.len())
            .max()
            .unwrap_or(0);
    let raw = image.as_raw();
    let stride = src_width as usize * 3;
    // The vertical pass over the window's rows and the columns it needs, in f32.
    let mut vertical = vec![0f32; rows.len() * span.len() * 3];
    for (row, taps) in vertical.chunks_exact_mut(span.len() * 3).zip(&rows) {
        for (k, &w) in taps.weights.iter().enumerate() {
            let src = &raw[(taps.first + k) * stride..][span.start * 3..span.end * 3];
            for (t, &v) in row.iter_mut().zip(src) {
                *t += f32::from(v) * w;
            }
        }
    }
    // The horizontal pass, rounded to u8 as the image crate rounds.
    let mut out = vec![0u8; (width * height) as usize * 3];
    for (out_row, row) in out
        .chunks_exact_mut(width as usize * 3)
        .zip(vertical.chunks_exact(span.len() * 3))
    {
        for (pixel, taps) in out_row.chunks_exact_mut(3).zip(&cols) {
            let at = (taps.first - span.start) * 3;
            for (c, o) in pixel.iter_mut().enumerate() {
                let mut t = 0f32;
                for (k, &w) in taps.weights.iter().enumerate() {
                    t += row[at + k * 3 + c] * w;
                }
                *o = t.clamp(0.0, 255.0).round() as u8;
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("the window's size")
}

#[cfg(test)]
mod tests {
    use image::imageops::{self, FilterType};
    use image::{Rgb, RgbImage};
    use rand::{Rng, SeedableRng};

    use super::resize_window;
    use crate::folder::augment::Resample;

    fn noisy(width: u32, height: u32, seed: u64) -> RgbImage {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        RgbImage::from_fn(width, height, |_, _| Rgb(rng.random()))
    }

    #[test]
    fn a_window_equals_the_crop_of_the_whole_resize_byte_for_byte() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..40 {
            let (w, h) = (rng.random_range(1..90), rng.random_range(1..90));
            let image = noisy(w, h, case);
            // Shrinking, enlarging and mixed, down to one pixel.
            let (nw, nh) = (rng.random_range(1..120), rng.random_range(1..120));
            let (cw, ch) = (rng.random_range(1..=nw), rng.random_range(1..=nh));
            let (left, top) = (rng.random_range(0..=nw - cw), rng.random_range(0..=nh - ch));
            for (resample, filter) in [
                (Resample::Bilinear, FilterType::Triangle),
                (Resample::Bicubic, FilterType::CatmullRom),
            ] {
                let whole = imageops::resize(&image, nw, nh, filter);
                let want = imageops::crop_imm(&whole, left, top, cw, ch).to_image();
                let got = resize_window(&image, (nw, nh), [left, top, cw, ch], resample);
                assert_eq!(
                    got, want,
                    "{w}x{h} -> {nw}x{nh}, window {cw}x{ch} at ({left}, {top}), {resample:?}"
                );
            }
        }
    }

    #[test]
    fn the_training_scales_of_a_typical_photo_match_byte_for_byte() {
        let image = noisy(500, 375, 3);
        for (nw, nh, left, top) in [(341, 256, 117, 32), (640, 480, 0, 256), (500, 375, 9, 151)] {
            let whole = imageops::resize(&image, nw, nh, FilterType::Triangle);
            let want = imageops::crop_imm(&whole, left, top, 224, 224).to_image();
            let got = resize_window(&image, (nw, nh), [left, top, 224, 224], Resample::Bilinear);
            assert_eq!(got, want, "{nw}x{nh} at ({left}, {top})");
        }
    }

    #[test]
    fn the_same_size_is_a_plain_crop() {
        let image = noisy(9, 7, 1);
        let got = resize_window(&image, (9, 7), [2, 3, 4, 2], Resample::Bilinear);
        assert_eq!(got, imageops::crop_imm(&image, 2, 3, 4, 2).to_image());
    }
}
