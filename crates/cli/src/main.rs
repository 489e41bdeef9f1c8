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
        eprintln!("error: {}", one_line(&err));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, `outer: cause: ...`. This
/// project's errors leave their causes to `source()`; a cause whose text the
/// line already ends with (an error of another crate that prints its source
/// too) is left out, so that each is printed once.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::one_line;

    #[test]
    fn a_library_error_and_its_cause_are_printed_once_each() {
        let io = std::io::Error::other("disk on fire");
        let err = resnet_data::DataError::Io {
            action: "reading",
            path: PathBuf::from("data/x.bin"),
            source: io,
        };
        let err = anyhow::Error::new(err).context("loading CIFAR-10");
        assert_eq!(
            one_line(&err),
            "loading CIFAR-10: reading data/x.bin: disk on fire"
        );
    }

    /// An error that prints its source in its own text, as the image
    /// crate's decoding errors do.
    #[derive(Debug)]
    struct Decoding(std::io::Error);

    impl std::fmt::Display for Decoding {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "format error: {}", self.0)
        }
    }

    impl std::error::Error for Decoding {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_printed_by_its_error_is_left_out() {
        let err = Decoding(std::io::Error::other("bad start bytes"));
        let err = anyhow::Error::new(err).context("decoding cat.jpg");
        assert_eq!(
            one_line(&err),
            "decoding cat.jpg: format error: bad start bytes"
        );
        // A cause that only appears inside the line, not at its end, stays.
        let err = anyhow::Error::msg("disk").context("disk full while writing x");
        assert_eq!(one_line(&err), "disk full while writing x: disk");
    }
}
