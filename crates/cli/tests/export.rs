//! `resnet export` as a user runs it: the tensors torchvision's `state_dict`
//! holds, no more and no fewer, and a config timm reads; `resnet` loads the
//! export back bit for bit.

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use resnet_models::{read_safetensors, ArchSpec, ResNet, StridePlacement};

fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .output()
        .unwrap()
}

/// The keys of torchvision's `resnetN().state_dict()`, derived from
/// `torchvision/models/resnet.py` as it builds the net: `conv1`, `bn1`, then
/// `_make_layer` per stage (a `downsample` on the first block of every stage
/// but the first, and of the first too for bottlenecks), then `fc`.
fn torchvision_keys(blocks: [usize; 4], bottleneck: bool) -> Vec<String> {
    let bn = |p: &str| {
        [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ]
        .map(|f| format!("{p}.{f}"))
    };
    let mut keys = vec!["conv1.weight".to_string()];
    keys.extend(bn("bn1"));
    let convs = if bottleneck { 3 } else { 2 };
    for (stage, &n) in blocks.iter().enumerate() {
        for b in 0..n {
            let p = format!("layer{}.{b}", stage + 1);
            for k in 1..=convs {
                keys.push(format!("{p}.conv{k}.weight"));
                keys.extend(bn(&format!("{p}.bn{k}")));
            }
            if b == 0 && (stage > 0 || bottleneck) {
                keys.push(format!("{p}.downsample.0.weight"));
                keys.extend(bn(&format!("{p}.downsample.1")));
            }
        }
    }
    keys.extend(["fc.weight".to_string(), "fc.bias".to_string()]);
    keys.sort();
    keys
}

fn export(arch: &str, weights: &Path, out: &Path) -> Output {
    resnet(&[
        "export",
        "--arch",
        arch,
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn exports_hold_exactly_torchvisions_tensors_and_load_back_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, blocks, bottleneck) in [
        ("resnet18", [2, 2, 2, 2], false),
        ("resnet50", [3, 4, 6, 3], true),
    ] {
        let spec = ArchSpec::from_id(arch)
            .unwrap()
            .with_stride_placement(StridePlacement::V1_5);
        let model = ResNet::new(&spec, 3, &Device::Cpu).unwrap();
        let weights = dir.path().join(format!("{arch}.safetensors"));
        model.save(&weights).unwrap();
        let out = dir.path().join(format!("{arch}-export"));
        let run = export(arch, &weights, &out);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );

        let (tensors, _) = read_safetensors(&out.join("model.safetensors")).unwrap();
        let mut names: Vec<String> = tensors.keys().cloned().collect();
        names.sort();
        assert_eq!(names, torchvision_keys(blocks, bottleneck), "{arch}");
        let counter = &tensors["bn1.num_batches_tracked"];
        assert_eq!(
            (counter.dtype(), counter.rank()),
            (candle_core::DType::I64, 0)
        );

        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["num_classes"], 1000);
        assert_eq!(config["label_names"][207], "golden retriever");
        let cfg = &config["pretrained_cfg"];
        assert_eq!(cfg["input_size"], serde_json::json!([3, 224, 224]));
        assert_eq!(cfg["interpolation"], "bilinear");
        assert_eq!(cfg["crop_pct"], 0.875);
        assert_eq!(cfg["classifier"], "fc");
        assert!((cfg["mean"][0].as_f64().unwrap() - 0.485).abs() < 1e-6);

        // `resnet` reads its own export back, every tensor bit for bit.
        let back = ResNet::new(&spec, 4, &Device::Cpu).unwrap();
        back.load(&out.join("model.safetensors")).unwrap();
        let (a, b) = (model.state_tensors(), back.state_tensors());
        for (name, t) in &a {
            assert_eq!(values(t), values(&b[name]), "{arch}: {name}");
        }
    }
}

#[test]
fn nets_torchvision_computes_otherwise_are_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, placement, why) in [
        ("resnet50", StridePlacement::V1, "v1"),
        ("resnet20", StridePlacement::V1, "CIFAR stem"),
    ] {
        let spec = ArchSpec::from_id(arch)
            .unwrap()
            .with_stride_placement(placement);
        let weights = dir.path().join(format!("{arch}.safetensors"));
        ResNet::new(&spec, 0, &Device::Cpu)
            .unwrap()
            .save(&weights)
            .unwrap();
        let out = dir.path().join(format!("{arch}-export"));
        let run = export(arch, &weights, &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && stderr.contains(why), "{stderr}");
        assert!(!out.exists(), "a refused export writes nothing");
    }
}
