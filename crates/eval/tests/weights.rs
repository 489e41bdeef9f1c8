//! The trained-weights file: round trips, foreign layouts and the errors for bad files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use resnet_data::{MeanImage, Normalization};
use resnet_eval::{
    load_weights, normalization_from_tensors, normalization_tensors, resolve_weights, save_weights,
    MODEL_FILE,
};
use resnet_models::{ArchSpec, ResNet};
use resnet_test_support::max_abs_diff;

fn model(seed: u64) -> ResNet {
    ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), seed, &Device::Cpu).unwrap()
}

/// A resnet20 whose BN running statistics are off their defaults, and an input.
fn trained() -> (ResNet, Tensor) {
    let m = model(1);
    let x = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
    m.forward_t(&x, true).unwrap();
    (m, x)
}

fn assert_same_logits(a: &ResNet, b: &ResNet, x: &Tensor) {
    let diff = max_abs_diff(
        &a.forward_t(x, false).unwrap(),
        &b.forward_t(x, false).unwrap(),
    );
    assert_eq!(diff, 0.0);
}

fn per_channel() -> Normalization {
    Normalization::PerChannel {
        mean: [0.49, 0.48, 0.45],
        std: [0.25, 0.24, 0.26],
    }
}

fn write(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

#[test]
fn save_then_load_gives_identical_logits_and_normalization() {
    let dir = tempfile::tempdir().unwrap();
    let (original, x) = trained();
    let mean = MeanImage::from_values((0..3072).map(|i| i as f32 / 3072.0).collect()).unwrap();
    for norm in [
        Some(per_channel()),
        Some(Normalization::PerPixelMean(mean)),
        None,
    ] {
        let path = dir.path().join("w.safetensors");
        save_weights(&original, norm.as_ref(), &path).unwrap();
        let fresh = model(2);
        assert_eq!(load_weights(&fresh, &path).unwrap(), norm);
        assert_same_logits(&original, &fresh, &x);
    }
    // Only the file itself is left: the temporary file was renamed over it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["w.safetensors"]);
}

#[test]
fn pytorch_layout_loads_with_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torch.safetensors");
    let (original, x) = trained();
    let mut tensors = HashMap::new();
    for (name, t) in original.state_tensors() {
        let name = match name.as_str() {
            "fc.weight" => "linear.weight".to_string(),
            "fc.bias" => "linear.bias".to_string(),
            _ => name,
        };
        if let Some(bn) = name.strip_suffix(".running_mean") {
            let counter = Tensor::new(391i64, &Device::Cpu).unwrap();
            tensors.insert(format!("module.{bn}.num_batches_tracked"), counter);
        }
        tensors.insert(format!("module.{name}"), t);
    }
    assert!(tensors.contains_key("module.linear.weight"));
    assert_eq!(
        tensors["module.bn1.num_batches_tracked"].dtype(),
        DType::I64
    );
    write(&tensors, &path);
    let fresh = model(2);
    assert_eq!(load_weights(&fresh, &path).unwrap(), None);
    assert_same_logits(&original, &fresh, &x);
}

#[test]
fn checkpoint_with_momentum_buffers_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint-000100.safetensors");
    let (original, x) = trained();
    let mut tensors = original.state_tensors();
    for (name, var) in original.parameters() {
        tensors.insert(format!("momentum.{name}"), var.ones_like().unwrap());
    }
    tensors.extend(normalization_tensors(&per_channel()).unwrap());
    write(&tensors, &path);
    let fresh = model(2);
    assert_eq!(load_weights(&fresh, &path).unwrap(), Some(per_channel()));
    assert_same_logits(&original, &fresh, &x);
}

/// The error for a file holding `tensors`, checking the model is left as it was.
fn load_error(tensors: &HashMap<String, Tensor>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    write(tensors, &path);
    let target = model(3);
    let x = Tensor::ones((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let before = target.forward_t(&x, false).unwrap();
    let err = load_weights(&target, &path).unwrap_err().to_string();
    let after = target.forward_t(&x, false).unwrap();
    let same = before.eq(&after).unwrap().min_all().unwrap();
    assert_eq!(same.to_scalar::<u8>().unwrap(), 1, "model changed: {err}");
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    err
}

#[test]
fn bad_files_are_errors_naming_the_file_and_tensor() {
    let good = model(1).state_tensors();
    let zeros3 = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();

    let mut stray = good.clone();
    stray.insert("layer4.0.conv1.weight".into(), zeros3.clone());
    assert!(load_error(&stray).contains("`layer4.0.conv1.weight`"));

    let mut missing = good.clone();
    missing.remove("layer2.1.bn2.running_var");
    assert!(load_error(&missing).contains("`layer2.1.bn2.running_var`"));

    let mut partial = good.clone();
    partial.insert("normalization.channel_mean".into(), zeros3.clone());
    assert!(load_error(&partial).contains("`normalization.channel_std` is missing"));

    let mut duplicate = good.clone();
    duplicate.insert("linear.bias".into(), good["fc.bias"].clone());
    let err = load_error(&duplicate);
    assert!(
        err.contains("`fc.bias`") && err.contains("`linear.bias`"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let err = load_weights(&model(0), &junk).unwrap_err().to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
    let err = load_weights(&model(0), &dir.path().join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

#[test]
fn normalization_tensors_round_trip_and_reject_bad_entries() {
    let tensors = normalization_tensors(&per_channel()).unwrap();
    let mut names: Vec<_> = tensors.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        ["normalization.channel_mean", "normalization.channel_std"]
    );
    assert_eq!(
        normalization_from_tensors(&tensors).unwrap(),
        Some(per_channel())
    );
    assert_eq!(normalization_from_tensors(&HashMap::new()).unwrap(), None);

    let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
    let cases = [
        (
            "normalization.channel_std",
            t(&[0.2, 0.0, 0.2]),
            "normalization.channel_std",
        ),
        (
            "normalization.channel_mean",
            t(&[0.5, 0.5]),
            "normalization.channel_mean",
        ),
        ("normalization.scale", t(&[1.0]), "normalization.scale"),
        (
            "normalization.mean_image",
            t(&[0.5; 3]),
            "normalization.channel_mean",
        ),
    ];
    for (name, tensor, named) in cases {
        let mut bad = tensors.clone();
        bad.insert(name.into(), tensor);
        let err = normalization_from_tensors(&bad).unwrap_err().to_string();
        assert!(err.contains(&format!("`{named}`")), "{name}: {err}");
    }
    let bad_std = Normalization::PerChannel {
        mean: [0.5; 3],
        std: [0.0; 3],
    };
    assert!(normalization_tensors(&bad_std).is_err());
}

#[test]
fn resolve_weights_takes_a_file_or_a_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint-000100.safetensors");
    std::fs::write(&ckpt, b"").unwrap();
    assert_eq!(resolve_weights(&ckpt).unwrap(), ckpt);

    let err = resolve_weights(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no model.safetensors yet"), "{err}");
    assert!(err.contains("checkpoint-000100.safetensors"), "{err}");

    std::fs::write(dir.path().join(MODEL_FILE), b"").unwrap();
    assert_eq!(
        resolve_weights(dir.path()).unwrap(),
        dir.path().join(MODEL_FILE)
    );

    let err = resolve_weights(&dir.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere"), "{err}");
}
