//! `resnet`: the command-line front end of the ResNet crates.

mod arch;
mod info;

use clap::{Parser, Subcommand};

/// ResNets of He et al. (2015) on candle: inspect, train and evaluate them.
#[derive(Debug, Parser)]
#[command(name = "resnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an architecture's layer table, parameter count and FLOPs.
    Info(info::InfoArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
