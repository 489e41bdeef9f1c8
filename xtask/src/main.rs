//! `cargo xtask`: reproduction and benchmark tasks for the workspace.
//!
//! A thin runner over the library crates (it never reimplements them), with
//! as few dependencies as possible.
//!
//! ```text
//! cargo xtask reproduce table1 [--out DIR]
//! ```

mod output;
mod table1;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask reproduce <target> [--out DIR]\n\ntargets:\n  table1  the paper's Table 1: architectures, parameters and FLOPs";

/// The workspace root, from this crate's manifest directory.
fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = project_root().join("results");
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out needs a directory")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown flag `{flag}`\n{USAGE}"),
            _ => positional.push(arg.as_str()),
        }
    }
    match positional.as_slice() {
        ["reproduce", "table1"] => table1::run(&out),
        ["reproduce", other] => bail!("unknown reproduction target `{other}`\n{USAGE}"),
        _ => bail!("{USAGE}"),
    }
}
