//! CPU kernels of the convolution: im2col / col2im and single-threaded gemm
//! calls, run in parallel over chunks of the batch (a forward pass over fewer
//! images than threads splits each image's im2col and gemm instead). The
//! im2col matrices live in per-thread scratch buffers.
//!
//! Per image, with `col` the `[C*K*K, Ho*Wo]` im2col matrix of the input:
//! `y = W col`, `dW += dy col^T`, and `dx` either as a convolution of `dy`
//! (stride 1) or as `W^T dy` then col2im. A 1x1, stride-1, unpadded
//! convolution uses the input itself as `col`. An inference convolution's
//! epilogue (`epilogue.rs`) runs on each image's output right after its gemm.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use super::epilogue::Epilogue;
use super::{direct, winograd, Geometry};
use crate::buffer::{assume_init_mut, filled_by};
use crate::scratch::with_scratch;

/// The weight gradient is accumulated over at most this many chunks of the
/// batch, whatever the number of threads, then the chunks are summed in order:
/// the result depends on the shapes only, never on scheduling.
const MAX_GRAD_WEIGHT_CHUNKS: usize = 16;

/// At most this many f32 values of per-chunk weight-gradient accumulators.
const GRAD_WEIGHT_ACCUMULATOR_BUDGET: usize = 1 << 24;

/// Convolutions with at most this many output channels accumulate their
/// weight gradient column-major.
///
/// gemm transposes a problem so that its destination is column-major. With
/// `dW = dy col^T` row-major, the im2col matrix becomes gemm's left operand,
/// which it repacks for every image: a cost in `C*K*K * Ho*Wo` whatever `O`,
/// that dominates when `O` is small. Accumulating `dW` column-major makes the
/// im2col matrix the right operand, read in place, at the price of narrower
/// micro-kernels (`O` rows). Measured with 2 threads: the ResNet-20 training
/// step (16 to 64 channels) ~15% faster; the ResNet-18 one (64 and more)
/// ~14% slower when applied to all of its convolutions.
const COLUMN_MAJOR_GRAD_WEIGHT_MAX_CHANNELS: usize = 32;

impl Geometry {
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Values in one input image.
    pub(super) fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Values in one output image.
    pub(super) fn out_image_len(&self) -> usize {
        self.o * self.ho * self.wo
    }

    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }

    fn col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.ckk() * self.ho * self.wo
        }
    }

    /// Output positions `lo..hi` along one axis (input length `len_in`, output
    /// length `len_out`) whose input index `pos * stride + tap - pad` is inside
    /// the input.
    fn valid_range(&self, tap: usize, len_in: usize, len_out: usize) -> (usize, usize) {
        let s = self.stride;
        let hi = (len_in + self.pad)
            .saturating_sub(tap)
            .div_ceil(s)
            .min(len_out);
        let lo = self.pad.saturating_sub(tap).div_ceil(s).min(hi);
        (lo, hi)
    }
}

/// A read-only strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(super) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` matrix stored row after row.
    pub(super) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::row_major_strided(data, rows, cols, cols)
    }

    /// A `rows x cols` matrix whose rows start `row_stride` values apart.
    pub(super) fn row_major_strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: row_stride,
            cs: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows `first..first + rows` of the matrix.
    fn rows_from(self, first: usize, rows: usize) -> Self {
        Self {
            data: &self.data[(first * self.rs).min(self.data.len())..],
            rows,
            ..self
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a b` (or `dst += a b` when `accumulate`), `dst` row-major `m x n`,
/// on the calling thread.
pub(super) fn matmul(dst: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    // SAFETY: `dst` is an initialised, uniquely borrowed slice.
    unsafe { gemm_into(dst.as_mut_ptr(), dst.len(), a, b, accumulate, false, 1) }
}

/// `dst = a b` (or `dst += a b` when `accumulate`), `dst` column-major
/// `m x n`, on the calling thread.
fn matmul_col_major(dst: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    // SAFETY: `dst` is an initialised, uniquely borrowed slice.
    unsafe { gemm_into(dst.as_mut_ptr(), dst.len(), a, b, accumulate, true, 1) }
}

/// `dst = a b`, writing every value of `dst` (row-major `m x n`) without
/// reading it, on up to `threads` threads of the rayon pool, then
/// `finish(first_row, rows)` on each block of rows it wrote, by the thread
/// that wrote it, while they are in its cache.
///
/// The rows of `a` go in blocks of [`row_block`] rows, a gemm per block, the
/// blocks side by side on the pool when `threads > 1`: gemm's own split of the
/// output falls along its columns, which leaves a thread idle on the narrow
/// outputs of a small image's late stages (49 or 196 columns at batch 1).
/// The blocks depend on the shape alone, never on `threads`: gemm picks its
/// inner-dimension blocking from the size of the product (a 64 x 64 output
/// sums 576 terms in one pass, a larger one in two of 288), so the same
/// blocks on every path are what keeps an image's output the same alone, in
/// a batch and on any number of threads.
fn matmul_uninit(
    dst: &mut [MaybeUninit<f32>],
    a: MatRef,
    b: MatRef,
    threads: usize,
    finish: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let block = row_block(a.rows);
    let blocks = a.rows.div_ceil(block.max(1));
    // SAFETY: `part` is a uniquely borrowed block of whole rows of
    // `dst`, and gemm does not read it when not accumulating (it scales the
    // old values by an alpha of zero only when asked to read them); once it
    // has written every value, `finish` may read them.
    let one = |first: usize, part: &mut [MaybeUninit<f32>], threads: usize| unsafe {
        let rows = a.rows_from(first, part.len() / b.cols.max(1));
        gemm_into(
            part.as_mut_ptr().cast(),
            part.len(),
            rows,
            b,
            false,
            false,
            threads,
        );
        finish(first, assume_init_mut(part));
    };
    let chunk = (block * b.cols).max(1);
    if threads > 1 && blocks > 1 {
        let per_block = threads.div_ceil(blocks);
        dst.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, part)| one(i * block, part, per_block));
    } else {
        for (i, part) in dst.chunks_mut(chunk).enumerate() {
            one(i * block, part, threads);
        }
    }
}

/// Rows of `a` in each block of [`matmul_uninit`]: up to [`MAX_ROW_BLOCKS`]
/// blocks of at least [`MIN_BLOCK_ROWS`], a multiple of 16 rows (the gemm
/// micro-kernel's vectors), from the row count alone.
fn row_block(rows: usize) -> usize {
    let blocks = (rows / MIN_BLOCK_ROWS).clamp(1, MAX_ROW_BLOCKS);
    rows.div_ceil(blocks).next_multiple_of(16)
}

/// The fewest rows [`row_block`] puts in a block: fewer would cost a gemm
/// call and a packing of `b` each for little work.
const MIN_BLOCK_ROWS: usize = 64;

/// The most blocks [`row_block`] makes: enough to keep 2 or 4 threads busy at
/// batch 1; more threads split each block's gemm along its columns.
const MAX_ROW_BLOCKS: usize = 4;

/// gemm of `a b` into the `len` values at `dst`, added to them when
/// `accumulate`, on up to `threads` threads (gemm splits the output, never
/// the inner dimension, so the result does not depend on it).
///
/// # Safety
///
/// `dst` must be valid for writes of `len` values, not aliased by `a` or
/// `b`, and initialised when `accumulate`.
unsafe fn gemm_into(
    dst: *mut f32,
    len: usize,
    a: MatRef,
    b: MatRef,
    accumulate: bool,
    col_major: bool,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && len == m * n && a.in_bounds() && b.in_bounds(),
        "conv2d matmul: operands out of bounds"
    );
    let (dst_cs, dst_rs) = if col_major {
        (m as isize, 1)
    } else {
        (1, n as isize)
    };
    // SAFETY: the assert above keeps every element gemm reads or writes,
    // `(i, j)` for `i < rows` and `j < cols` of each matrix, inside its slice
    // or `dst`'s `len` values; the caller guarantees `dst`'s validity.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            },
        )
    }
}

/// Fills `col` (`[C*K*K, Ho*Wo]`) with the receptive fields of one image `x`
/// (`[C, H, W]`), zeros where they reach into the padding.
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32]) {
    if g.stride == 1 && g.ho == g.h && g.wo == g.w {
        im2col_same(g, x, col)
    } else {
        im2col_rows(g, x, col)
    }
}

/// [`im2col`] with the channels split over the rayon pool (same result).
fn im2col_by_channel(g: &Geometry, x: &[f32], col: &mut [f32]) {
    let one = Geometry { c: 1, ..*g };
    col.par_chunks_mut(one.col_len())
        .zip(x.par_chunks(g.h * g.w))
        .for_each(|(rows, plane)| im2col(&one, plane, rows));
}

/// [`im2col`] for a stride-1 convolution whose output has the input's size
/// (`2 * pad == K - 1`, every 3x3 convolution of a ResNet but the strided
/// ones). Row `(c, ky, kx)` of `col` is then plane `c` shifted by
/// `(ky - pad) * W + (kx - pad)` positions, flat: one contiguous copy per
/// row, after which the positions whose tap falls in the padding (whole
/// output rows at the top or bottom, a few columns at the sides) are zeroed.
fn im2col_same(g: &Geometry, x: &[f32], col: &mut [f32]) {
    let (k, w, len) = (g.k, g.w, g.h * g.w);
    let mut rows = col.chunks_exact_mut(len);
    for plane in x.chunks_exact(len) {
        for ky in 0..k {
            let (ylo, yhi) = g.valid_range(ky, g.h, g.ho);
            for kx in 0..k {
                let (xlo, xhi) = g.valid_range(kx, w, g.wo);
                let Some(out) = rows.next() else { return };
                // out[i] = plane[i + shift] wherever both indices are inside.
                let shift = (ky * w + kx) as isize - (g.pad * w + g.pad) as isize;
                let lo = (ylo * w).max(shift.unsigned_abs() * usize::from(shift < 0));
                let hi = (yhi * w).min(len.saturating_sub(shift.max(0) as usize));
                if lo < hi {
                    let src = lo.checked_add_signed(shift).expect("lo >= -shift");
                    out[lo..hi].copy_from_slice(&plane[src..src + hi - lo]);
                }
                out[..ylo * w].fill(0.0);
                out[yhi * w..].fill(0.0);
                for row in out[ylo * w..yhi * w].chunks_exact_mut(w) {
                    zero_few(&mut row[..xlo]);
                    zero_few(&mut row[xhi..]);
                }
            }
        }
    }
}

/// Zeroes `s`, which is usually empty or one value (the padding columns of a
/// row): without a memset call for each.
#[inline(always)]
fn zero_few(s: &mut [f32]) {
    match s {
        [] => {}
        [v] => *v = 0.0,
        _ => s.fill(0.0),
    }
}

/// [`im2col`] for any geometry, one output row at a time.
fn im2col_rows(g: &Geometry, x: &[f32], col: &mut [f32]) {
    let (k, s, wo) = (g.k, g.stride, g.wo);
    let mut rows = col.chunks_exact_mut(g.ho * wo);
    for plane in x.chunks_exact(g.h * g.w) {
        for ky in 0..k {
            let (ylo, yhi) = g.valid_range(ky, g.h, g.ho);
            for kx in 0..k {
                let (xlo, xhi) = g.valid_range(kx, g.w, wo);
                let Some(row) = rows.next() else { return };
                for (oy, out) in row.chunks_exact_mut(wo).enumerate() {
                    if oy < ylo || oy >= yhi || xlo == xhi {
                        out.fill(0.0);
                        continue;
                    }
                    let line = &plane[(oy * s + ky - g.pad) * g.w..][..g.w];
                    let src = &line[xlo * s + kx - g.pad..];
                    out[..xlo].fill(0.0);
                    if s == 1 {
                        out[xlo..xhi].copy_from_slice(&src[..xhi - xlo]);
                    } else {
                        for (o, v) in out[xlo..xhi].iter_mut().zip(src.iter().step_by(s)) {
                            *o = *v;
                        }
                    }
                    out[xhi..].fill(0.0);
                }
            }
        }
    }
}

/// Adds each entry of `col` (`[C*K*K, Ho*Wo]`) to the input position of
/// `dx` (`[C, H, W]`) it was gathered from: the adjoint of [`im2col`].
fn col2im(g: &Geometry, col: &[f32], dx: &mut [f32]) {
    let (k, s, wo) = (g.k, g.stride, g.wo);
    let mut rows = col.chunks_exact(g.ho * wo);
    for plane in dx.chunks_exact_mut(g.h * g.w) {
        for ky in 0..k {
            let (ylo, yhi) = g.valid_range(ky, g.h, g.ho);
            for kx in 0..k {
                let (xlo, xhi) = g.valid_range(kx, g.w, wo);
                let Some(row) = rows.next() else { return };
                if xlo == xhi {
                    continue;
                }
                for oy in ylo..yhi {
                    let line = &mut plane[(oy * s + ky - g.pad) * g.w..][..g.w];
                    let dst = &mut line[xlo * s + kx - g.pad..];
                    let src = &row[oy * wo + xlo..oy * wo + xhi];
                    if s == 1 {
                        for (d, v) in dst.iter_mut().zip(src) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in dst.iter_mut().step_by(s).zip(src) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    }
}

/// Images per chunk when `n` images are split evenly over the thread pool
/// (results never depend on it: each image is computed on its own).
fn images_per_thread(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads()).max(1)
}

/// The forward pass: `y` (`[N, O, Ho, Wo]`) from `x` (`[N, C, H, W]`) and `w`
/// (`[O, C, K, K]`).
///
/// 3x3, stride-1, padding-1 convolutions with enough channels and tiles run
/// Winograd's F(2x2, 3x3) (`winograd.rs`), narrower ones a direct kernel
/// where the CPU has AVX-512 or AVX2 (`direct.rs`), the others im2col + gemm.
pub(super) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    if winograd::applies(g) {
        winograd::forward(g, x, &winograd::transform_weights(g, w), None)
    } else if direct::applies(g) {
        direct::forward(g, x, &direct::pack_weights(g, w), None)
    } else {
        im2col_forward(g, x, w, None)
    }
}

/// The forward pass through im2col + gemm, for any geometry, with
/// `epilogue` applied to each image's output planes right after its gemm.
pub(super) fn im2col_forward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    epilogue: Option<&Epilogue>,
) -> Vec<f32> {
    let len = g.n * g.out_image_len();
    assert_eq!(
        x.len(),
        g.n * g.image_len(),
        "conv2d: input of the wrong length"
    );
    if len == 0 || x.is_empty() {
        return vec![0f32; len];
    }
    let per = images_per_thread(g.n);
    let p = g.ho * g.wo;
    let weight = MatRef::row_major(w, g.o, g.ckk());
    // Fewer images than threads (inference on one image): the threads the
    // batch leaves idle split each image's gemm instead.
    let threads = rayon::current_num_threads();
    let gemm_threads = if g.n < threads { threads } else { 1 };
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(per * g.out_image_len())
            .zip(x.par_chunks(per * g.image_len()))
            .enumerate()
            .for_each(|(chunk, (ys, xs))| {
                with_scratch(g.col_len(), |buffer| {
                    let images = ys
                        .chunks_exact_mut(g.out_image_len())
                        .zip(xs.chunks_exact(g.image_len()));
                    for (i, (yn, xn)) in images.enumerate() {
                        let col = if g.pointwise() {
                            xn
                        } else if gemm_threads > 1 {
                            im2col_by_channel(g, xn, buffer);
                            &buffer[..]
                        } else {
                            im2col(g, xn, buffer);
                            &buffer[..]
                        };
                        let col = MatRef::row_major(col, g.ckk(), p);
                        let first = (chunk * per + i) * g.o;
                        matmul_uninit(yn, weight, col, gemm_threads, &|row, planes| {
                            if let Some(epilogue) = epilogue {
                                epilogue.apply(first + row, planes, p);
                            }
                        });
                    }
                })
            })
    };
    // SAFETY: `x` holds `n` images (checked by the op), so the chunks pair
    // each of the `n` output images with its input, and the gemm writes all
    // of an output image.
    unsafe { filled_by(len, fill) }
}

/// The input gradient: `dx` (`[N, C, H, W]`) from `dy` (`[N, O, Ho, Wo]`) and
/// `w` (`[O, C, K, K]`).
///
/// With stride 1 and `pad < K` this is the forward convolution of `dy` with
/// the flipped, transposed kernel and padding `K - 1 - pad`, whose gemm runs
/// over `O*K*K` rather than `O`; otherwise it is `W^T dy` then col2im.
pub(super) fn grad_input(g: &Geometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    if g.stride == 1 && g.pad < g.k {
        let transposed = Geometry {
            c: g.o,
            h: g.ho,
            w: g.wo,
            o: g.c,
            pad: g.k - 1 - g.pad,
            ho: g.h,
            wo: g.w,
            ..*g
        };
        return forward(&transposed, dy, &flip_transpose(g, w));
    }
    let mut dx = vec![0f32; g.n * g.image_len()];
    if dx.is_empty() || dy.is_empty() {
        return dx;
    }
    let per = images_per_thread(g.n);
    let weight_t = MatRef::row_major(w, g.o, g.ckk()).t();
    dx.par_chunks_mut(per * g.image_len())
        .zip(dy.par_chunks(per * g.out_image_len()))
        .for_each(|(dxs, dys)| {
            with_scratch(g.col_len(), |col| {
                for (dxn, dyn_) in dxs
                    .chunks_exact_mut(g.image_len())
                    .zip(dys.chunks_exact(g.out_image_len()))
                {
                    let dyn_ = MatRef::row_major(dyn_, g.o, g.ho * g.wo);
                    matmul(col, weight_t, dyn_, false);
                    col2im(g, col, dxn);
                }
            })
        });
    dx
}

/// The kernel of the transposed convolution: `[C, O, K, K]` with
/// `out[c][o][ky][kx] = w[o][c][K-1-ky][K-1-kx]`.
fn flip_transpose(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let kk = g.k * g.k;
    let mut out = vec![0f32; w.len()];
    for (o, filters) in w.chunks_exact(g.c * kk).enumerate() {
        for (c, taps) in filters.chunks_exact(kk).enumerate() {
            let dst = &mut out[(c * g.o + o) * kk..][..kk];
            for (d, v) in dst.iter_mut().zip(taps.iter().rev()) {
                *d = *v;
            }
        }
    }
    out
}

/// `m` (`rows x cols`, row-major) transposed, row-major.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for (i, row) in m.chunks_exact(cols).enumerate() {
        for (j, v) in row.iter().enumerate() {
            t[j * rows + i] = *v;
        }
    }
    t
}

/// The weight gradient: `dw` (`[O, C, K, K]`) from `x` (`[N, C, H, W]`) and
/// `dy` (`[N, O, Ho, Wo]`), summed over the batch in a fixed order: over
/// chunks of images whose number depends on the shapes alone, then the
/// chunks' sums in order. Each chunk runs the direct 3x3 kernel where it
/// applies (`direct.rs`), else im2col + gemm.
pub(super) fn grad_weight(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let len = g.o * g.ckk();
    if len == 0 || x.is_empty() || dy.is_empty() {
        return vec![0f32; len];
    }
    let chunks =
        g.n.min(MAX_GRAD_WEIGHT_CHUNKS)
            .min((GRAD_WEIGHT_ACCUMULATOR_BUDGET / len).max(1));
    let per = g.n.div_ceil(chunks);
    let direct = direct::applies(g);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(per * g.image_len())
        .zip(dy.par_chunks(per * g.out_image_len()))
        .map(|(xs, dys)| {
            if direct {
                direct::grad_weight_chunk(g, xs, dys)
            } else {
                im2col_grad_weight_chunk(g, xs, dys)
            }
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for part in parts {
        for (d, v) in dw.iter_mut().zip(&part) {
            *d += *v;
        }
    }
    dw
}

/// The weight gradient summed over the images of `xs` and `dys`, through
/// im2col + gemm.
pub(super) fn im2col_grad_weight_chunk(g: &Geometry, xs: &[f32], dys: &[f32]) -> Vec<f32> {
    let len = g.o * g.ckk();
    let p = g.ho * g.wo;
    let column_major = g.o <= COLUMN_MAJOR_GRAD_WEIGHT_MAX_CHANNELS;
    with_scratch(g.col_len(), |buffer| {
        let mut acc = vec![0f32; len];
        let images = xs
            .chunks_exact(g.image_len())
            .zip(dys.chunks_exact(g.out_image_len()));
        for (i, (xn, dyn_)) in images.enumerate() {
            let col = if g.pointwise() {
                xn
            } else {
                im2col(g, xn, buffer);
                &buffer[..]
            };
            let col_t = MatRef::row_major(col, g.ckk(), p).t();
            let dyn_ = MatRef::row_major(dyn_, g.o, p);
            if column_major {
                matmul_col_major(&mut acc, dyn_, col_t, i > 0);
            } else {
                matmul(&mut acc, dyn_, col_t, i > 0);
            }
        }
        if column_major {
            transpose(&acc, g.ckk(), g.o)
        } else {
            acc
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_im2col_matches_the_row_by_row_one() {
        // [c, h, w, k] with pad (k - 1) / 2: square and not, kernels wider
        // than the input, single rows and columns.
        for [c, h, w, k] in [
            [2, 5, 7, 3],
            [2, 32, 32, 3],
            [3, 4, 4, 5],
            [1, 2, 3, 5],
            [1, 1, 1, 3],
            [2, 6, 1, 3],
            [1, 1, 6, 7],
        ] {
            let pad = (k - 1) / 2;
            let g = Geometry::new(&[1, c, h, w], &[1, c, k, k], 1, pad).unwrap();
            assert_eq!((g.ho, g.wo), (h, w));
            let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
            let (mut fast, mut rows) = (vec![f32::NAN; g.col_len()], vec![f32::NAN; g.col_len()]);
            im2col_same(&g, &x, &mut fast);
            im2col_rows(&g, &x, &mut rows);
            assert_eq!(fast, rows, "c {c} h {h} w {w} k {k}");
        }
    }
}
