//! The folded net where there is no fused kernel (CUDA, other dtypes, the
//! project's kernels switched off) runs candle's convolution, a bias add
//! and the ReLU or residual join as separate ops, with the same logits.
//! (Its own test binary: the kernel switch is process-wide.)

use candle_core::{Device, Tensor};
use resnet_models::{ArchSpec, ResNet};

#[test]
fn the_folded_net_without_fused_kernels_gives_the_eval_logits() {
    for (id, side) in [("resnet20", 32), ("resnet18", 32)] {
        let model = ResNet::new(&ArchSpec::from_id(id).unwrap(), 1, &Device::Cpu).unwrap();
        // Running statistics off their defaults, so there is something to fold.
        let x = Tensor::randn(0f32, 1.0, (4, 3, side, side), &Device::Cpu).unwrap();
        model.forward_t(&x, true).unwrap();
        let want = model.forward_t(&x, false).unwrap();
        resnet_ops::set_fast_kernels(false);
        let got = model.fold_for_inference().unwrap().forward(&x);
        resnet_ops::set_fast_kernels(true);
        let err = resnet_test_support::max_abs_diff(&got.unwrap(), &want);
        assert!(err <= 1e-4, "{id}: error {err}");
    }
}
