//! `cargo xtask soak`: trains ResNet-20 on the CPU for thousands of steps and
//! evaluates over an image folder many times, sampling resident memory as
//! they go; prints the curves and the growth after warm-up (training: the
//! first evaluation; evaluation: the first tenth of the passes), and writes
//! them as JSON. A benchmark, not a test: it takes an hour at full length.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use resnet_bench::soak::{growth_after, soak_eval, soak_train, RssSample, TRAIN_EVAL_EVERY};

/// What to run: the lengths, and where the curves go.
pub struct SoakOptions {
    /// Training steps (the soak: 5000).
    pub iterations: u64,
    /// Steps between memory samples.
    pub every: u64,
    /// Images per training step.
    pub batch_size: usize,
    /// Evaluation passes over the generated image folder.
    pub passes: u64,
    /// JPEGs in the generated image folder.
    pub images: usize,
    /// The JSON file written.
    pub out: PathBuf,
}

/// Runs both soaks and reports them.
pub fn run(options: &SoakOptions, root: &Path) -> Result<()> {
    let data = root.join("data/cifar-10-sample");
    let train = soak_train(&data, options.iterations, options.every, options.batch_size)?;
    // Warm-up: up to the first sample after the first evaluation.
    let train_warmup = TRAIN_EVAL_EVERY + options.every;
    report("train", &train, train_warmup);
    let eval = soak_eval(options.passes, options.images, 2)?;
    let eval_warmup = (options.passes / 10).max(1);
    report("eval", &eval, eval_warmup);
    let json = serde_json::json!({
        "train": {
            "arch": "resnet20",
            "batch_size": options.batch_size,
            "iterations": options.iterations,
            "warmup": train_warmup,
            "growth_mib": growth_after(&train, train_warmup),
            "samples": train,
        },
        "eval": {
            "arch": "resnet18",
            "images": options.images,
            "passes": options.passes,
            "warmup": eval_warmup,
            "growth_mib": growth_after(&eval, eval_warmup),
            "samples": eval,
        },
    });
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&options.out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", options.out.display()))?;
    println!("curves written to {}", options.out.display());
    Ok(())
}

/// Prints a curve and its growth after `warmup`.
fn report(name: &str, samples: &[RssSample], warmup: u64) {
    println!("{name}: step  RSS MiB");
    for s in samples {
        println!("{name}: {:>5}  {:>8.1}", s.step, s.rss_mib);
    }
    match growth_after(samples, warmup) {
        Some(growth) => println!("{name}: growth after step {warmup}: {growth:+.1} MiB"),
        None => println!("{name}: no sample after warm-up (step {warmup})"),
    }
}
