//! Helpers shared by the kernels' tests.

use candle_core::Tensor;
pub(crate) use resnet_test_support::random_tensor as random;

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
