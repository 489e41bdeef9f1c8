//! Fig. 6: training (dashed) and test (bold) error of CIFAR-10 plain nets
//! and ResNets of growing depth, in three panels.

use std::fmt::Write;

use anyhow::Result;
use serde_json::json;

use crate::curves::{
    curves_json, display_name, final_test_error, final_train_error, test_series, train_series,
};
use crate::plot::{Figure, Panel, Scale};
use crate::report::write_atomic;
use crate::runs::FinishedRun;
use crate::Reproduction;

/// The depths both families are trained at (plain-110 and ResNet-1202 are
/// added when the profile trains them).
pub(crate) const DEPTHS: [usize; 4] = [20, 32, 44, 56];

fn panel(title: &str, runs: &[&FinishedRun]) -> Panel {
    let mut series = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        series.push(train_series(run, i));
        series.push(test_series(run, i));
    }
    Panel {
        title: title.into(),
        x_label: "iteration".into(),
        y_label: "error (%)".into(),
        y_scale: Scale::Linear,
        y_range: None,
        series,
    }
}

/// The plain nets and ResNets of Fig. 6 for the profile.
pub(crate) fn nets(r: &Reproduction) -> (Vec<String>, Vec<String>) {
    let p = &r.opts.profile;
    let mut plain: Vec<String> = DEPTHS.iter().map(|d| format!("plain{d}")).collect();
    if p.with_plain110 {
        plain.push("plain110".into());
    }
    let mut resnets: Vec<String> = DEPTHS.iter().map(|d| format!("resnet{d}")).collect();
    resnets.push("resnet110".into());
    if p.with_1202 {
        resnets.push("resnet1202".into());
    }
    (plain, resnets)
}

/// Trains (or reuses) every net and writes `fig6.{md,json,svg,png}`.
pub fn write(r: &mut Reproduction) -> Result<()> {
    let seed = r.opts.seed;
    let (plain_ids, resnet_ids) = nets(r);
    let plain = plain_ids
        .iter()
        .map(|a| r.run(a, seed))
        .collect::<Result<Vec<_>>>()?;
    let resnets = resnet_ids
        .iter()
        .map(|a| r.run(a, seed))
        .collect::<Result<Vec<_>>>()?;
    let deep: Vec<&FinishedRun> = resnets
        .iter()
        .filter(|run| run.config.arch.ends_with("110") || run.config.arch.ends_with("1202"))
        .collect();
    let right_title = if r.opts.profile.with_1202 {
        "ResNet-110 and ResNet-1202"
    } else {
        "ResNet-110 (1202 not trained)"
    };
    let figure = Figure {
        title: format!(
            "Fig. 6 ({} profile): CIFAR-10, training dashed, test bold",
            r.opts.profile.name
        ),
        panels: vec![
            panel("plain nets", &plain.iter().collect::<Vec<_>>()),
            panel(
                "ResNets",
                &resnets
                    .iter()
                    .filter(|run| !run.config.arch.ends_with("1202"))
                    .collect::<Vec<_>>(),
            ),
            panel(right_title, &deep),
        ],
    };
    figure.write(&r.opts.out, "fig6")?;

    let all: Vec<&FinishedRun> = plain.iter().chain(&resnets).collect();
    let mut md =
        String::from("# Fig. 6: training and test error of CIFAR-10 plain nets and ResNets\n\n");
    writeln!(md, "{}", r.provenance("fig6", &all).markdown())?;
    writeln!(md, "![Fig. 6](fig6.svg)\n")?;
    writeln!(md, "| depth | plain train (%) | plain test (%) | ResNet train (%) | ResNet test (%) | ResNet lower training error |\n|---|---|---|---|---|---|")?;
    let mut findings = Vec::new();
    for run in &resnets {
        let depth = run.config.arch.trim_start_matches("resnet");
        let twin = plain
            .iter()
            .find(|p| p.config.arch.trim_start_matches("plain") == depth);
        let res_train = final_train_error(&run.metrics);
        let (plain_train, plain_test, lower) = match twin {
            Some(p) => {
                let t = final_train_error(&p.metrics);
                (
                    format!("{t:.2}"),
                    format!("{:.2}", final_test_error(p)),
                    Some(res_train < t),
                )
            }
            None => ("-".into(), "-".into(), None),
        };
        if let Some(lower) = lower {
            findings.push((depth.to_string(), lower));
        }
        writeln!(
            md,
            "| {depth} | {plain_train} | {plain_test} | {res_train:.2} | {:.2} | {} |",
            final_test_error(run),
            lower.map_or("-", |l| if l { "yes" } else { "**no**" })
        )?;
    }
    let all_lower = findings.iter().all(|(_, l)| *l);
    writeln!(
        md,
        "\nThe paper: deeper plain nets have higher training error (left); deeper ResNets have lower error (middle); \
         ResNet-1202 overfits relative to ResNet-110 (right).\n\nHere: every ResNet ends with lower training error than \
         the plain net of the same depth: {}.",
        if all_lower { "holds".to_string() } else {
            let failed: Vec<_> = findings.iter().filter(|(_, l)| !l).map(|(d, _)| d.as_str()).collect();
            format!("does NOT show at this scale for depth {}", failed.join(", "))
        }
    )?;
    write_atomic(&r.opts.out, "fig6.md", &md)?;
    let nets_json = |runs: &[FinishedRun]| -> Vec<serde_json::Value> {
        runs.iter().map(|run| json!({
            "arch": run.config.arch, "name": display_name(&run.config.arch),
            "final_train_error_pct": final_train_error(&run.metrics), "final_test_error_pct": final_test_error(run),
            "curves": curves_json(run),
        })).collect()
    };
    let record = json!({
        "provenance": r.provenance("fig6", &all),
        "plain": nets_json(&plain),
        "resnets": nets_json(&resnets),
        "every_resnet_lower_train_error_than_plain_twin": all_lower,
    });
    write_atomic(
        &r.opts.out,
        "fig6.json",
        &serde_json::to_string_pretty(&record)?,
    )
}
