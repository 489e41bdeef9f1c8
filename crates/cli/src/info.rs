//! `resnet info`: the layer table of an architecture.

use anyhow::Result;
use clap::Args;
use resnet_models::{count, layer_table};
use serde_json::json;

use crate::arch::ArchArgs;

/// Flags of `resnet info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    arch: ArchArgs,
    /// Input side length in pixels (default: 224 for ImageNet nets, 32 for CIFAR nets).
    #[arg(long)]
    input_size: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `1234567` as `1,234,567`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shortcut_name(spec: &resnet_models::ArchSpec) -> String {
    spec.shortcut
        .map_or("none (plain)".to_string(), |s| format!("{s:?}"))
}

/// Prints the table (or JSON) for the requested net.
pub fn run(args: &InfoArgs) -> Result<()> {
    let spec = args.arch.spec()?;
    let input = args.input_size.unwrap_or(spec.input_size);
    anyhow::ensure!(
        input >= 8,
        "--input-size must be at least 8 pixels, got {input}"
    );
    let rows = layer_table(&spec, input);
    let total = count(&spec, input);
    if args.json {
        let out = json!({
            "arch": spec.id,
            "depth": spec.depth(),
            "block": spec.block,
            "shortcut": spec.shortcut,
            "stride_placement": spec.stride_placement,
            "num_classes": spec.num_classes,
            "input_size": input,
            "params": total.params,
            "flops": total.macs,
            "layers": rows,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{}: {} layers, {:?} blocks, shortcut {}, stride placement {}, input {input}x{input}",
        spec.id,
        spec.depth(),
        spec.block,
        shortcut_name(&spec),
        spec.stride_placement
    );
    println!(
        "{:<8} {:>9} {:>6} {:>12} {:>15}  description",
        "layer", "output", "blocks", "params", "FLOPs"
    );
    for row in &rows {
        let output = format!("{0}x{0}", row.output);
        println!(
            "{:<8} {:>9} {:>6} {:>12} {:>15}  {}",
            row.name,
            output,
            row.blocks,
            grouped(row.counts.params),
            grouped(row.counts.macs),
            row.description
        );
    }
    println!(
        "{:<8} {:>9} {:>6} {:>12} {:>15}",
        "total",
        "",
        "",
        grouped(total.params),
        grouped(total.macs)
    );
    println!(
        "FLOPs are multiply-adds of convs and fc ({:.2}e9), as in the paper.",
        total.macs as f64 / 1e9
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_digits_by_thousands() {
        assert_eq!(super::grouped(0), "0");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(1000), "1,000");
        assert_eq!(super::grouped(25_557_032), "25,557,032");
    }
}
