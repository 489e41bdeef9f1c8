//! Trains a CIFAR-10 ResNet through the library API: a config (the paper's
//! recipe, shortened), a run folder, and the summary with the test error.
//!
//! ```sh
//! cargo run --release -p resnet-train --example train_cifar -- [DATA] [ITERATIONS]
//! ```
//!
//! DATA defaults to the bundled sample (`data/cifar-10-sample`), ITERATIONS
//! to 40 (a demonstration, not a result: the paper trains 64,000). The run
//! folder is temporary; `resnet_train::resume` would continue it.

use std::path::PathBuf;

use resnet_train::{train, NoObserver, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args().skip(1).collect())
}

/// The example with its command-line arguments `args`.
fn run(args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut args = args.into_iter();
    let data = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-sample")
    });
    let iterations = args.next().map_or(Ok(40), |n| n.parse())?;
    let config = TrainConfig {
        arch: "resnet20".into(),
        data,
        iterations,
        batch_size: 32,
        eval_every: 0,
        checkpoint_every: 0,
        ..TrainConfig::default() // the paper's CIFAR-10 recipe
    };
    let run = tempfile::tempdir()?;
    let summary = train(&config, run.path(), &mut NoObserver)?;
    let test = summary.test.ok_or("the run has no test split")?;
    println!(
        "{} ({} parameters), {} iterations: training loss {:.3}, test error {:.1}% on {} images",
        summary.arch,
        summary.params,
        summary.iterations,
        summary.final_train_loss,
        100.0 * test.top1_error,
        test.images
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The example runs as written, without arguments (CI runs it through `cargo test`).
    #[test]
    fn runs() {
        super::run(Vec::new()).unwrap();
    }
}
