//! Generated images, for trying the ImageNet-style pipeline without a data
//! set: smoke tests, examples and the project's own tests.

use image::{Rgb, RgbImage};

/// A `w x h` test pattern: colour gradients plus noise drawn from `seed`, so
/// that no two crops, flips or seeds give the same pixels. Deterministic:
/// the same arguments always give the same image.
pub fn test_pattern(w: u32, h: u32, seed: u32) -> RgbImage {
    // xorshift32, started from the seed (never 0).
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state >> 26) as u8;
        Rgb([
            (x * 190 / w) as u8 + noise,
            (y * 190 / h) as u8 + noise,
            ((x + 2 * y + seed) % 200) as u8,
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_different_for_other_seeds_and_flips() {
        let a = test_pattern(20, 10, 1);
        assert_eq!(a, test_pattern(20, 10, 1));
        assert_ne!(a, test_pattern(20, 10, 2));
        assert_ne!(a, image::imageops::flip_horizontal(&a));
        assert_eq!(a.dimensions(), (20, 10));
    }
}
