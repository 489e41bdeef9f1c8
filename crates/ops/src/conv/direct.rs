//! Direct 3x3 convolution (stride 1, padding 1) without im2col, for the
//! narrow convolutions that Winograd does not take (ResNet-20/110's 16 to 64
//! channels), on CPUs with AVX-512 or with AVX2 and FMA.
//!
//! The im2col matrix of such a convolution has a row per input channel `c`
//! and tap `(ky, kx)`: plane `c` shifted by `(ky - 1) * W + (kx - 1)`
//! positions, flat, with zeros where the tap reaches into the padding. Those
//! rows are never written out: the micro-kernels read them from the input
//! in place, a vector of positions at a time, with masked loads whose mask clears the
//! lanes that fall into the padding (a row above or below the image, the
//! column left of the first or right of the last, which in the flat plane
//! are the neighbouring row's last and first values). Masked-off lanes read
//! no memory. The masks depend on the geometry only: one table per call,
//! `[H*W/16][9]` bit masks.
//!
//! With AVX-512 the forward kernel keeps `OB` output channels by `PB`
//! vectors of 16 positions in registers over every tap and channel, the
//! weight gradient 8 output channels by the 3 taps of a kernel row over
//! every image and position of a chunk of the batch. AVX2's 16 registers
//! hold half of that: 4 output channels by 16 positions (two vectors of 8),
//! 4 output channels by 3 taps, each tile run for both halves of the 8.
//! Each value is summed in one order fixed by the shapes and the
//! instruction set: results do not depend on the thread count, and differ
//! from im2col + gemm's by rounding alone. The forward sums go in the same
//! order with either instruction set (each lane adds tap by tap, channel by
//! channel); the weight gradient's are added across 16 lanes or 8.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::epilogue::Epilogue;
use super::Geometry;
use crate::buffer::{assume_init_mut, filled_by};

/// f32 values per AVX-512 vector, and output positions per entry of the
/// mask table (two AVX2 vectors).
const LANES: usize = 16;

/// f32 values per AVX2 vector.
const LANES_AVX2: usize = 8;

/// Output channels per AVX2 tile: half of `OB`.
const HALF: usize = OB / 2;

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
/// multiple of 16, on a CPU with AVX-512 or AVX2 and FMA (elsewhere im2col
/// runs instead). A function of the geometry and the CPU only, never of the
/// thread count.
pub(super) fn applies(g: &Geometry) -> bool {
    fits(g) && Isa::best().is_some()
}

/// The geometry part of [`applies`].
fn fits(g: &Geometry) -> bool {
    g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.o.is_multiple_of(OB)
        && (g.h * g.w).is_multiple_of(LANES)
        && g.c > 0
}

/// The vector instructions a kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// Every one, widest first.
    const ALL: [Isa; 2] = [Isa::Avx512, Isa::Avx2];

    /// The widest this CPU has, if any.
    fn best() -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.present())
    }

    /// Every one this CPU has, widest first.
    #[cfg(test)]
    fn available() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.present())
    }

    /// Whether this CPU has it.
    #[cfg(target_arch = "x86_64")]
    fn present(self) -> bool {
        match self {
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn present(self) -> bool {
        false
    }
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
    let isa = Isa::best().expect("conv2d: the direct kernel needs AVX-512 or AVX2");
    forward_on(isa, g, x, packed, epilogue)
}

/// [`forward`] with the kernels of `isa`, which the CPU must have.
fn forward_on(
    isa: Isa,
    g: &Geometry,
    x: &[f32],
    packed: &[f32],
    epilogue: Option<&Epilogue>,
) -> Vec<f32> {
    assert!(
        fits(g) && isa.present(),
        "conv2d: the direct kernel with {isa:?} does not apply to {g:?} on this CPU"
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
        channel_block(isa, g, &masks, xn, packed, block, yb);
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
/// from its input `x` (`[C, H, W]`), with the kernels of `isa` (which the
/// CPU has).
fn channel_block(
    isa: Isa,
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
    if isa == Isa::Avx2 {
        for p in (0..hw).step_by(LANES) {
            for half in 0..OB / HALF {
                // SAFETY: the assert above; `p + 16 <= hw`, `hw` a multiple
                // of 16 (`applies`); the caller checked the CPU.
                unsafe { tile_avx2(g, masks, x, weights, [p, half], y) }
            }
        }
        return;
    }
    let mut p = 0;
    while p < hw {
        let vectors = ((hw - p) / LANES).min(PB);
        // SAFETY: the assert above; `p + vectors * 16 <= hw`, `hw` a multiple
        // of 16 (`applies`); the caller checked that the CPU has AVX-512.
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

/// One AVX2 forward tile: output channels `half * 4 ..` of the block's 8
/// at the 16 positions from `p`, as two vectors of 8.
///
/// # Safety
///
/// The CPU must have AVX2 and FMA; `x`, `weights`, `masks` and `y` must be
/// as [`channel_block`] checks, with `p + 16 <= H * W` and `half < 2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    g: &Geometry,
    masks: &[u16],
    x: &[f32],
    weights: &[f32],
    [p, half]: [usize; 2],
    y: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::{
        _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_maskload_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    let hw = g.h * g.w;
    // SAFETY: as in `tile`: a masked load reads only the lanes its mask sets,
    // those inside plane `c` of `x`, through a wrapping pointer. The weights
    // read are `half * 4 .. half * 4 + 4` of each `OB` of `weights`, the
    // stores 4 planes of `y` at `p..p + 16`. The CPU has AVX2 and FMA.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; HALF];
        let mut wt = weights.as_ptr().add(half * HALF);
        for t in 0..TAPS {
            let [low, high] = lane_masks(*masks.get_unchecked(p / LANES * TAPS + t));
            let mut src = x.as_ptr().wrapping_offset(p as isize + tap_offset(g, t));
            for _ in 0..g.c {
                let v0 = _mm256_maskload_ps(src, low);
                let v1 = _mm256_maskload_ps(src.wrapping_add(LANES_AVX2), high);
                for (i, a) in acc.iter_mut().enumerate() {
                    let w = _mm256_broadcast_ss(&*wt.add(i));
                    a[0] = _mm256_fmadd_ps(w, v0, a[0]);
                    a[1] = _mm256_fmadd_ps(w, v1, a[1]);
                }
                wt = wt.add(OB);
                src = src.wrapping_add(hw);
            }
        }
        let y = y.as_mut_ptr().cast::<f32>();
        for (i, a) in acc.iter().enumerate() {
            let plane = y.add((half * HALF + i) * hw + p);
            _mm256_storeu_ps(plane, a[0]);
            _mm256_storeu_ps(plane.add(LANES_AVX2), a[1]);
        }
    }
}

/// Never called: [`applies`] is false without x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_avx2(
    _: &Geometry,
    _: &[u16],
    _: &[f32],
    _: &[f32],
    _: [usize; 2],
    _: &mut [MaybeUninit<f32>],
) {
    unreachable!("the direct convolution needs x86-64 with AVX2")
}

/// A 16-position mask-table entry as the lane masks of its two AVX2
/// vectors (all bits of a lane set where its bit is).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn lane_masks(mask: u16) -> [std::arch::x86_64::__m256i; 2] {
    use std::arch::x86_64::{
        _mm256_and_si256, _mm256_cmpeq_epi32, _mm256_set1_epi32, _mm256_setr_epi32,
    };
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let lanes = |m: u16| {
        let m = _mm256_and_si256(_mm256_set1_epi32(i32::from(m)), bits);
        _mm256_cmpeq_epi32(m, bits)
    };
    [lanes(mask & 0xff), lanes(mask >> 8)]
}

/// The weight gradient summed over a chunk of images: `dw` (`[O, C, 3, 3]`)
/// from `x` (`[n, C, H, W]`) and `dy` (`[n, O, H, W]`), for a geometry
/// [`applies`] accepts.
///
/// For 8 output channels and one kernel row `(c, ky)`, the 24 sums over the
/// chunk's images and positions are kept in vectors, lane by lane, then each
/// is added up across its lanes: in an order fixed by the shapes.
pub(super) fn grad_weight_chunk(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let isa = Isa::best().expect("conv2d: the direct kernel needs AVX-512 or AVX2");
    grad_weight_chunk_on(isa, g, x, dy)
}

/// [`grad_weight_chunk`] with the kernels of `isa`, which the CPU must have.
fn grad_weight_chunk_on(isa: Isa, g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(
        fits(g) && isa.present(),
        "conv2d: the direct kernel with {isa:?} does not apply to {g:?} on this CPU"
    );
    let images = x.len() / g.image_len().max(1);
    assert!(
        x.len() == images * g.image_len() && dy.len() == images * g.out_image_len(),
        "conv2d: input or output gradient of the wrong length"
    );
    let masks = masks(g);
    let mut dw = vec![0f32; g.o * g.c * TAPS];
    if isa == Isa::Avx2 {
        grad_weight_avx2(g, &lane_mask_table(&masks), x, dy, &mut dw);
        return dw;
    }
    let mut sums = [0f32; OB * 3];
    for block in 0..g.o / OB {
        for c in 0..g.c {
            for ky in 0..3 {
                // SAFETY: `x` holds `images` images and `dy` their `O`
                // planes (the assert above), `masks` is the geometry's, and
                // the CPU has AVX-512 (checked above).
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

/// Positions (images times `H*W`) per group of images of
/// [`grad_weight_avx2`]: a group's 4 planes of `dy` stay in L1 over every
/// input channel and tap, its input planes in L2.
const AVX2_GROUP_POSITIONS: usize = 1024;

/// The AVX2 weight gradient into `dw` (zeros, `[O, C, 3, 3]`): per group of
/// images, per 4 output channels, the sums of [`weight_row_avx2`] for every
/// input channel and kernel row, added to `dw` group after group. AVX2 reads
/// its operands from L2 and L1 this way; summed over all the images at once,
/// as the AVX-512 kernel does, a row's images stream from L3 for every input
/// channel and tap.
fn grad_weight_avx2(
    g: &Geometry,
    lane_masks: &[[i32; LANES_AVX2]],
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let images = x.len() / g.image_len().max(1);
    let group = (AVX2_GROUP_POSITIONS / (g.h * g.w)).max(1);
    let mut sums = [0f32; HALF * 3];
    for first in (0..images).step_by(group) {
        let n = group.min(images - first);
        let xs = &x[first * g.image_len()..][..n * g.image_len()];
        let dys = &dy[first * g.out_image_len()..][..n * g.out_image_len()];
        for block in 0..g.o / OB {
            for half in 0..OB / HALF {
                for c in 0..g.c {
                    for ky in 0..3 {
                        let at = [block, c, ky, half];
                        // SAFETY: `xs` holds `n` images and `dys` their `O`
                        // planes, `lane_masks` is the geometry's, and the
                        // caller checked that the CPU has AVX2 and FMA.
                        unsafe { weight_row_avx2(g, lane_masks, xs, dys, n, at, &mut sums) };
                        for (i, taps) in sums.chunks_exact(3).enumerate() {
                            let o = block * OB + half * HALF + i;
                            let row = &mut dw[(o * g.c + c) * TAPS + ky * 3..][..3];
                            for (d, s) in row.iter_mut().zip(taps) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        }
    }
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

/// The mask table as AVX2 lane masks: entry `9 v + t` for vector `v` of 8
/// positions and tap `t`, all bits of a lane set where the table's bit is.
fn lane_mask_table(masks: &[u16]) -> Vec<[i32; LANES_AVX2]> {
    let mut table = vec![[0i32; LANES_AVX2]; masks.len() * 2];
    for (v, taps) in table.chunks_exact_mut(TAPS).enumerate() {
        for (t, lanes) in taps.iter_mut().enumerate() {
            let bits = masks[v / 2 * TAPS + t] >> (v % 2 * LANES_AVX2);
            for (lane, m) in lanes.iter_mut().enumerate() {
                *m = if bits >> lane & 1 == 1 { -1 } else { 0 };
            }
        }
    }
    table
}

/// [`weight_row`] with AVX2, for output channels `block * OB + half * 4 ..`
/// (4 of them), into `sums` (`[4][3]`).
///
/// # Safety
///
/// The CPU must have AVX2 and FMA; `x` must hold `images` images, `dy`
/// their output gradients and `masks` the geometry's [`lane_mask_table`]
/// (see [`grad_weight_chunk`]); `half < 2` and `sums` has 12 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_row_avx2(
    g: &Geometry,
    masks: &[[i32; LANES_AVX2]],
    x: &[f32],
    dy: &[f32],
    images: usize,
    [block, c, ky, half]: [usize; 4],
    sums: &mut [f32],
) {
    use std::arch::x86_64::{
        __m256i, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_maskload_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let hw = g.h * g.w;
    // SAFETY: as in `weight_row`: the masked loads read only lanes inside
    // plane `c` of each image of `x`, through wrapping pointers; the unmasked
    // ones read 4 planes of each image's `dy`. The CPU has AVX2 and FMA.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 3]; HALF];
        for n in 0..images {
            let plane = x.as_ptr().add((n * g.c + c) * hw);
            let grads = dy.as_ptr().add((n * g.o + block * OB + half * HALF) * hw);
            for p in (0..hw).step_by(LANES_AVX2) {
                let mut xv = [_mm256_setzero_ps(); 3];
                for (kx, v) in xv.iter_mut().enumerate() {
                    let t = ky * 3 + kx;
                    let lanes = masks.get_unchecked(p / LANES_AVX2 * TAPS + t);
                    let mask = _mm256_loadu_si256(lanes.as_ptr().cast::<__m256i>());
                    let src = plane.wrapping_offset(p as isize + tap_offset(g, t));
                    *v = _mm256_maskload_ps(src, mask);
                }
                for (i, lane) in acc.iter_mut().enumerate() {
                    let d = _mm256_loadu_ps(grads.add(i * hw + p));
                    for (a, v) in lane.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(d, *v, *a);
                    }
                }
            }
        }
        let mut lanes = [0f32; LANES_AVX2];
        for (s, a) in sums.iter_mut().zip(acc.iter().flatten()) {
            _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
            *s = lanes.iter().sum();
        }
    }
}

/// Never called: [`applies`] is false without x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_row_avx2(
    _: &Geometry,
    _: &[[i32; LANES_AVX2]],
    _: &[f32],
    _: &[f32],
    _: usize,
    _: [usize; 4],
    _: &mut [f32],
) {
    unreachable!("the direct convolution needs x86-64 with AVX2")
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
        if Isa::best().is_none() {
            eprintln!("no AVX-512 or AVX2 on this CPU: the direct kernel never runs here");
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
                // Every instruction set sums in the same order: one result.
                let mut runs = vec![forward(&g, &x, &packed, e)];
                for isa in Isa::available() {
                    for threads in [1, 2, 3] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        runs.push(pool.install(|| forward_on(isa, &g, &x, &packed, e)));
                    }
                }
                assert_close(&runs[0], &want, &format!("{g:?}"));
                assert!(
                    runs.iter().all(|r| r == &runs[0]),
                    "{g:?}: differs with the threads or the instruction set"
                );
            }
        }
    }

    #[test]
    fn weight_gradient_matches_im2col() {
        if Isa::best().is_none() {
            eprintln!("no AVX-512 or AVX2 on this CPU: the direct kernel never runs here");
            return;
        }
        // The last two split the images into groups (AVX2 sums 1024
        // positions at a time): 4 + 1 and 8 + 1 images.
        for [n, c, h, w, o] in [
            [2, 3, 4, 4, 8],
            [3, 5, 2, 8, 24],
            [1, 1, 16, 1, 8],
            [4, 16, 15, 16, 16],
            [5, 4, 16, 16, 8],
            [9, 2, 8, 16, 8],
        ] {
            let g = same_size(n, c, h, w, o);
            let x = values(g.n * g.image_len(), 5.0);
            let dy = values(g.n * g.out_image_len(), 6.0);
            let want = cpu::im2col_grad_weight_chunk(&g, &x, &dy);
            assert_close(&grad_weight_chunk(&g, &x, &dy), &want, &format!("{g:?}"));
            for isa in Isa::available() {
                let got = grad_weight_chunk_on(isa, &g, &x, &dy);
                assert_close(&got, &want, &format!("{g:?}, {isa:?}"));
            }
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
        assert_eq!(applies(&base), Isa::best().is_some());
    }
}
