//! Progress bars that share the terminal with tracing's log lines.
//!
//! Log lines are printed through the active bar (`ProgressBar::suspend`), so
//! they never garble it; bars are hidden when stdout is not a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

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
