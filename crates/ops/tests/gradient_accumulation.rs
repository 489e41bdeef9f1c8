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

#[test]
fn gradients_of_channels_last_tensors_sum_right_in_their_order() {
    use resnet_ops::{add_relu, conv2d, to_channels_last};
    use resnet_test_support::{max_abs_diff, random_tensor};
    let x = Var::from_tensor(&random_tensor(&[2, 4, 5, 7], 1)).unwrap();
    let w = Var::from_tensor(&random_tensor(&[4, 4, 3, 3], 2)).unwrap();
    let r = random_tensor(&[2, 4, 5, 7], 3);
    // `y` feeds the convolution and the join: its first gradient is stored
    // as the channels-last view it arrives as (`y` is a permutation's
    // output), the second is added to it in NHWC order.
    let loss = |y: &Tensor| {
        let h = conv2d(y, w.as_tensor(), 1, 1).unwrap();
        (add_relu(&h, y).unwrap() * &r).unwrap().sum_all().unwrap()
    };
    let grads = loss(&to_channels_last(x.as_tensor()).unwrap())
        .backward()
        .unwrap();
    let nchw = loss(&(x.as_tensor() * 1.0).unwrap()).backward().unwrap();
    for v in [&x, &w] {
        assert_eq!(
            max_abs_diff(grads.get(v).unwrap(), nchw.get(v).unwrap()),
            0.0
        );
    }
}
