//! The paper's CIFAR-10 augmentation: zero padding, random 32x32 crop, random horizontal flip.
//!
//! Augmentation runs on the *normalised* image, so the padding is zero in the
//! normalised space (as when PyTorch's `RandomCrop(32, padding=4)` follows
//! `Normalize`, and as in the paper, where the mean is subtracted before padding).

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Side of a CIFAR-10 image.
const SIDE: usize = 32;

/// Augmentation options for training. [`Augment::NONE`] leaves images unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Zero pixels added on each side before a random 32x32 crop; 0 disables cropping.
    pub pad: u8,
    /// Whether to flip horizontally with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// No augmentation (evaluation).
    pub const NONE: Augment = Augment {
        pad: 0,
        flip: false,
    };
    /// The paper's recipe: pad 4, random crop, random flip.
    pub const PAPER: Augment = Augment { pad: 4, flip: true };

    /// Draws the crop offset and flip of one sample.
    pub fn sample(&self, rng: &mut impl Rng) -> CropFlip {
        let p = i32::from(self.pad);
        let (dy, dx) = if p > 0 {
            (rng.random_range(-p..=p), rng.random_range(-p..=p))
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.random_bool(0.5);
        CropFlip { dy, dx, flip }
    }
}

/// One sample's augmentation: a shifted crop followed by an optional horizontal flip.
///
/// `(dy, dx)` is the crop's top-left corner minus the padding: cropping at row
/// `pad + dy`, column `pad + dx` of the padded image. The output is
/// `out[c][y][x] = in[c][y + dy][x' + dx]` with `x' = 31 - x` if `flip` else `x`,
/// and 0 where that falls outside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    /// Vertical shift of the crop, in `-pad..=pad`.
    pub dy: i32,
    /// Horizontal shift of the crop, in `-pad..=pad`.
    pub dx: i32,
    /// Whether the crop is mirrored left-right.
    pub flip: bool,
}

impl CropFlip {
    /// The identity: no shift, no flip.
    pub const IDENTITY: CropFlip = CropFlip {
        dy: 0,
        dx: 0,
        flip: false,
    };

    /// Applies the crop and flip to a normalised CHW image (`src`, 3072 floats) into `out`.
    ///
    /// Both slices should hold 3x32x32 floats; only whole channels present in both are written.
    pub fn apply(&self, src: &[f32], out: &mut [f32]) {
        let plane = SIDE * SIDE;
        for (s, o) in src.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
            for (y, row) in o.chunks_exact_mut(SIDE).enumerate() {
                let sy = y as i32 + self.dy;
                for (x, v) in row.iter_mut().enumerate() {
                    let xs = if self.flip { SIDE - 1 - x } else { x };
                    let sx = xs as i32 + self.dx;
                    let inside = (0..SIDE as i32).contains(&sy) && (0..SIDE as i32).contains(&sx);
                    *v = if inside {
                        s[sy as usize * SIDE + sx as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
