//! Axis arithmetic: fitted ranges, clipping to the visible range, where the
//! legend goes, and tick labels.

use std::ops::Range;

use plotters::chart::SeriesLabelPosition;

/// The range of `values`, padded by `pad` of its span; on a log axis widened
/// to whole decades instead. A made-up range when there are no values.
pub(super) fn fit(values: impl Iterator<Item = f64>, log: bool, pad: f64) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return if log { 1.0..10.0 } else { 0.0..1.0 };
    }
    if log {
        let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
        return 10f64.powi(lo as i32)..10f64.powi(hi.max(lo + 1.0) as i32);
    }
    let pad = if lo < hi {
        (hi - lo) * pad
    } else {
        lo.abs().max(1.0) * 0.1
    };
    lo - pad..hi + pad
}

/// Splits the polyline `points` into the runs that lie within `y` (comparing
/// `log10(y)` on a log axis), cutting segments where they cross its bounds.
pub(super) fn clip(points: &[(f64, f64)], y: &Range<f64>, log: bool) -> Vec<Vec<(f64, f64)>> {
    let t = |v: f64| if log { v.log10() } else { v };
    let (lo, hi) = (t(y.start), t(y.end));
    let mut runs = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (ta, tb) = (t(a.1), t(b.1));
        // The part `s0..=s1` of the segment (as fractions of it) inside `lo..=hi`.
        let (s0, s1) = if ta == tb {
            if (lo..=hi).contains(&ta) {
                (0.0, 1.0)
            } else {
                (1.0, 0.0)
            }
        } else {
            let (sa, sb) = ((lo - ta) / (tb - ta), (hi - ta) / (tb - ta));
            (sa.min(sb).max(0.0), sa.max(sb).min(1.0))
        };
        let at = |s: f64| {
            if s == 0.0 {
                a
            } else if s == 1.0 {
                b
            } else {
                let y = ta + s * (tb - ta);
                (a.0 + s * (b.0 - a.0), if log { 10f64.powf(y) } else { y })
            }
        };
        let visible = s0 <= s1;
        if !(visible && s0 == 0.0 && run.last() == Some(&a)) {
            if run.len() > 1 {
                runs.push(std::mem::take(&mut run));
            }
            run.clear();
        }
        if visible {
            if run.is_empty() {
                run.push(at(s0));
            }
            run.push(at(s1));
        }
    }
    if run.len() > 1 {
        runs.push(run);
    }
    runs
}

/// The legend corner that covers the fewest of `points`, given the axes'
/// ranges and the number of legend entries.
pub(super) fn legend_corner(
    points: impl Iterator<Item = (f64, f64)>,
    x: &Range<f64>,
    y: &Range<f64>,
    log: bool,
    entries: usize,
) -> SeriesLabelPosition {
    let t = |v: f64| if log { v.log10() } else { v };
    let (ylo, yhi) = (t(y.start), t(y.end));
    // The legend's share of the plot: about 0.4 wide, 0.06 tall per entry.
    let (w, h) = (0.4, (0.05 + 0.06 * entries as f64).min(0.95));
    let mut counts = [0usize; 4];
    for (px, py) in points {
        let u = (px - x.start) / (x.end - x.start);
        let v = (t(py) - ylo) / (yhi - ylo);
        let (right, left, top, bottom) = (u >= 1.0 - w, u <= w, v >= 1.0 - h, v <= h);
        counts[0] += usize::from(right && top);
        counts[1] += usize::from(left && top);
        counts[2] += usize::from(right && bottom);
        counts[3] += usize::from(left && bottom);
    }
    match (0..4).min_by_key(|&i| counts[i]) {
        Some(1) => SeriesLabelPosition::UpperLeft,
        Some(2) => SeriesLabelPosition::LowerRight,
        Some(3) => SeriesLabelPosition::LowerLeft,
        _ => SeriesLabelPosition::UpperRight,
    }
}

/// Formats an axis tick compactly: `20k` for 20000, `0.05`, `1e-5`.
pub(super) fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}k", v / 1000.0)
    } else if a != 0.0 && !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.3e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{exponent}", trim_zeros(mantissa))
    } else {
        trim_zeros(&format!("{v:.3}")).to_string()
    }
}

/// Drops trailing zeros after a decimal point, and a bare point.
fn trim_zeros(s: &str) -> &str {
    match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.'),
        false => s,
    }
}
