//! Learning-rate schedules of the paper.
//!
//! * CIFAR-10 (section 4.2): start at 0.1, divide by 10 at 32k and 48k
//!   iterations ([`LrSchedule::Step`]; stopping at 64k iterations is the
//!   trainer's business).
//! * ResNet-110 on CIFAR-10: warm up at 0.01 until the training error is below
//!   80% (about 400 iterations), then go back to the schedule above
//!   ([`Warmup`]).
//! * ImageNet (section 3.4): start at 0.1, divide by 10 when the error
//!   plateaus ([`LrSchedule::Plateau`]).
//! * Not the paper's, an option for fine-tuning: a cosine decay over the run
//!   ([`LrSchedule::Cosine`]).
//!
//! A [`ScheduleConfig`] is plain data (serde, JSON/TOML friendly); a
//! [`Scheduler`] holds the run-time state ([`SchedulerState`], also serde) so
//! that a resumed run continues exactly where it stopped.
//!
//! In TOML:
//!
//! ```toml
//! [schedule]
//! type = "step"
//! base_lr = 0.1
//! milestones = [32000, 48000]
//! gamma = 0.1
//!
//! [warmup]
//! lr = 0.01
//! until_train_error_below = 0.8
//! ```

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The underlying learning-rate schedule, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Multiply the rate by `gamma` at each milestone: the rate for iteration
    /// `i` (0-based, the number of updates already done) is `base_lr` times
    /// `gamma` once for every milestone `m <= i`, multiplied in order as
    /// PyTorch's `MultiStepLR` does.
    Step {
        /// Rate before the first milestone.
        base_lr: f64,
        /// Iterations at which the rate is multiplied by `gamma`, strictly
        /// increasing.
        milestones: Vec<u64>,
        /// Multiplicative factor at each milestone.
        gamma: f64,
    },
    /// Half a cosine from `base_lr` down to `min_lr` over `iterations`
    /// updates, as PyTorch's `CosineAnnealingLR` with `T_max = iterations`:
    /// the rate for iteration `i` is `min_lr + (base_lr - min_lr) (1 +
    /// cos(pi i / iterations)) / 2`. Not the paper's; an option for
    /// fine-tuning.
    Cosine {
        /// Rate at iteration 0.
        base_lr: f64,
        /// Updates over which the rate falls (the run's iterations).
        iterations: u64,
        /// Rate at the end.
        min_lr: f64,
    },
    /// Multiply the rate by `factor` when the observed validation error has
    /// not improved for `patience` consecutive observations (see
    /// [`Scheduler::observe_val_error`]).
    ///
    /// An error `e` is an improvement when `e < best - threshold` (absolute
    /// threshold), `best` being the lowest error seen so far. On the
    /// `patience`-th consecutive observation without improvement the rate
    /// becomes `max(lr * factor, min_lr)` and the count restarts from zero
    /// (PyTorch's `ReduceLROnPlateau` with patience `p` reduces on the
    /// `p + 1`-th one instead, so its `p` is this `patience - 1`).
    Plateau {
        /// Starting rate.
        base_lr: f64,
        /// Multiplicative factor on a plateau, in (0, 1).
        factor: f64,
        /// Number of consecutive observations without improvement that make
        /// a plateau, at least 1.
        patience: u64,
        /// Least decrease of the error that counts as an improvement.
        threshold: f64,
        /// The rate is never reduced below this.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// The paper's CIFAR-10 schedule: 0.1, divided by 10 at 32k and 48k
    /// iterations.
    pub fn cifar() -> Self {
        Self::Step {
            base_lr: 0.1,
            milestones: vec![32_000, 48_000],
            gamma: 0.1,
        }
    }

    /// The paper's ImageNet schedule: 0.1, divided by 10 when the validation
    /// error plateaus.
    ///
    /// The paper gives no patience, threshold or floor; the values here
    /// (patience 5 observations, threshold 0.001 i.e. 0.1 percentage points,
    /// floor 0.0001, i.e. at most three reductions) are this crate's choice.
    pub fn imagenet() -> Self {
        Self::Plateau {
            base_lr: 0.1,
            factor: 0.1,
            patience: 5,
            threshold: 1e-3,
            min_lr: 1e-4,
        }
    }

    /// Checks that the values are in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(TrainError::InvalidConfig(msg));
        match self {
            Self::Step {
                base_lr,
                milestones,
                gamma,
            } => {
                check_positive("schedule.base_lr", *base_lr)?;
                check_positive("schedule.gamma", *gamma)?;
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(format!(
                        "schedule.milestones must be strictly increasing, got {milestones:?}"
                    ));
                }
            }
            Self::Cosine {
                base_lr,
                iterations,
                min_lr,
            } => {
                check_positive("schedule.base_lr", *base_lr)?;
                if *iterations == 0 {
                    return bad("schedule.iterations must be at least 1".into());
                }
                if !(*min_lr >= 0.0 && min_lr <= base_lr) {
                    return bad(format!(
                        "schedule.min_lr must be in [0, base_lr], got {min_lr}"
                    ));
                }
            }
            Self::Plateau {
                base_lr,
                factor,
                patience,
                threshold,
                min_lr,
            } => {
                check_positive("schedule.base_lr", *base_lr)?;
                if !(*factor > 0.0 && *factor < 1.0) {
                    return bad(format!("schedule.factor must be in (0, 1), got {factor}"));
                }
                if *patience == 0 {
                    return bad("schedule.patience must be at least 1".into());
                }
                if !(threshold.is_finite() && *threshold >= 0.0) {
                    return bad(format!(
                        "schedule.threshold must be finite and >= 0, got {threshold}"
                    ));
                }
                if !(*min_lr >= 0.0 && min_lr <= base_lr) {
                    return bad(format!(
                        "schedule.min_lr must be in [0, base_lr = {base_lr}], got {min_lr}"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_positive(what: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(TrainError::InvalidConfig(format!(
            "{what} must be finite and > 0, got {value}"
        )))
    }
}

/// A warm-up phase in front of a schedule (the paper's ResNet-110 on
/// CIFAR-10): the rate is `lr` until an observed training error first falls
/// below `until_train_error_below`; from then on the underlying schedule
/// applies for good.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// Rate during the warm-up.
    pub lr: f64,
    /// The warm-up ends at the first observed training error (a fraction in
    /// [0, 1]) strictly below this.
    pub until_train_error_below: f64,
}

impl Default for Warmup {
    /// The paper's values: 0.01 until the training error is below 80%.
    fn default() -> Self {
        Self {
            lr: 0.01,
            until_train_error_below: 0.8,
        }
    }
}

/// A complete learning-rate configuration: a schedule and an optional
/// warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The schedule that applies (after the warm-up, if any).
    pub schedule: LrSchedule,
    /// Optional warm-up in front of the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

impl Default for ScheduleConfig {
    /// The paper's CIFAR-10 schedule, without warm-up.
    fn default() -> Self {
        Self::cifar()
    }
}

impl ScheduleConfig {
    /// The paper's CIFAR-10 schedule without warm-up ([`LrSchedule::cifar`]).
    pub fn cifar() -> Self {
        Self {
            schedule: LrSchedule::cifar(),
            warmup: None,
        }
    }

    /// The paper's ResNet-110 CIFAR-10 schedule: [`Warmup::default`] in front
    /// of [`LrSchedule::cifar`].
    pub fn cifar_resnet110() -> Self {
        Self {
            schedule: LrSchedule::cifar(),
            warmup: Some(Warmup::default()),
        }
    }

    /// The paper's ImageNet schedule ([`LrSchedule::imagenet`]).
    pub fn imagenet() -> Self {
        Self {
            schedule: LrSchedule::imagenet(),
            warmup: None,
        }
    }

    /// Checks that the values are in range.
    pub fn validate(&self) -> Result<()> {
        self.schedule.validate()?;
        if let Some(w) = &self.warmup {
            check_positive("warmup.lr", w.lr)?;
            check_positive("warmup.until_train_error_below", w.until_train_error_below)?;
        }
        Ok(())
    }
}

/// Run-time state of a [`LrSchedule::Plateau`] schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlateauState {
    /// Current rate.
    pub lr: f64,
    /// Lowest validation error observed so far (`None` before the first
    /// observation).
    pub best: Option<f64>,
    /// Consecutive observations without improvement since the last
    /// improvement or reduction.
    pub num_bad: u64,
}

/// Run-time state of a [`Scheduler`]; store it in checkpoints (it is serde
/// serialisable) and give it back with [`Scheduler::load_state`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerState {
    /// Whether the warm-up is over (always `true` without warm-up).
    pub warmup_done: bool,
    /// State of a plateau schedule; `None` for a step schedule.
    pub plateau: Option<PlateauState>,
    /// Top-1 errors of the most recent training batches, oldest first (at
    /// most the scheduler's window): what the warm-up test and an image
    /// folder's plateau without a validation folder average.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub recent_train_errors: VecDeque<f64>,
}

/// A learning-rate schedule with its run-time state.
///
/// The trainer asks [`lr_at`](Scheduler::lr_at) for the rate of every
/// iteration, feeds each batch's training error to
/// [`observe_batch_error`](Scheduler::observe_batch_error), which keeps a
/// window of recent ones and tests their mean against the warm-up's
/// threshold, and feeds validation errors to
/// [`observe_val_error`](Scheduler::observe_val_error) for a plateau
/// schedule.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: ScheduleConfig,
    state: SchedulerState,
    /// Batches in the training-error window.
    window: usize,
}

impl Scheduler {
    /// Creates a scheduler at the start of training; fails on an invalid
    /// configuration.
    pub fn new(config: ScheduleConfig) -> Result<Self> {
        config.validate()?;
        let plateau = match &config.schedule {
            LrSchedule::Step { .. } | LrSchedule::Cosine { .. } => None,
            LrSchedule::Plateau { base_lr, .. } => Some(PlateauState {
                lr: *base_lr,
                best: None,
                num_bad: 0,
            }),
        };
        let state = SchedulerState {
            warmup_done: config.warmup.is_none(),
            plateau,
            recent_train_errors: VecDeque::new(),
        };
        Ok(Self {
            config,
            state,
            window: 1,
        })
    }

    /// The same scheduler with a training-error window of `batches` batches
    /// (1 without this); fails when `batches` is 0.
    pub fn with_train_error_window(mut self, batches: usize) -> Result<Self> {
        if batches == 0 {
            return Err(TrainError::InvalidConfig(
                "the training-error window must be at least 1 batch".into(),
            ));
        }
        self.window = batches;
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Whether the warm-up rate is in force.
    pub fn in_warmup(&self) -> bool {
        !self.state.warmup_done
    }

    /// The rate for iteration `iteration` (0-based: the number of updates
    /// already done), given the state as it is now.
    pub fn lr_at(&self, iteration: u64) -> f64 {
        if let (Some(warmup), false) = (&self.config.warmup, self.state.warmup_done) {
            return warmup.lr;
        }
        match &self.config.schedule {
            LrSchedule::Step {
                base_lr,
                milestones,
                gamma,
            } => milestones
                .iter()
                .filter(|&&m| m <= iteration)
                .fold(*base_lr, |lr, _| lr * gamma),
            LrSchedule::Cosine {
                base_lr,
                iterations,
                min_lr,
            } => {
                let done = iteration.min(*iterations) as f64 / *iterations as f64;
                min_lr + (base_lr - min_lr) * (1.0 + (std::f64::consts::PI * done).cos()) / 2.0
            }
            LrSchedule::Plateau { base_lr, .. } => {
                self.state.plateau.as_ref().map_or(*base_lr, |p| p.lr)
            }
        }
    }

    /// Feeds the top-1 error of one training batch (a fraction in [0, 1]):
    /// it joins the window of the latest batches, and during the warm-up a
    /// full window whose mean is below the threshold ends it. Returns that
    /// mean exactly when this call ended the warm-up.
    pub fn observe_batch_error(&mut self, error: f64) -> Option<f64> {
        let recent = &mut self.state.recent_train_errors;
        recent.push_back(error);
        while recent.len() > self.window {
            recent.pop_front();
        }
        let full = recent.len() == self.window;
        if !self.in_warmup() || !full {
            return None;
        }
        let mean = self.recent_train_error()?;
        self.observe_train_error(mean).then_some(mean)
    }

    /// The mean training error of the window's batches; `None` before the
    /// first.
    pub fn recent_train_error(&self) -> Option<f64> {
        let recent = &self.state.recent_train_errors;
        (!recent.is_empty()).then(|| recent.iter().sum::<f64>() / recent.len() as f64)
    }

    /// Feeds a training error (a fraction in [0, 1]); ends the warm-up for
    /// good the first time it is below the warm-up threshold. Returns `true`
    /// exactly when this call ended the warm-up. Without a warm-up, or after
    /// it, this does nothing.
    pub fn observe_train_error(&mut self, error: f64) -> bool {
        match &self.config.warmup {
            Some(w) if !self.state.warmup_done && error < w.until_train_error_below => {
                self.state.warmup_done = true;
                true
            }
            _ => false,
        }
    }

    /// Feeds a validation error to a plateau schedule; returns `true` when
    /// this call reduced the rate.
    ///
    /// Ignored (returns `false`) by a step schedule and during the warm-up:
    /// the plateau schedule starts counting when the warm-up is over. A NaN
    /// error counts as no improvement.
    pub fn observe_val_error(&mut self, error: f64) -> bool {
        let LrSchedule::Plateau {
            factor,
            patience,
            threshold,
            min_lr,
            ..
        } = self.config.schedule
        else {
            return false;
        };
        if !self.state.warmup_done {
            return false;
        }
        let Some(p) = self.state.plateau.as_mut() else {
            return false;
        };
        let improved = match p.best {
            None => !error.is_nan(),
            Some(best) => error < best - threshold,
        };
        if improved {
            p.best = Some(error);
            p.num_bad = 0;
            return false;
        }
        p.num_bad += 1;
        if p.num_bad < patience {
            return false;
        }
        p.num_bad = 0;
        let reduced = (p.lr * factor).max(min_lr);
        if reduced < p.lr {
            p.lr = reduced;
            true
        } else {
            false
        }
    }

    /// A copy of the run-time state, for a checkpoint.
    pub fn state(&self) -> SchedulerState {
        self.state.clone()
    }

    /// Restores a state saved by [`Scheduler::state`]; fails when it does not
    /// fit the configuration (plateau state present for a step schedule or
    /// missing for a plateau one, warm-up unfinished without a warm-up, a
    /// non-positive plateau rate, or more recent training errors than the
    /// window holds).
    pub fn load_state(&mut self, state: SchedulerState) -> Result<()> {
        let mismatch = |msg: &str| Err(TrainError::SchedulerStateMismatch(msg.into()));
        if self.config.warmup.is_none() && !state.warmup_done {
            return mismatch("warm-up unfinished but no warm-up is configured");
        }
        if state.recent_train_errors.len() > self.window {
            return mismatch("more recent training errors than the window holds");
        }
        match (&self.config.schedule, &state.plateau) {
            (LrSchedule::Step { .. } | LrSchedule::Cosine { .. }, Some(_)) => {
                return mismatch("plateau state given for a step or cosine schedule");
            }
            (LrSchedule::Plateau { .. }, None) => {
                return mismatch("plateau schedule without plateau state");
            }
            (LrSchedule::Plateau { .. }, Some(p)) if !(p.lr.is_finite() && p.lr > 0.0) => {
                return mismatch("plateau learning rate must be finite and > 0");
            }
            _ => {}
        }
        self.state = state;
        Ok(())
    }
}
