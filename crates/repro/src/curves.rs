//! Error curves and end-of-run numbers from a run's metric records.

use resnet_train::MetricRecord;

use crate::plot::{LineStyle, Series};
use crate::runs::FinishedRun;

/// `plain56` as the paper writes it: `plain-56`; `resnet110` as `ResNet-110`.
pub fn display_name(arch: &str) -> String {
    if let Some(depth) = arch.strip_prefix("resnet") {
        format!("ResNet-{depth}")
    } else if let Some(depth) = arch.strip_prefix("plain") {
        format!("plain-{depth}")
    } else {
        arch.to_string()
    }
}

/// Training error (%) at the end of a run: the mean over the records of the
/// last tenth of the iterations, which smooths single-batch noise.
pub fn final_train_error(metrics: &[MetricRecord]) -> f64 {
    let Some(last) = metrics.last() else {
        return f64::NAN;
    };
    let from = last.iteration - last.iteration / 10;
    let tail: Vec<f64> = metrics
        .iter()
        .filter(|r| r.iteration >= from)
        .map(|r| r.train_error)
        .collect();
    100.0 * tail.iter().sum::<f64>() / tail.len() as f64
}

/// Test error (%) at the end of a run (NaN if it had nothing to test on).
pub fn final_test_error(run: &FinishedRun) -> f64 {
    run.summary
        .test
        .as_ref()
        .map_or(f64::NAN, |t| 100.0 * t.top1_error)
}

/// The training-error curve (%), dashed, as in the paper.
pub fn train_series(run: &FinishedRun, color: usize) -> Series {
    let points = run
        .metrics
        .iter()
        .map(|r| (r.iteration as f64, 100.0 * r.train_error))
        .collect();
    Series {
        label: format!("{} train", display_name(&run.config.arch)),
        points,
        style: LineStyle::Dashed,
        color,
    }
}

/// The test-error curve (%), bold, as in the paper.
pub fn test_series(run: &FinishedRun, color: usize) -> Series {
    let points = run
        .metrics
        .iter()
        .filter_map(|r| r.test_error.map(|e| (r.iteration as f64, 100.0 * e)))
        .collect();
    Series {
        label: format!("{} test", display_name(&run.config.arch)),
        points,
        style: LineStyle::Bold,
        color,
    }
}

/// The curves of a run as JSON: iterations with training and test errors (fractions).
pub fn curves_json(run: &FinishedRun) -> serde_json::Value {
    let m = &run.metrics;
    serde_json::json!({
        "iteration": m.iter().map(|r| r.iteration).collect::<Vec<_>>(),
        "train_error": m.iter().map(|r| r.train_error).collect::<Vec<_>>(),
        "test_error": m.iter().map(|r| r.test_error).collect::<Vec<_>>(),
    })
}
