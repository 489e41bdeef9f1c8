//! Tests of the SGD optimizer against hand-computed updates.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use resnet_models::MOMENTUM_PREFIX;
use resnet_train::{Sgd, SgdConfig, TrainError, UpdateRule};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn var(values: &[f64]) -> candle_core::Result<Var> {
    Var::from_vec(values.to_vec(), values.len(), &Device::Cpu)
}

fn values(v: &Var) -> Vec<f64> {
    v.as_tensor().to_vec1::<f64>().unwrap()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-12, "got {got:?}, want {want:?}");
    }
}

/// loss = sum(w * c): the gradient is c.
fn linear_loss(w: &Var, c: &[f64]) -> candle_core::Result<Tensor> {
    let c = Tensor::new(c, &Device::Cpu)?;
    w.as_tensor().mul(&c)?.sum_all()
}

#[test]
fn scalar_sequence_matches_hand_computation() -> TestResult {
    // w0 = 1, gradient 2, lr 0.1, momentum 0.9, weight decay 0.1:
    // step 1: g = 2 + 0.1 * 1      = 2.1,     v = 2.1,                        w = 1 - 0.21          = 0.79
    // step 2: g = 2 + 0.1 * 0.79   = 2.079,   v = 0.9 * 2.1 + 2.079   = 3.969,   w = 0.79 - 0.3969     = 0.3931
    // step 3: g = 2 + 0.1 * 0.3931 = 2.03931, v = 0.9 * 3.969 + 2.03931 = 5.61141, w = 0.3931 - 0.561141 = -0.168041
    let w = var(&[1.0])?;
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.1,
    };
    let mut sgd = Sgd::new(vec![("w".into(), w.clone())], config)?;
    let mut expected_w = [0.79, 0.3931, -0.168041].into_iter();
    let mut expected_v = [2.1, 3.969, 5.61141].into_iter();
    for _ in 0..3 {
        let grads = linear_loss(&w, &[2.0])?.backward()?;
        sgd.step(&grads)?;
        assert_close(&values(&w), &[expected_w.next().unwrap()]);
        let (name, v) = &sgd.momentum_buffers()?[0];
        assert_eq!(name, "w");
        assert_close(&v.to_vec1::<f64>()?, &[expected_v.next().unwrap()]);
        assert!(!v.track_op(), "momentum buffer must be outside the graph");
    }
    assert!(w.as_tensor().is_variable());
    Ok(())
}

/// Plain f64 reference of PyTorch's SGD update for one parameter.
fn reference_step(w: &mut [f64], v: &mut [f64], grad: &[f64], lr: f64, m: f64, wd: f64) {
    for i in 0..w.len() {
        let g = grad[i] + wd * w[i];
        v[i] = m * v[i] + g;
        w[i] -= lr * v[i];
    }
}

/// Plain f64 reference of Caffe's SGD update: the velocity holds the rate.
fn caffe_step(w: &mut [f64], v: &mut [f64], grad: &[f64], lr: f64, m: f64, wd: f64) {
    for i in 0..w.len() {
        v[i] = m * v[i] + lr * (grad[i] + wd * w[i]);
        w[i] -= v[i];
    }
}

/// Steps with gradient `grad a = c + a` through the rates `lrs`, and Caffe's
/// update on `reference` (weights, velocity) beside it; returns the largest
/// relative difference of the weights over the steps.
fn caffe_run(
    sgd: &mut Sgd,
    a: &Var,
    c: &[f64],
    lrs: &[f64],
    reference: &mut [Vec<f64>; 2],
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut worst: f64 = 0.0;
    for &lr in lrs {
        sgd.set_lr(lr);
        let at = a.as_tensor();
        let loss = (linear_loss(a, c)? + (at.mul(at)?.sum_all()? * 0.5)?)?;
        sgd.step(&loss.backward()?)?;
        let grad: Vec<f64> = reference[0].iter().zip(c).map(|(w, c)| c + w).collect();
        let [w, v] = reference;
        caffe_step(w, v, &grad, lr, 0.9, 1e-4);
        for (got, want) in values(a).iter().zip(w.iter()) {
            worst = worst.max((got - want).abs() / want.abs().max(1.0));
        }
    }
    Ok(worst)
}

#[test]
fn the_caffe_form_matches_caffes_update_across_rate_changes_and_resumes() -> TestResult {
    // The paper's ResNet-110 warm-up (0.01, then 0.1) and a step down.
    let lrs = [0.01, 0.01, 0.1, 0.1, 0.1, 0.01, 0.01];
    let c = [0.5, -1.5, 2.0];
    let start = [1.0, -2.0, 0.25];
    let caffe = |a: &Var| -> candle_core::Result<Sgd> {
        Ok(
            Sgd::new(vec![("a".into(), a.clone())], SgdConfig::default())
                .map_err(candle_core::Error::wrap)?
                .with_update_rule(UpdateRule::Caffe),
        )
    };
    let a = var(&start)?;
    let mut sgd = caffe(&a)?;
    let mut reference = [start.to_vec(), vec![0.0; 3]];
    let worst = caffe_run(&mut sgd, &a, &c, &lrs, &mut reference)?;
    assert!(
        worst < 1e-12,
        "Caffe's form differs from Caffe's update by {worst}"
    );
    assert_eq!(sgd.last_step_lr(), Some(0.01));

    // Resumed after the third step from its buffers and last rate: the same.
    let a = var(&start)?;
    let mut first = caffe(&a)?;
    let mut reference = [start.to_vec(), vec![0.0; 3]];
    caffe_run(&mut first, &a, &c, &lrs[..3], &mut reference)?;
    let mut resumed = caffe(&a)?;
    resumed.load_state(first.state_tensors()?)?;
    resumed.set_last_step_lr(first.last_step_lr());
    let worst = caffe_run(&mut resumed, &a, &c, &lrs[3..], &mut reference)?;
    assert!(worst < 1e-12, "the resumed run differs by {worst}");

    // PyTorch's form agrees while the rate is constant, not after it changes.
    let a = var(&start)?;
    let mut pytorch = Sgd::new(vec![("a".into(), a.clone())], SgdConfig::default())?;
    let mut reference = [start.to_vec(), vec![0.0; 3]];
    let before = caffe_run(&mut pytorch, &a, &c, &lrs[..2], &mut reference)?;
    let after = caffe_run(&mut pytorch, &a, &c, &lrs[2..3], &mut reference)?;
    assert!(
        before < 1e-12 && after > 1e-3,
        "before {before}, after {after}"
    );
    Ok(())
}

#[test]
fn vector_parameters_with_lr_change_match_reference() -> TestResult {
    // loss = sum(a * c) + 0.5 * sum(a * a) + 3 * b^2:
    // grad a = c + a, grad b = 6 b (gradients that depend on the weights).
    let c = [0.5, -1.5, 2.0];
    let a = var(&[1.0, -2.0, 0.25])?;
    let b = var(&[0.3])?;
    let mut sgd = Sgd::new(
        vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        SgdConfig::default(),
    )?;
    assert_eq!(sgd.lr(), 0.1);
    let (m, wd) = (0.9, 1e-4);
    let (mut ra, mut rb) = (vec![1.0, -2.0, 0.25], vec![0.3]);
    let (mut va, mut vb) = (vec![0.0; 3], vec![0.0]);
    for step in 0..5 {
        let lr = if step < 3 { 0.1 } else { 0.01 };
        sgd.set_lr(lr);
        assert_eq!(sgd.lr(), lr);
        let at = a.as_tensor();
        let loss = (linear_loss(&a, &c)? + (at.mul(at)?.sum_all()? * 0.5)?)?;
        let loss = (loss + (b.as_tensor().sqr()?.sum_all()? * 3.0)?)?;
        sgd.step(&loss.backward()?)?;

        let grad_a: Vec<f64> = ra.iter().zip(&c).map(|(w, c)| c + w).collect();
        let grad_b = vec![6.0 * rb[0]];
        reference_step(&mut ra, &mut va, &grad_a, lr, m, wd);
        reference_step(&mut rb, &mut vb, &grad_b, lr, m, wd);
        assert_close(&values(&a), &ra);
        assert_close(&values(&b), &rb);
    }
    Ok(())
}

#[test]
fn parameter_without_gradient_is_skipped_and_keeps_momentum() -> TestResult {
    let a = var(&[1.0, 2.0])?;
    let b = var(&[-1.0])?;
    let config = SgdConfig {
        lr: 0.5,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    let mut sgd = Sgd::new(
        vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        config,
    )?;
    let (mut ra, mut rb) = (vec![1.0, 2.0], vec![-1.0]);
    let (mut va, mut vb) = (vec![0.0; 2], vec![0.0]);
    for step in 0..3 {
        let with_b = step != 1;
        let mut loss = linear_loss(&a, &[1.0, -1.0])?;
        if with_b {
            loss = (loss + linear_loss(&b, &[4.0])?)?;
        }
        let grads = loss.backward()?;
        assert_eq!(grads.get(b.as_tensor()).is_some(), with_b);
        let vb_before = sgd.momentum_buffers()?[1].1.to_vec1::<f64>()?;
        sgd.step(&grads)?;

        reference_step(&mut ra, &mut va, &[1.0, -1.0], 0.5, 0.9, 0.01);
        if with_b {
            reference_step(&mut rb, &mut vb, &[4.0], 0.5, 0.9, 0.01);
        } else {
            assert_eq!(sgd.momentum_buffers()?[1].1.to_vec1::<f64>()?, vb_before);
        }
        assert_close(&values(&a), &ra);
        assert_close(&values(&b), &rb);
    }
    Ok(())
}

#[test]
fn plain_sgd_without_momentum_or_decay() -> TestResult {
    let w = var(&[3.0, -1.0])?;
    let config = SgdConfig {
        lr: 0.25,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let mut sgd = Sgd::new(vec![("w".into(), w.clone())], config)?;
    for _ in 0..2 {
        sgd.step(&linear_loss(&w, &[2.0, 4.0])?.backward()?)?;
    }
    // Two steps of w -= 0.25 * c.
    assert_close(&values(&w), &[3.0 - 1.0, -1.0 - 2.0]);
    Ok(())
}

/// A small least-squares problem in f32, so gradients depend on the weights.
struct Problem {
    x: Tensor,
    y: Tensor,
}

impl Problem {
    fn new() -> candle_core::Result<Self> {
        let x = Tensor::from_vec(
            (0..12).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
            (4, 3),
            &Device::Cpu,
        )?;
        let y = Tensor::from_vec(vec![0.5f32, -1.0, 0.25, 2.0], (4, 1), &Device::Cpu)?;
        Ok(Self { x, y })
    }

    fn params(&self) -> candle_core::Result<Vec<(String, Var)>> {
        Ok(vec![
            (
                "fc.weight".into(),
                Var::from_vec(vec![0.1f32, -0.2, 0.3], (3, 1), &Device::Cpu)?,
            ),
            (
                "fc.bias".into(),
                Var::from_vec(vec![0.05f32], 1, &Device::Cpu)?,
            ),
        ])
    }

    fn step(&self, sgd: &mut Sgd, params: &[(String, Var)]) -> candle_core::Result<()> {
        let pred = self
            .x
            .matmul(params[0].1.as_tensor())?
            .broadcast_add(params[1].1.as_tensor())?;
        let loss = pred.sub(&self.y)?.sqr()?.mean_all()?;
        sgd.step(&loss.backward()?)
            .map_err(candle_core::Error::wrap)
    }
}

fn bits(params: &[(String, Var)]) -> Vec<Vec<u32>> {
    params
        .iter()
        .map(|(_, v)| {
            let flat = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            flat.into_iter().map(f32::to_bits).collect()
        })
        .collect()
}

#[test]
fn state_round_trips_through_safetensors() -> TestResult {
    let problem = Problem::new()?;
    let params = problem.params()?;
    let mut sgd = Sgd::new(params.clone(), SgdConfig::default())?;
    for _ in 0..3 {
        problem.step(&mut sgd, &params)?;
    }
    let state = sgd.state_tensors()?;
    let mut names: Vec<_> = state.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["momentum.fc.bias", "momentum.fc.weight"]);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("opt.safetensors");
    candle_core::safetensors::save(&state, &path)?;
    let loaded = candle_core::safetensors::load(&path, &Device::Cpu)?;

    let mut other = Sgd::new(problem.params()?, SgdConfig::default())?;
    other.load_state(loaded)?;
    for ((n1, t1), (n2, t2)) in sgd
        .momentum_buffers()?
        .iter()
        .zip(other.momentum_buffers()?)
    {
        assert_eq!(*n1, n2);
        let a = t1.flatten_all()?.to_vec1::<f32>()?;
        let b = t2.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(a, b);
    }
    Ok(())
}

#[test]
fn resuming_from_a_checkpoint_is_bit_identical() -> TestResult {
    let problem = Problem::new()?;

    // Uninterrupted run of 8 steps.
    let params = problem.params()?;
    let mut sgd = Sgd::new(params.clone(), SgdConfig::default())?;
    for _ in 0..8 {
        problem.step(&mut sgd, &params)?;
    }
    let uninterrupted = bits(&params);

    // 4 steps, checkpoint weights and optimizer state in one file.
    let params = problem.params()?;
    let mut sgd = Sgd::new(params.clone(), SgdConfig::default())?;
    for _ in 0..4 {
        problem.step(&mut sgd, &params)?;
    }
    let mut checkpoint: HashMap<String, Tensor> = sgd.state_tensors()?;
    for (name, v) in &params {
        checkpoint.insert(name.clone(), v.as_tensor().clone());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ckpt.safetensors");
    candle_core::safetensors::save(&checkpoint, &path)?;
    drop((sgd, params));

    // Resume in fresh variables and optimizer, 4 more steps.
    let (optimizer, weights): (HashMap<_, _>, HashMap<_, _>) =
        candle_core::safetensors::load(&path, &Device::Cpu)?
            .into_iter()
            .partition(|(name, _)| name.starts_with(MOMENTUM_PREFIX));
    let params = ["fc.weight", "fc.bias"]
        .iter()
        .map(|n| Ok((n.to_string(), Var::from_tensor(&weights[*n])?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut sgd = Sgd::new(params.clone(), SgdConfig::default())?;
    sgd.load_state(optimizer)?;
    for _ in 0..4 {
        problem.step(&mut sgd, &params)?;
    }
    assert_eq!(bits(&params), uninterrupted);
    Ok(())
}

fn two_param_sgd() -> candle_core::Result<Sgd> {
    let params = vec![
        (
            "w".to_string(),
            Var::zeros((2, 3), DType::F32, &Device::Cpu)?,
        ),
        ("b".to_string(), Var::zeros(3, DType::F32, &Device::Cpu)?),
    ];
    Ok(Sgd::new(params, SgdConfig::default()).unwrap())
}

#[test]
fn loading_a_mismatched_state_fails_with_names_and_shapes() -> TestResult {
    let mut sgd = two_param_sgd()?;
    let good = sgd.state_tensors()?;

    let mut missing = good.clone();
    missing.remove("momentum.b");
    let err = sgd.load_state(missing).unwrap_err();
    assert!(matches!(err, TrainError::MissingState { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("momentum.b") && msg.contains("[3]"), "{msg}");

    let mut extra = good.clone();
    extra.insert(
        "momentum.c".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu)?,
    );
    let err = sgd.load_state(extra).unwrap_err();
    assert!(matches!(err, TrainError::UnexpectedState { .. }), "{err}");
    assert!(err.to_string().contains("momentum.c"), "{err}");

    let mut wrong_shape = good.clone();
    wrong_shape.insert(
        "momentum.w".into(),
        Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?,
    );
    let err = sgd.load_state(wrong_shape).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, TrainError::StateShapeMismatch { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("momentum.w") && msg.contains("[3, 2]") && msg.contains("[2, 3]"),
        "{msg}"
    );

    let mut wrong_dtype = good.clone();
    wrong_dtype.insert(
        "momentum.b".into(),
        Tensor::zeros(3, DType::F64, &Device::Cpu)?,
    );
    let err = sgd.load_state(wrong_dtype).unwrap_err();
    assert!(
        matches!(err, TrainError::StateDTypeMismatch { .. }),
        "{err}"
    );

    sgd.load_state(good)?;
    Ok(())
}

#[test]
fn construction_rejects_duplicates_and_bad_config() -> TestResult {
    let w = Var::zeros(2, DType::F32, &Device::Cpu)?;
    let dup = Sgd::new(
        vec![("w".into(), w.clone()), ("w".into(), w.clone())],
        SgdConfig::default(),
    );
    assert!(matches!(dup, Err(TrainError::DuplicateParameter(n)) if n == "w"));

    let bad = SgdConfig {
        momentum: -0.9,
        ..SgdConfig::default()
    };
    assert!(matches!(
        Sgd::new(vec![("w".into(), w)], bad),
        Err(TrainError::InvalidConfig(_))
    ));
    Ok(())
}

#[test]
fn config_defaults_and_serde() -> TestResult {
    let config = SgdConfig::default();
    assert_eq!(
        (config.lr, config.momentum, config.weight_decay),
        (0.1, 0.9, 1e-4)
    );
    let json = serde_json::to_string(&config)?;
    assert_eq!(serde_json::from_str::<SgdConfig>(&json)?, config);
    let partial: SgdConfig = toml::from_str("lr = 0.05")?;
    assert_eq!(partial, SgdConfig { lr: 0.05, ..config });
    Ok(())
}
