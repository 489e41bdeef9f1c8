//! Driving a child process the way a user or a cluster does: stopping it
//! with a signal once a run has made progress, and never leaving it behind.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process killed when dropped, so that a failing test leaves no
/// trainer running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (a `kill` name such as TERM) to a child process.
///
/// # Panics
/// When `kill` fails.
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("the kill command");
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits until the training run in `run` has written a metric record
/// (`metrics.jsonl` is not empty).
///
/// # Panics
/// When `child` ends first, or after ten minutes.
pub fn wait_for_a_record(run: &Path, child: &mut Child) {
    let started = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(true, |t| t.is_empty()) {
        assert!(
            child.try_wait().expect("the child's status").is_none(),
            "run finished before it could be stopped"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no metric record appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
