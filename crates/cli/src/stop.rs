//! A graceful stop on SIGINT (Ctrl-C), SIGTERM (what SLURM and Kubernetes
//! send before they kill a job) and SIGUSR1 (which Open MPI's `mpirun`
//! forwards to every rank at once, where it answers SIGINT and SIGTERM by
//! ending the ranks; see docs/distributed.md): the first signal lets the
//! current step finish and a checkpoint be written; a second one ends the
//! process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use resnet_train::{MetricRecord, TrainObserver};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

/// The signals that ask a run to stop.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGUSR1];

/// Installs the handlers: the returned flag is set by the first SIGINT,
/// SIGTERM or SIGUSR1; a second one exits at once with status 128 + its
/// number, as a process killed by it would.
pub fn on_signals() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in STOP_SIGNALS {
        // Handlers run in the order registered: the shutdown fires only if
        // the flag was already set, that is on the second signal.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
            .with_context(|| format!("cannot install a handler for signal {signal}"))?;
    }
    Ok(flag)
}

/// An observer that passes everything on to `inner` and asks the loop to
/// stop once `flag` is set.
pub struct StopOnSignal<O> {
    inner: O,
    flag: Arc<AtomicBool>,
    done: u64,
}

impl<O: TrainObserver> StopOnSignal<O> {
    /// Wraps `inner`, stopping when `flag` (from [`on_signals`]) is set.
    pub fn new(inner: O, flag: Arc<AtomicBool>) -> Self {
        StopOnSignal {
            inner,
            flag,
            done: 0,
        }
    }
}

impl<O: TrainObserver> TrainObserver for StopOnSignal<O> {
    fn on_start(&mut self, start: u64, total: u64) {
        self.inner.on_start(start, total);
    }

    fn on_step(&mut self, done: u64, loss: f64, lr: f64) {
        self.done = done;
        self.inner.on_step(done, loss, lr);
    }

    fn on_record(&mut self, record: &MetricRecord) {
        self.inner.on_record(record);
    }

    fn stop_requested(&mut self) -> bool {
        let stop = self.flag.load(Ordering::SeqCst);
        if stop {
            tracing::warn!(
                "stop requested: saving a checkpoint after iteration {} (signal again to stop at once)",
                self.done
            );
        }
        stop
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use signal_hook::low_level::raise;

    use super::*;

    /// Set in the copy of this test binary that receives the signals.
    const CHILD: &str = "RESNET_STOP_TEST_CHILD";

    /// In a child process (signals reach the whole process): the first
    /// signal (SIGUSR1) only sets the flag, the second (SIGTERM) ends the
    /// process with 143.
    #[test]
    fn a_first_signal_sets_the_flag_and_a_second_ends_the_process() {
        if std::env::var_os(CHILD).is_some() {
            let flag = on_signals().unwrap();
            raise(SIGUSR1).unwrap();
            assert!(flag.load(Ordering::SeqCst));
            println!("still running after the first signal");
            raise(SIGTERM).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(5));
            panic!("still running after the second signal");
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stop::tests::a_first_signal_sets_the_flag_and_a_second_ends_the_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(128 + SIGTERM), "{stdout}");
        assert!(
            stdout.contains("still running after the first signal"),
            "{stdout}"
        );
    }
}
