//! The workspace's candle-core stores a tensor's first gradient as is instead
//! of adding it to a tensor of zeros (see `third_party/README.md`). These
//! tests check that gradients still sum correctly where a tensor feeds several
//! consumers, including this crate's custom ops, and that a first gradient
//! that is a strided view is stored in a form later rules can add into.

use candle_core::{Device, IndexOp, Tensor, Var};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn gradients_of_a_tensor_with_several_consumers_add_up() {
    let x = Var::from_vec(vec![-2f32, -0.5, 0.5, 3.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    // loss = sum(relu(x)) + sum(3 x) + sum(relu(x + x)): three consumers of x,
    // one of them the residual join, which sends one gradient to each input.
    let a = resnet_ops::relu(x.as_tensor()).unwrap().sum_all().unwrap();
    let b = (x.as_tensor() * 3.0).unwrap().sum_all().unwrap();
    let c = resnet_ops::add_relu(x.as_tensor(), x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap();
    let loss = ((a + b).unwrap() + c).unwrap();
    let grads = loss.backward().unwrap();
    let g = values(grads.get(x.as_tensor()).expect("x has a gradient"));
    // d/dx: relu' + 3 + 2 relu'(2x)
    assert_eq!(g, vec![3.0, 3.0, 6.0, 6.0]);
}

#[test]
fn a_strided_first_gradient_can_be_added_into_by_a_gather() {
    let x = Var::from_vec((0..6).map(|v| v as f32).collect(), (2, 3), &Device::Cpu).unwrap();
    let xt = x.as_tensor().t().unwrap().contiguous().unwrap();
    // `sum_all` sends `xt` a broadcast (stride-0) gradient through `t()`, the
    // gather then scatter-adds into the gradient of `xt`.
    let picked = xt
        .gather(&Tensor::new(&[[1u32], [0], [1]], &Device::Cpu).unwrap(), 1)
        .unwrap();
    let loss =
        (xt.t().unwrap().sum_all().unwrap() + (picked * 10.0).unwrap().sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).expect("x has a gradient");
    // xt is [3, 2]: row r picks column idx[r], i.e. x[idx[r]][r].
    assert_eq!(values(&g.i(0).unwrap()), vec![1.0, 11.0, 1.0]);
    assert_eq!(values(&g.i(1).unwrap()), vec![11.0, 1.0, 11.0]);
}
