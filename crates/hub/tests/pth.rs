//! PyTorch checkpoints: the fixtures are written by `fixtures/make_pth_fixtures.py`.

use std::path::{Path, PathBuf};

use candle_core::Device;
use resnet_hub::{load_pretrained, read_tensors, HubError, Layout, WeightsSource};
use resnet_models::{ArchSpec, BlockKind, ResNet, Shortcut, Stem, StridePlacement};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The net of the fixtures: 3x3 stem of 2 filters, one basic block in each
/// of two stages of widths 2 and 4, option A shortcuts, 3 classes.
fn tiny_cifar() -> ArchSpec {
    ArchSpec {
        id: "tiny-cifar".into(),
        block: BlockKind::Basic,
        blocks_per_stage: vec![1, 1],
        widths: vec![2, 4],
        stem: Stem::Cifar,
        shortcut: Some(Shortcut::A),
        stride_placement: StridePlacement::V1,
        num_classes: 3,
        input_size: 32,
    }
}

fn fc_bias(model: &ResNet) -> Vec<f32> {
    model.state_tensors()["fc.bias"].to_vec1().unwrap()
}

#[test]
fn bare_and_nested_state_dicts_load_into_the_model() {
    for name in [
        "tiny_bare.pth",
        "tiny_model_key.pth",
        "tiny_state_dict_key.pth",
    ] {
        let model = ResNet::new(&tiny_cifar(), 0, &Device::Cpu).unwrap();
        let source = WeightsSource::Local(fixture(name));
        let loaded = load_pretrained(&model, &source, None).unwrap();
        assert_eq!(loaded.layout, Layout::Torchvision, "{name}");
        assert_eq!(loaded.registry_entry, None, "{name}");
        assert_eq!(fc_bias(&model), [1.5, -2.0, 0.25], "{name}");
        let var: Vec<f32> = model.state_tensors()["layer2.0.bn2.running_var"]
            .to_vec1()
            .unwrap();
        assert_eq!(var, [0.5, 1.0, 1.5, 2.0], "{name}");
    }
}

#[test]
fn tensors_keep_their_values_shapes_and_counters() {
    let tensors = read_tensors(&fixture("tiny_bare.pth")).unwrap();
    // 11 weights or BN layers: 5 BN layers of 5 tensors, 5 convs, fc weight and bias.
    assert_eq!(tensors.len(), 5 * 5 + 5 + 2);
    let conv = &tensors["layer1.0.conv1.weight"];
    assert_eq!(conv.dims(), [2, 2, 3, 3]);
    let first: Vec<f32> = conv.flatten_all().unwrap().to_vec1().unwrap();
    // arange * 0.01 - 0.1 * (index 2 in the script's table)
    assert!((first[1] - (0.01 - 0.2)).abs() < 1e-6, "{first:?}");
    let counter = tensors["bn1.num_batches_tracked"]
        .to_scalar::<i64>()
        .unwrap();
    assert_eq!(counter, 8);
}

#[test]
fn a_checkpoint_without_a_known_key_is_an_error_naming_the_keys() {
    let path = fixture("tiny_unknown_key.pth");
    let err = read_tensors(&path).unwrap_err();
    assert!(matches!(err, HubError::Read { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("tiny_unknown_key.pth"), "{msg}");
    assert!(msg.contains("`state_dict`, `model`"), "{msg}");
}
