//! `resnet`: the command-line front end of the ResNet crates.

mod arch;
mod data;
mod eval;
mod export;
mod info;
mod predict;
mod stop;
mod train;
mod weights_source;

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
    /// Evaluate weights on a CIFAR-10 split or an image folder: top-1 and top-5 error.
    #[command(allow_negative_numbers = true)]
    Eval(eval::EvalArgs),
    /// Classify images with an ImageNet model: top-5 classes with probabilities.
    #[command(allow_negative_numbers = true)]
    Predict(predict::PredictArgs),
    /// Write weights as torchvision and timm load them: model.safetensors and config.json.
    Export(export::ExportArgs),
    /// Train a net on CIFAR-10 or an image folder (or resume a run) with the paper's recipe.
    #[command(allow_negative_numbers = true)]
    Train(train::TrainArgs),
    /// Download datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
}

/// mimalloc, keeping freed memory for reuse (see `resnet-alloc`).
#[global_allocator]
static GLOBAL: resnet_alloc::MiMalloc = resnet_alloc::MiMalloc;

fn main() {
    resnet_term::start();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Data(command) => data::run(&command),
    };
    if let Err(err) = result {
        resnet_term::exit_with(err.as_ref());
    }
}
