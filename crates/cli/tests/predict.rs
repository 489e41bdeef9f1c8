//! The `resnet predict` command as a user runs it, on local weights (no network).

use std::path::Path;
use std::process::Output;

use candle_core::{Device, Tensor};
use resnet_data::Normalization;
use resnet_eval::{save_weights, MODEL_FILE};
use resnet_models::{ArchSpec, ResNet};

fn resnet(args: &[&str]) -> Output {
    resnet_test_support::run(env!("CARGO_BIN_EXE_resnet"), args)
}

/// A model of `arch` whose classifier ignores its input and favours `class`
/// overwhelmingly: zero fc weights, fc bias 20 at `class` and 0 elsewhere.
fn rigged(arch: &str, num_classes: usize, class: usize) -> ResNet {
    let spec = ArchSpec::from_id(arch)
        .unwrap()
        .with_num_classes(num_classes);
    let model = ResNet::new(&spec, 1, &Device::Cpu).unwrap();
    for named in model.named_vars() {
        let shape = named.var.shape().clone();
        if named.name == "fc.weight" {
            named
                .var
                .set(&Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap();
        } else if named.name == "fc.bias" {
            let mut bias = vec![0f32; num_classes];
            bias[class] = 20.0;
            named
                .var
                .set(&Tensor::from_vec(bias, shape, &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    model
}

/// A 300x200 PNG gradient at `path`.
fn write_png(path: &Path) {
    let image = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 128]));
    image.save(path).unwrap();
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn predicts_the_rigged_class_with_its_name_as_json_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("r18.safetensors");
    rigged("resnet18", 1000, 207).save(&weights).unwrap();
    let image = dir.path().join("dog.png");
    write_png(&image);
    let (weights, image) = (weights.to_str().unwrap(), image.to_str().unwrap());

    let base = ["predict", "--arch", "resnet18", "--weights", weights];
    let json = stdout(&resnet(&[&base[..], &["--json", image, image]].concat()));
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 2, "{json}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["image"], image);
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    assert_eq!(top[0]["class"], 207);
    assert_eq!(top[0]["name"], "golden retriever");
    let p: Vec<f64> = top
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(p[0] > 0.99, "{p:?}");
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    assert!(p.iter().sum::<f64>() <= 1.0 + 1e-6, "{p:?}");

    let text = stdout(&resnet(&[&base[..], &["--top", "3", image]].concat()));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].contains("207 golden retriever"), "{text}");

    // bf16: the same class, its probability within bf16's rounding.
    let bf16 = ["--json", "--precision", "bf16", image];
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&resnet(&[&base[..], &bf16].concat()))).unwrap();
    assert_eq!(v["top"][0]["class"], 207);
    let p16 = v["top"][0]["probability"].as_f64().unwrap();
    assert!(
        (p16 - p[0]).abs() < 1e-2 && p16 > 0.99,
        "{p16} against {}",
        p[0]
    );
}

#[test]
fn our_run_folders_keep_their_normalization_and_other_class_counts_have_no_names() {
    let dir = tempfile::tempdir().unwrap();
    let norm = Normalization::PerChannel {
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let model = rigged("resnet20", 10, 3);
    save_weights(
        &model,
        Some(&norm),
        &dir.path().join("run").join(MODEL_FILE),
    )
    .unwrap();
    let image = dir.path().join("cat.png");
    write_png(&image);
    let run = dir.path().join("run");
    let args = ["predict", "--arch", "resnet20", "--json", "--weights"];
    let out = stdout(&resnet(
        &[&args[..], &[run.to_str().unwrap(), image.to_str().unwrap()]].concat(),
    ));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["top"][0]["class"], 3);
    assert!(v["top"][0]["name"].is_null(), "{out}");
    // Without --arch, the one saved with the weights.
    let without_arch = stdout(&resnet(&[
        "predict",
        "--json",
        "--weights",
        run.to_str().unwrap(),
        image.to_str().unwrap(),
    ]));
    assert_eq!(without_arch, out);
}

#[test]
fn bad_inputs_are_one_clear_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("r20.safetensors");
    rigged("resnet20", 10, 0).save(&weights).unwrap();
    let missing = dir.path().join("missing.png");
    let weights = weights.to_str().unwrap();
    let a1 = "hf:timm/resnet50.a1_in1k";
    let cases: [(&[&str], &str); 7] = [
        (
            &["--weights", "hf:someone/nothing", "x.png"],
            "--arch is needed",
        ),
        (
            &[
                "--arch",
                "resnet20",
                "--weights",
                weights,
                missing.to_str().unwrap(),
            ],
            "missing.png",
        ),
        (
            &["--arch", "resnet7", "--weights", weights, "x.png"],
            "resnet7",
        ),
        (
            &["--arch", "resnet20", "--weights", "hf:nope", "x.png"],
            "hf:nope",
        ),
        (
            &["--arch", "resnet32", "--weights", weights, "x.png"],
            "r20.safetensors",
        ),
        (
            &[
                "--arch",
                "resnet50",
                "--stride-placement",
                "v1",
                "--weights",
                a1,
                "x.png",
            ],
            "contradicts",
        ),
        (
            &["--arch", "resnet18", "--weights", a1, "x.png"],
            "does not fit",
        ),
    ];
    for (args, needle) in cases {
        let out = resnet(&[&["predict"][..], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Weights saved without a normalisation also draw a warning saying so.
        let err: String = stderr
            .lines()
            .filter(|l| !l.contains("no input normalization known"))
            .collect();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    // A file that does not decode: named once, its decoder's words once.
    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"not a jpeg").unwrap();
    let out = resnet(&[
        "predict",
        "--arch",
        "resnet20",
        "--weights",
        weights,
        corrupt.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let err = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(err.matches("corrupt.jpg").count(), 1, "{err}");
    let words = err.rsplit(": ").next().unwrap();
    assert_eq!(err.matches(words).count(), 1, "{err}");
}
