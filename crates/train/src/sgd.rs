//! Stochastic gradient descent with momentum and weight decay.

use std::collections::{HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use resnet_ops::{SgdParam, SgdStep};

use crate::error::{Result, TrainError};

/// Prefix of the optimizer's tensors in a checkpoint: the momentum buffer of
/// parameter `layer1.0.conv1.weight` is stored as
/// `momentum.layer1.0.conv1.weight`. The weights loader of `resnet-eval`
/// owns the name, since it must skip these entries in checkpoints.
use resnet_models::MOMENTUM_PREFIX;

/// The form of the momentum update.
///
/// The two agree while the learning rate is constant; at a change of the
/// rate, PyTorch's form rescales the whole step at once, while in Caffe's the
/// velocity accumulated at the old rate carries over and decays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum UpdateRule {
    /// `v = m*v + g + wd*w; w -= lr*v` (`torch.optim.SGD`).
    #[default]
    Pytorch,
    /// `v = m*v + lr*(g + wd*w); w -= v` (Caffe's `SGDSolver`, the framework
    /// of the paper's authors).
    Caffe,
}

/// Hyper-parameters of [`Sgd`].
///
/// The defaults are the paper's (He et al. 2015, sections 3.4 and 4.2):
/// learning rate 0.1, momentum 0.9, weight decay 0.0001.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate at construction; a [`crate::Scheduler`] normally
    /// overrides it through [`Sgd::set_lr`] before every step.
    pub lr: f64,
    /// Momentum factor (0 disables momentum).
    pub momentum: f64,
    /// L2 weight-decay factor, added to the gradient (0 disables it).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
        }
    }
}

impl SgdConfig {
    /// Checks that every value is finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        check_non_negative("sgd.lr", self.lr)?;
        check_non_negative("sgd.momentum", self.momentum)?;
        check_non_negative("sgd.weight_decay", self.weight_decay)
    }
}

/// A copy of `var`'s values, outside the autograd graph, that the following
/// in-place updates leave as it is.
fn snapshot(var: &Var) -> Result<Tensor> {
    Ok(var.as_tensor().detach().copy()?)
}

fn check_non_negative(what: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(TrainError::InvalidConfig(format!(
            "{what} must be finite and >= 0, got {value}"
        )))
    }
}

/// One learnable parameter and its momentum buffer.
#[derive(Debug)]
struct Param {
    name: String,
    var: Var,
    /// Momentum buffer `v`, same shape/dtype/device as `var`, updated in
    /// place; its storage is its own.
    momentum: Var,
}

/// SGD with momentum and weight decay, with the semantics of PyTorch's
/// `torch.optim.SGD` (dampening 0, no Nesterov).
///
/// For every parameter `w` with gradient `grad`, one [`step`](Sgd::step) does
///
/// ```text
/// g = grad + weight_decay * w
/// v = momentum * v + g
/// w = w - lr * v
/// ```
///
/// PyTorch initialises the buffer `v` to `g` on the first step; this
/// implementation starts `v` at zero, which gives the same value
/// (`momentum * 0 + g = g`) and makes the state complete from the start.
///
/// **Which tensors are decayed.** Weight decay applies to every parameter
/// handed to [`Sgd::new`]; the caller passes all learnable parameters: the
/// convolution and fully-connected weights, the fully-connected bias and the
/// batch-norm scale (gamma) and shift (beta). This is what the paper's Caffe
/// setup, PyTorch's default and torchvision's reference training script do.
/// Batch-norm running means and variances are buffers, not parameters: they
/// never reach the optimizer.
///
/// The update runs outside the autograd graph and writes the new values in
/// place, with `resnet_ops`'s kernels for f32 tensors on the CPU and CUDA:
/// one pass over every parameter, on CUDA one launch ([`SgdStep::apply_all`]).
///
/// **Caffe's form** ([`Sgd::with_update_rule`]): Caffe's velocity `V` is
/// `lr * v` with the buffer `v` above while the rate is constant, so the
/// same kernel computes it when, at a change of the rate from `lr0` to
/// `lr1`, the buffer is first multiplied by `lr0 / lr1`: then
/// `lr1 * v = m * V + lr1 * g` exactly as Caffe's `V = m*V + lr*g`. The
/// buffer saved in checkpoints is `v` in both forms; a resumed Caffe-form
/// run needs the rate of its last step back ([`Sgd::set_last_step_lr`]).
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    params: Vec<Param>,
    rule: UpdateRule,
    last_step_lr: Option<f64>,
}

impl Sgd {
    /// Creates an optimizer over named parameters, with zero momentum buffers.
    ///
    /// Names must be unique: they key the saved state. Fails on a duplicate
    /// name or an invalid configuration.
    pub fn new(params: Vec<(String, Var)>, config: SgdConfig) -> Result<Self> {
        config.validate()?;
        let mut seen = HashSet::new();
        let params = params
            .into_iter()
            .map(|(name, var)| {
                if !seen.insert(name.clone()) {
                    return Err(TrainError::DuplicateParameter(name));
                }
                let momentum = Var::zeros(var.shape(), var.dtype(), var.device())?;
                Ok(Param {
                    name,
                    var,
                    momentum,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            params,
            rule: UpdateRule::Pytorch,
            last_step_lr: None,
        })
    }

    /// The optimizer with the momentum update in `rule`'s form.
    pub fn with_update_rule(mut self, rule: UpdateRule) -> Self {
        self.rule = rule;
        self
    }

    /// The learning rate of the last step taken (None before the first).
    pub fn last_step_lr(&self) -> Option<f64> {
        self.last_step_lr
    }

    /// Restores the rate of the last step taken, with the momentum buffers
    /// of a checkpoint ([`Sgd::load_state`]): the Caffe form rescales the
    /// buffers when the next step's rate differs from it.
    pub fn set_last_step_lr(&mut self, lr: Option<f64>) {
        self.last_step_lr = lr;
    }

    /// Applies one update to every parameter that has a gradient in `grads`.
    ///
    /// A parameter without a gradient is left unchanged and keeps its
    /// momentum buffer as it is (as in PyTorch).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let SgdConfig {
            lr,
            momentum,
            weight_decay,
        } = self.config;
        let step = SgdStep {
            lr,
            momentum,
            weight_decay,
        };
        if let (UpdateRule::Caffe, Some(last)) = (self.rule, self.last_step_lr) {
            if last != lr && lr > 0.0 {
                for param in &self.params {
                    let scaled = param.momentum.as_tensor().affine(last / lr, 0.0)?;
                    param.momentum.set(&scaled)?;
                }
            }
        }
        self.last_step_lr = Some(lr);
        let updates: Vec<SgdParam> = self
            .params
            .iter()
            .filter_map(|param| {
                let grad = grads.get(param.var.as_tensor())?;
                Some(SgdParam {
                    weight: &param.var,
                    velocity: &param.momentum,
                    grad,
                })
            })
            .collect();
        step.apply_all(&updates)?;
        Ok(())
    }

    /// Current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate used by the following steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Current hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Names of the parameters, in the order given to [`Sgd::new`].
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// Copies of the momentum buffers keyed by parameter name (no prefix),
    /// in parameter order.
    pub fn momentum_buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.params
            .iter()
            .map(|p| Ok((p.name.clone(), snapshot(&p.momentum)?)))
            .collect()
    }

    /// The optimizer state as checkpoint tensors: a copy of the momentum
    /// buffer of every parameter under `momentum.<parameter name>`
    /// (see [`MOMENTUM_PREFIX`]); ready for `candle_core::safetensors::save`.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.params
            .iter()
            .map(|p| {
                let name = format!("{MOMENTUM_PREFIX}{}", p.name);
                Ok((name, snapshot(&p.momentum)?))
            })
            .collect()
    }

    /// Restores a state written by [`Sgd::state_tensors`].
    ///
    /// `state` must hold exactly one `momentum.<name>` tensor per parameter,
    /// with the parameter's shape and dtype; the tensors are moved to the
    /// parameter's device. A checkpoint that also holds model weights must be
    /// filtered on [`MOMENTUM_PREFIX`] first. On error nothing is changed.
    pub fn load_state(&mut self, mut state: HashMap<String, Tensor>) -> Result<()> {
        let mut loaded = Vec::with_capacity(self.params.len());
        for param in &self.params {
            let name = format!("{MOMENTUM_PREFIX}{}", param.name);
            let expected = param.var.shape().clone();
            let Some(tensor) = state.remove(&name) else {
                return Err(TrainError::MissingState { name, expected });
            };
            if tensor.shape() != &expected {
                return Err(TrainError::StateShapeMismatch {
                    name,
                    expected,
                    found: tensor.shape().clone(),
                });
            }
            if tensor.dtype() != param.var.dtype() {
                return Err(TrainError::StateDTypeMismatch {
                    name,
                    expected: param.var.dtype(),
                    found: tensor.dtype(),
                });
            }
            // A copy (`detach` makes it no variable, so `from_tensor` copies):
            // the buffer is updated in place.
            let tensor = tensor.to_device(param.var.device())?.detach();
            loaded.push(Var::from_tensor(&tensor)?);
        }
        if let Some(name) = state.keys().min() {
            let found = state[name].shape().clone();
            return Err(TrainError::UnexpectedState {
                name: name.clone(),
                found,
            });
        }
        for (param, momentum) in self.params.iter_mut().zip(loaded) {
            param.momentum = momentum;
        }
        Ok(())
    }
}
