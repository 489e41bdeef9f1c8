//! The metrics log: one JSON object per line, appended as training goes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::Evaluation;
use crate::run_dir::io_error;
use crate::{Result, TrainError};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    /// SGD steps done.
    pub iteration: u64,
    /// Epochs done (fractional: images seen / training images).
    pub epoch: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss over the steps since the previous record.
    pub train_loss: f64,
    /// Top-1 training error (augmented batches, train-mode BN) over the same steps.
    pub train_error: f64,
    /// Validation top-1 error, when evaluated at this iteration and a validation split exists.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_error: Option<f64>,
    /// Test top-1 error, when evaluated at this iteration.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_error: Option<f64>,
    /// Test top-5 error, when evaluated at this iteration.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_top5_error: Option<f64>,
    /// Training throughput since the previous record (evaluation time excluded).
    pub images_per_sec: f64,
    /// Seconds of training so far, across resumes.
    pub wall_time: f64,
}

/// Sums over the steps since the last metric record: what the next record
/// averages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricWindow {
    /// Sum of the steps' training losses.
    pub loss: f64,
    /// Training images classified wrongly (top-1).
    pub wrong: usize,
    /// Training images seen.
    pub images: usize,
    /// Steps taken.
    pub steps: usize,
    /// Seconds the steps took.
    pub seconds: f64,
}

impl MetricWindow {
    /// Adds one step: its mean loss, misclassified and seen images, and
    /// the seconds it took.
    pub fn add_step(&mut self, loss: f64, wrong: usize, images: usize, seconds: f64) {
        self.loss += loss;
        self.wrong += wrong;
        self.images += images;
        self.steps += 1;
        self.seconds += seconds;
    }

    /// The record after `iteration` steps (`epoch` epochs) at rate `lr`, with
    /// the evaluation made then, if any, and `wall_time` seconds of training:
    /// the window's mean loss and error, and its images per second.
    pub(crate) fn record(
        &self,
        iteration: u64,
        epoch: f64,
        lr: f64,
        eval: &Evaluation,
        wall_time: f64,
    ) -> MetricRecord {
        MetricRecord {
            iteration,
            epoch,
            lr,
            train_loss: self.loss / self.steps as f64,
            train_error: self.wrong as f64 / self.images as f64,
            val_error: eval.val.as_ref().map(|r| r.top1_error),
            test_error: eval.test.as_ref().map(|r| r.top1_error),
            test_top5_error: eval.test.as_ref().map(|r| r.top5_error),
            images_per_sec: self.images as f64 / self.seconds.max(1e-9),
            wall_time,
        }
    }
}

/// Appends records to a run's `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the log at `path`, keeping only records up to `iteration`: lines
    /// written after the checkpoint a run resumes from are dropped, so the log
    /// reads as if the run had never been interrupted.
    /// A last line cut short by a kill is dropped too.
    pub fn open_at(path: &Path, iteration: u64) -> Result<MetricsLog> {
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(io_error(path))?;
            let complete = match text.rfind('\n') {
                Some(end) => &text[..=end],
                None => "",
            };
            let records = parse_metrics(path, complete)?;
            let mut kept = String::new();
            for r in records.iter().filter(|r| r.iteration <= iteration) {
                kept.push_str(&serde_json::to_string(r).expect("records serialise"));
                kept.push('\n');
            }
            resnet_models::write_atomic(path, kept.as_bytes())?;
        }
        Ok(MetricsLog {
            path: path.to_path_buf(),
        })
    }

    /// Appends one record and flushes it.
    pub fn append(&mut self, record: &MetricRecord) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_error(&self.path))?;
        let line = serde_json::to_string(record).expect("records serialise");
        writeln!(file, "{line}").map_err(io_error(&self.path))
    }
}

/// Reads every record of a `metrics.jsonl`; a bad line is an error naming the file and line.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRecord>> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    parse_metrics(path, &text)
}

fn parse_metrics(path: &Path, text: &str) -> Result<Vec<MetricRecord>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::Json {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}
