//! Fig. 1: training and test error of plain-20 and plain-56 on CIFAR-10,
//! the degradation problem.

use std::fmt::Write;

use anyhow::Result;
use serde_json::json;

use crate::curves::{
    curves_json, display_name, final_test_error, final_train_error, test_series, train_series,
};
use crate::plot::{Figure, Panel, Scale};
use crate::report::write_atomic;
use crate::Reproduction;

const NETS: [&str; 2] = ["plain20", "plain56"];

/// Trains (or reuses) the two plain nets and writes `fig1.{md,json,svg,png}`.
pub fn write(r: &mut Reproduction) -> Result<()> {
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

    let (train20, train56) = (
        final_train_error(&runs[0].metrics),
        final_train_error(&runs[1].metrics),
    );
    let (test20, test56) = (final_test_error(&runs[0]), final_test_error(&runs[1]));
    let degradation = train56 > train20;
    let mut md =
        String::from("# Fig. 1: training and test error of plain-20 and plain-56 on CIFAR-10\n\n");
    writeln!(
        md,
        "{}",
        r.provenance("fig1", &runs.iter().collect::<Vec<_>>())
            .markdown()
    )?;
    writeln!(md, "![Fig. 1](fig1.svg)\n")?;
    writeln!(
        md,
        "| net | final training error (%) | final test error (%) |\n|---|---|---|"
    )?;
    for (run, (train, test)) in runs.iter().zip([(train20, test20), (train56, test56)]) {
        writeln!(
            md,
            "| {} | {train:.2} | {test:.2} |",
            display_name(&run.config.arch)
        )?;
    }
    writeln!(
        md,
        "\nThe paper: the deeper plain-56 has higher training error (and so higher test error) than plain-20 \
         throughout training: degradation, not overfitting.\n\nHere: plain-56 ends with {} training error than plain-20 \
         ({train56:.2}% vs {train20:.2}%): the finding {}; its test error is {test56:.2}% vs {test20:.2}%.",
        if degradation { "higher" } else { "lower" },
        if degradation { "holds" } else { "does NOT show at this scale" },
    )?;
    write_atomic(&r.opts.out, "fig1.md", &md)?;
    let record = json!({
        "provenance": r.provenance("fig1", &runs.iter().collect::<Vec<_>>()),
        "nets": runs.iter().zip([(train20, test20), (train56, test56)]).map(|(run, (train, test))| json!({
            "arch": run.config.arch, "final_train_error_pct": train, "final_test_error_pct": test, "curves": curves_json(run),
        })).collect::<Vec<_>>(),
        "plain56_higher_train_error_than_plain20": degradation,
    });
    write_atomic(
        &r.opts.out,
        "fig1.json",
        &serde_json::to_string_pretty(&record)?,
    )
}
