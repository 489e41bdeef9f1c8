//! Fig. 1: training and test error of plain-20 and plain-56 on CIFAR-10,
//! the degradation problem.

use std::fmt::Write;

use anyhow::Result;
use serde_json::json;

use crate::curves::{curves_json, test_series, train_series};
use crate::index::Entry;
use crate::plot::{Figure, Panel, Scale};
use crate::report::write_report;
use crate::verdict::{degradation, NetResult, TRAINED_RULE};
use crate::Reproduction;

const NETS: [&str; 2] = ["plain20", "plain56"];

/// Trains (or reuses) the two plain nets and writes `fig1.{md,json,svg,png}`.
pub fn write(r: &mut Reproduction) -> Result<Entry> {
    let seed = r.opts.seed;
    let runs = NETS
        .iter()
        .map(|a| r.run(a, seed))
        .collect::<Result<Vec<_>>>()?;
    let panel = |title: &str, series| Panel {
        title: title.into(),
        x_label: "iteration".into(),
        y_label: "error (%)".into(),
        y_scale: Scale::Linear,
        y_range: None,
        series,
    };
    let figure = Figure {
        title: format!(
            "Fig. 1 ({} profile): plain nets on CIFAR-10",
            r.opts.profile.name
        ),
        panels: vec![
            panel(
                "training error",
                runs.iter()
                    .enumerate()
                    .map(|(i, run)| train_series(run, i))
                    .collect(),
            ),
            panel(
                "test error",
                runs.iter()
                    .enumerate()
                    .map(|(i, run)| test_series(run, i))
                    .collect(),
            ),
        ],
    };
    figure.write(&r.opts.out, "fig1")?;

    let results: Vec<NetResult> = runs.iter().map(NetResult::of).collect();
    let finding = degradation(&results[0], &results[1]);
    let provenance = r.provenance("fig1", &runs.iter().collect::<Vec<_>>());
    let mut md =
        String::from("# Fig. 1: training and test error of plain-20 and plain-56 on CIFAR-10\n\n");
    writeln!(md, "{}", provenance.markdown())?;
    writeln!(md, "![Fig. 1](fig1.svg)\n")?;
    writeln!(
        md,
        "| net | final training error (%) | final test error (%) |\n|---|---|---|"
    )?;
    for net in &results {
        writeln!(
            md,
            "| {} | {:.2} | {:.2} |",
            net.name, net.train_pct, net.test_pct
        )?;
    }
    writeln!(
        md,
        "\nThe paper: the deeper plain-56 has higher training error (and so higher test error) than plain-20 \
         throughout training: degradation, not overfitting.\n\nHere:\n{}\n\nRule: {TRAINED_RULE}.",
        finding.markdown()
    )?;
    write_report(&r.opts.out, "fig1.md", &md)?;
    let record = json!({
        "provenance": provenance,
        "nets": runs.iter().zip(&results).map(|(run, net)| json!({
            "arch": run.config.arch, "final_train_error_pct": net.train_pct, "final_test_error_pct": net.test_pct,
            "trained": net.trained(), "curves": curves_json(run),
        })).collect::<Vec<_>>(),
        "findings": [&finding],
        "rule": TRAINED_RULE,
    });
    write_report(
        &r.opts.out,
        "fig1.json",
        &serde_json::to_string_pretty(&record)?,
    )?;
    Ok(Entry::figure(
        "fig1",
        "Fig. 1: plain-20 vs plain-56 (degradation)",
        vec![finding],
    ))
}
