//! Fig. 7: standard deviation of every 3x3 layer's response (after BN,
//! before the nonlinearity) on the CIFAR-10 test set.

use std::fmt::Write;
use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use resnet_data::{Cifar10, EvalLoader};
use resnet_models::{ArchSpec, ResNet, Trace};
use serde_json::json;

use crate::curves::display_name;
use crate::index::Entry;
use crate::plot::{Figure, LineStyle, Panel, Scale, Series};
use crate::report::write_report;
use crate::runs::FinishedRun;
use crate::verdict::{smaller_beyond_spread, Finding, NetResult, Verdict, TRAINED_RULE};
use crate::Reproduction;

const NETS: [&str; 5] = ["plain20", "plain56", "resnet20", "resnet56", "resnet110"];

/// Per-layer standard deviation of the traced responses of a trained run
/// over the whole test split (each layer's std over all its elements).
pub fn layer_stds(run: &FinishedRun, device: &Device) -> Result<Vec<f64>> {
    let model = ResNet::new(&ArchSpec::from_id(&run.config.arch)?, 0, device)?
        .with_precision(run.config.precision);
    let weights = resnet_eval::resolve_weights(&run.dir)?;
    let norm = resnet_eval::load_weights(&model, &weights)?
        .ok_or_else(|| anyhow::anyhow!("{}: weights carry no normalization", weights.display()))?;
    let test = Cifar10::load(&run.config.data)?.test;
    let mut sums: Vec<(f64, f64, f64)> = Vec::new();
    for batch in EvalLoader::new(Arc::new(test), norm, 256, run.config.loader_threads)? {
        let (x, _) = batch.to_tensors(device)?;
        let mut trace = Trace::default();
        model.forward_traced(&x, false, &mut trace)?;
        sums.resize(trace.responses.len(), (0.0, 0.0, 0.0));
        for ((_, response), acc) in trace.responses.iter().zip(&mut sums) {
            let r = response.to_dtype(candle_core::DType::F64)?;
            acc.0 += r.sum_all()?.to_scalar::<f64>()?;
            acc.1 += r.sqr()?.sum_all()?.to_scalar::<f64>()?;
            acc.2 += r.elem_count() as f64;
        }
    }
    Ok(sums
        .iter()
        .map(|(s, sq, n)| (sq / n - (s / n).powi(2)).max(0.0).sqrt())
        .collect())
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// One finding of Fig. 7: in each `(smaller, larger)` pair of net indices,
/// the first net's mean response (per seed, in `means`) is below the
/// second's by more than the seed spread, and every net trained.
fn ordering(
    claim: &str,
    pairs: &[(usize, usize)],
    means: &[Vec<f64>],
    runs: &[Vec<FinishedRun>],
) -> Finding {
    let name = |i: usize| display_name(NETS[i]);
    let mut verdicts = Vec::new();
    let mut details = Vec::new();
    for &(a, b) in pairs {
        let (v, detail) = smaller_beyond_spread((&name(a), &means[a]), (&name(b), &means[b]));
        verdicts.push(v);
        details.push(detail);
    }
    let mut verdict = Verdict::all(&verdicts);
    let untrained: Vec<String> = pairs
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .flat_map(|i| &runs[i])
        .map(NetResult::of)
        .filter(|n| !n.trained())
        .map(|n| format!("{} ended at {:.1}% training error", n.name, n.train_pct))
        .collect();
    if !untrained.is_empty() {
        verdict = Verdict::NotShown;
        details.push(format!(
            "{}: it did not train, and the responses of an untrained net say nothing",
            untrained.join(", ")
        ));
    }
    Finding {
        claim: claim.to_string(),
        verdict,
        detail: format!("Mean std of the 3x3 responses: {}.", details.join("; ")),
    }
}

/// Computes the responses of the five nets over the Fig. 7 seeds and writes
/// `fig7.{md,json,svg,png}` (the plots show the first seed).
pub fn write(r: &mut Reproduction) -> Result<Entry> {
    let seeds = r.fig7_seeds();
    let device = r.opts.device.parse::<resnet_ops::DeviceSpec>()?.open()?;
    let runs = NETS
        .iter()
        .map(|a| {
            seeds
                .iter()
                .map(|&s| r.run(a, s))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let all_stds = runs
        .iter()
        .map(|net| {
            net.iter()
                .map(|run| layer_stds(run, &device))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let stds: Vec<&Vec<f64>> = all_stds.iter().map(|per_seed| &per_seed[0]).collect();
    let series = |sorted: bool| -> Vec<Series> {
        runs.iter()
            .zip(&stds)
            .enumerate()
            .map(|(i, (net, s))| {
                let mut s = (*s).clone();
                if sorted {
                    s.sort_by(|a, b| b.total_cmp(a));
                }
                Series {
                    label: display_name(&net[0].config.arch),
                    points: s
                        .iter()
                        .enumerate()
                        .map(|(k, v)| ((k + 1) as f64, *v))
                        .collect(),
                    style: LineStyle::Bold,
                    color: i,
                }
            })
            .collect()
    };
    let panel = |title: &str, x_label: &str, sorted| Panel {
        title: title.into(),
        x_label: x_label.into(),
        y_label: "std".into(),
        y_scale: Scale::Linear,
        y_range: None,
        series: series(sorted),
    };
    Figure {
        title: format!(
            "Fig. 7 ({} profile): std of 3x3 layer responses on the CIFAR-10 test set",
            r.opts.profile.name
        ),
        panels: vec![
            panel("in network order", "layer index (original)", false),
            panel("sorted by magnitude", "layer index (sorted)", true),
        ],
    }
    .write(&r.opts.out, "fig7")?;

    // Per net, the mean over its layers of each seed's response stds.
    let means: Vec<Vec<f64>> = all_stds
        .iter()
        .map(|per_seed| per_seed.iter().map(|s| mean(s)).collect())
        .collect();
    let findings = vec![
        ordering(
            "ResNets respond less than their plain counterparts (ResNet-20 < plain-20, ResNet-56 < plain-56)",
            &[(2, 0), (3, 1)],
            &means,
            &runs,
        ),
        ordering(
            "deeper ResNets respond less (ResNet-110 < ResNet-56 < ResNet-20)",
            &[(4, 3), (3, 2)],
            &means,
            &runs,
        ),
    ];
    let flat: Vec<&FinishedRun> = runs.iter().flatten().collect();
    let provenance = r.provenance("fig7", &flat);
    let mut md = String::from("# Fig. 7: standard deviations of layer responses on CIFAR-10\n\n");
    writeln!(md, "{}", provenance.markdown())?;
    writeln!(md, "![Fig. 7](fig7.svg)\n\nResponses: the output of each 3x3 conv's BN, before ReLU or the addition, over the test images. The plots show seed {}.\n", seeds[0])?;
    writeln!(
        md,
        "| net | 3x3 layers | mean std (per seed) | max std (seed {}) |\n|---|---|---|---|",
        seeds[0]
    )?;
    for ((net, s), m) in runs.iter().zip(&stds).zip(&means) {
        let per_seed: Vec<String> = m.iter().map(|v| format!("{v:.3}")).collect();
        writeln!(
            md,
            "| {} | {} | {} | {:.3} |",
            display_name(&net[0].config.arch),
            s.len(),
            per_seed.join(", "),
            s.iter().copied().fold(0.0, f64::max)
        )?;
    }
    writeln!(
        md,
        "\nThe paper: ResNets have generally smaller responses than their plain counterparts, and deeper ResNets \
         smaller ones still.\n\nHere:"
    )?;
    for f in &findings {
        writeln!(md, "{}", f.markdown())?;
    }
    writeln!(md, "\nRule: {TRAINED_RULE}.")?;
    write_report(&r.opts.out, "fig7.md", &md)?;
    let record = json!({
        "provenance": provenance,
        "nets": runs.iter().zip(&all_stds).map(|(net, per_seed)| json!({
            "arch": net[0].config.arch,
            "seeds": net.iter().map(|run| run.config.seed).collect::<Vec<_>>(),
            "layer_std": per_seed,
        })).collect::<Vec<_>>(),
        "findings": findings,
        "rule": TRAINED_RULE,
    });
    write_report(
        &r.opts.out,
        "fig7.json",
        &serde_json::to_string_pretty(&record)?,
    )?;
    Ok(Entry::figure(
        "fig7",
        "Fig. 7: std of 3x3 layer responses",
        findings,
    ))
}
