//! `reproduce table1`: the paper's Table 1 (architectures, FLOPs) with our
//! exact counts beside the paper's numbers, plus the plain nets and the
//! CIFAR-10 ResNets of Table 6's parameter column.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use resnet_models::{count, layer_table, ArchSpec, StridePlacement};
use serde_json::{json, Value};

use crate::report::{commit, today, write_report};

/// The ImageNet columns of Table 1 with the paper's FLOPs (multiply-adds).
const IMAGENET: [(&str, f64); 5] = [
    ("resnet18", 1.8e9),
    ("resnet34", 3.6e9),
    ("resnet50", 3.8e9),
    ("resnet101", 7.6e9),
    ("resnet152", 11.3e9),
];
/// Plain nets cost the same as their ResNet twins (Section 4.1).
const PLAIN: [(&str, f64); 2] = [("plain18", 1.8e9), ("plain34", 3.6e9)];
/// CIFAR-10 ResNets with the paper's parameter counts (Table 6).
const CIFAR: [(&str, f64); 6] = [
    ("resnet20", 0.27e6),
    ("resnet32", 0.46e6),
    ("resnet44", 0.66e6),
    ("resnet56", 0.85e6),
    ("resnet110", 1.7e6),
    ("resnet1202", 19.4e6),
];

fn percent_diff(ours: f64, paper: f64) -> String {
    format!("{:+.1}%", 100.0 * (ours / paper - 1.0))
}

fn giga(x: f64) -> String {
    format!("{:.2}x10^9", x / 1e9)
}

fn mega(x: f64) -> String {
    format!("{:.2}M", x / 1e6)
}

fn spec(id: &str) -> Result<ArchSpec> {
    Ok(ArchSpec::from_id(id)?)
}

/// The Table 1 grid: one row per layer group, one column per depth.
fn layer_grid(md: &mut String, specs: &[ArchSpec]) -> Result<()> {
    let tables: Vec<_> = specs.iter().map(|s| layer_table(s, 224)).collect();
    write!(md, "| layer name | output size |")?;
    for s in specs {
        write!(md, " {}-layer |", s.depth())?;
    }
    writeln!(md, "\n|---|---|{}", "---|".repeat(specs.len()))?;
    for (i, row) in tables[0].iter().enumerate() {
        write!(md, "| {} | {o}x{o} |", row.name, o = row.output)?;
        for table in &tables {
            write!(md, " {} |", table[i].description)?;
        }
        writeln!(md)?;
    }
    Ok(())
}

/// Writes `table1.md` and `table1.json` into `out`.
pub fn write(out: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let mut records: Vec<Value> = Vec::new();
    let mut md = String::new();
    writeln!(
        md,
        "# Table 1: architectures for ImageNet, with parameters and FLOPs\n"
    )?;
    writeln!(
        md,
        "FLOPs are multiply-adds of all convolutions and the fc layer for one 224x224 image, as the paper counts them; \
         parameters are learnable tensors (BN running statistics excluded). Bottleneck nets use the paper's v1 stride \
         placement (stride on the first 1x1) and option B shortcuts.\n"
    )?;

    let imagenet: Vec<ArchSpec> = IMAGENET
        .iter()
        .map(|(id, _)| spec(id))
        .collect::<Result<_>>()?;
    layer_grid(&mut md, &imagenet)?;
    let mut params_row = "| params (ours) | |".to_string();
    let mut ours_row = "| FLOPs (ours) | |".to_string();
    let mut paper_row = "| FLOPs (paper) | |".to_string();
    let mut diff_row = "| difference | |".to_string();
    for (s, (_, paper)) in imagenet.iter().zip(IMAGENET) {
        let c = count(s, 224);
        let v15 = count(&s.clone().with_stride_placement(StridePlacement::V1_5), 224);
        write!(params_row, " {} |", c.params)?;
        write!(ours_row, " {} |", giga(c.macs as f64))?;
        write!(paper_row, " {} |", giga(paper))?;
        write!(diff_row, " {} |", percent_diff(c.macs as f64, paper))?;
        records.push(json!({
            "arch": s.id, "dataset": "imagenet", "depth": s.depth(), "params": c.params, "flops": c.macs,
            "paper_flops": paper, "flops_v1_5": v15.macs, "paper_params": null,
        }));
    }
    writeln!(md, "{params_row}\n{ours_row}\n{paper_row}\n{diff_row}\n")?;
    writeln!(
        md,
        "With torchvision's v1.5 stride placement (stride on the 3x3) ResNet-50/101/152 cost {}, {} and {}; \
         parameters are unchanged.\n",
        giga(records[2]["flops_v1_5"].as_f64().unwrap_or_default()),
        giga(records[3]["flops_v1_5"].as_f64().unwrap_or_default()),
        giga(records[4]["flops_v1_5"].as_f64().unwrap_or_default()),
    )?;

    writeln!(md, "## Plain nets (no shortcuts)\n")?;
    writeln!(md, "| arch | params (ours) | FLOPs (ours) | FLOPs (paper) | difference |\n|---|---|---|---|---|")?;
    for (id, paper) in PLAIN {
        let s = spec(id)?;
        let c = count(&s, 224);
        let ours = c.macs as f64;
        writeln!(
            md,
            "| {id} | {} | {} | {} | {} |",
            c.params,
            giga(ours),
            giga(paper),
            percent_diff(ours, paper)
        )?;
        records.push(json!({
            "arch": id, "dataset": "imagenet", "depth": s.depth(), "params": c.params, "flops": c.macs,
            "paper_flops": paper, "paper_params": null,
        }));
    }

    writeln!(
        md,
        "\n## CIFAR-10 ResNets (option A shortcuts, 32x32 input)\n"
    )?;
    writeln!(md, "| arch | layers | params (ours) | params (paper) | difference | FLOPs (ours) |\n|---|---|---|---|---|---|")?;
    for (id, paper) in CIFAR {
        let s = spec(id)?;
        let c = count(&s, 32);
        let ours = c.params as f64;
        writeln!(
            md,
            "| {id} | {} | {} ({}) | {} | {} | {:.1}x10^6 |",
            s.depth(),
            mega(ours),
            c.params,
            mega(paper),
            percent_diff(ours, paper),
            c.macs as f64 / 1e6
        )?;
        records.push(json!({
            "arch": id, "dataset": "cifar10", "depth": s.depth(), "params": c.params, "flops": c.macs,
            "paper_flops": null, "paper_params": paper,
        }));
    }
    writeln!(
        md,
        "\n_Made by `cargo xtask reproduce table1` at commit {} on {}, in {:.2} s. Counts are computed from each \
         net's spec and checked against the built model in the models crate's tests; no training involved._",
        commit(),
        today(),
        started.elapsed().as_secs_f64()
    )?;

    write_report(out, "table1.md", &md)?;
    write_report(out, "table1.json", &serde_json::to_string_pretty(&records)?)?;
    Ok(())
}
