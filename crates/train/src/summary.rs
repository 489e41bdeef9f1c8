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
    /// image folder run's validation folder; `None` (and no `test` in
    /// `summary.json`) for an image folder run without a validation folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<EvalReport>,
    /// The names of the classes, in output order, where known (image folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Seconds of training, across resumes.
    pub wall_time: f64,
    /// The most GPU memory the run's tensors held at once, in bytes
    /// ([`resnet_ops::peak_device_memory`]), since the process that finished
    /// the run started; `None` (and nothing in `summary.json`) on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_gpu_memory: Option<u64>,
}
