//! Fine-tuning as a user runs it: `resnet train --weights RUN --num-classes K`
//! on a folder of their own classes, then `resnet predict` and `resnet eval`
//! speak of those classes; a frozen backbone stays bit-identical.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use resnet_models::{read_safetensors, ArchSpec, ResNet};

const CLASSES: [&str; 3] = ["cat_a", "dog_b", "eel_c"];

fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes `ROOT/<class>/<i>.png`: two small pictures per class, each class
/// its own colour.
fn image_folder(root: &Path, classes: &[&str]) {
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2u32 {
            let shade = (80 * c as u32 + 9 * i) as u8;
            let picture = image::RgbImage::from_fn(40 + 4 * i, 36, |x, y| {
                image::Rgb([shade, (x * 3) as u8 ^ shade, y as u8])
            });
            picture.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

fn tensors(run: &Path) -> HashMap<String, Tensor> {
    read_safetensors(&run.join("model.safetensors")).unwrap().0
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_fine_tuned_run_keeps_its_class_names_and_its_frozen_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    image_folder(&dir.path().join("pets"), &["ant", "bee"]);
    image_folder(&dir.path().join("mine"), &CLASSES);

    // A short ResNet-18 run with the zoo's 1000-way head: the source.
    let common = [
        "--iterations",
        "2",
        "--batch-size",
        "2",
        "--eval-every",
        "0",
    ];
    let mut args = vec!["train", "--arch", "resnet18", "--data"];
    let (pets, source) = (p("pets"), p("source"));
    args.extend([pets.as_str(), "--out", source.as_str()]);
    ok(resnet(&[&args[..], &common].concat()));

    // Fine-tune its backbone-frozen net on three classes of our own; --arch
    // comes from the source's metadata.
    let (mine, tuned) = (p("mine"), p("tuned"));
    let args = [
        "train",
        "--weights",
        &source,
        "--num-classes",
        "3",
        "--freeze",
        "backbone",
        "--lr",
        "0.5",
        "--lr-schedule",
        "cosine",
        "--label-smoothing",
        "0.1",
        "--data",
        &mine,
        "--out",
        &tuned,
    ];
    ok(resnet(&[&args[..], &common].concat()));

    let run = dir.path().join("tuned");
    assert_eq!(
        json(&run.join("config.json"))["classes"],
        serde_json::json!(CLASSES)
    );
    let config = &json(&run.join("config.json"))["config"];
    assert_eq!(config["arch"], "resnet18");
    assert_eq!(config["label_smoothing"], 0.1);
    let schedule = &config["schedule"]["schedule"];
    assert_eq!(
        (
            &schedule["type"],
            &schedule["base_lr"],
            &schedule["iterations"]
        ),
        (&"cosine".into(), &0.5.into(), &2.into())
    );
    assert_eq!(
        json(&run.join("summary.json"))["classes"],
        serde_json::json!(CLASSES)
    );
    let (file, metadata) = read_safetensors(&run.join("model.safetensors")).unwrap();
    let metadata = metadata.expect("the run's weights carry metadata");
    assert_eq!(
        metadata.classes.as_deref(),
        Some(&CLASSES.map(String::from)[..])
    );
    assert_eq!(
        (metadata.arch.as_str(), metadata.num_classes),
        ("resnet18", 3)
    );

    // Every backbone tensor, BN running statistics included, is the source's bit for bit.
    let before = tensors(&dir.path().join("source"));
    let mut compared = 0;
    for (name, t) in &file {
        if name.starts_with("fc.") || name.starts_with("normalization.") {
            continue;
        }
        assert_eq!(values(t), values(&before[name]), "{name} changed");
        compared += 1;
    }
    assert_eq!(compared, before.len() - 3, "every backbone tensor compared");
    // The head is a fresh 3-way one (seed 0), and training moved it.
    assert_eq!(file["fc.weight"].dims(), [3, 512]);
    let spec = ArchSpec::from_id("resnet18").unwrap().with_num_classes(3);
    let fresh = ResNet::new(&spec, 0, &Device::Cpu).unwrap().state_tensors();
    assert_ne!(values(&file["fc.weight"]), values(&fresh["fc.weight"]));

    // `resnet predict` names our classes, not ImageNet's.
    let image = dir.path().join("mine/dog_b/0.png").display().to_string();
    let out = ok(resnet(&[
        "predict",
        "--arch",
        "resnet18",
        "--weights",
        &tuned,
        "--json",
        "--top",
        "3",
        &image,
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut names: Vec<&str> = v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, CLASSES);

    // So does `resnet eval`, on the same classes.
    let out = ok(resnet(&[
        "eval",
        "--arch",
        "resnet18",
        "--weights",
        &tuned,
        "--data",
        &mine,
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["classes"], serde_json::json!(CLASSES));
    assert_eq!(v["images"], 6);
}

#[test]
fn weights_of_another_net_are_refused_before_a_run_folder_is_written() {
    let dir = tempfile::tempdir().unwrap();
    image_folder(&dir.path().join("mine"), &CLASSES);
    let spec = ArchSpec::from_id("resnet20").unwrap();
    let weights = dir.path().join("r20.safetensors");
    ResNet::new(&spec, 0, &Device::Cpu)
        .unwrap()
        .save(&weights)
        .unwrap();
    let out = dir.path().join("run").display().to_string();
    let base = [
        "train",
        "--weights",
        weights.to_str().unwrap(),
        "--num-classes",
        "3",
        "--iterations",
        "1",
        "--out",
        &out,
        "--data",
    ];
    let mine = dir.path().join("mine").display().to_string();
    let err = resnet(&[&base[..], &[mine.as_str(), "--arch", "resnet32"]].concat());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(!err.status.success(), "{stderr}");
    assert!(
        stderr.contains("r20.safetensors") && stderr.contains("arch = resnet20"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("run").exists(),
        "no run folder for refused weights"
    );

    // Four class folders for a 3-way head: refused, naming the flag.
    std::fs::create_dir_all(dir.path().join("mine/fox_d")).unwrap();
    std::fs::copy(
        dir.path().join("mine/cat_a/0.png"),
        dir.path().join("mine/fox_d/0.png"),
    )
    .unwrap();
    let err = resnet(&[&base[..], &[mine.as_str()]].concat());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && stderr.contains("--num-classes") && stderr.contains("4 class"),
        "{stderr}"
    );
}

/// Hub weights are fetched into the run folder before the run starts; a
/// start that then fails (here: no such data folder) takes them and the
/// folder away again, as every failed start leaves no folder behind.
#[test]
fn a_start_that_fails_after_fetching_hub_weights_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    // hf-hub's cache under HF_HOME, so that nothing is downloaded.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = dir.path().join("hf/hub/models--test--r20");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    let spec = ArchSpec::from_id("resnet20").unwrap();
    ResNet::new(&spec, 0, &Device::Cpu)
        .unwrap()
        .save(&snapshot.join("model.safetensors"))
        .unwrap();
    let run = dir.path().join("run");
    let train = |data: &Path| {
        Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(["train", "--arch", "resnet20", "--weights", "hf:test/r20"])
            .args(["--iterations", "1", "--eval-every", "0", "--out"])
            .arg(&run)
            .arg("--data")
            .arg(data)
            .env("HF_HOME", dir.path().join("hf"))
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    let out = train(&dir.path().join("missing"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("missing"),
        "{stderr}"
    );
    assert!(!run.exists(), "a failed start left {}", run.display());

    // The same weights start a run, whose folder keeps them.
    let sample = resnet_test_support::cifar_sample();
    let out = train(Path::new(&sample));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("initial-weights.safetensors").is_file());
}
