//! Tests driven by the zoo table: every architecture is built, counted,
//! run forward and backward.

use candle_core::{DType, Device, Tensor};
use resnet_models::{
    count, zoo, ArchSpec, ResNet, Shortcut, ShortcutPlan, StridePlacement, TensorKind, Trace,
};
use resnet_test_support::{max_abs, max_abs_diff};

/// Input side used to run each net in tests (224 is too slow for CI on a CPU).
fn test_side(spec: &ArchSpec) -> usize {
    if spec.input_size == 224 {
        64
    } else {
        16
    }
}

fn random_batch(n: usize, side: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (n, 3, side, side), &Device::Cpu).unwrap()
}

#[test]
fn torchvision_and_paper_parameter_counts_are_exact() {
    let expected = [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
        ("resnet1202", 19_421_274),
    ];
    for (id, params) in expected {
        let spec = ArchSpec::from_id(id).unwrap();
        assert_eq!(count(&spec, spec.input_size).params, params, "{id}");
        // v1.5 moves a stride, never a parameter.
        let v15 = spec.clone().with_stride_placement(StridePlacement::V1_5);
        assert_eq!(count(&v15, 224).params, params, "{id} v1.5");
    }
}

#[test]
fn flops_are_within_three_percent_of_table_1() {
    let paper = [
        ("resnet18", 1.8e9),
        ("resnet34", 3.6e9),
        ("resnet50", 3.8e9),
        ("resnet101", 7.6e9),
        ("resnet152", 11.3e9),
        ("plain18", 1.8e9),
        ("plain34", 3.6e9),
    ];
    for (id, flops) in paper {
        let spec = ArchSpec::from_id(id).unwrap();
        let ours = count(&spec, 224).macs as f64;
        assert!(
            (ours / flops - 1.0).abs() < 0.03,
            "{id}: {ours:e} vs paper {flops:e}"
        );
    }
    // torchvision's v1.5 ResNet-50 costs about 4.1e9 multiply-adds.
    let v15 = ArchSpec::from_id("resnet50")
        .unwrap()
        .with_stride_placement(StridePlacement::V1_5);
    let ours = count(&v15, 224).macs as f64;
    assert!((ours / 4.1e9 - 1.0).abs() < 0.03, "resnet50 v1.5: {ours:e}");
}

#[test]
fn every_arch_builds_counts_and_passes_gradients_to_every_parameter() {
    for spec in zoo() {
        let model = ResNet::new(&spec, 0, &Device::Cpu).unwrap();
        let side = test_side(&spec);
        assert_eq!(
            model.num_parameters(),
            count(&spec, side).params,
            "{}",
            spec.id
        );

        let x = random_batch(2, side);
        let mut trace = Trace::default();
        let logits = model.forward_traced(&x, true, &mut trace).unwrap();
        assert_eq!(logits.dims(), &[2, spec.num_classes], "{}", spec.id);
        assert_eq!(
            trace.macs,
            count(&spec, side).macs,
            "{}: traced MACs",
            spec.id
        );

        let labels = Tensor::new(&[1u32, 7], &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in model.parameters() {
            let g = grads
                .get(&var)
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", spec.id));
            let max = max_abs(g);
            assert!(max > 0.0, "{}: zero gradient for {name}", spec.id);
        }
    }
}

#[test]
fn shortcut_options_shape_the_parameters_as_the_paper_says() {
    for id in ["resnet20", "resnet56", "resnet18", "resnet50"] {
        let residual = ArchSpec::from_id(id).unwrap();
        let a = residual.clone().with_shortcut(Shortcut::A);
        let b = residual.clone().with_shortcut(Shortcut::B);
        let c = residual.clone().with_shortcut(Shortcut::C);
        let blocks: usize = residual.blocks_per_stage.iter().sum();
        let projections = |spec: &ArchSpec| {
            let plan = spec.plan();
            plan.stages
                .iter()
                .flatten()
                .filter(|b| matches!(b.shortcut, ShortcutPlan::Projection(_)))
                .count()
        };
        let downsample_tensors = |spec: &ArchSpec| {
            let model = ResNet::new(spec, 0, &Device::Cpu).unwrap();
            model
                .named_vars()
                .iter()
                .filter(|v| v.name.contains(".downsample."))
                .count()
        };
        assert_eq!(projections(&a), 0, "{id} A");
        assert_eq!(downsample_tensors(&a), 0, "{id} A");
        assert_eq!(projections(&c), blocks, "{id} C");
        // Each projection is downsample.0.weight + four BN tensors.
        assert_eq!(downsample_tensors(&c), 5 * blocks, "{id} C");
        // B projects exactly where the shape changes: stage entries (and the
        // first bottleneck block, whose width grows 4x).
        let changes = residual
            .plan()
            .stages
            .iter()
            .flatten()
            .filter(|b| b.convs[0].stride != 1 || b.convs[0].in_channels != b.out_channels())
            .count();
        assert_eq!(projections(&b), changes, "{id} B");
        assert!(
            count(&a, 32).params < count(&b, 32).params
                && count(&b, 32).params < count(&c, 32).params
        );
    }
    // Option A adds nothing: a CIFAR ResNet has exactly its plain twin's parameters.
    for n in [20, 32, 44, 56, 110] {
        let resnet = ArchSpec::from_id(&format!("resnet{n}")).unwrap();
        let plain = ArchSpec::from_id(&format!("plain{n}")).unwrap();
        assert_eq!(count(&resnet, 32), count(&plain, 32), "{n}");
        assert!(plain
            .plan()
            .stages
            .iter()
            .flatten()
            .all(|b| b.shortcut == ShortcutPlan::None));
        assert_eq!(resnet.depth(), n);
    }
}

#[test]
fn plain_and_residual_twins_differ_only_by_the_shortcut() {
    // Same seed, same tensors: the outputs differ only because of the additions.
    let x = random_batch(2, 16);
    let resnet = ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), 3, &Device::Cpu).unwrap();
    let plain = ResNet::new(&ArchSpec::from_id("plain20").unwrap(), 3, &Device::Cpu).unwrap();
    for (a, b) in resnet.named_vars().iter().zip(plain.named_vars()) {
        assert_eq!(a.name, b.name);
        assert_eq!(
            a.var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.var.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    let diff =
        (resnet.forward_t(&x, false).unwrap() - plain.forward_t(&x, false).unwrap()).unwrap();
    assert!(max_abs(&diff) > 1e-3);
}

#[test]
fn stride_placement_moves_the_stride_between_the_1x1_and_the_3x3() {
    let v1 = ArchSpec::from_id("resnet50").unwrap();
    let v15 = v1.clone().with_stride_placement(StridePlacement::V1_5);
    let first_of_layer2 = |spec: &ArchSpec| {
        spec.plan().stages[1][0]
            .convs
            .iter()
            .map(|c| c.stride)
            .collect::<Vec<_>>()
    };
    assert_eq!(first_of_layer2(&v1), vec![2, 1, 1]);
    assert_eq!(first_of_layer2(&v15), vec![1, 2, 1]);
    let x = random_batch(1, 64);
    for spec in [v1, v15] {
        let model = ResNet::new(&spec, 0, &Device::Cpu).unwrap();
        let mut trace = Trace::default();
        model.forward_traced(&x, false, &mut trace).unwrap();
        assert_eq!(trace.macs, count(&spec, 64).macs);
    }
}

#[test]
fn torchvision_names_are_used() {
    let model = ResNet::new(&ArchSpec::from_id("resnet50").unwrap(), 0, &Device::Cpu).unwrap();
    let names: Vec<String> = model.named_vars().into_iter().map(|v| v.name).collect();
    for expected in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv3.weight",
        "layer1.0.bn3.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.weight",
        "layer4.2.conv2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
    // 53 convs (+ BN: 4 tensors each) and fc: 53 * 5 + 2 tensors, as in torchvision's state_dict less num_batches_tracked.
    assert_eq!(names.len(), 53 * 5 + 2);
    let running = model
        .named_vars()
        .iter()
        .filter(|v| v.kind == TensorKind::RunningStat)
        .count();
    assert_eq!(running, 53 * 2);
}

#[test]
fn unknown_arch_is_an_error_listing_the_valid_ids() {
    let err = ArchSpec::from_id("resnet19").unwrap_err().to_string();
    assert!(err.contains("resnet19"), "{err}");
    for spec in zoo() {
        assert!(err.contains(&spec.id), "{err} lacks {}", spec.id);
    }
    let ids: Vec<String> = zoo().into_iter().map(|s| s.id).collect();
    for id in [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "plain18",
        "plain34",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet1202",
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
    ] {
        assert!(ids.iter().any(|i| i == id), "zoo lacks {id}");
    }
}

#[test]
fn traced_forward_records_every_3x3_response_and_changes_nothing() {
    let spec = ArchSpec::from_id("resnet20").unwrap();
    let model = ResNet::new(&spec, 1, &Device::Cpu).unwrap();
    let x = random_batch(3, 32);
    let mut trace = Trace::default();
    let traced = model.forward_traced(&x, false, &mut trace).unwrap();
    let plain = model.forward_t(&x, false).unwrap();
    assert_eq!(max_abs_diff(&traced, &plain), 0.0);
    // In train mode the untraced pass fuses each ReLU into its batch norm and
    // the traced one does not (it records the response before the ReLU): the
    // outputs must still agree exactly, with and without shortcuts.
    for id in ["resnet20", "plain20"] {
        let model = ResNet::new(&ArchSpec::from_id(id).unwrap(), 2, &Device::Cpu).unwrap();
        let traced = model
            .forward_traced(&x, true, &mut Trace::default())
            .unwrap();
        let fused = model.forward_t(&x, true).unwrap();
        let (traced, fused): (Vec<f32>, Vec<f32>) = (
            traced.flatten_all().unwrap().to_vec1().unwrap(),
            fused.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(traced, fused, "{id} in train mode");
    }
    // conv1 and both convs of 9 blocks: 19 3x3 layers, as in Fig. 7's ResNet-20.
    assert_eq!(trace.responses.len(), 19);
    assert_eq!(trace.responses[0].0, "bn1");
    assert_eq!(trace.responses[1].0, "layer1.0.bn1");
    assert_eq!(trace.responses[18].0, "layer3.2.bn2");
    assert_eq!(trace.responses[0].1.dims(), &[3, 16, 32, 32]);
    assert_eq!(trace.responses[18].1.dims(), &[3, 64, 8, 8]);
    // Bottleneck nets: only the middle conv of each block is 3x3.
    let r50 = ResNet::new(&ArchSpec::from_id("resnet50").unwrap(), 1, &Device::Cpu).unwrap();
    let mut trace = Trace::default();
    r50.forward_traced(&random_batch(1, 32), false, &mut trace)
        .unwrap();
    assert_eq!(trace.responses.len(), 16);
    assert!(trace
        .responses
        .iter()
        .all(|(name, _)| name.ends_with(".bn2")));
}

#[test]
fn batch_norm_updates_running_statistics_only_in_train_mode() {
    let model = ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), 0, &Device::Cpu).unwrap();
    let running = |m: &ResNet| -> Vec<Vec<f32>> {
        m.named_vars()
            .iter()
            .filter(|v| v.kind == TensorKind::RunningStat)
            .map(|v| v.var.as_tensor().to_vec1::<f32>().unwrap())
            .collect()
    };
    let before = running(&model);
    let x = random_batch(4, 32).affine(3.0, 1.0).unwrap();
    model.forward_t(&x, false).unwrap();
    assert_eq!(
        running(&model),
        before,
        "eval mode must not touch running statistics"
    );
    model.forward_t(&x, true).unwrap();
    let after = running(&model);
    assert_eq!(after.len(), before.len());
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        assert_ne!(a, b, "running statistic #{i} did not move in train mode");
    }
    // bn1's running mean moves 10% of the way to the batch mean (momentum 0.1).
    let stem_out = x.conv2d(&model.named_vars()[0].var, 1, 1, 1, 1).unwrap();
    let batch_mean = stem_out
        .mean_keepdim((0, 2, 3))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (got, m) in after[0].iter().zip(batch_mean) {
        assert!((got - 0.1 * m).abs() < 1e-5, "{got} vs {}", 0.1 * m);
    }
}

#[test]
fn models_are_deterministic_in_their_seed() {
    let spec = ArchSpec::from_id("resnet20").unwrap();
    let a = ResNet::new(&spec, 42, &Device::Cpu)
        .unwrap()
        .state_tensors();
    let b = ResNet::new(&spec, 42, &Device::Cpu)
        .unwrap()
        .state_tensors();
    let c = ResNet::new(&spec, 43, &Device::Cpu)
        .unwrap()
        .state_tensors();
    let w = |m: &std::collections::HashMap<String, Tensor>| {
        m["layer2.0.conv1.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
    // He fan-out: std of a 3x3x32 -> 32 conv is sqrt(2 / (9 * 32)).
    let std = a["layer2.1.conv1.weight"]
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    let expected = (2.0f32 / (9.0 * 32.0)).sqrt();
    assert!((std / expected - 1.0).abs() < 0.05, "{std} vs {expected}");
    assert_eq!(a["fc.weight"].dtype(), DType::F32);
}
