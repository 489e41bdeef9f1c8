//! What the data-parallel tests share, whatever joins their ranks (`mpi.rs`,
//! `tcp.rs`): the training command, the check that ranks trained as one
//! process with batch-norm groups of each rank's share, and the waits of the
//! tests that kill a rank.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use resnet_test_support::assert_bit_identical;
use resnet_test_support::process::Reaped;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-sample")
}

/// The arguments of `resnet train` of ResNet-20 on the sample, writing to
/// `out`, one thread per process.
pub fn train_args(out: &Path, batch: usize, iterations: u64, checkpoint_every: u64) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--arch",
        "resnet20",
        "--log-every",
        "1",
        "--eval-every",
        "0",
        "--loader-threads",
        "1",
        "--collective-timeout",
        "60",
    ]
    .map(String::from)
    .into();
    args.extend([
        "--batch-size".into(),
        batch.to_string(),
        "--iterations".into(),
        iterations.to_string(),
        "--checkpoint-every".into(),
        checkpoint_every.to_string(),
        "--data".into(),
        sample().display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    args
}

/// `resnet` on one thread.
pub fn resnet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet"));
    cmd.env("RAYON_NUM_THREADS", "1");
    cmd
}

/// Runs `cmd`, which must succeed; its output.
pub fn succeed(mut cmd: Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t): (String, Tensor)| (name, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

/// The largest `max |a - b| / max |a|` over the tensors.
fn max_relative_difference(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(name, va)| {
            let scale = va.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let diff = va
                .iter()
                .zip(&b[name])
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            diff / scale
        })
        .fold(0.0, f32::max)
}

/// `|a - b| / |a|` over all the values of all tensors (L2 norms).
fn relative_l2(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (name, va) in a {
        for (x, y) in va.iter().zip(&b[name]) {
            diff += f64::from(x - y).powi(2);
            norm += f64::from(*x).powi(2);
        }
    }
    (diff / norm).sqrt()
}

/// The records of the run in `run`, in order.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The iteration of a run's latest checkpoint.
fn checkpoint_iteration(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoint.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["iteration"].as_u64()
}

/// Iteration, training loss and error of each metric record.
fn records(run: &Path) -> Vec<(u64, f64, f64)> {
    metrics(run)
        .iter()
        .map(|r| {
            (
                r["iteration"].as_u64().unwrap(),
                r["train_loss"].as_f64().unwrap(),
                r["train_error"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Trains in `single` what [`assert_trained_alike`] compares a run of 2
/// ranks of 64 images with: one process of 128 in batch-norm groups of 64.
pub fn train_one_process(single: &Path) {
    let mut one = resnet();
    one.args(train_args(single, 128, 2, 1))
        .args(["--bn-group", "64"]);
    succeed(one);
}

/// Asserts that the data-parallel run in `parallel` trained as the single
/// process in `single` did (2 iterations, a checkpoint after the first).
///
/// Rounding differences of the sums grow with every step of a net this
/// young (a 1e-7 nudge of its weights moves some BN biases by 1e-2 two
/// steps later): after one step every tensor is compared, after two all
/// weights together; the metrics logs are the same but for the loss's
/// rounding.
pub fn assert_trained_alike(single: &Path, parallel: &Path) {
    let checkpoint = |run: &Path| tensors(&run.join("checkpoint-00000001.safetensors"));
    let first = max_relative_difference(&checkpoint(single), &checkpoint(parallel));
    eprintln!("after 1 step: max relative difference of a tensor {first:e}");
    assert!(
        first < 1e-5,
        "after one step a tensor differs by {first} relative"
    );
    let model = |run: &Path| tensors(&run.join("model.safetensors"));
    let last = relative_l2(&model(single), &model(parallel));
    eprintln!("after 2 steps: relative L2 difference of the weights {last:e}");
    assert!(
        last < 1e-5,
        "after two steps the weights differ by {last} relative"
    );

    let (a, b) = (metrics(single), metrics(parallel));
    assert_eq!((a.len(), b.len()), (2, 2));
    for (x, y) in a.iter().zip(&b) {
        for exact in ["iteration", "epoch", "lr", "train_error", "test_error"] {
            assert_eq!(x[exact], y[exact], "{exact}: {x} vs {y}");
        }
        let (lx, ly) = (
            x["train_loss"].as_f64().unwrap(),
            y["train_loss"].as_f64().unwrap(),
        );
        assert!((lx - ly).abs() < 1e-6 * lx, "train_loss: {x} vs {y}");
    }
}

/// Starts `cmd` with its stdout and stderr in `log`; killed when dropped.
pub fn spawn_logged(mut cmd: Command, log: &Path) -> Reaped {
    let file = File::create(log).unwrap();
    cmd.stdout(file.try_clone().unwrap()).stderr(file);
    Reaped(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    )
}

/// Waits for `job` to end, at most `limit`: its status and how long it took.
///
/// # Panics
/// After `limit` (the job is then killed), naming `what`.
pub fn wait_at_most(job: &mut Reaped, limit: Duration, what: &str) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = job.0.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "{what}: still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After rank 1 of the run in `run` was killed mid-run: waits for `job`
/// (`what`, logging to `log`) to end, and asserts that it failed within
/// 60 s, naming rank 1, before the run's `iterations` were done. Returns
/// the log.
pub fn assert_ended_by_the_kill(
    job: &mut Reaped,
    what: &str,
    log: &Path,
    run: &Path,
    iterations: u64,
) -> String {
    let (status, waited) = wait_at_most(job, Duration::from_secs(120), what);
    let text = std::fs::read_to_string(log).unwrap();
    let named: Vec<&str> = text.lines().filter(|l| l.contains("rank")).collect();
    eprintln!(
        "{what} ended {waited:?} after the kill:\n{}",
        named.join("\n")
    );
    assert!(
        !status.success(),
        "{what} ended well after the kill:\n{text}"
    );
    assert!(
        waited < Duration::from_secs(60),
        "{what} took {waited:?} to end"
    );
    assert!(text.contains("rank 1"), "rank 1 is not named:\n{text}");
    let done = metrics(run).len() as u64;
    assert!(done < iterations, "the run finished before the kill");
    text
}

/// Waits until the run in `run` has written a checkpoint.
///
/// # Panics
/// When `job` ends first, or after ten minutes.
pub fn wait_for_a_checkpoint(run: &Path, job: &mut Reaped) {
    let started = Instant::now();
    while !run.join("checkpoint.json").exists() {
        assert!(
            job.0.try_wait().unwrap().is_none(),
            "the job ended before it wrote a checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The final weights of the run in `run`.
pub fn weights(run: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu).unwrap()
}

/// Asserts that the stopped run in `run` saved a checkpoint of a step before
/// its last (`iterations`), holds no final weights and the records of the
/// steps done, and that its rank 0's output `log` says once how to resume,
/// with `resume` (`mpirun -n 2 ` or torchrun's variables); `what` names the
/// case in the failures. The iteration it stopped after.
pub fn assert_stopped_with_a_checkpoint(
    run: &Path,
    log: &str,
    iterations: u64,
    resume: &str,
    what: &str,
) -> u64 {
    let iteration =
        checkpoint_iteration(run).unwrap_or_else(|| panic!("{what}: no checkpoint saved:\n{log}"));
    assert!(
        (1..iterations).contains(&iteration),
        "{what}: stopped after {iteration}"
    );
    let message = format!(
        "stopped after iteration {iteration} on 2 ranks; the checkpoint is saved, resume with: \
         {resume}resnet train --resume --out {}",
        run.display()
    );
    assert_eq!(log.matches(&message).count(), 1, "{what}:\n{log}");
    assert!(!run.join("model.safetensors").exists());
    assert_eq!(metrics(run).len() as u64, iteration);
    iteration
}

/// Asserts that the resumed run in `run` ended as the uninterrupted one in
/// `whole`: the same weights bit for bit, the same metric records.
pub fn assert_resumed_alike(whole: &Path, run: &Path, what: &str) {
    assert_bit_identical(&weights(whole), &weights(run));
    assert_eq!(records(run), records(whole), "{what}");
}
