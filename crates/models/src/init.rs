//! Seeded weight initialisation, so the same seed gives the same model on
//! every machine (candle's own CPU random generator cannot be seeded).

use candle_core::{Device, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::ModelError;

/// Draws the initial value of every tensor of a model from one seeded stream.
pub(crate) struct Initializer {
    rng: ChaCha8Rng,
    device: Device,
}

impl Initializer {
    pub(crate) fn new(seed: u64, device: &Device) -> Initializer {
        Initializer {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device: device.clone(),
        }
    }

    fn var(&self, values: Vec<f32>, shape: &[usize]) -> Result<Var, ModelError> {
        Ok(Var::from_vec(values, shape, &self.device)?)
    }

    /// He initialisation, fan-out mode: N(0, 2 / (k * k * out_channels)),
    /// for a conv weight of shape `(out, in, k, k)`. Fan-out (torchvision's
    /// and timm's choice) keeps the gradient magnitude constant through the
    /// backward pass; He et al. show either mode lets deep ReLU nets train,
    /// and matching torchvision makes from-scratch runs comparable with it.
    pub(crate) fn he_normal_fan_out(&mut self, shape: &[usize]) -> Result<Var, ModelError> {
        let fan_out = shape[0] * shape[2] * shape[3];
        let normal = Normal::new(0.0, (2.0 / fan_out as f64).sqrt()).expect("positive std");
        let values = (0..shape.iter().product())
            .map(|_| normal.sample(&mut self.rng) as f32)
            .collect();
        self.var(values, shape)
    }

    /// U(-bound, bound): PyTorch's default for `nn.Linear` with bound = 1/sqrt(fan_in).
    pub(crate) fn uniform(&mut self, shape: &[usize], bound: f64) -> Result<Var, ModelError> {
        let values = (0..shape.iter().product())
            .map(|_| self.rng.random_range(-bound..bound) as f32)
            .collect();
        self.var(values, shape)
    }

    /// Every element equal to `value` (BN: weight 1, bias 0, running var 1).
    pub(crate) fn constant(&self, shape: &[usize], value: f32) -> Result<Var, ModelError> {
        self.var(vec![value; shape.iter().product()], shape)
    }
}
