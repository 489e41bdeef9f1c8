//! Writing result files: atomically, and stamped with how they were made.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::deviation::{self, Deviation};
use crate::parallelism::Parallelism;

/// Writes the report file `dir/name` (creating `dir`) atomically
/// ([`resnet_models::write_atomic`]), so a reader never sees a half-written
/// result, and says so.
pub fn write_report(dir: &Path, name: &str, contents: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    resnet_models::write_atomic(&path, contents.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The current commit (with `-dirty` if the tree has changes), or `unknown`.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|o| o.status.success())
    else {
        return "unknown".to_string();
    };
    let mut commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
    if git(&["status", "--porcelain"]).is_some_and(|o| !o.stdout.is_empty()) {
        commit.push_str("-dirty");
    }
    commit
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil-from-days (proleptic Gregorian), Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// How a result was made, printed at the top of every report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Provenance {
    /// The command that made it.
    pub command: String,
    /// Profile name.
    pub profile: String,
    /// Data folder and what it holds.
    pub data: String,
    /// Training schedule in words.
    pub schedule: String,
    /// Seeds of the runs.
    pub seeds: Vec<u64>,
    /// Device trained on.
    pub device: String,
    /// Commit of the code.
    pub commit: String,
    /// Date (UTC).
    pub date: String,
    /// Seconds of training summed over the runs behind the result.
    pub train_seconds: f64,
    /// The ranks and batch-norm groups the runs trained with, beside the paper's.
    pub parallelism: Parallelism,
    /// Every way the result departs from the paper's recipe.
    pub deviations: Vec<Deviation>,
}

impl Provenance {
    /// The provenance as a Markdown block.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "_Made by `{}` on {}, commit {}, device {}. Profile **{}**; data: {}; schedule: {}; seeds {:?}; \
             {:.0} s of training._\n",
            self.command,
            self.date,
            self.commit,
            self.device,
            self.profile,
            self.data,
            self.schedule,
            self.seeds,
            self.train_seconds
        );
        md.push('\n');
        md.push_str(&self.parallelism.markdown());
        md.push_str(&deviation::markdown(&self.deviations));
        md
    }
}
