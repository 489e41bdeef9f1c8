//! Every fuzz target over its committed corpus and mutations of it, for a
//! bounded time: `RESNET_FUZZ_SECONDS` per target (2 by default, as in CI),
//! mutations drawn from `RESNET_FUZZ_SEED` (fixed by default). An input
//! that panics is written to `<target tmp>/fuzz-crashes/<target>/` and fails
//! the test, naming the file; the slowest input is kept there too.

use std::path::PathBuf;
use std::time::Duration;

use resnet_fuzz::targets::{Targets, TARGETS};
use resnet_fuzz::{fuzz, Report};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{text}` is not a number")),
        Err(_) => default,
    }
}

fn fuzz_target(target: &str) {
    let seconds: f64 = env_or("RESNET_FUZZ_SECONDS", 2.0);
    let seed: u64 = env_or("RESNET_FUZZ_SEED", 0);
    let targets = Targets::new();
    let corpus_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let corpus = targets.corpus(&corpus_root, target).unwrap();
    assert!(corpus.len() >= 2, "{target}: the corpus needs valid inputs");
    let report: Report = fuzz(&corpus, Duration::from_secs_f64(seconds), seed, |input| {
        targets.run(target, input)
    });
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-crashes")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let (slowest, input) = report.slowest.clone().unwrap_or_default();
    std::fs::write(dir.join("slowest"), input).unwrap();
    eprintln!(
        "{target}: {} inputs in {seconds} s (seed {seed}), {} crashes, slowest input {:.3} s",
        report.runs,
        report.crashes.len(),
        slowest.as_secs_f64()
    );
    if report.crashes.is_empty() {
        return;
    }
    let mut lines = Vec::new();
    for (i, crash) in report.crashes.iter().enumerate() {
        let path = dir.join(format!("crash-{i}"));
        std::fs::write(&path, &crash.input).unwrap();
        lines.push(format!("{}: {}", path.display(), crash.message));
    }
    panic!("{target} panicked:\n{}", lines.join("\n"));
}

#[test]
fn cifar_batches() {
    fuzz_target("cifar");
}

#[test]
fn weights_with_our_metadata() {
    fuzz_target("safetensors");
}

#[test]
fn pytorch_checkpoints() {
    fuzz_target("pth");
}

#[test]
fn label_files() {
    fuzz_target("label_file");
}

#[test]
fn configs_and_run_files() {
    fuzz_target("config");
}

#[test]
fn images_through_the_folder_loader() {
    fuzz_target("image_folder");
}

#[test]
fn every_target_has_a_test() {
    let source = include_str!("fuzz.rs");
    for target in TARGETS {
        assert!(
            source.contains(&format!("fuzz_target(\"{target}\")")),
            "{target}"
        );
    }
}
