//! The smoke profile end to end: every target produces every file, and each
//! file parses (JSON valid, SVG well-formed, PNG decodes).

use resnet_repro::{reproduce, Options, Profile, ProfileName, Target};

#[test]
fn smoke_profile_writes_every_file_and_each_parses() {
    let out = tempfile::tempdir().unwrap();
    let data = resnet_test_support::cifar_sample();
    let opts = Options {
        profile: Profile::new(ProfileName::Smoke),
        data,
        device: "cpu".into(),
        seed: 0,
        out: out.path().to_path_buf(),
    };
    reproduce(Target::All, opts.clone()).unwrap();
    for name in ["table1", "fig1", "fig6", "table6", "fig7"] {
        let md = std::fs::read_to_string(out.path().join(format!("{name}.md"))).unwrap();
        assert!(md.starts_with("# "), "{name}.md: {md}");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        assert!(json.is_object() || json.is_array(), "{name}.json");
        if name.starts_with("fig") {
            assert!(
                md.contains("Profile **smoke**") && md.contains("Deviations from the paper"),
                "{name}.md: {md}"
            );
            let svg = std::fs::read_to_string(out.path().join(format!("{name}.svg"))).unwrap();
            roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}.svg: {e}"));
            let png = std::fs::File::open(out.path().join(format!("{name}.png"))).unwrap();
            let mut reader = png::Decoder::new(std::io::BufReader::new(png))
                .read_info()
                .unwrap();
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert!(
                info.width >= 600 && info.height >= 400,
                "{name}.png: {}x{}",
                info.width,
                info.height
            );
        }
    }
    // Every report carries its deviations under stable ids.
    for name in ["fig1", "fig6", "table6", "fig7"] {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let ids: Vec<&str> = json["provenance"]["deviations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        for id in [
            "train-images",
            "test-images",
            "iterations",
            "lr",
            "runs",
            "init",
            "update-rule",
            "bn-batch",
        ] {
            assert!(ids.contains(&id), "{name}.json lacks {id}: {ids:?}");
        }
        // ResNet-110 is in every report but Fig. 1.
        assert_eq!(
            ids.contains(&"warmup-end"),
            name != "fig1",
            "{name}: {ids:?}"
        );
    }
    // Every report records the world size and batch-norm groups beside the
    // paper's: one process normalising its whole batch of 8.
    for name in ["fig1", "fig6", "table6", "fig7"] {
        let text = std::fs::read_to_string(out.path().join(format!("{name}.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let p = &json["provenance"]["parallelism"];
        assert_eq!(p["world_sizes"], serde_json::json!([1]), "{name}: {p}");
        assert_eq!(p["bn_images"], serde_json::json!([8]), "{name}: {p}");
        assert_eq!(p["paper"]["world_size"], 2, "{name}: {p}");
        assert_eq!(p["paper"]["bn_images"], 64, "{name}: {p}");
        assert_eq!(p["as_paper"], false, "{name}: {p}");
        let md = std::fs::read_to_string(out.path().join(format!("{name}.md"))).unwrap();
        assert!(
            md.contains("_Parallelism: world size 1 (one process), batch 8")
                && md.contains("the paper: 2 GPUs x 64 images"),
            "{name}.md: {md}"
        );
    }

    // Two iterations train nothing: no finding can hold.
    let fig1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("fig1.json")).unwrap())
            .unwrap();
    assert_eq!(fig1["findings"][0]["verdict"], "not shown at this scale");
    let index = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    for file in [
        "table1.md",
        "fig1.png",
        "fig6.svg",
        "table6.json",
        "fig7.md",
    ] {
        assert!(index.contains(&format!("({file})")), "{file}: {index}");
    }

    let table6: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("table6.json")).unwrap())
            .unwrap();
    let rows = table6["rows"].as_array().unwrap();
    assert_eq!(rows[0]["arch"], "resnet20");
    assert_eq!(rows[0]["params"], 269_722);
    assert_eq!(rows[0]["paper_error_pct"], 8.75);

    // Rerunning reuses the finished runs: nothing is retrained, only re-plotted.
    let summary = out.path().join("runs/smoke/resnet20-seed0/summary.json");
    let before = std::fs::metadata(&summary).unwrap().modified().unwrap();
    reproduce(Target::Fig6, opts.clone()).unwrap();
    assert_eq!(
        std::fs::metadata(&summary).unwrap().modified().unwrap(),
        before
    );

    // A reused run records the world size its config.json says it trained
    // on (as a run trained by `mpirun -n 2` would): its 2 ranks each
    // normalised 4 of the 8 images.
    let config = out.path().join("runs/smoke/plain20-seed0/config.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    file["world_size"] = 2.into();
    std::fs::write(&config, file.to_string()).unwrap();
    reproduce(Target::Fig1, opts).unwrap();
    let fig1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("fig1.json")).unwrap())
            .unwrap();
    let p = &fig1["provenance"]["parallelism"];
    assert_eq!(p["world_sizes"], serde_json::json!([1, 2]), "{p}");
    assert_eq!(p["bn_images"], serde_json::json!([8, 4]), "{p}");
    let md = std::fs::read_to_string(out.path().join("fig1.md")).unwrap();
    assert!(
        md.contains("world sizes 1 and 2 (the runs differ)")
            && md.contains("each of 2 ranks' 4 images"),
        "{md}"
    );
}
