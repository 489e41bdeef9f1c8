//! The terminal side of the workspace's binaries: progress bars that share
//! the terminal with tracing's log lines, the logging set-up, and how an
//! error ends a binary.
//!
//! The library crates only emit tracing events; this crate decides how they
//! look. Log lines are printed through the active bar
//! (`ProgressBar::suspend`), so they never garble it; bars are hidden when
//! stdout is not a terminal. Binaries call [`init_logging`] once at start,
//! which installs [`LogWriter`] as tracing's writer.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use resnet_train::{MetricRecord, TrainObserver};

static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A progress bar of `len` steps with the given template, registered as the
/// bar log lines are printed around. Hidden when stdout is not a terminal.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = if std::io::stdout().is_terminal() {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
    bar
}

/// Finishes `bar` and stops routing log lines through it.
pub fn finish(bar: &ProgressBar) {
    bar.finish();
    *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Sends tracing's events (level from `RUST_LOG`, default `info`) to stderr
/// around the active bar. Binaries call it once at start.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(|| LogWriter)
        .init();
}

/// A writer for tracing that prints to stderr around the active bar.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match active {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A [`TrainObserver`] that drives a progress bar (iteration, loss, lr,
/// elapsed and ETA) and logs every metric record through tracing.
pub struct ProgressObserver {
    bar: ProgressBar,
    label: String,
}

impl ProgressObserver {
    /// A bar for the run named `label` (shown before each log line).
    pub fn new(label: &str) -> ProgressObserver {
        let template = "{prefix} {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]";
        let bar = bar(0, template);
        bar.set_prefix(label.to_string());
        ProgressObserver {
            bar,
            label: label.to_string(),
        }
    }
}

impl Drop for ProgressObserver {
    fn drop(&mut self) {
        finish(&self.bar);
    }
}

impl TrainObserver for ProgressObserver {
    fn on_start(&mut self, start: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(start);
        self.bar.reset_eta();
    }

    fn on_step(&mut self, done: u64, loss: f64, lr: f64) {
        self.bar.set_position(done);
        self.bar.set_message(format!("loss {loss:.3} lr {lr:.4}"));
    }

    fn on_record(&mut self, r: &MetricRecord) {
        let mut line = format!(
            "{}: iter {} epoch {:.2} lr {:.4} loss {:.4} train err {:.2}%",
            self.label,
            r.iteration,
            r.epoch,
            r.lr,
            r.train_loss,
            100.0 * r.train_error
        );
        if let Some(v) = r.val_error {
            line.push_str(&format!(" val err {:.2}%", 100.0 * v));
        }
        if let Some(t) = r.test_error {
            line.push_str(&format!(" test err {:.2}%", 100.0 * t));
        }
        line.push_str(&format!(" {:.1} img/s", r.images_per_sec));
        tracing::info!("{line}");
    }
}

/// What every binary of the workspace does first: keep freed memory for reuse
/// (see `resnet-alloc`; the binary itself declares
/// `#[global_allocator] static GLOBAL: resnet_alloc::MiMalloc`, since a library
/// that did so would impose it on every program linking it) and send log lines
/// to stderr around the bars ([`init_logging`]).
pub fn start() {
    resnet_alloc::keep_freed_memory();
    init_logging();
}

/// Ends a binary whose run failed: prints `error: ` and the error with its
/// causes on one line ([`one_line`]) to stderr, and exits with status 1.
pub fn exit_with(err: &(dyn std::error::Error + 'static)) -> ! {
    eprintln!("error: {}", one_line(err));
    std::process::exit(1)
}

/// The error and its causes on one line, `outer: cause: ...`. This
/// workspace's errors leave their causes to `source()`; a cause whose text
/// the line already ends with (an error of another crate that prints its
/// source too) is left out, so that each is printed once.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    for cause in std::iter::successors(err.source(), |e| e.source()) {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    /// An error with a message and an optional source, printed as is.
    #[derive(Debug)]
    struct Failure {
        text: String,
        source: Option<Box<Failure>>,
    }

    /// `texts[0]` caused by `texts[1]`, caused by ...
    fn chain(texts: &[&str]) -> Failure {
        let (first, rest) = texts.split_first().unwrap();
        Failure {
            text: first.to_string(),
            source: (!rest.is_empty()).then(|| Box::new(chain(rest))),
        }
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn an_error_and_its_causes_are_printed_once_each() {
        let cases: [(&[&str], &str); 3] = [
            (
                &["loading CIFAR-10", "reading data/x.bin", "disk on fire"],
                "loading CIFAR-10: reading data/x.bin: disk on fire",
            ),
            // A cause its error prints already, as the image crate's
            // decoding errors do, is left out.
            (
                &["decoding cat.jpg", "format error: bad start", "bad start"],
                "decoding cat.jpg: format error: bad start",
            ),
            // A cause that appears inside the line, not at its end, stays.
            (
                &["disk full while writing x", "disk"],
                "disk full while writing x: disk",
            ),
        ];
        for (texts, line) in cases {
            assert_eq!(one_line(&chain(texts)), line);
        }
    }
}
