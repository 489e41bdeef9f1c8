//! Tables 3-5 on a tiny generated validation set with local weights: every
//! file is written, rows with weights carry numbers, the rest the paper's only.

use std::path::Path;

use image::{Rgb, RgbImage};
use resnet_models::{ArchSpec, Precision, ResNet};
use resnet_repro::{reproduce_imagenet, ImageNetOptions, ImageNetTarget, ProfileName};

/// `DIR/val/<synset>/<image>.png`: two classes of two small images each.
fn validation_set(dir: &Path) {
    image_set(&dir.join("val"));
}

/// `DIR/<synset>/<image>.png`: two classes of two small images each.
fn image_set(dir: &Path) {
    for (class, synset) in ["n01440764", "n01443537"].iter().enumerate() {
        let folder = dir.join(synset);
        std::fs::create_dir_all(&folder).unwrap();
        for k in 0..2u32 {
            let image = RgbImage::from_fn(48, 40, |x, y| {
                Rgb([
                    (x * 5) as u8,
                    (y * 6) as u8,
                    (class as u32 * 100 + k * 50) as u8,
                ])
            });
            image.save(folder.join(format!("{k}.png"))).unwrap();
        }
    }
}

fn options(dir: &Path, weights: &Path, limit: Option<usize>) -> ImageNetOptions {
    let none = |arch: &str| (arch.to_string(), "none".to_string());
    ImageNetOptions {
        imagenet: Some(dir.to_path_buf()),
        limit,
        device: "cpu".into(),
        out: dir.join("results"),
        profile: ProfileName::Smoke,
        seed: 0,
        precision: Precision::Fp32,
        channels_last: false,
        weights: vec![
            ("resnet34".into(), weights.display().to_string()),
            none("resnet50"),
            none("resnet101"),
            none("resnet152"),
        ],
    }
}

fn json(dir: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("results").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn evaluation_tables_report_our_rows_beside_the_papers() {
    let tmp = tempfile::tempdir().unwrap();
    validation_set(tmp.path());
    let weights = tmp.path().join("resnet34.safetensors");
    ResNet::new(
        &ArchSpec::from_id("resnet34").unwrap(),
        3,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .save(&weights)
    .unwrap();

    reproduce_imagenet(ImageNetTarget::Table3, options(tmp.path(), &weights, None)).unwrap();
    let table3 = json(tmp.path(), "table3.json");
    assert_eq!(table3["images"], 4);
    assert_eq!(table3["views"], "ten-crop");
    let rows = table3["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    let ours: Vec<_> = rows.iter().filter(|r| !r["ours"].is_null()).collect();
    assert_eq!(ours.len(), 1, "only ResNet-34 B has weights: {rows:?}");
    assert_eq!(ours[0]["model"], "ResNet-34 B");
    let top1 = ours[0]["ours"]["top1_pct"].as_f64().unwrap();
    let top5 = ours[0]["ours"]["top5_pct"].as_f64().unwrap();
    // Four images: errors are multiples of 25%, and top-5 never exceeds top-1.
    assert!([0.0, 25.0, 50.0, 75.0, 100.0].contains(&top1), "{top1}");
    assert!(top5 <= top1, "{top5} > {top1}");
    let md = std::fs::read_to_string(tmp.path().join("results/table3.md")).unwrap();
    assert!(md.contains("| ResNet-34 B | "), "{md}");
    assert!(md.contains("| plain-34 | - | 28.54 |"), "{md}");
    assert!(md.contains("no public weights"), "{md}");

    reproduce_imagenet(
        ImageNetTarget::Table4,
        options(tmp.path(), &weights, Some(2)),
    )
    .unwrap();
    let table4 = json(tmp.path(), "table4.json");
    assert_eq!(
        (table4["images"].as_u64(), table4["total_images"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(table4["views"], "multi-scale");
    let md = std::fs::read_to_string(tmp.path().join("results/table4.md")).unwrap();
    assert!(md.contains("evenly spaced subset"), "{md}");

    reproduce_imagenet(
        ImageNetTarget::Table5,
        options(tmp.path(), &weights, Some(2)),
    )
    .unwrap();
    let table5 = json(tmp.path(), "table5.json");
    assert_eq!(table5["members"].as_array().unwrap().len(), 1);
    assert!(table5["top5_pct"].as_f64().unwrap() <= table5["top1_pct"].as_f64().unwrap());
}

#[test]
fn without_imagenet_the_targets_say_what_they_need() {
    for target in [
        ImageNetTarget::Table2,
        ImageNetTarget::Fig4,
        ImageNetTarget::Table3,
        ImageNetTarget::Table4,
        ImageNetTarget::Table5,
    ] {
        let opts = ImageNetOptions {
            imagenet: None,
            limit: None,
            device: "cpu".into(),
            out: std::env::temp_dir(),
            profile: ProfileName::Paper,
            seed: 0,
            precision: Precision::Fp32,
            channels_last: false,
            weights: Vec::new(),
        };
        let err = reproduce_imagenet(target, opts).unwrap_err().to_string();
        assert!(
            err.contains("--imagenet DIR") && err.contains(target.name()),
            "{err}"
        );
    }
}

/// A train and a validation set in `dir`, and the options of the smoke
/// profile's training targets on them, writing into `dir/results`.
fn smoke_training(dir: &Path) -> ImageNetOptions {
    image_set(&dir.join("train"));
    validation_set(dir);
    ImageNetOptions {
        imagenet: Some(dir.to_path_buf()),
        limit: None,
        device: "cpu".into(),
        out: dir.join("results"),
        profile: ProfileName::Smoke,
        seed: 0,
        precision: Precision::Fp32,
        channels_last: false,
        weights: Vec::new(),
    }
}

#[test]
fn training_targets_smoke_train_four_nets_once_and_write_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let options = smoke_training(tmp.path());
    let opts = |target| reproduce_imagenet(target, options.clone());
    opts(ImageNetTarget::Table2).unwrap();
    let summary = tmp
        .path()
        .join("results/runs/imagenet-smoke/resnet34-seed0/summary.json");
    let trained = std::fs::metadata(&summary).unwrap().modified().unwrap();
    opts(ImageNetTarget::Fig4).unwrap();
    assert_eq!(
        std::fs::metadata(&summary).unwrap().modified().unwrap(),
        trained,
        "fig4 reused table2's runs"
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(summary.with_file_name("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["config"]["shortcut"], "A",
        "Table 2's ResNets use option A"
    );

    let table2 = json(tmp.path(), "table2.json");
    assert_eq!(table2["validation_images"], 4);
    // The world size and batch-norm groups, beside the paper's 8 GPUs of 32.
    for report in [&table2, &json(tmp.path(), "fig4.json")] {
        let p = &report["parallelism"];
        assert_eq!(p["world_sizes"], serde_json::json!([1]), "{p}");
        assert_eq!(p["paper"]["world_size"], 8, "{p}");
        assert_eq!(p["paper"]["bn_images"], 32, "{p}");
    }
    let md = std::fs::read_to_string(tmp.path().join("results/table2.md")).unwrap();
    assert!(
        md.contains("world size 1 (one process), batch 2")
            && md.contains("the paper: 8 GPUs x 32 images"),
        "{md}"
    );
    for row in table2["rows"].as_array().unwrap() {
        for key in ["plain_top1_pct", "resnet_top1_pct"] {
            let e = row[key].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&e), "{key} {e}");
        }
    }
    let fig4 = json(tmp.path(), "fig4.json");
    let nets: Vec<_> = fig4["nets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["arch"].clone())
        .collect();
    assert_eq!(nets, ["plain18", "plain34", "resnet18", "resnet34"]);
    // A few smoke iterations train nothing: neither finding can be shown.
    let verdicts: Vec<_> = fig4["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["verdict"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(verdicts, ["not shown at this scale"; 2]);
    for file in ["fig4.svg", "fig4.png", "fig4.md", "table2.md"] {
        assert!(tmp.path().join("results").join(file).is_file(), "{file}");
    }
}

#[test]
fn training_targets_have_no_quick_profile_and_need_train_and_val() {
    let tmp = tempfile::tempdir().unwrap();
    validation_set(tmp.path());
    let run = |profile| {
        reproduce_imagenet(
            ImageNetTarget::Table2,
            ImageNetOptions {
                imagenet: Some(tmp.path().to_path_buf()),
                limit: None,
                device: "cpu".into(),
                out: tmp.path().join("results"),
                profile,
                seed: 0,
                precision: Precision::Fp32,
                channels_last: false,
                weights: Vec::new(),
            },
        )
        .unwrap_err()
        .to_string()
    };
    let err = run(ProfileName::Smoke);
    assert!(err.contains("no train/ folder"), "{err}");
    image_set(&tmp.path().join("train"));
    let err = run(ProfileName::Quick);
    assert!(err.contains("no quick profile"), "{err}");
}

/// Two ranks (threads joined over TCP) train Table 2's smoke runs together:
/// rank 0 alone writes the runs and the reports, which record the world
/// size; the evaluation targets refuse to run on several ranks.
#[test]
fn two_ranks_train_table2_together_and_rank_0_alone_writes() {
    use resnet_repro::reproduce_imagenet_data_parallel;
    use resnet_train::collective::TcpWorld;

    let tmp = tempfile::tempdir().unwrap();
    // Every rank is given the same options, as the same command line.
    let options = smoke_training(tmp.path());
    let master = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let timeout = std::time::Duration::from_secs(120);
    let ended = std::thread::scope(|s| {
        let ranks = [0, 1].map(|rank| {
            let opts = options.clone();
            s.spawn(move || {
                let world = TcpWorld::join(rank, 2, master, timeout).unwrap();
                let table2 =
                    reproduce_imagenet_data_parallel(ImageNetTarget::Table2, opts.clone(), &world);
                let table3 = reproduce_imagenet_data_parallel(ImageNetTarget::Table3, opts, &world);
                (
                    table2.map_err(|e| format!("{e:#}")),
                    table3.unwrap_err().to_string(),
                )
            })
        });
        ranks.map(|rank| rank.join().unwrap())
    });
    for (rank, (table2, table3)) in ended.iter().enumerate() {
        assert!(table2.is_ok(), "rank {rank}: {ended:?}");
        assert!(
            table3.contains("table3 evaluates in one process"),
            "{table3}"
        );
    }
    let results = tmp.path().join("results");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("table2.json")).unwrap())
            .unwrap();
    let text = report.to_string();
    assert!(text.contains(r#""world_sizes":[2]"#), "{text}");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("runs/imagenet-smoke/resnet18-seed0/config.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config["world_size"], 2);
}
