//! Reproductions of the paper's tables and figures: training runs driven by
//! profiles, Markdown/JSON reports beside the paper's numbers, and plots.
//!
//! Every target writes `NAME.md` (our numbers beside the paper's, and how
//! they were made), `NAME.json`, and for figures `NAME.svg` and `NAME.png`.
//! Training runs live in `OUT/runs/PROFILE/ARCH-seedS/`: a finished run is
//! reused, an interrupted one resumed, so rerunning a target only re-plots.

mod curves;
pub mod fig1;
pub mod fig6;
pub mod fig7;
pub mod plot;
pub mod profile;
pub mod report;
mod reproduction;
pub mod runs;
pub mod table1;
pub mod table6;

use std::str::FromStr;

use anyhow::Result;

pub use profile::{Profile, ProfileName};
pub use reproduction::{Options, Reproduction};

/// A table or figure of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Table 1: architectures, parameters, FLOPs (no training).
    Table1,
    /// Fig. 1: plain-20 vs plain-56.
    Fig1,
    /// Fig. 6: plain nets and ResNets by depth.
    Fig6,
    /// Table 6: test error by depth.
    Table6,
    /// Fig. 7: standard deviations of layer responses.
    Fig7,
    /// Every target above, sharing the training runs.
    All,
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Target> {
        Ok(match s {
            "table1" => Target::Table1,
            "fig1" => Target::Fig1,
            "fig6" => Target::Fig6,
            "table6" => Target::Table6,
            "fig7" => Target::Fig7,
            "all" => Target::All,
            _ => anyhow::bail!("unknown reproduction target `{s}`: expected table1, fig1, fig6, table6, fig7 or all"),
        })
    }
}

/// Produces `target`'s files in `opts.out`.
pub fn reproduce(target: Target, opts: Options) -> Result<()> {
    if target == Target::Table1 {
        return table1::write(&opts.out);
    }
    let mut r = Reproduction::new(opts)?;
    match target {
        Target::Table1 => unreachable!("handled above"),
        Target::Fig1 => fig1::write(&mut r)?,
        Target::Fig6 => fig6::write(&mut r)?,
        Target::Table6 => table6::write(&mut r)?,
        Target::Fig7 => fig7::write(&mut r)?,
        Target::All => {
            table1::write(&r.opts.out)?;
            fig1::write(&mut r)?;
            fig6::write(&mut r)?;
            table6::write(&mut r)?;
            fig7::write(&mut r)?;
        }
    }
    tracing::info!("done in {:.0} s", r.elapsed());
    Ok(())
}
