//! CPU kernels of batch norm, parallel over channels (or planes) with rayon.
//!
//! Every per-channel sum is accumulated in f64 over [`LANES`] fixed
//! accumulators: element `i` of each `H*W` plane goes to lane `i % LANES`,
//! planes are visited in batch order and the lanes are added in lane order at
//! the end. The order depends on the shapes only, so results are
//! bit-identical whatever the number of threads; the lanes let the compiler
//! vectorise the sums, and f64 keeps their rounding error far below f32's.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::Dims;
use crate::buffer::filled_by;

/// Independent f64 accumulators per sum.
const LANES: usize = 8;

/// The element-wise passes of eval mode handle at least this many values per
/// rayon task, so that small planes do not drown in scheduling.
const MIN_VALUES_PER_TASK: usize = 1 << 14;

/// The batch statistics of every channel, in f64.
#[derive(Debug)]
pub(super) struct Moments {
    /// Per-channel mean.
    pub(super) mean: Vec<f64>,
    /// Per-channel biased (divide by `N*H*W`) variance.
    pub(super) var: Vec<f64>,
}

/// The `N` planes of channel `ch` of an NCHW tensor, in batch order.
fn planes(data: &[f32], d: Dims, ch: usize) -> impl Iterator<Item = &[f32]> {
    data.chunks_exact(d.plane).skip(ch).step_by(d.c)
}

/// The planes of an NCHW tensor grouped by channel: entry `ch` holds the
/// `N` planes of channel `ch`, in batch order.
fn planes_by_channel<T>(data: &mut [T], d: Dims) -> Vec<Vec<&mut [T]>> {
    let mut channels: Vec<Vec<&mut [T]>> = (0..d.c).map(|_| Vec::with_capacity(d.n)).collect();
    for (i, plane) in data.chunks_exact_mut(d.plane).enumerate() {
        channels[i % d.c].push(plane);
    }
    channels
}

/// `K` sums of `f(a_i, b_i)` over the paired planes `a` and `b`.
#[inline(always)]
fn sums<'a, const K: usize>(
    a: impl Iterator<Item = &'a [f32]>,
    b: impl Iterator<Item = &'a [f32]>,
    f: impl Fn(f32, f32) -> [f64; K],
) -> [f64; K] {
    let mut lanes = [[0f64; LANES]; K];
    let mut add = |lane: usize, u: f32, v: f32| {
        let terms = f(u, v);
        for (acc, term) in lanes.iter_mut().zip(terms) {
            acc[lane] += term;
        }
    };
    for (pa, pb) in a.zip(b) {
        let (ca, cb) = (pa.chunks_exact(LANES), pb.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (ua, ub) in ca.zip(cb) {
            for lane in 0..LANES {
                add(lane, ua[lane], ub[lane]);
            }
        }
        for (lane, (&u, &v)) in ra.iter().zip(rb).enumerate() {
            add(lane, u, v);
        }
    }
    lanes.map(|acc| acc.iter().sum())
}

/// One channel's normalisation in f32, `(v - mean) * scale + shift`: the
/// forward pass applies it, and the backward pass of a fused ReLU recomputes
/// it, bit for bit, to know where the ReLU let the gradient through.
struct Normaliser {
    mean: f32,
    scale: f32,
    shift: f32,
}

impl Normaliser {
    fn new(weight: f32, bias: f32, mean: f64, var: f64, eps: f64) -> Self {
        Self {
            mean: mean as f32,
            scale: (f64::from(weight) / (var + eps).sqrt()) as f32,
            shift: bias,
        }
    }

    #[inline(always)]
    fn apply(&self, v: f32) -> f32 {
        (v - self.mean) * self.scale + self.shift
    }
}

/// What the training forward kernel applies to the normalised value `y`
/// before it writes it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Then<'a> {
    /// `y` as it is.
    Nothing,
    /// `max(y, 0)`.
    Relu,
    /// `max(y + r, 0)`, `r` the value at the same place of this tensor (the
    /// residual block's shortcut), `[N, C, H, W]` like the input.
    AddRelu(&'a [f32]),
}

impl<'a> Then<'a> {
    /// What to apply to the values in `range` of the input.
    fn part(self, range: std::ops::Range<usize>) -> Then<'a> {
        match self {
            Then::AddRelu(residual) => Then::AddRelu(&residual[range]),
            other => other,
        }
    }
}

/// [`train_forward`] on each of `d`'s groups of images as a batch of its
/// own: `y` and the statistics of each group, in batch order.
pub(super) fn train_forward_groups(
    d: Dims,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f64,
    then: Then,
) -> (Vec<f32>, Vec<Moments>) {
    if d.group_count() == 1 {
        let (y, moments) = train_forward(d, x, weight, bias, eps, then);
        return (y, vec![moments]);
    }
    let mut y = Vec::with_capacity(x.len());
    let mut all = Vec::with_capacity(d.group_count());
    for (range, part) in d.groups() {
        let then = then.part(range.clone());
        let (yg, moments) = train_forward(part, &x[range], weight, bias, eps, then);
        y.extend(yg);
        all.push(moments);
    }
    (y, all)
}

/// [`train_backward`] on each of `d`'s groups with its statistics
/// (`moments`, one per group): `[dx, dweight, dbias]`, the parameters'
/// gradients summed over the groups in batch order.
pub(super) fn train_backward_groups(
    d: Dims,
    x: &[f32],
    dy: &[f32],
    weight: &[f32],
    moments: &[Moments],
    eps: f64,
    relu_bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(
        moments.len(),
        d.group_count(),
        "batch norm: statistics per group"
    );
    if d.group_count() == 1 {
        return train_backward(d, x, dy, weight, &moments[0], eps, relu_bias);
    }
    let mut dx = Vec::with_capacity(x.len() + 2 * d.c);
    let mut dparams = vec![0f32; 2 * d.c];
    for ((range, part), moments) in d.groups().zip(moments) {
        let (xg, dyg) = (&x[range.clone()], &dy[range]);
        let packed = train_backward(part, xg, dyg, weight, moments, eps, relu_bias);
        let (dxg, dpg) = packed.split_at(xg.len());
        dx.extend_from_slice(dxg);
        for (sum, v) in dparams.iter_mut().zip(dpg) {
            *sum += v;
        }
    }
    dx.extend(dparams);
    dx
}

/// The training forward pass: `y` (`[N, C, H, W]`) normalised with the batch
/// statistics of `x`, scaled by `weight` and shifted by `bias` (both `[C]`),
/// then `then` applied; and those statistics.
pub(super) fn train_forward(
    d: Dims,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f64,
    then: Then,
) -> (Vec<f32>, Moments) {
    assert_eq!(
        x.len(),
        d.n * d.c * d.plane,
        "batch norm: input of the wrong length"
    );
    if let Then::AddRelu(residual) = then {
        assert_eq!(
            residual.len(),
            x.len(),
            "batch norm: residual of the wrong length"
        );
    }
    let count = d.per_channel() as f64;
    let mut moments = Vec::new();
    let fill = |y: &mut [MaybeUninit<f32>]| {
        moments = planes_by_channel(y, d)
            .into_par_iter()
            .enumerate()
            .map(|(ch, ys)| {
                let [sum] = sums(planes(x, d, ch), planes(x, d, ch), |u, _| [f64::from(u)]);
                let mean = sum / count;
                let [squares] = sums(planes(x, d, ch), planes(x, d, ch), |u, _| {
                    let centred = f64::from(u) - mean;
                    [centred * centred]
                });
                let var = squares / count;
                let n = Normaliser::new(weight[ch], bias[ch], mean, var, eps);
                for (i, (yp, xp)) in ys.into_iter().zip(planes(x, d, ch)).enumerate() {
                    match then {
                        Then::Nothing => {
                            for (o, &v) in yp.iter_mut().zip(xp) {
                                o.write(n.apply(v));
                            }
                        }
                        Then::Relu => {
                            for (o, &v) in yp.iter_mut().zip(xp) {
                                o.write(n.apply(v).max(0.0));
                            }
                        }
                        Then::AddRelu(residual) => {
                            let rp = &residual[(i * d.c + ch) * d.plane..][..d.plane];
                            for ((o, &v), &r) in yp.iter_mut().zip(xp).zip(rp) {
                                o.write((n.apply(v) + r).max(0.0));
                            }
                        }
                    }
                }
                (mean, var)
            })
            .collect();
    };
    // SAFETY: `x` has `y`'s length, so every plane of `y` is zipped with a
    // plane of `x` of the same length and written in full.
    let y = unsafe { filled_by(x.len(), fill) };
    let (mean, var) = moments.into_iter().unzip();
    (y, Moments { mean, var })
}

/// The training backward pass from `x`, the output gradient `dy`, `weight`
/// and the forward pass's `moments`: `dx` (`N*C*H*W` values), then
/// `dweight = sum(dy * xhat)` and `dbias = sum(dy)` (`C` values each), where
/// `dx = weight / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))`.
///
/// With `relu_bias` (the forward's `bias`), the forward applied a ReLU: `dy`
/// is the gradient of its output, and is zeroed wherever the recomputed
/// normalised value was not positive before the formulas above.
pub(super) fn train_backward(
    d: Dims,
    x: &[f32],
    dy: &[f32],
    weight: &[f32],
    moments: &Moments,
    eps: f64,
    relu_bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(
        (x.len(), dy.len()),
        (d.n * d.c * d.plane, d.n * d.c * d.plane),
        "batch norm backward: inputs of the wrong length"
    );
    let count = d.per_channel() as f64;
    let fill = |out: &mut [MaybeUninit<f32>]| {
        let (dx, params) = out.split_at_mut(x.len());
        let grads: Vec<(f32, f32)> = planes_by_channel(dx, d)
            .into_par_iter()
            .enumerate()
            .map(|(ch, dxs)| {
                let mean = moments.mean[ch];
                let inv_std = 1.0 / (moments.var[ch] + eps).sqrt();
                let gate = relu_bias
                    .map(|bias| Normaliser::new(weight[ch], bias[ch], mean, moments.var[ch], eps));
                let pass = |g: f32, u: f32| match &gate {
                    Some(n) => {
                        if n.apply(u) > 0.0 {
                            g
                        } else {
                            0.0
                        }
                    }
                    None => g,
                };
                let [sum_dy, sum_dy_centred] = sums(planes(dy, d, ch), planes(x, d, ch), |g, u| {
                    let g = f64::from(pass(g, u));
                    [g, g * (f64::from(u) - mean)]
                });
                let k = f64::from(weight[ch]) * inv_std;
                let mean_dy = (sum_dy / count) as f32;
                let slope = (k * sum_dy_centred * inv_std * inv_std / count) as f32;
                let (k, m) = (k as f32, mean as f32);
                for ((o, gp), xp) in dxs.into_iter().zip(planes(dy, d, ch)).zip(planes(x, d, ch)) {
                    for ((o, &g), &u) in o.iter_mut().zip(gp).zip(xp) {
                        o.write(k * (pass(g, u) - mean_dy) - slope * (u - m));
                    }
                }
                ((sum_dy_centred * inv_std) as f32, sum_dy as f32)
            })
            .collect();
        let (dweight, dbias) = params.split_at_mut(d.c);
        for ((w, b), (gw, gb)) in dweight.iter_mut().zip(dbias).zip(grads) {
            w.write(gw);
            b.write(gb);
        }
    };
    // SAFETY: `x` and `dy` have `dx`'s length, so every plane of `dx` is
    // zipped with planes of the same length and written in full; the `C`
    // channels each write one value of `dweight` and of `dbias`.
    unsafe { filled_by(x.len() + 2 * d.c, fill) }
}

/// The per-channel affine map `y = x * scale + shift` (`scale`, `shift` `[C]`),
/// then `max(y, 0)` if `relu`, parallel over planes.
pub(super) fn affine(d: Dims, x: &[f32], scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    if x.is_empty() {
        return Vec::new();
    }
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(d.plane)
            .zip(x.par_chunks(d.plane))
            .enumerate()
            .with_min_len(MIN_VALUES_PER_TASK.div_ceil(d.plane))
            .for_each(|(i, (yp, xp))| {
                let (s, b) = (scale[i % d.c], shift[i % d.c]);
                for (o, &v) in yp.iter_mut().zip(xp) {
                    let y = v * s + b;
                    o.write(if relu { y.max(0.0) } else { y });
                }
            })
    };
    // SAFETY: `y` has `x`'s length and is cut into the same planes, each
    // written in full from its twin.
    unsafe { filled_by(x.len(), fill) }
}

/// The parameter gradients of [`affine`]: `[sum(dy * x), sum(dy)]` per
/// channel, `2*C` values, parallel over channels.
pub(super) fn affine_param_grads(d: Dims, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; 2 * d.c];
    if d.plane == 0 {
        return out;
    }
    let grads: Vec<[f64; 2]> = (0..d.c)
        .into_par_iter()
        .map(|ch| {
            sums(planes(dy, d, ch), planes(x, d, ch), |g, u| {
                let g = f64::from(g);
                [g * f64::from(u), g]
            })
        })
        .collect();
    let (dscale, dshift) = out.split_at_mut(d.c);
    for ((s, b), [gs, gb]) in dscale.iter_mut().zip(dshift).zip(grads) {
        (*s, *b) = (gs as f32, gb as f32);
    }
    out
}
