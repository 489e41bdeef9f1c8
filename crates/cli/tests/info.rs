//! The `resnet info` command as a user runs it.

use std::process::Output;

fn resnet(args: &[&str]) -> Output {
    resnet_test_support::run(env!("CARGO_BIN_EXE_resnet"), args)
}

#[test]
fn info_json_reports_params_and_flops() {
    let out = resnet(&["info", "--arch", "resnet18", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["arch"], "resnet18");
    assert_eq!(v["params"], 11_689_512);
    let flops = v["flops"].as_f64().unwrap();
    assert!((flops / 1.8e9 - 1.0).abs() < 0.03, "{flops}");
    assert_eq!(v["layers"].as_array().unwrap().len(), 6);
}

#[test]
fn info_table_lists_every_stage_and_applies_spec_flags() {
    let out = resnet(&["info", "--arch", "resnet34", "--shortcut", "A"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for layer in [
        "conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "fc", "total",
    ] {
        assert!(text.contains(layer), "{text}");
    }
    // Option A removes the three projections of ResNet-34 B.
    let a: serde_json::Value = serde_json::from_slice(
        &resnet(&["info", "--arch", "resnet34", "--shortcut", "A", "--json"]).stdout,
    )
    .unwrap();
    let b: serde_json::Value =
        serde_json::from_slice(&resnet(&["info", "--arch", "resnet34", "--json"]).stdout).unwrap();
    assert!(a["params"].as_u64().unwrap() < b["params"].as_u64().unwrap());
}

#[test]
fn bad_flags_are_one_clear_line_and_a_failure() {
    for (args, needle) in [
        (
            vec!["info", "--arch", "resnet19"],
            "unknown architecture `resnet19`",
        ),
        (
            vec!["info", "--arch", "resnet20", "--num-classes", "0"],
            "--num-classes",
        ),
    ] {
        let out = resnet(&args);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A value outside a flag's choices: clap's error, naming the flag and the choices.
    let out = resnet(&["info", "--arch", "resnet50", "--stride-placement", "v2"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("invalid value 'v2' for '--stride-placement")
            && err.contains("[possible values: v1, v1.5]"),
        "{err}"
    );
}
