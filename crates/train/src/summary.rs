//! What a finished run reports: `summary.json`.

use resnet_eval::EvalReport;
use serde::{Deserialize, Serialize};

/// What a finished run reports (`summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Architecture id.
    pub arch: String,
    /// Learnable parameters of the model.
    pub params: usize,
    /// SGD steps done.
    pub iterations: u64,
    /// Training images (after the validation split).
    pub train_images: usize,
    /// Mean training loss over the last logging window.
    pub final_train_loss: f64,
    /// Training top-1 error over the last logging window.
    pub final_train_error: f64,
    /// Final validation evaluation, if the run holds a validation split out
    /// of CIFAR-10's training images.
    pub val: Option<EvalReport>,
    /// Final test evaluation: CIFAR-10's test split, or the centre crops of an
    /// image folder run's validation folder.
    ///
    /// An image folder run without a validation folder has nothing to test
    /// on: then this holds no images and NaN errors, and `summary.json` has
    /// no `test`; [`RunSummary::test_report`] tells the two cases apart.
    #[serde(default = "untested", skip_serializing_if = "is_untested")]
    pub test: EvalReport,
    /// Seconds of training, across resumes.
    pub wall_time: f64,
}

impl RunSummary {
    /// The final test evaluation, or `None` if the run had nothing to test on.
    pub fn test_report(&self) -> Option<&EvalReport> {
        (!is_untested(&self.test)).then_some(&self.test)
    }
}

/// The `test` of a run with nothing to test on.
pub(crate) fn untested() -> EvalReport {
    EvalReport {
        top1_error: f64::NAN,
        top5_error: f64::NAN,
        loss: f64::NAN,
        images: 0,
    }
}

fn is_untested(report: &EvalReport) -> bool {
    report.images == 0
}
