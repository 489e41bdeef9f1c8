//! Helpers shared by the kernels' tests.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

/// A tensor of uniform values in [-1, 1) drawn from `seed`.
pub(crate) fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Every value of an f32 tensor, flattened.
pub(crate) fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts the largest difference is within 1e-4 of the largest reference
/// magnitude, or of `floor` where every reference value is smaller.
pub(crate) fn assert_close_above(got: &Tensor, want: &Tensor, what: &str, floor: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let (got, want) = (values(got), values(want));
    let scale = want.iter().fold(floor, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-4 * scale, "{what}: error {err}, scale {scale}");
}
