//! Saving and loading weights: round trips and the errors for bad files.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use resnet_models::{read_safetensors, read_safetensors_metadata, ArchSpec, ResNet};
use resnet_test_support::max_abs_diff;

fn model(id: &str, seed: u64) -> ResNet {
    ResNet::new(&ArchSpec::from_id(id).unwrap(), seed, &Device::Cpu).unwrap()
}

#[test]
fn save_then_load_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let trained = model("resnet20", 1);
    let x = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
    trained.forward_t(&x, true).unwrap(); // move the running statistics off their defaults
    trained.save(&path).unwrap();
    assert!(!dir.path().join("w.safetensors.tmp").exists());

    let fresh = model("resnet20", 2);
    assert!(
        max_abs_diff(
            &fresh.forward_t(&x, false).unwrap(),
            &trained.forward_t(&x, false).unwrap()
        ) > 1e-3
    );
    fresh.load(&path).unwrap();
    assert_eq!(
        max_abs_diff(
            &fresh.forward_t(&x, false).unwrap(),
            &trained.forward_t(&x, false).unwrap()
        ),
        0.0
    );
}

fn error_for(tensors: &HashMap<String, Tensor>) -> String {
    let target = model("resnet20", 0);
    let before = target.state_tensors();
    let err = target
        .load_tensors(tensors, "test.safetensors")
        .unwrap_err()
        .to_string();
    // A failed load leaves the model as it was.
    let after = target.state_tensors();
    for (name, t) in before {
        assert_eq!(
            max_abs_diff(&t, &after[&name]),
            0.0,
            "{name} changed by a failed load"
        );
    }
    err
}

#[test]
fn missing_extra_and_misshapen_tensors_are_named_errors() {
    let good = model("resnet20", 5).state_tensors();

    let mut missing = good.clone();
    missing.remove("layer2.1.bn2.running_var");
    let err = error_for(&missing);
    assert!(
        err.contains("test.safetensors")
            && err.contains("missing tensor `layer2.1.bn2.running_var`")
            && err.contains("[32]"),
        "{err}"
    );

    let mut extra = good.clone();
    extra.insert(
        "layer9.0.conv1.weight".into(),
        Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = error_for(&extra);
    assert!(
        err.contains("unexpected tensor `layer9.0.conv1.weight`") && err.contains("[2, 2]"),
        "{err}"
    );

    let mut wrong = good.clone();
    wrong.insert(
        "fc.weight".into(),
        Tensor::zeros((100, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = error_for(&wrong);
    assert!(
        err.contains("`fc.weight`") && err.contains("[100, 64]") && err.contains("[10, 64]"),
        "{err}"
    );

    // PyTorch's BN counters are not an error.
    let mut torch = good.clone();
    torch.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[3i64], &Device::Cpu).unwrap(),
    );
    model("resnet20", 0).load_tensors(&torch, "torch").unwrap();
}

#[test]
fn the_header_alone_gives_the_metadata_the_whole_file_gives() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.safetensors");
    let net = model("resnet20", 0);
    net.save(&ours).unwrap();
    let header = read_safetensors_metadata(&ours).unwrap();
    assert_eq!(header, read_safetensors(&ours).unwrap().1);
    assert_eq!(header.unwrap().arch, "resnet20");
    // A file without our metadata has none.
    let bare = dir.path().join("bare.safetensors");
    candle_core::safetensors::save(&net.state_tensors(), &bare).unwrap();
    assert_eq!(read_safetensors_metadata(&bare).unwrap(), None);
    // Too short, a header longer than the file, or not JSON: errors naming the file.
    let bytes = std::fs::read(&ours).unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        ("short.safetensors", bytes[..5].to_vec()),
        ("cut.safetensors", bytes[..20].to_vec()),
        ("junk.safetensors", b"\x04\0\0\0\0\0\0\0junk".to_vec()),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        for err in [
            read_safetensors_metadata(&path).unwrap_err().to_string(),
            read_safetensors(&path).unwrap_err().to_string(),
        ] {
            assert!(err.contains(name), "{err}");
            assert!(err.contains("not a readable safetensors file"), "{err}");
        }
    }
}

#[test]
fn loading_a_file_that_is_not_safetensors_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = model("resnet20", 0).load(&path).unwrap_err().to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
    assert!(err.contains("not a readable safetensors file"), "{err}");
}

#[test]
fn a_backbone_loads_under_a_new_head_and_any_other_shape_is_refused() {
    let source = model("resnet20", 1);
    let three_way = ArchSpec::from_id("resnet20").unwrap().with_num_classes(3);
    let target = ResNet::new(&three_way, 2, &Device::Cpu).unwrap();
    let head = target.state_tensors()["fc.weight"]
        .to_vec2::<f32>()
        .unwrap();
    target
        .load_backbone(&source.state_tensors(), "source.safetensors")
        .unwrap();
    let (got, want) = (target.state_tensors(), source.state_tensors());
    for (name, t) in &got {
        if name.starts_with("fc.") {
            continue;
        }
        assert_eq!(max_abs_diff(t, &want[name]), 0.0, "{name}");
    }
    // The head keeps its own fresh initialisation.
    assert_eq!(got["fc.weight"].to_vec2::<f32>().unwrap(), head);

    // A wider net's backbone does not fit: refused, naming the tensor.
    let wide = ArchSpec {
        widths: vec![32, 64, 128],
        ..three_way
    };
    let err = ResNet::new(&wide, 0, &Device::Cpu)
        .unwrap()
        .load_backbone(&source.state_tensors(), "source.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.safetensors") && err.contains("conv1.weight"),
        "{err}"
    );
}
