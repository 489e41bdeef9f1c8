//! `cargo xtask bench`: every workload of `resnet-bench`, each in a fresh
//! child process (so its peak memory is its own), with 2 threads.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use resnet_bench::{measure, measure_peak_gflops, workloads, Measurement};

/// Threads each workload runs with (the 2 cores of the reference machine).
const THREADS: usize = 2;

/// How `run` hands its measured peak to each workload's process.
const PEAK_VAR: &str = "RESNET_BENCH_PEAK_GFLOPS";

/// Runs the workloads (all, or the one named `only`) and prints a table or JSON lines.
pub fn run(json: bool, only: Option<&str>, runs: usize, root: &Path) -> Result<()> {
    let selected: Vec<_> = workloads()
        .into_iter()
        .filter(|w| only.is_none_or(|n| n == w.name))
        .collect();
    if selected.is_empty() {
        let names: Vec<_> = workloads().iter().map(|w| w.name).collect();
        bail!(
            "unknown workload `{}`; known: {}",
            only.unwrap_or_default(),
            names.join(", ")
        );
    }
    let peak = measure_peak_gflops(THREADS);
    if json {
        println!(
            "{}",
            serde_json::json!({ "peak_gflops": peak, "threads": THREADS })
        );
    } else {
        println!("FP32 FMA peak of this machine, {THREADS} threads: {peak:.0} GFLOP/s (measured)");
        println!(
            "{:<28} {:>10} {:>12} {:>9} {:>7} {:>10}",
            "workload", "median s", "images/s", "GFLOP/s", "peak", "RSS MiB"
        );
    }
    for w in selected {
        let out = Command::new(std::env::current_exe()?)
            .args(["bench-one", w.name, "--runs", &runs.to_string()])
            .env("RAYON_NUM_THREADS", THREADS.to_string())
            .env(PEAK_VAR, peak.to_string())
            .current_dir(root)
            .output()
            .with_context(|| format!("cannot start the benchmark of {}", w.name))?;
        if !out.status.success() {
            bail!(
                "benchmark {} failed: {}",
                w.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8(out.stdout)?;
        if json {
            print!("{line}");
            continue;
        }
        let m: serde_json::Value = serde_json::from_str(line.trim())?;
        let num = |k: &str| m[k].as_f64();
        println!(
            "{:<28} {:>10.3} {:>12.1} {:>9} {:>7} {:>10}",
            w.name,
            num("median_seconds").unwrap_or(f64::NAN),
            num("images_per_sec").unwrap_or(f64::NAN),
            num("gflops").map_or("-".into(), |g| format!("{g:.1}")),
            num("peak_fraction").map_or("-".into(), |f| format!("{:.1}%", 100.0 * f)),
            num("peak_rss_mib").map_or("-".into(), |r| format!("{r:.0}")),
        );
    }
    Ok(())
}

/// Measures one workload in this process and prints it as one JSON line.
pub fn run_one(name: &str, runs: usize, root: &Path) -> Result<()> {
    let w = workloads()
        .into_iter()
        .find(|w| w.name == name)
        .with_context(|| format!("unknown workload `{name}`"))?;
    // The peak `run` measured, or this process's own measurement when run alone.
    let peak = match std::env::var(PEAK_VAR) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{PEAK_VAR}={value} is not a number"))?,
        Err(_) => measure_peak_gflops(THREADS),
    };
    let m: Measurement = measure(&w, runs, &root.join("data/cifar-10-sample"), peak)?;
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
