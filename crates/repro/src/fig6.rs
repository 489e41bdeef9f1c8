//! Fig. 6: training (dashed) and test (bold) error of CIFAR-10 plain nets
//! and ResNets of growing depth, in three panels.

use std::fmt::Write;

use anyhow::Result;
use serde_json::json;

use crate::curves::{curves_json, test_series, train_series};
use crate::index::Entry;
use crate::plot::{Figure, Panel, Scale};
use crate::profile::Profile;
use crate::report::write_report;
use crate::runs::FinishedRun;
use crate::verdict::{depth_order, lower_than_twins, overfits, NetResult, TRAINED_RULE};
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
pub(crate) fn nets(p: &Profile) -> (Vec<String>, Vec<String>) {
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
pub fn write(r: &mut Reproduction) -> Result<Entry> {
    let seed = r.opts.seed;
    let (plain_ids, resnet_ids) = nets(&r.opts.profile);
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
    let findings = findings(&plain, &resnets);
    let provenance = r.provenance("fig6", &all);
    let mut md =
        String::from("# Fig. 6: training and test error of CIFAR-10 plain nets and ResNets\n\n");
    writeln!(md, "{}", provenance.markdown())?;
    writeln!(md, "![Fig. 6](fig6.svg)\n")?;
    writeln!(md, "| depth | plain train (%) | plain test (%) | ResNet train (%) | ResNet test (%) |\n|---|---|---|---|---|")?;
    for run in &resnets {
        let depth = run.config.arch.trim_start_matches("resnet");
        let ours = NetResult::of(run);
        let twin = plain
            .iter()
            .find(|p| p.config.arch.trim_start_matches("plain") == depth)
            .map(NetResult::of);
        let (plain_train, plain_test) = twin.map_or(("-".into(), "-".into()), |t| {
            (format!("{:.2}", t.train_pct), format!("{:.2}", t.test_pct))
        });
        writeln!(
            md,
            "| {depth} | {plain_train} | {plain_test} | {:.2} | {:.2} |",
            ours.train_pct, ours.test_pct
        )?;
    }
    writeln!(
        md,
        "\nThe paper: deeper plain nets have higher training error (left); deeper ResNets have lower error \
         (middle); ResNet-1202 overfits relative to ResNet-110 (right).\n\nHere:"
    )?;
    for f in &findings {
        writeln!(md, "{}", f.markdown())?;
    }
    writeln!(md, "\nRule: {TRAINED_RULE}.")?;
    write_report(&r.opts.out, "fig6.md", &md)?;
    let nets_json =
        |runs: &[FinishedRun]| -> Vec<serde_json::Value> {
            runs.iter().map(|run| {
            let net = NetResult::of(run);
            json!({
                "arch": run.config.arch, "name": net.name,
                "final_train_error_pct": net.train_pct, "final_test_error_pct": net.test_pct,
                "trained": net.trained(), "curves": curves_json(run),
            })
        }).collect()
        };
    let record = json!({
        "provenance": provenance,
        "plain": nets_json(&plain),
        "resnets": nets_json(&resnets),
        "findings": findings,
        "rule": TRAINED_RULE,
    });
    write_report(
        &r.opts.out,
        "fig6.json",
        &serde_json::to_string_pretty(&record)?,
    )?;
    Ok(Entry::figure(
        "fig6",
        "Fig. 6: plain nets and ResNets by depth",
        findings,
    ))
}

/// The findings of Fig. 6 over the depths both families share (20 to 56;
/// the paper leaves plain-110 out of the figure), ResNet-110 against
/// ResNet-56, and ResNet-1202 against ResNet-110 when it was trained.
fn findings(plain: &[FinishedRun], resnets: &[FinishedRun]) -> Vec<crate::verdict::Finding> {
    let of = |runs: &[FinishedRun], family: &str, depth: usize| {
        runs.iter()
            .find(|r| r.config.arch == format!("{family}{depth}"))
            .map(NetResult::of)
    };
    let shared = |runs: &[FinishedRun], family: &str| -> Vec<NetResult> {
        DEPTHS.iter().filter_map(|&d| of(runs, family, d)).collect()
    };
    let mut out = vec![
        depth_order(
            "deeper plain nets (20 to 56 layers) end with higher training error",
            &shared(plain, "plain"),
            true,
        ),
        depth_order(
            "deeper ResNets (20 to 56 layers) end with lower training error",
            &shared(resnets, "resnet"),
            false,
        ),
    ];
    if let (Some(r56), Some(r110)) = (of(resnets, "resnet", 56), of(resnets, "resnet", 110)) {
        out.push(depth_order(
            "ResNet-110 ends with lower training error than ResNet-56",
            &[r56, r110],
            false,
        ));
    }
    let pairs: Vec<(NetResult, NetResult)> = DEPTHS
        .iter()
        .filter_map(|&d| Some((of(resnets, "resnet", d)?, of(plain, "plain", d)?)))
        .collect();
    out.push(lower_than_twins(&pairs));
    if let (Some(r110), Some(r1202)) = (of(resnets, "resnet", 110), of(resnets, "resnet", 1202)) {
        out.push(overfits(&r110, &r1202));
    }
    out
}
