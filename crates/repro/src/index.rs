//! `README.md` of a results folder: one page indexing every report and plot
//! with its headline finding and verdict.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;

use crate::report::{commit, today, write_report};
use crate::verdict::{Finding, TRAINED_RULE};

/// What one target wrote, for the index.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The target (`fig1`): its files are `TARGET.md`, `TARGET.json`, and
    /// for figures `TARGET.svg` and `TARGET.png`.
    pub target: &'static str,
    /// What it reproduces.
    pub title: String,
    /// Whether it has plots.
    pub plotted: bool,
    /// A one-line summary when there are no findings (Table 1, Table 6).
    pub headline: Option<String>,
    /// The paper's findings with our verdicts.
    pub findings: Vec<Finding>,
}

impl Entry {
    /// A figure with its findings.
    pub fn figure(target: &'static str, title: &str, findings: Vec<Finding>) -> Entry {
        Entry {
            target,
            title: title.to_string(),
            plotted: true,
            headline: None,
            findings,
        }
    }

    /// A table with a one-line headline.
    pub fn table(target: &'static str, title: &str, headline: String) -> Entry {
        Entry {
            target,
            title: title.to_string(),
            plotted: false,
            headline: Some(headline),
            findings: Vec::new(),
        }
    }

    fn files(&self) -> String {
        let t = self.target;
        let mut files = format!("[{t}.md]({t}.md), [{t}.json]({t}.json)");
        if self.plotted {
            write!(files, ", [{t}.svg]({t}.svg), [{t}.png]({t}.png)").expect("writing to a String");
        }
        files
    }
}

/// The index page of `entries` made with `profile`.
pub fn markdown(profile: &str, entries: &[Entry]) -> String {
    let mut md = format!(
        "# Reproduction results ({profile} profile)\n\n_Made by `cargo xtask reproduce all --profile {profile}` \
         on {}, commit {}. Each report states its data, schedule, seeds, device and every deviation from the \
         paper; training runs are in `runs/{profile}/`._\n\n",
        today(),
        commit()
    );
    md.push_str("| report | files | headline |\n|---|---|---|\n");
    for e in entries {
        let headline = match &e.headline {
            Some(h) => h.clone(),
            None => e
                .findings
                .iter()
                .map(|f| format!("{}: **{}**", f.claim, f.verdict.as_str()))
                .collect::<Vec<_>>()
                .join("; "),
        };
        md.push_str(&format!("| {} | {} | {headline} |\n", e.title, e.files()));
    }
    md.push_str(&format!(
        "\nVerdicts are \"holds\", \"does not hold\" or \"not shown at this scale\": {TRAINED_RULE}.\n"
    ));
    md
}

/// Writes `README.md` into `out`.
pub fn write(out: &Path, profile: &str, entries: &[Entry]) -> Result<()> {
    write_report(out, "README.md", &markdown(profile, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;

    #[test]
    fn the_index_links_every_file_and_gives_each_verdict() {
        let finding = Finding {
            claim: "plain-56 is worse than plain-20".into(),
            verdict: Verdict::NotShown,
            detail: String::new(),
        };
        let entries = [
            Entry::table("table1", "Table 1", "counts beside the paper's".into()),
            Entry::figure("fig1", "Fig. 1", vec![finding]),
        ];
        let md = markdown("quick", &entries);
        for file in [
            "table1.md",
            "table1.json",
            "fig1.md",
            "fig1.json",
            "fig1.svg",
            "fig1.png",
        ] {
            assert!(md.contains(&format!("({file})")), "{file} missing: {md}");
        }
        assert!(!md.contains("table1.svg"), "{md}");
        assert!(
            md.contains("plain-56 is worse than plain-20: **not shown at this scale**"),
            "{md}"
        );
        assert!(md.contains("counts beside the paper's"), "{md}");
    }
}
