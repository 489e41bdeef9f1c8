//! The `resnet eval` command as a user runs it, on the bundled CIFAR-10 sample.

use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::Device;
use resnet_data::Normalization;
use resnet_eval::{save_weights, MODEL_FILE};
use resnet_models::{ArchSpec, ResNet};
use resnet_test_support::cifar_sample;

fn resnet(args: &[&str]) -> Output {
    resnet_test_support::run(env!("CARGO_BIN_EXE_resnet"), args)
}

/// A temp folder holding a run folder `run/` (with its model.safetensors,
/// normalisation included) and `bare.safetensors` (no normalisation), both
/// a fresh resnet20.
fn weights() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), 7, &Device::Cpu).unwrap();
    let norm = Normalization::PerChannel {
        mean: [0.49, 0.48, 0.45],
        std: [0.25, 0.24, 0.26],
    };
    std::fs::create_dir(dir.path().join("run")).unwrap();
    save_weights(
        &model,
        Some(&norm),
        &dir.path().join("run").join(MODEL_FILE),
    )
    .unwrap();
    save_weights(&model, None, &dir.path().join("bare.safetensors")).unwrap();
    dir
}

/// `resnet eval --arch resnet20 --weights WEIGHTS --data DATA` and `extra`.
fn eval_resnet20(weights: impl AsRef<Path>, data: impl AsRef<Path>, extra: &[&str]) -> Output {
    let (w, d) = (
        weights.as_ref().to_str().unwrap(),
        data.as_ref().to_str().unwrap(),
    );
    resnet(
        &[
            &["eval", "--arch", "resnet20", "--weights", w, "--data", d][..],
            extra,
        ]
        .concat(),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args`, expects a failure whose one-line message contains `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let out = resnet(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{args:?}: no error line in {err}"));
    assert!(line.contains(needle), "{args:?}: {err}");
}

#[test]
fn json_report_on_the_sample_test_split_from_a_run_folder() {
    let dir = weights();
    let run = dir.path().join("run");
    let data = cifar_sample();
    let out = eval_resnet20(&run, &data, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 1017);
    assert_eq!(v["arch"], "resnet20");
    assert_eq!(v["split"], "test");
    for key in ["top1_error", "top5_error"] {
        let e = v[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&e), "{v}");
    }
    assert!(v["loss"].as_f64().unwrap() > 0.0, "{v}");
}

/// `--precision bf16` evaluates the same weights in bf16: recorded in the
/// report, the loss within bf16's rounding of fp32's, a few near ties flipped
/// at most.
#[test]
fn bf16_evaluation_reports_its_precision_and_the_fp32_result_within_rounding() {
    let dir = weights();
    let run = dir.path().join("run");
    let report = |precision: &str| -> serde_json::Value {
        let out = eval_resnet20(&run, cifar_sample(), &["--json", "--precision", precision]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (fp32, bf16) = (report("fp32"), report("bf16"));
    assert_eq!(
        (&fp32["precision"], &bf16["precision"]),
        (&"fp32".into(), &"bf16".into())
    );
    let value = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap();
    let loss = (value(&bf16, "loss") - value(&fp32, "loss")).abs() / value(&fp32, "loss");
    assert!(loss > 0.0 && loss < 2e-2, "relative loss difference {loss}");
    let flipped = (value(&bf16, "top1_error") - value(&fp32, "top1_error")).abs() * 1017.0;
    assert!(flipped <= 20.5, "{flipped} of 1017 predictions changed");
}

#[test]
fn mean_and_std_flags_normalize_weights_that_store_none() {
    let dir = weights();
    let bare = dir.path().join("bare.safetensors");
    let data = cifar_sample();
    let out = eval_resnet20(
        &bare,
        &data,
        &[
            "--split",
            "val",
            "--val-size",
            "100",
            "--mean",
            "0.49,0.48,0.45",
            "--std",
            "0.25,0.24,0.26",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("resnet20 on val (100 images, fp32): top-1 error "),
        "{text}"
    );
    assert!(text.contains("top-5 error"), "{text}");
}

#[test]
fn bad_flags_weights_and_data_are_one_clear_line_each() {
    let dir = weights();
    let run = dir.path().join("run");
    let bare = dir.path().join("bare.safetensors");
    let empty = tempfile::tempdir().unwrap();
    let (run, bare, empty, data) = (
        run.to_str().unwrap(),
        bare.to_str().unwrap(),
        empty.path().to_str().unwrap(),
        cifar_sample(),
    );
    let data = data.to_str().unwrap();
    let eval = |extra: &[&'static str], weights: &str, data: &str| -> Vec<String> {
        let mut args = vec!["eval", "--weights", weights, "--data", data];
        if !extra.contains(&"--arch") {
            args.extend(["--arch", "resnet20"]);
        }
        args.extend(extra);
        args.into_iter().map(String::from).collect()
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            eval(&[], bare, data),
            "stores no input normalization; pass --mean R,G,B and --std R,G,B".into(),
        ),
        (
            eval(&["--mean", "0.5,0.5,0.5"], bare, data),
            "--mean needs --std".into(),
        ),
        (
            eval(&["--mean", "0.5,0.5", "--std", "1,1,1"], bare, data),
            "--mean `0.5,0.5`: expected 3 comma-separated numbers".into(),
        ),
        (
            eval(&["--mean", "0.5,0.5,0.5", "--std", "1,0,1"], bare, data),
            "--std `1,0,1`: every standard deviation must be > 0".into(),
        ),
        (eval(&["--split", "val"], run, data), "--val-size".into()),
        (
            eval(&["--arch", "resnet21"], run, data),
            "unknown architecture `resnet21`".into(),
        ),
        (
            eval(&["--arch", "resnet32"], run, data),
            "model.safetensors: the weights' metadata say arch = resnet20, but resnet32 was asked for"
                .into(),
        ),
        (
            eval(&[], empty, data),
            "has no model.safetensors yet".into(),
        ),
        (
            eval(&[], run, empty),
            format!("{empty} is not a CIFAR-10 folder"),
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, &needle);
    }
}

/// A `w x h` PNG of gradients plus seeded noise at `path`, creating its folder.
fn write_png(path: &Path, w: u32, h: u32, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let image = image::RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image::Rgb([(x * 5) as u8, (y * 7) as u8, (state >> 24) as u8])
    });
    image.save(path).unwrap();
}

/// `dir/images/{a,b}/*.png`: four small images of two classes; returns the root.
fn image_folder(dir: &Path) -> PathBuf {
    let root = dir.join("images");
    write_png(&root.join("a/1.png"), 40, 30, 1);
    write_png(&root.join("a/2.png"), 30, 40, 2);
    write_png(&root.join("b/3.png"), 48, 36, 3);
    write_png(&root.join("b/4.png"), 40, 30, 4);
    root
}

/// Runs `resnet eval --arch resnet20` with `args`, expects success, parses its JSON.
fn eval_json(args: &[&str]) -> serde_json::Value {
    let out = resnet(&[&["eval", "--arch", "resnet20", "--json"][..], args].concat());
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn image_folders_report_center_crop_and_ten_crop_errors() {
    let dir = weights();
    let run = dir.path().join("run");
    let root = image_folder(dir.path());
    let (run, root) = (run.to_str().unwrap(), root.to_str().unwrap());
    let base = ["--weights", run, "--data", root, "--batch-size", "3"];

    let center = eval_json(&base);
    assert_eq!(center["images"], 4, "{center}");
    assert_eq!(center["views"], "center crop", "{center}");
    assert_eq!(center["arch"], "resnet20", "{center}");
    assert_eq!(center["data"], root, "{center}");
    assert!(center["weights"].as_str().unwrap().ends_with(MODEL_FILE));
    assert_eq!(center["models"].as_array().unwrap().len(), 1, "{center}");
    assert!(center["scales"].is_null(), "{center}");
    for key in ["top1_error", "top5_error"] {
        let e = center[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&e), "{center}");
    }
    assert!(center["loss"].as_f64().unwrap() > 0.0, "{center}");

    let ten = eval_json(&[&base[..], &["--ten-crop"]].concat());
    assert_eq!(ten["views"], "ten-crop", "{ten}");
    assert_eq!(ten["images"], 4, "{ten}");
    assert_ne!(ten["loss"], center["loss"], "ten crops scored as one");

    let scales = eval_json(&[&base[..], &["--multi-scale", "--scales", "32,40"]].concat());
    assert_eq!(scales["views"], "multi-scale", "{scales}");
    assert_eq!(scales["scales"], serde_json::json!([32, 40]), "{scales}");

    let out = resnet(&[
        "eval",
        "--arch",
        "resnet20",
        "--ten-crop",
        "--weights",
        run,
        "--data",
        root,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let head = format!("resnet20 on {root} (4 images, ten-crop, fp32): top-1 error ");
    assert!(text.starts_with(&head), "{text}");
}

#[test]
fn an_ensemble_of_the_same_weights_scores_as_one_model() {
    let dir = weights();
    let run = dir.path().join("run");
    let root = image_folder(dir.path());
    let (run, root) = (run.to_str().unwrap(), root.to_str().unwrap());
    let base = ["--weights", run, "--data", root, "--ten-crop"];
    let single = eval_json(&base);
    let entries = format!("resnet20={run},{run}");
    let ensemble = eval_json(&[&base[..], &["--ensemble", &entries]].concat());
    let models = ensemble["models"].as_array().unwrap();
    assert_eq!(models.len(), 3, "{ensemble}");
    assert!(models.iter().all(|m| m["arch"] == "resnet20"), "{ensemble}");
    for key in ["images", "top1_error", "top5_error"] {
        assert_eq!(single[key], ensemble[key], "{key}: {single} {ensemble}");
    }
    let (a, b) = (
        single["loss"].as_f64().unwrap(),
        ensemble["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-9, "{single} {ensemble}");

    let out = eval_resnet20(run, root, &["--ensemble", run]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("ensemble of resnet20 + resnet20 on "),
        "{text}"
    );
}

#[test]
fn flat_folders_take_labels_by_index_or_by_class_name() {
    let dir = weights();
    let run = dir.path().join("run");
    let flat = dir.path().join("flat");
    for (i, name) in ["x.png", "y.png", "z.png"].iter().enumerate() {
        write_png(&flat.join(name), 40, 30, i as u32);
    }
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "x.png 1\ny.png cat\nz.png dog\n").unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "# names\ncat\ndog\n").unwrap();
    let (run, flat, labels, classes) = (
        run.to_str().unwrap(),
        flat.to_str().unwrap(),
        labels.to_str().unwrap(),
        classes.to_str().unwrap(),
    );
    let base = ["--weights", run, "--data", flat, "--labels", labels];
    let v = eval_json(&[&base[..], &["--classes", classes]].concat());
    assert_eq!(v["images"], 3, "{v}");
    // Without --classes, labels are class indices: `cat` is not one.
    fails_with(
        &[&["eval", "--arch", "resnet20"][..], &base[..]].concat(),
        "unknown class \"cat\": expected a class name or an index below 10",
    );
}

#[test]
fn image_folder_weights_without_normalization_use_torchvision_with_a_warning() {
    let dir = weights();
    let bare = dir.path().join("bare.safetensors");
    let root = image_folder(dir.path());
    let out = eval_resnet20(&bare, &root, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bare.safetensors: no input normalization known; using torchvision's"),
        "{err}"
    );
}

#[test]
fn cifar_mean_image_weights_score_an_image_folder_as_predict_classifies_it() {
    let dir = weights();
    let root = image_folder(dir.path());
    let weights = dir.path().join("cifar-mean.safetensors");
    let model = ResNet::new(&ArchSpec::from_id("resnet20").unwrap(), 7, &Device::Cpu).unwrap();
    let values = (0..3072).map(|i| (i % 97) as f32 / 97.0).collect();
    let mean = resnet_data::MeanImage::from_values(values).unwrap();
    save_weights(&model, Some(&Normalization::PerPixelMean(mean)), &weights).unwrap();
    let (weights, root_text) = (weights.to_str().unwrap(), root.to_str().unwrap());

    let report = eval_json(&["--weights", weights, "--data", root_text]);
    assert_eq!(report["images"], 4, "{report}");
    // The mean cross-entropy `predict`'s probabilities give, image by image.
    let mut loss = 0.0;
    for (label, image) in [
        (0, "a/1.png"),
        (0, "a/2.png"),
        (1, "b/3.png"),
        (1, "b/4.png"),
    ] {
        let image = root.join(image);
        let out = resnet(&[
            "predict",
            "--json",
            "--top",
            "10",
            "--weights",
            weights,
            image.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let top = v["top"].as_array().unwrap();
        let p = top.iter().find(|p| p["class"] == label).unwrap()["probability"]
            .as_f64()
            .unwrap();
        loss -= p.ln() / 4.0;
    }
    let eval_loss = report["loss"].as_f64().unwrap();
    assert!(
        (eval_loss - loss).abs() <= 1e-5 * loss.abs().max(1.0),
        "eval {eval_loss}, predict {loss}"
    );
}

#[test]
fn bad_image_folder_flags_weights_and_files_are_one_clear_line_each() {
    let dir = weights();
    let run = dir.path().join("run");
    let root = image_folder(dir.path());
    let (run, root, cifar) = (
        run.to_str().unwrap(),
        root.to_str().unwrap(),
        cifar_sample(),
    );
    let cifar = cifar.to_str().unwrap();
    let eval = |extra: &[&str], data: &str| -> Vec<String> {
        let mut args = vec![
            "eval",
            "--arch",
            "resnet20",
            "--weights",
            run,
            "--data",
            data,
        ];
        args.extend(extra);
        args.into_iter().map(String::from).collect()
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            eval(&["--ten-crop", "--multi-scale"], root),
            "'--ten-crop' cannot be used with '--multi-scale'".into(),
        ),
        (
            eval(&["--scales", "32"], root),
            "required arguments were not provided".into(),
        ),
        (
            eval(&["--ten-crop"], cifar),
            format!("--ten-crop applies to image folders, but {cifar} is a CIFAR-10 folder"),
        ),
        (
            eval(&["--ensemble", run], cifar),
            "--ensemble applies to image folders".into(),
        ),
        (
            eval(&["--split", "test"], root),
            "--split applies to CIFAR-10 only".into(),
        ),
        (
            eval(&["--multi-scale", "--scales", "32,0"], root),
            "--scales: expected shorter sides > 0".into(),
        ),
        (
            eval(&["--ensemble", "resnet21=x.safetensors"], root),
            "unknown architecture `resnet21`".into(),
        ),
        (
            eval(&["--ensemble", &format!("resnet32={run}")], root),
            format!("--ensemble entry `resnet32={run}`"),
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, &needle);
    }

    // An image whose pixel data is cut short: named when it fails to decode.
    let broken = Path::new(root).join("b/3.png");
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &eval(&[], root)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &format!("decoding image {}", broken.display()),
    );
}

#[test]
fn a_corrupt_image_is_named_unless_bad_images_are_skipped() {
    let dir = weights();
    let run = dir.path().join("run");
    let root = image_folder(dir.path());
    std::fs::write(root.join("b/broken.png"), b"not a png").unwrap();
    let (run, root) = (run.to_str().unwrap(), root.to_str().unwrap());
    let base = [
        "eval",
        "--arch",
        "resnet20",
        "--weights",
        run,
        "--data",
        root,
    ];
    let out = resnet(&base);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("broken.png"), "{}", stderr(&out));
    let skipped = eval_json(&["--weights", run, "--data", root, "--skip-bad-images"]);
    assert_eq!(skipped["images"], 4, "{skipped}");
    let out = resnet(&[
        "eval",
        "--arch",
        "resnet20",
        "--weights",
        run,
        "--data",
        cifar_sample().to_str().unwrap(),
        "--skip-bad-images",
    ]);
    assert!(stderr(&out).contains("--skip-bad-images applies to image folders"));
}
