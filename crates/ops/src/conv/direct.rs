//! Direct 3x3 convolution (stride 1, padding 1) without im2col, for the
//! narrow convolutions that Winograd does not take (ResNet-20/110's 16 to 64
//! channels), on CPUs with AVX-512.
//!
//! The im2col matrix of such a convolution has a row per input channel `c`
//! and tap `(ky, kx)`: plane `c` shifted by `(ky - 1) * W + (kx - 1)`
//! positions, flat, with zeros where the tap reaches into the padding. Those
//! rows are never written out: the micro-kernels read them from the input
//! in place, 16 positions at a time, with masked loads whose mask clears the
//! lanes that fall into the padding (a row above or below the image, the
//! column left of the first or right of the last, which in the flat plane
//! are the neighbouring row's last and first values). Masked-off lanes read
//! no memory. The masks depend on the geometry only: one table per call,
//! `[H*W/16][9]` bit masks.
//!
//! The forward kernel keeps `OB` output channels by `PB` vectors of
//! positions in registers over every tap and channel; the weight gradient
//! 8 output channels by the 3 taps of a kernel row over every image and
//! position of a chunk of the batch. Each value is summed in one order fixed
//! by the shapes: results do not depend on the thread count, and differ from
//! im2col + gemm's by rounding alone.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::epilogue::Epilogue;
use super::Geometry;
use crate::buffer::{assume_init_mut, filled_by};

/// f32 values per AVX-512 vector.
const LANES: usize = 16;

/// Output channels per micro-kernel tile.
const OB: usize = 8;

/// Vectors of output positions per forward tile (`OB * PB` accumulators and
/// `PB` input vectors in the 32 registers; the weights are broadcast from
/// memory).
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

/// The weight `[O, C, 3, 3]` in the forward kernel's order,
/// `[O / OB][9][C][OB]`: the `OB` weights a tap and channel broadcast are
/// adjacent.
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
                packed[((block * TAPS + t) * g.c + c) * OB + i] = *v;
            }
        }
    }
    packed
}

/// For vector `v` of an output plane (positions `16 v ..`) and tap `t`
/// (`3 ky + kx`), entry `9 v + t`: the lanes whose input position, the
/// output's shifted by `(ky - 1, kx - 1)`, is inside the image.
fn masks(g: &Geometry) -> Vec<u16> {
    let mut masks = vec![0u16; g.h * g.w / LANES * TAPS];
    for (v, taps) in masks.chunks_exact_mut(TAPS).enumerate() {
        for (t, mask) in taps.iter_mut().enumerate() {
            let (dy, dx) = ((t / 3) as isize - 1, (t % 3) as isize - 1);
            for lane in 0..LANES {
                let pos = v * LANES + lane;
                let (y, x) = ((pos / g.w) as isize + dy, (pos % g.w) as isize + dx);
                if (0..g.h as isize).contains(&y) && (0..g.w as isize).contains(&x) {
                    *mask |= 1 << lane;
                }
            }
        }
    }
    masks
}

/// The offset, in the flat plane, of tap `t`'s input from its output.
fn tap_offset(g: &Geometry, t: usize) -> isize {
    ((t / 3) as isize - 1) * g.w as isize + (t % 3) as isize - 1
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
    let masks = masks(g);
    let (out_len, hw) = (g.out_image_len(), g.h * g.w);
    let threads = rayon::current_num_threads();
    // Output channels `block * OB..` of image `image`, with the epilogue
    // applied while they are in cache.
    let block = |image: usize, xn: &[f32], block: usize, yb: &mut [MaybeUninit<f32>]| {
        channel_block(g, &masks, xn, packed, block, yb);
        if let Some(e) = epilogue {
            // SAFETY: `channel_block` wrote every value of its planes.
            let yb = unsafe { assume_init_mut(yb) };
            e.apply(image * g.o + block * OB, yb, hw);
        }
    };
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if g.n >= threads {
            let per = g.n.div_ceil(threads);
            y.par_chunks_mut(per * out_len)
                .zip(x.par_chunks(per * g.image_len()))
                .enumerate()
                .for_each(|(chunk, (ys, xs))| {
                    let images = ys
                        .chunks_exact_mut(out_len)
                        .zip(xs.chunks_exact(g.image_len()));
                    for (i, (yn, xn)) in images.enumerate() {
                        for (b, yb) in yn.chunks_exact_mut(OB * hw).enumerate() {
                            block(chunk * per + i, xn, b, yb);
                        }
                    }
                });
        } else {
            let images = y
                .chunks_exact_mut(out_len)
                .zip(x.chunks_exact(g.image_len()));
            for (i, (yn, xn)) in images.enumerate() {
                yn.par_chunks_mut(OB * hw)
                    .enumerate()
                    .for_each(|(b, yb)| block(i, xn, b, yb));
            }
        }
    };
    // SAFETY: `x` holds `n` images, so every output image is paired with its
    // input, and every output channel block of it is written in full.
    unsafe { filled_by(len, fill) }
}

/// Writes output channels `block * OB ..` of one image (`y`, `OB` planes)
/// from its input `x` (`[C, H, W]`).
fn channel_block(
    g: &Geometry,
    masks: &[u16],
    x: &[f32],
    packed: &[f32],
    block: usize,
    y: &mut [MaybeUninit<f32>],
) {
    let hw = g.h * g.w;
    let weights = &packed[block * TAPS * g.c * OB..][..TAPS * g.c * OB];
    assert!(
        x.len() == g.c * hw && y.len() == OB * hw && masks.len() == hw / LANES * TAPS,
        "conv2d: direct kernel operands out of bounds"
    );
    let mut p = 0;
    while p < hw {
        let vectors = ((hw - p) / LANES).min(PB);
        // SAFETY: the assert above; `p + vectors * 16 <= hw`, `hw` a multiple
        // of 16 (`applies`), which also checked that the CPU has AVX-512.
        unsafe {
            match vectors {
                3 => tile::<3>(g, masks, x, weights, p, y),
                2 => tile::<2>(g, masks, x, weights, p, y),
                _ => tile::<1>(g, masks, x, weights, p, y),
            }
        }
        p += vectors * LANES;
    }
}

/// One forward tile: `OB` output channels at `V` vectors of positions from
/// `p`.
///
/// # Safety
///
/// The CPU must have AVX-512F; `x`, `weights`, `masks` and `y` must be as
/// [`channel_block`] checks, with `p + V * 16 <= H * W`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize>(
    g: &Geometry,
    masks: &[u16],
    x: &[f32],
    weights: &[f32],
    p: usize,
    y: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };
    let hw = g.h * g.w;
    // SAFETY: a masked load reads only the lanes its mask sets, and `masks`
    // sets those whose position (the output's shifted by the tap) is inside
    // plane `c` of `x`; the pointer to the vector's first lane is formed with
    // wrapping arithmetic, as it may lie outside `x`. The weights read are
    // the `9 * C * OB` of `weights`, the stores the `OB` planes of `y` at
    // `p..p + V * 16`. The CPU has AVX-512F.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; OB];
        let mut xv = [_mm512_setzero_ps(); V];
        let mut wt = weights.as_ptr();
        for t in 0..TAPS {
            let mut lanes = [0u16; V];
            for (j, m) in lanes.iter_mut().enumerate() {
                *m = *masks.get_unchecked((p / LANES + j) * TAPS + t);
            }
            let mut src = x.as_ptr().wrapping_offset(p as isize + tap_offset(g, t));
            for _ in 0..g.c {
                for (j, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(lanes[j], src.wrapping_add(j * LANES));
                }
                for lane in acc.iter_mut() {
                    let w = _mm512_set1_ps(*wt);
                    wt = wt.add(1);
                    for (a, v) in lane.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(w, *v, *a);
                    }
                }
                src = src.wrapping_add(hw);
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
    _: &[u16],
    _: &[f32],
    _: &[f32],
    _: usize,
    _: &mut [MaybeUninit<f32>],
) {
    unreachable!("the direct convolution needs x86-64 with AVX-512")
}

/// The weight gradient summed over a chunk of images: `dw` (`[O, C, 3, 3]`)
/// from `x` (`[n, C, H, W]`) and `dy` (`[n, O, H, W]`), for a geometry
/// [`applies`] accepts.
///
/// For 8 output channels and one kernel row `(c, ky)`, the 24 sums over the
/// chunk's images and positions are kept in vectors, lane by lane, then each
/// is added up across its lanes: in an order fixed by the shapes.
pub(super) fn grad_weight_chunk(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(
        applies(g),
        "conv2d: the direct kernel does not apply to {g:?}"
    );
    let images = x.len() / g.image_len().max(1);
    assert!(
        x.len() == images * g.image_len() && dy.len() == images * g.out_image_len(),
        "conv2d: input or output gradient of the wrong length"
    );
    let masks = masks(g);
    let mut dw = vec![0f32; g.o * g.c * TAPS];
    let mut sums = [0f32; OB * 3];
    for block in 0..g.o / OB {
        for c in 0..g.c {
            for ky in 0..3 {
                // SAFETY: `x` holds `images` images and `dy` their `O`
                // planes (the assert above), `masks` is the geometry's, and
                // `applies` checked that the CPU has AVX-512.
                unsafe { weight_row(g, &masks, x, dy, images, [block, c, ky], &mut sums) };
                for (i, taps) in sums.chunks_exact(3).enumerate() {
                    let o = block * OB + i;
                    dw[(o * g.c + c) * TAPS + ky * 3..][..3].copy_from_slice(taps);
                }
            }
        }
    }
    dw
}

/// The gradients of the three taps `(c, ky, 0..3)` of output channels
/// `block * OB ..`, summed over `images` images, into `sums` (`[OB][3]`).
///
/// # Safety
///
/// The CPU must have AVX-512F; `x` must hold `images` images, `dy` their
/// output gradients and `masks` the geometry's (see [`grad_weight_chunk`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_row(
    g: &Geometry,
    masks: &[u16],
    x: &[f32],
    dy: &[f32],
    images: usize,
    [block, c, ky]: [usize; 3],
    sums: &mut [f32; OB * 3],
) {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_reduce_add_ps,
        _mm512_setzero_ps,
    };
    let hw = g.h * g.w;
    // SAFETY: as in `tile`: the masked loads read only lanes inside plane
    // `c` of each image of `x`, through wrapping pointers; the unmasked ones
    // read `OB` planes of each image's `dy`. The CPU has AVX-512F.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 3]; OB];
        let mut xv = [_mm512_setzero_ps(); 3];
        for n in 0..images {
            let plane = x.as_ptr().add((n * g.c + c) * hw);
            let grads = dy.as_ptr().add((n * g.o + block * OB) * hw);
            for p in (0..hw).step_by(LANES) {
                for (kx, v) in xv.iter_mut().enumerate() {
                    let t = ky * 3 + kx;
                    let mask = *masks.get_unchecked(p / LANES * TAPS + t);
                    let src = plane.wrapping_offset(p as isize + tap_offset(g, t));
                    *v = _mm512_maskz_loadu_ps(mask, src);
                }
                for (i, lane) in acc.iter_mut().enumerate() {
                    let d = _mm512_loadu_ps(grads.add(i * hw + p));
                    for (a, v) in lane.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(d, *v, *a);
                    }
                }
            }
        }
        for (s, a) in sums.iter_mut().zip(acc.iter().flatten()) {
            *s = _mm512_reduce_add_ps(*a);
        }
    }
}

/// Never called: [`applies`] is false without x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_row(
    _: &Geometry,
    _: &[u16],
    _: &[f32],
    _: &[f32],
    _: usize,
    _: [usize; 3],
    _: &mut [f32; OB * 3],
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

    /// A 3x3, stride-1, padding-1 convolution of `[n, c, h, w]` to `o`
    /// channels.
    fn same_size(n: usize, c: usize, h: usize, w: usize, o: usize) -> Geometry {
        Geometry::new(&[n, c, h, w], &[o, c, 3, 3], 1, 1).unwrap()
    }

    /// Asserts every value is within 1e-5 of the largest reference magnitude
    /// (or of 1, if that is smaller).
    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let tolerance = 1e-5 * want.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (got, want)) in got.iter().zip(want).enumerate() {
            assert!(
                (got - want).abs() <= tolerance,
                "{what} at {i}: {got} vs {want}"
            );
        }
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
            let g = same_size(n, c, h, w, o);
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
                let mut runs = Vec::new();
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    runs.push(pool.install(|| forward(&g, &x, &packed, e)));
                }
                assert_close(&runs[0], &want, &format!("{g:?}"));
                assert!(
                    runs.iter().all(|r| r == &runs[0]),
                    "{g:?}: differs with the threads"
                );
            }
        }
    }

    #[test]
    fn weight_gradient_matches_im2col() {
        if !has_avx512() {
            eprintln!("no AVX-512 on this CPU: the direct kernel never runs here");
            return;
        }
        for [n, c, h, w, o] in [
            [2, 3, 4, 4, 8],
            [3, 5, 2, 8, 24],
            [1, 1, 16, 1, 8],
            [4, 16, 15, 16, 16],
        ] {
            let g = same_size(n, c, h, w, o);
            let x = values(g.n * g.image_len(), 5.0);
            let dy = values(g.n * g.out_image_len(), 6.0);
            let got = grad_weight_chunk(&g, &x, &dy);
            let want = cpu::im2col_grad_weight_chunk(&g, &x, &dy);
            assert_close(&got, &want, &format!("{g:?}"));
        }
    }

    #[test]
    fn other_geometries_do_not_apply() {
        let base = same_size(1, 4, 8, 8, 16);
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
