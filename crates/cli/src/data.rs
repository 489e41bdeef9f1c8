//! `resnet data fetch cifar10`: download the full dataset.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use resnet_data::{fetch_cifar10_with_progress, CIFAR10_MD5, CIFAR10_URL};

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset (md5-checked, unpacked atomically).
    Fetch(FetchArgs),
}

/// Datasets that can be fetched.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dataset {
    /// CIFAR-10, binary version (162 MB).
    Cifar10,
}

/// Flags of `resnet data fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Which dataset.
    dataset: Dataset,
    /// Folder to put it in (it lands in DIR/cifar-10-batches-bin).
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Download address (default: the official archive).
    #[arg(long, default_value = CIFAR10_URL)]
    url: String,
}

/// Runs a data command.
pub fn run(command: &DataCommand) -> Result<()> {
    match command {
        DataCommand::Fetch(args) => {
            let Dataset::Cifar10 = args.dataset;
            let bar = resnet_term::bar(
                0,
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            );
            let dir = fetch_cifar10_with_progress(
                &args.url,
                &args.dir,
                CIFAR10_MD5,
                &mut |done, total| {
                    if let Some(total) = total {
                        bar.set_length(total);
                    }
                    bar.set_position(done);
                },
            );
            resnet_term::finish(&bar);
            println!("CIFAR-10 is ready in {}", dir?.display());
            Ok(())
        }
    }
}
