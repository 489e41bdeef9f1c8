//! Direct 3x3 convolution (stride 1, padding 1) without im2col, for the
//! narrow convolutions that Winograd does not take (ResNet-20/110's 16 to 64
//! channels), on CPUs with AVX-512.
//!
//! The im2col matrix of such a convolution has a row per input channel `c`
//! and tap `(ky, kx)`: plane `c` shifted by `(ky - 1) * W + (kx - 1)`
//! positions, flat, with zeros where the tap reaches into the padding. Those
//! rows need not be written out. With each plane stored three times, flat
//! between `W + 1` zeros on either side (the rows above and below), once as
//! is, once with its last column zeroed and once with its first column
//! zeroed, every row is a contiguous slice of one of the three copies: a tap
//! with `kx = 0` that leaves the image on the left reads the previous row's
//! last column, zeroed in its copy, and a tap with `kx = 2` the next row's
//! first. The input is copied 3 times instead of 9, and the micro-kernel
//! reads the shifted rows in place: `OB` output channels by `PB` vectors of
//! positions in registers, over every channel and tap.
//!
//! Each output value is summed over channels, then taps, in one fixed order:
//! results do not depend on the thread count. They differ from im2col +
//! gemm's by rounding alone.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::epilogue::Epilogue;
use super::Geometry;
use crate::buffer::{assume_init_mut, filled_by};
use crate::scratch::with_scratch;

/// f32 values per AVX-512 vector.
const LANES: usize = 16;

/// Output channels per micro-kernel tile.
const OB: usize = 8;

/// Vectors of output positions per micro-kernel tile (`OB * PB`
/// accumulators, `PB` input vectors and a broadcast weight in the 32
/// registers).
const PB: usize = 3;

/// Taps of a 3x3 kernel.
const TAPS: usize = 9;

/// Whether the convolution is one this module computes: 3x3, stride 1,
/// padding 1, output channels a multiple of 8, positions per plane a
/// multiple of 16, on a CPU with AVX-512 (elsewhere im2col runs instead).
/// A function of the geometry and the CPU only, never of the thread count.
pub(super) fn applies(g: &Geometry) -> bool {
    g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.o.is_multiple_of(OB)
        && (g.h * g.w).is_multiple_of(LANES)
        && g.c > 0
        && has_avx512()
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

/// The weight `[O, C, 3, 3]` in the micro-kernel's order,
/// `[O / OB][C][9][OB]`: the `OB` weights a tap broadcasts are adjacent.
pub(super) fn pack_weights(g: &Geometry, w: &[f32]) -> Vec<f32> {
    assert_eq!(
        w.len(),
        g.o * g.c * TAPS,
        "conv2d: weight of the wrong length"
    );
    let mut packed = vec![0f32; w.len()];
    for (o, filters) in w.chunks_exact(g.c * TAPS).enumerate() {
        let (block, i) = (o / OB, o % OB);
        for (c, taps) in filters.chunks_exact(TAPS).enumerate() {
            for (t, v) in taps.iter().enumerate() {
                packed[((block * g.c + c) * TAPS + t) * OB + i] = *v;
            }
        }
    }
    packed
}

/// Where the three copies of each input plane lie in a scratch buffer.
#[derive(Clone, Copy)]
struct Planes {
    /// Zeros before (and after) a copy's `H * W` values: one row and one.
    margin: usize,
    /// Values per copy, margins included.
    len: usize,
}

impl Planes {
    fn new(g: &Geometry) -> Self {
        let margin = g.w + 1;
        Self {
            margin,
            len: g.h * g.w + 2 * margin,
        }
    }

    /// Values for the three copies of every plane of one image.
    fn image_len(&self, g: &Geometry) -> usize {
        3 * g.c * self.len
    }

    /// Writes the copies of image `x` (`[C, H, W]`) into `out`
    /// (`[C][kx][len]`, see the module documentation).
    fn fill(&self, g: &Geometry, x: &[f32], out: &mut [f32]) {
        let (hw, m, w) = (g.h * g.w, self.margin, g.w);
        for (plane, copies) in x.chunks_exact(hw).zip(out.chunks_exact_mut(3 * self.len)) {
            for (kx, copy) in copies.chunks_exact_mut(self.len).enumerate() {
                copy[..m].fill(0.0);
                copy[m + hw..].fill(0.0);
                let body = &mut copy[m..m + hw];
                body.copy_from_slice(plane);
                // kx = 0 reads column W-1 of the row before for column 0's
                // left neighbour, kx = 2 column 0 of the row after.
                let zeroed = match kx {
                    0 => Some(w - 1),
                    2 => Some(0),
                    _ => None,
                };
                if let Some(col) = zeroed {
                    body.iter_mut().skip(col).step_by(w).for_each(|v| *v = 0.0);
                }
            }
        }
    }
}

/// The forward pass: `y` (`[N, O, H, W]`) from `x` (`[N, C, H, W]`) and the
/// weights as [`pack_weights`] orders them, with `epilogue` applied to each
/// image's output planes once they are written.
///
/// Batches of at least as many images as threads split the images over
/// the threads; smaller ones (inference on one image) split each image's
/// output channels instead.
pub(super) fn forward(
    g: &Geometry,
    x: &[f32],
    packed: &[f32],
    epilogue: Option<&Epilogue>,
) -> Vec<f32> {
    assert!(
        applies(g),
        "conv2d: the direct kernel does not apply to {g:?}"
    );
    assert_eq!(
        x.len(),
        g.n * g.image_len(),
        "conv2d: input of the wrong length"
    );
    assert_eq!(
        packed.len(),
        g.o * g.c * TAPS,
        "conv2d: packed weight of the wrong length"
    );
    let len = g.n * g.out_image_len();
    if len == 0 {
        return Vec::new();
    }
    let planes = Planes::new(g);
    let (out_len, hw) = (g.out_image_len(), g.h * g.w);
    let threads = rayon::current_num_threads();
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if g.n >= threads {
            let per = g.n.div_ceil(threads);
            y.par_chunks_mut(per * out_len)
                .zip(x.par_chunks(per * g.image_len()))
                .enumerate()
                .for_each(|(chunk, (ys, xs))| {
                    with_scratch(planes.image_len(g), |buffer| {
                        let images = ys
                            .chunks_exact_mut(out_len)
                            .zip(xs.chunks_exact(g.image_len()));
                        for (i, (yn, xn)) in images.enumerate() {
                            planes.fill(g, xn, buffer);
                            for (block, yb) in yn.chunks_exact_mut(OB * hw).enumerate() {
                                channel_block(g, planes, buffer, packed, block, yb);
                            }
                            // SAFETY: the blocks above wrote every value of `yn`.
                            let yn = unsafe { assume_init_mut(yn) };
                            if let Some(e) = epilogue {
                                e.apply((chunk * per + i) * g.o, yn, hw, false);
                            }
                        }
                    })
                });
        } else {
            let mut buffer = vec![0f32; planes.image_len(g)];
            for (i, (yn, xn)) in y
                .chunks_exact_mut(out_len)
                .zip(x.chunks_exact(g.image_len()))
                .enumerate()
            {
                planes.fill(g, xn, &mut buffer);
                yn.par_chunks_mut(OB * hw)
                    .enumerate()
                    .for_each(|(block, yb)| channel_block(g, planes, &buffer, packed, block, yb));
                // SAFETY: the blocks above wrote every value of `yn`.
                let yn = unsafe { assume_init_mut(yn) };
                if let Some(e) = epilogue {
                    e.apply(i * g.o, yn, hw, true);
                }
            }
        }
    };
    // SAFETY: `x` holds `n` images, so every output image is paired with its
    // input, and every output channel block of it is written in full.
    unsafe { filled_by(len, fill) }
}

/// Writes output channels `block * OB ..` of one image (`y`, `OB` planes)
/// from the copies of its input planes in `copies`.
fn channel_block(
    g: &Geometry,
    planes: Planes,
    copies: &[f32],
    packed: &[f32],
    block: usize,
    y: &mut [MaybeUninit<f32>],
) {
    let hw = g.h * g.w;
    let weights = &packed[block * g.c * TAPS * OB..][..g.c * TAPS * OB];
    assert!(
        copies.len() >= planes.image_len(g) && y.len() == OB * hw && hw.is_multiple_of(LANES),
        "conv2d: direct kernel operands out of bounds"
    );
    let mut p = 0;
    while p < hw {
        let vectors = ((hw - p) / LANES).min(PB);
        // SAFETY: the assert above: every copy holds `len` values, and a
        // tile at positions `p..p + vectors * 16 <= hw` reads each copy from
        // `margin + p - (W + 1) >= 0` to `margin + p + vectors * 16 + W + 1
        // <= len`; it reads `C * 9 * OB` weights and writes `OB` planes of
        // `hw` values. `applies` checked that the CPU has AVX-512.
        unsafe {
            match vectors {
                3 => tile::<3>(g, planes, copies, weights, p, y),
                2 => tile::<2>(g, planes, copies, weights, p, y),
                _ => tile::<1>(g, planes, copies, weights, p, y),
            }
        }
        p += vectors * LANES;
    }
}

/// One tile: `OB` output channels at `V` vectors of positions from `p`.
///
/// # Safety
///
/// The CPU must have AVX-512F, and `copies`, `weights` and `y` must hold
/// what [`channel_block`] checks, with `p + V * 16 <= H * W`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize>(
    g: &Geometry,
    planes: Planes,
    copies: &[f32],
    weights: &[f32],
    p: usize,
    y: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };
    let hw = g.h * g.w;
    let row = g.w as isize;
    // SAFETY: the caller's bounds (see `channel_block`) keep every load
    // inside `copies` and `weights` and every store inside `y`, and the CPU
    // has AVX-512F.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; OB];
        let mut xv: [__m512; V] = [_mm512_setzero_ps(); V];
        let copies = copies.as_ptr();
        let mut wt = weights.as_ptr();
        for c in 0..g.c {
            let origin = copies.add(c * 3 * planes.len + planes.margin + p);
            for ky in 0..3isize {
                for kx in 0..3isize {
                    let src = origin
                        .add(kx as usize * planes.len)
                        .offset((ky - 1) * row + kx - 1);
                    for (j, v) in xv.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(src.add(j * LANES));
                    }
                    for lane in acc.iter_mut() {
                        let w = _mm512_set1_ps(*wt);
                        wt = wt.add(1);
                        for (a, v) in lane.iter_mut().zip(&xv) {
                            *a = _mm512_fmadd_ps(w, *v, *a);
                        }
                    }
                }
            }
        }
        let y = y.as_mut_ptr().cast::<f32>();
        for (i, lane) in acc.iter().enumerate() {
            for (j, a) in lane.iter().enumerate() {
                _mm512_storeu_ps(y.add(i * hw + p + j * LANES), *a);
            }
        }
    }
}

/// Never called: [`applies`] is false without x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const V: usize>(
    _: &Geometry,
    _: Planes,
    _: &[f32],
    _: &[f32],
    _: usize,
    _: &mut [MaybeUninit<f32>],
) {
    unreachable!("the direct convolution needs x86-64 with AVX-512")
}

#[cfg(test)]
mod tests {
    use super::super::cpu;
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + seed) * 0.731).sin())
            .collect()
    }

    #[test]
    fn matches_im2col_with_and_without_an_epilogue_on_one_and_many_threads() {
        if !has_avx512() {
            eprintln!("no AVX-512 on this CPU: the direct kernel never runs here");
            return;
        }
        // [n, c, h, w, o]: tails of 1 and 2 vectors, odd widths, single
        // rows and columns, one input channel, batches below the threads.
        for [n, c, h, w, o] in [
            [2, 3, 4, 4, 8],
            [3, 5, 2, 8, 24],
            [1, 4, 1, 16, 8],
            [2, 7, 12, 4, 16],
            [1, 1, 16, 1, 8],
            [4, 16, 15, 16, 16],
            [3, 9, 7, 32, 32],
        ] {
            let g = Geometry {
                n,
                c,
                h,
                w,
                o,
                k: 3,
                stride: 1,
                pad: 1,
                ho: h,
                wo: w,
            };
            assert!(applies(&g), "{g:?}");
            let x = values(g.n * g.image_len(), 1.0);
            let wt = values(o * c * TAPS, 2.0);
            let bias = values(o, 3.0);
            let residual = values(g.n * g.out_image_len(), 4.0);
            let epilogue = Epilogue {
                bias: &bias,
                residual: Some(&residual),
                relu: true,
            };
            let packed = pack_weights(&g, &wt);
            for e in [None, Some(&epilogue)] {
                let want = cpu::im2col_forward(&g, &x, &wt, e);
                let tolerance = 1e-5 * want.iter().fold(1f32, |m, v| m.max(v.abs()));
                let mut runs = Vec::new();
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    runs.push(pool.install(|| forward(&g, &x, &packed, e)));
                }
                for (i, (got, want)) in runs[0].iter().zip(&want).enumerate() {
                    assert!(
                        (got - want).abs() <= tolerance,
                        "{g:?} at {i}: {got} vs {want}"
                    );
                }
                assert!(
                    runs.iter().all(|r| r == &runs[0]),
                    "{g:?}: differs with the threads"
                );
            }
        }
    }

    #[test]
    fn other_geometries_do_not_apply() {
        let base = Geometry {
            n: 1,
            c: 4,
            h: 8,
            w: 8,
            o: 16,
            k: 3,
            stride: 1,
            pad: 1,
            ho: 8,
            wo: 8,
        };
        for g in [
            Geometry { o: 12, ..base },
            Geometry {
                h: 5,
                ho: 5,
                ..base
            },
            Geometry {
                stride: 2,
                ho: 4,
                wo: 4,
                ..base
            },
            Geometry {
                k: 1,
                pad: 0,
                ..base
            },
        ] {
            assert!(!applies(&g), "{g:?}");
        }
        assert_eq!(applies(&base), has_avx512());
    }
}
