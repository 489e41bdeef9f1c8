//! Winograd's minimal filtering F(2x2, 3x3) for the 3x3, stride-1, padding-1
//! convolutions that make up most of a ResNet, forward and (through the
//! transposed convolution) input gradient, where it is faster than im2col:
//! 64 channels or more on maps of 14x14 or more ([`applies`]). Measured
//! against im2col in alternated runs: the ResNet-18 training step +5-15%,
//! the ResNet-50 forward pass +10% at batch 16; ResNet-20's convolutions
//! (16 to 64 channels, 8x8 to 32x32 maps) were 3-20% slower, so they keep
//! im2col.
//!
//! Each 2x2 output tile is computed from the 4x4 input tile around it as
//! `Y = A^T [(G g G^T) . (B^T d B)] A`: the elementwise product of the 16
//! transformed values becomes, over channels, 16 matrix products
//! `M[k] = U[k] V[k]` of `[O, C]` by `[C, tiles]`. That is 16 multiplies per
//! 4 outputs and channel pair instead of 36, and the input is expanded 4x
//! instead of im2col's 9x. The transforms only add and halve, so the results
//! differ from im2col's by rounding alone (a few units in the last place of
//! the sums).
//!
//! Images are processed in groups of a size that depends on the geometry
//! only, so results never depend on the thread count: the groups run in
//! parallel, or, when there are fewer groups than threads, one after the
//! other with each group's transforms and products split over the threads.
//!
//! [`forward`] takes the weights already transformed: training transforms
//! them on every call, an [`InferenceConv`](super::InferenceConv) once. An
//! inference convolution's epilogue runs on each output plane as soon as
//! [`transform_output`] has written it.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::cpu::{matmul, MatRef};
use super::epilogue::Epilogue;
use super::Geometry;
use crate::buffer::{assume_init_mut, filled_by};
use crate::scratch::with_scratch;

/// Tiles per group of images: enough columns for efficient products, few
/// enough for the transformed group to stay in cache.
const GROUP_TILES: usize = 1024;

/// Padding, in values, between the 16 rows (one per transform component)
/// that a tile's values are spread over. Rows a multiple of 4 KiB apart
/// fall into the same set of the L1 cache, and 16 of them evict each other.
const ROW_PAD: usize = 16;

/// Fewest input and output channels for which the transforms pay off: with
/// fewer (ResNet-20's 16 to 64), the transforms, which cost per value and
/// channel, take longer than the products save (measured).
const MIN_CHANNELS: usize = 64;

/// Smallest side: on 8x8 maps and smaller (ResNet-20's last stage, the 7x7
/// one of the ImageNet nets) the products are too small to gain (measured).
const MIN_SIDE: usize = 14;

/// Fewest tiles in the batch when the weights are transformed for the call
/// (training): with fewer (one image of 28x28 or less), transforming the
/// weights, 16/9 their size, costs more than the products save.
const MIN_TILES: usize = 256;

/// Whether the convolution is one this module computes, and is faster here
/// than through im2col when its weights are transformed for the call: 3x3,
/// stride 1, padding 1, enough channels and tiles. A function of the
/// geometry only, never of the thread count.
pub(super) fn applies(g: &Geometry) -> bool {
    applies_prepared(g) && g.n * g.h.div_ceil(2) * g.w.div_ceil(2) >= MIN_TILES
}

/// [`applies`] for weights transformed once and kept (an
/// [`InferenceConv`](super::InferenceConv)): any number of tiles. Measured
/// on ResNet-50's folded forward pass at batch 1, where the 14x14 stage then
/// runs Winograd: ~7% faster in alternated runs.
pub(super) fn applies_prepared(g: &Geometry) -> bool {
    g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
        && g.h.min(g.w) >= MIN_SIDE
}

/// The tiles of one image and the images per group.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    /// Tile rows and columns of an image.
    rows: usize,
    cols: usize,
    /// Images per group, and tiles per group (`images * rows * cols`).
    images: usize,
    tiles: usize,
    /// The distance between the rows of a channel's transformed input.
    row: usize,
}

impl Tiling {
    fn new(g: &Geometry) -> Self {
        let (rows, cols) = (g.h.div_ceil(2), g.w.div_ceil(2));
        let images = (GROUP_TILES / (rows * cols)).clamp(1, g.n.max(1));
        Tiling {
            rows,
            cols,
            images,
            tiles: images * rows * cols,
            row: images * rows * cols + ROW_PAD,
        }
    }
}

/// What every group of a forward pass shares: the geometry, its tiling, the
/// transformed weights and the epilogue.
struct Pass<'a> {
    g: &'a Geometry,
    t: Tiling,
    u: &'a [f32],
    epilogue: Option<&'a Epilogue<'a>>,
}

/// The forward pass: `y` (`[N, O, H, W]`) from `x` (`[N, C, H, W]`) and the
/// weights transformed by [`transform_weights`], for any 3x3, stride-1,
/// padding-1 geometry ([`applies`] says when it is the faster way), with
/// `epilogue` applied to each output plane right after it is written.
pub(super) fn forward(g: &Geometry, x: &[f32], u: &[f32], epilogue: Option<&Epilogue>) -> Vec<f32> {
    debug_assert!(g.k == 3 && g.stride == 1 && g.pad == 1);
    let len = g.n * g.out_image_len();
    if len == 0 || x.is_empty() {
        return vec![0f32; len];
    }
    let t = Tiling::new(g);
    let pass = Pass { g, t, u, epilogue };
    let groups = g.n.div_ceil(t.images);
    let buffer_len = 16 * g.c * t.row + 16 * (g.o * t.tiles + ROW_PAD);
    let (out_len, in_len) = (t.images * g.out_image_len(), t.images * g.image_len());
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if groups >= rayon::current_num_threads() {
            let pairs = y.par_chunks_mut(out_len).zip(x.par_chunks(in_len));
            pairs.enumerate().for_each(|(i, (ys, xs))| {
                with_scratch(buffer_len, |buffer| {
                    group(&pass, i * t.images, xs, ys, buffer, false);
                })
            });
        } else {
            with_scratch(buffer_len, |buffer| {
                let pairs = y.chunks_mut(out_len).zip(x.chunks(in_len));
                for (i, (ys, xs)) in pairs.enumerate() {
                    group(&pass, i * t.images, xs, ys, buffer, true);
                }
            })
        }
    };
    // SAFETY: the groups cover the batch (`x` holds `n` images, checked by
    // the op), and `group` writes every value of its output images.
    unsafe { filled_by(len, fill) }
}

/// One group of images, the first of which is image `first` of the batch:
/// their output `ys` from their input `xs`, with `buffer` for the
/// transformed input (`16 * C` rows of `t.row` values) and the 16 products
/// (`O * t.tiles + ROW_PAD` values apart); `parallel` splits the work over
/// the threads.
fn group(
    pass: &Pass,
    first: usize,
    xs: &[f32],
    ys: &mut [MaybeUninit<f32>],
    buffer: &mut [f32],
    parallel: bool,
) {
    let Pass { g, t, u, epilogue } = *pass;
    let t = &t;
    let images = xs.len() / g.image_len();
    // A smaller last group keeps the full group's strides and leaves its
    // missing images' columns out of the products.
    let tiles = images * t.rows * t.cols;
    let m_plane = g.o * t.tiles + ROW_PAD;
    let (v, rest) = buffer.split_at_mut(16 * g.c * t.row);
    let m = &mut rest[..16 * m_plane];
    // The transformed input, channel-major: component `k` of tile `p` of
    // channel `c` at `v[(c * 16 + k) * row + p]`.
    let per_channel = |(c, v_c): (usize, &mut [f32])| {
        for i in 0..images {
            let plane = &xs[(i * g.c + c) * g.h * g.w..][..g.h * g.w];
            transform_input(g, t, plane, &mut v_c[i * t.rows * t.cols..]);
        }
    };
    if parallel {
        v.par_chunks_mut(16 * t.row)
            .enumerate()
            .for_each(per_channel);
    } else {
        v.chunks_mut(16 * t.row).enumerate().for_each(per_channel);
    }
    // Product `k`, `[O, tiles]` row-major, at `m[k * m_plane..]`.
    let v = &*v;
    let product = |(k, m_k): (usize, &mut [f32])| {
        let u_k = MatRef::row_major(&u[k * g.o * g.c..], g.o, g.c);
        let v_k = MatRef::row_major_strided(&v[k * t.row..], g.c, tiles, 16 * t.row);
        matmul(&mut m_k[..g.o * tiles], u_k, v_k, false);
    };
    if parallel {
        m.par_chunks_mut(m_plane).enumerate().for_each(product);
    } else {
        m.chunks_mut(m_plane).enumerate().for_each(product);
    }
    let m = &*m;
    let per_output = |(plane_index, y_plane): (usize, &mut [MaybeUninit<f32>])| {
        let (i, o) = (plane_index / g.o, plane_index % g.o);
        let first_tile = i * t.rows * t.cols;
        transform_output(g, t, m, o * tiles + first_tile, y_plane);
        if let Some(epilogue) = epilogue {
            // SAFETY: `transform_output` wrote every value of the plane.
            let y_plane = unsafe { assume_init_mut(y_plane) };
            epilogue.apply_plane(first * g.o + plane_index, y_plane);
        }
    };
    let planes = &mut ys[..images * g.out_image_len()];
    if parallel {
        planes
            .par_chunks_mut(g.ho * g.wo)
            .enumerate()
            .for_each(per_output);
    } else {
        planes
            .chunks_mut(g.ho * g.wo)
            .enumerate()
            .for_each(per_output);
    }
}

/// `U = G g G^T` for every filter, stored `[16][O][C]`: what [`forward`]
/// takes as weights.
pub(super) fn transform_weights(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let mut u = vec![0f32; 16 * g.o * g.c];
    for (oc, f) in w.chunks_exact(9).enumerate() {
        // G g: 4x3, then (G g) G^T: 4x4.
        let mut gg = [[0f32; 3]; 4];
        for col in 0..3 {
            let (a, b, c) = (f[col], f[3 + col], f[6 + col]);
            gg[0][col] = a;
            gg[1][col] = (a + b + c) * 0.5;
            gg[2][col] = (a - b + c) * 0.5;
            gg[3][col] = c;
        }
        for (row, r) in gg.iter().enumerate() {
            let (a, b, c) = (r[0], r[1], r[2]);
            let out = [a, (a + b + c) * 0.5, (a - b + c) * 0.5, c];
            for (col, v) in out.into_iter().enumerate() {
                u[(row * 4 + col) * g.o * g.c + oc] = v;
            }
        }
    }
    u
}

/// `V = B^T d B` for every tile of one input plane, written to `v` as
/// `v[k * row + p]` for tile `p` of the plane. One row of tiles at a time:
/// `B^T d` combines four input rows (zero-padded at both ends) value by
/// value, then `(B^T d) B` combines each result's columns at stride 2.
fn transform_input(g: &Geometry, t: &Tiling, plane: &[f32], v: &mut [f32]) {
    // Input columns -1 ..= 2 * cols, the first and those past W zero.
    let width = 2 * t.cols + 2;
    let mut rows = vec![0f32; 4 * width];
    let mut bt = vec![0f32; 4 * width];
    for ty in 0..t.rows {
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            let y = (2 * ty + r) as isize - 1;
            row.fill(0.0);
            if y >= 0 && (y as usize) < g.h {
                let start = y as usize * g.w;
                row[1..1 + g.w].copy_from_slice(&plane[start..start + g.w]);
            }
        }
        let (d0, rest) = rows.split_at(width);
        let (d1, rest) = rest.split_at(width);
        let (d2, d3) = rest.split_at(width);
        let (b0, rest) = bt.split_at_mut(width);
        let (b1, rest) = rest.split_at_mut(width);
        let (b2, b3) = rest.split_at_mut(width);
        for i in 0..width {
            b0[i] = d0[i] - d2[i];
            b1[i] = d1[i] + d2[i];
            b2[i] = d2[i] - d1[i];
            b3[i] = d1[i] - d3[i];
        }
        let first = ty * t.cols;
        for (r, b) in bt.chunks_exact(width).enumerate() {
            let out = |c: usize| (r * 4 + c) * t.row + first;
            let (v0, v1, v2, v3) = four_rows(v, [out(0), out(1), out(2), out(3)], t.cols);
            for tx in 0..t.cols {
                let (a, bb, c, d) = (b[2 * tx], b[2 * tx + 1], b[2 * tx + 2], b[2 * tx + 3]);
                v0[tx] = a - c;
                v1[tx] = bb + c;
                v2[tx] = c - bb;
                v3[tx] = bb - d;
            }
        }
    }
}

/// Four disjoint, increasing `len`-value windows of `v` at `starts`.
fn four_rows(
    v: &mut [f32],
    starts: [usize; 4],
    len: usize,
) -> (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) {
    let (_, rest) = v.split_at_mut(starts[0]);
    let (a, rest) = rest.split_at_mut(starts[1] - starts[0]);
    let (b, rest) = rest.split_at_mut(starts[2] - starts[1]);
    let (c, d) = rest.split_at_mut(starts[3] - starts[2]);
    (&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len])
}

/// `Y = A^T M A` for every tile of one output plane `y`, whose first tile
/// is at `first` in each product of `m` (products `O * tiles + ROW_PAD`
/// values apart). One row of tiles at a time, value by value along it.
fn transform_output(g: &Geometry, t: &Tiling, m: &[f32], first: usize, y: &mut [MaybeUninit<f32>]) {
    let stride = g.o * t.tiles + ROW_PAD;
    let cols = t.cols;
    // A^T M: two rows of four values per tile, `am[(r * 4 + c) * cols + tx]`.
    let mut am = vec![0f32; 8 * cols];
    for ty in 0..t.rows {
        let at = first + ty * cols;
        let mk = |k: usize| &m[k * stride + at..][..cols];
        for c in 0..4 {
            let (m0, m1, m2, m3) = (mk(c), mk(4 + c), mk(8 + c), mk(12 + c));
            let (top, bottom) = am.split_at_mut(4 * cols);
            let (a0, a1) = (
                &mut top[c * cols..][..cols],
                &mut bottom[c * cols..][..cols],
            );
            for tx in 0..cols {
                a0[tx] = m0[tx] + m1[tx] + m2[tx];
                a1[tx] = m1[tx] - m2[tx] - m3[tx];
            }
        }
        for r in 0..2 {
            let oy = 2 * ty + r;
            if oy >= g.ho {
                continue;
            }
            let a = &am[r * 4 * cols..][..4 * cols];
            let (a0, a1, a2, a3) = (
                &a[..cols],
                &a[cols..2 * cols],
                &a[2 * cols..3 * cols],
                &a[3 * cols..],
            );
            let out = &mut y[oy * g.wo..][..g.wo];
            for tx in 0..cols {
                out[2 * tx].write(a0[tx] + a1[tx] + a2[tx]);
                if 2 * tx + 1 < g.wo {
                    out[2 * tx + 1].write(a1[tx] - a2[tx] - a3[tx]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::test_util::{assert_close_above, random, values};

    #[test]
    fn matches_im2col_on_odd_sizes_and_uneven_groups() {
        // [n, c, h, w, o]: one tile, odd sides, a batch whose last group is
        // smaller (5 images of 256 tiles, 4 per group), many channels.
        for (i, [n, c, h, w, o]) in [
            [1, 1, 1, 1, 1],
            [2, 3, 5, 7, 4],
            [5, 4, 32, 32, 3],
            [3, 70, 6, 6, 33],
            [1, 16, 3, 2, 8],
        ]
        .into_iter()
        .enumerate()
        {
            let g = Geometry::new(&[n, c, h, w], &[o, c, 3, 3], 1, 1).unwrap();
            let x = random(&[n, c, h, w], 2 * i as u64);
            let wt = random(&[o, c, 3, 3], 2 * i as u64 + 1);
            let (xv, wv) = (values(&x), values(&wt));
            let dims = [n, o, h, w];
            let y = forward(&g, &xv, &transform_weights(&g, &wv), None);
            let ours = Tensor::from_vec(y, &dims, &Device::Cpu).unwrap();
            let im2col = super::super::cpu::im2col_forward(&g, &xv, &wv, None);
            let reference = Tensor::from_vec(im2col, &dims, &Device::Cpu).unwrap();
            assert_close_above(&ours, &reference, &format!("{:?}", [n, c, h, w, o]), 1e-6);
        }
    }
}
