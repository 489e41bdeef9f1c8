//! Fuzz targets for every reader of files a user hands the crates, and the
//! mutation fuzzer that drives them.
//!
//! A target takes arbitrary bytes, writes them where its reader expects a
//! file and reads them: any outcome but a panic (or an abort) is a pass, a
//! clear error being the usual one. [`fuzz`] mutates a corpus of valid
//! files (bit flips, byte and integer overwrites, insertions, deletions,
//! truncations, splices) for a given time and collects the inputs that
//! panic. It is not coverage-guided: cargo-fuzz and AFL need nightly Rust
//! or an instrumented toolchain, and this runs with `cargo test` on stable,
//! in CI, in seconds (`tests/fuzz.rs`).

pub mod mutate;
pub mod targets;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// An input that made a target panic.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The input.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

/// What a fuzzing session did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs run (the corpus included).
    pub runs: u64,
    /// Inputs that panicked (at most [`MAX_CRASHES`] kept).
    pub crashes: Vec<Crash>,
    /// The input that took longest, and how long: a slow reader is a way
    /// to stall a run too.
    pub slowest: Option<(Duration, Vec<u8>)>,
}

/// Crashes kept per session; the first ones say enough.
pub const MAX_CRASHES: usize = 20;

thread_local! {
    /// Whether this thread runs a fuzz input (its panics are reported, not printed).
    static FUZZING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `target` on every input of `corpus`, then on mutations of them
/// until `budget` has passed, with mutations drawn from `seed`.
pub fn fuzz(
    corpus: &[Vec<u8>],
    budget: Duration,
    seed: u64,
    mut target: impl FnMut(&[u8]),
) -> Report {
    quiet_panics_while_fuzzing();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = Report::default();
    let started = Instant::now();
    let mut run = |input: Vec<u8>, report: &mut Report| {
        report.runs += 1;
        FUZZING.with(|f| f.set(true));
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        let took = started.elapsed();
        FUZZING.with(|f| f.set(false));
        if report
            .slowest
            .as_ref()
            .is_none_or(|(slowest, _)| took > *slowest)
        {
            report.slowest = Some((took, input.clone()));
        }
        if let Err(payload) = outcome {
            if report.crashes.len() < MAX_CRASHES {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into());
                report.crashes.push(Crash { input, message });
            }
        }
    };
    for input in corpus {
        run(input.clone(), &mut report);
    }
    if corpus.is_empty() {
        return report;
    }
    while started.elapsed() < budget {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let other = &corpus[rng.random_range(0..corpus.len())];
        let input = mutate::mutate(base, other, &mut rng);
        run(input, &mut report);
    }
    report
}

/// Replaces the panic hook once with one that stays silent on threads that
/// run a fuzz input (their panics are collected as crashes) and prints as
/// before everywhere else.
fn quiet_panics_while_fuzzing() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !FUZZING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}
