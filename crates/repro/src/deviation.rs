//! Ways a run differs from the paper's recipe, each under a stable id so a
//! reader (or a script) can find the same difference in every report.

use resnet_models::Precision;
use resnet_train::UpdateRule;
use serde::Serialize;

use crate::curves::display_name;
use crate::runs::FinishedRun;

/// One way a result departs from the paper.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deviation {
    /// Stable identifier: `train-images`, `test-images`, `iterations`, `lr`,
    /// `runs`, `init`, `update-rule`, `precision`, `bn-batch` (see [`crate::parallelism`]),
    /// `warmup-end`, `nets`,
    /// `plateau`, `normalization`.
    pub id: &'static str,
    /// The difference in words, with the paper's value beside ours.
    pub text: String,
}

impl Deviation {
    /// A deviation with id `id`.
    pub fn new(id: &'static str, text: impl Into<String>) -> Deviation {
        Deviation {
            id,
            text: text.into(),
        }
    }
}

/// Conv weights: our He init mode against the paper's; the same for every
/// profile and dataset.
pub fn init() -> Deviation {
    Deviation::new(
        "init",
        "conv weights are drawn from He et al.'s normal in fan-out mode, std sqrt(2 / (k*k*out_channels)) \
         (torchvision's and fb.resnet.torch's choice), while the paper cites He et al.'s forward case, \
         std sqrt(2 / (k*k*in_channels)); the two differ where a conv changes the channel count (the stem's \
         std is sqrt(2/144) instead of sqrt(2/27) on CIFAR-10); we keep fan-out so that from-scratch runs are \
         comparable with torchvision's, and He et al. show both modes train deep ReLU nets. The fc layer \
         keeps PyTorch's default, weight and bias uniform in +/- 1/sqrt(fan_in); the paper does not say.",
    )
}

/// The momentum update in PyTorch's form, not Caffe's; `None` for Caffe's.
pub fn update_rule(rule: UpdateRule) -> Option<Deviation> {
    (rule == UpdateRule::Pytorch).then(|| Deviation::new(
        "update-rule",
        "SGD uses PyTorch's form of the momentum update, v = m*v + g + wd*w; w -= lr*v, not Caffe's \
         (the framework of the authors' released models), v = m*v + lr*(g + wd*w); w -= v. They agree while the lr is constant but \
         differ at every lr change: ours rescales the whole step at once (after ResNet-110's warm-up it jumps \
         10x from one iteration to the next), Caffe's lets the velocity built at the old lr decay over ~10 \
         iterations (--update-rule caffe in `resnet train`; the paper profile uses it).",
    ))
}

/// Convolutions and the fc layer in bf16 (mixed precision); `None` for fp32,
/// the paper's.
pub fn precision(precision: Precision) -> Option<Deviation> {
    (precision == Precision::Bf16).then(|| {
        Deviation::new(
            "precision",
            "convolutions and the fc layer multiply bf16 operands with f32 sums (--precision bf16, \
             mixed precision as PyTorch's bf16 autocast runs it; parameters, batch norm, the loss and the \
             update stay f32), while the paper trained and tested in fp32",
        )
    })
}

/// When a run's warm-up (ResNet-110/1202: lr 0.01 until the training error
/// is below 80%) ended, read from the learning rate of its metric records:
/// the paper's ended after about 400 iterations. `None` for a run without
/// warm-up.
pub fn warmup_end(run: &FinishedRun) -> Option<Deviation> {
    let warmup = run.config.schedule.warmup?;
    let name = display_name(&run.config.arch);
    let seed = run.config.seed;
    let first_after = run
        .metrics
        .iter()
        .position(|r| (r.lr - warmup.lr).abs() > 1e-12 * warmup.lr);
    let text = match first_after {
        Some(k) => {
            let from = if k == 0 { 0 } else { run.metrics[k - 1].iteration };
            let to = run.metrics[k].iteration - 1;
            let when = if from == to {
                format!("after iteration {to}")
            } else {
                format!("between iterations {from} and {to}")
            };
            format!(
                "{name} (seed {seed}) warmed up at lr {} until its training error was below {:.0}%: the \
                 warm-up ended {when} of {} (the paper's ended after about 400 of 64,000); every later \
                 iteration ran at the profile's schedule",
                warmup.lr,
                100.0 * warmup.until_train_error_below,
                run.config.iterations
            )
        }
        None => format!(
            "{name} (seed {seed}) warmed up at lr {} until its training error was below {:.0}%, which it never \
             reached: all {} iterations ran at lr {} (the paper's warm-up ended after about 400 of 64,000)",
            warmup.lr,
            100.0 * warmup.until_train_error_below,
            run.config.iterations,
            warmup.lr
        ),
    };
    Some(Deviation::new("warmup-end", text))
}

/// The Markdown list of `deviations` (or a sentence saying there are none).
pub fn markdown(deviations: &[Deviation]) -> String {
    if deviations.is_empty() {
        return "\nNo deviation from the paper's recipe.\n".to_string();
    }
    let mut md = String::from("\nDeviations from the paper:\n");
    for d in deviations {
        md.push_str(&format!("- `{}`: {}\n", d.id, d.text));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_lists_every_id() {
        let md = markdown(&[init(), update_rule(UpdateRule::Pytorch).unwrap()]);
        assert_eq!(update_rule(UpdateRule::Caffe), None);
        assert!(
            md.contains("- `init`: ") && md.contains("- `update-rule`: "),
            "{md}"
        );
        assert!(markdown(&[]).contains("No deviation"));
    }
}
