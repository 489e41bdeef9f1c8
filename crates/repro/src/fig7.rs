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
use crate::plot::{Figure, LineStyle, Panel, Scale, Series};
use crate::report::write_atomic;
use crate::runs::FinishedRun;
use crate::Reproduction;

const NETS: [&str; 5] = ["plain20", "plain56", "resnet20", "resnet56", "resnet110"];

/// Per-layer standard deviation of the traced responses of a trained run
/// over the whole test split (each layer's std over all its elements).
pub fn layer_stds(run: &FinishedRun, device: &Device) -> Result<Vec<f64>> {
    let model = ResNet::new(&ArchSpec::from_id(&run.config.arch)?, 0, device)?;
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

/// Computes the responses of the five nets and writes `fig7.{md,json,svg,png}`.
pub fn write(r: &mut Reproduction) -> Result<()> {
    let seed = r.opts.seed;
    let device = r.opts.device.parse::<resnet_ops::DeviceSpec>()?.open()?;
    let runs = NETS
        .iter()
        .map(|a| r.run(a, seed))
        .collect::<Result<Vec<_>>>()?;
    let stds = runs
        .iter()
        .map(|run| layer_stds(run, &device))
        .collect::<Result<Vec<_>>>()?;
    let series = |sorted: bool| -> Vec<Series> {
        runs.iter()
            .zip(&stds)
            .enumerate()
            .map(|(i, (run, s))| {
                let mut s = s.clone();
                if sorted {
                    s.sort_by(|a, b| b.total_cmp(a));
                }
                Series {
                    label: display_name(&run.config.arch),
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

    let means: Vec<f64> = stds.iter().map(|s| mean(s)).collect();
    let smaller_than_plain = means[2] < means[0] && means[3] < means[1];
    let deeper_smaller = means[4] < means[3] && means[3] < means[2];
    let provenance = r.provenance("fig7", &runs.iter().collect::<Vec<_>>());
    let mut md = String::from("# Fig. 7: standard deviations of layer responses on CIFAR-10\n\n");
    writeln!(md, "{}", provenance.markdown())?;
    writeln!(md, "![Fig. 7](fig7.svg)\n\nResponses: the output of each 3x3 conv's BN, before ReLU or the addition, over the test images.\n")?;
    writeln!(
        md,
        "| net | 3x3 layers | mean std | max std |\n|---|---|---|---|"
    )?;
    for ((run, s), m) in runs.iter().zip(&stds).zip(&means) {
        writeln!(
            md,
            "| {} | {} | {m:.3} | {:.3} |",
            display_name(&run.config.arch),
            s.len(),
            s.iter().copied().fold(0.0, f64::max)
        )?;
    }
    writeln!(
        md,
        "\nThe paper: ResNets have generally smaller responses than their plain counterparts, and deeper ResNets smaller \
         ones still.\n\nHere: ResNet-20/56 respond less than plain-20/56 on average: {}; ResNet-110 < ResNet-56 < ResNet-20: {}.",
        if smaller_than_plain { "holds" } else { "does NOT show at this scale" },
        if deeper_smaller { "holds" } else { "does NOT show at this scale" },
    )?;
    write_atomic(&r.opts.out, "fig7.md", &md)?;
    let record = json!({
        "provenance": provenance,
        "nets": runs.iter().zip(&stds).map(|(run, s)| json!({ "arch": run.config.arch, "layer_std": s })).collect::<Vec<_>>(),
        "resnets_smaller_than_plain": smaller_than_plain,
        "deeper_resnets_smaller": deeper_smaller,
    });
    write_atomic(
        &r.opts.out,
        "fig7.json",
        &serde_json::to_string_pretty(&record)?,
    )
}
