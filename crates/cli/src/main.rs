//! `resnet`: the command-line front end of the ResNet crates.

mod arch;
mod data;
mod eval;
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
    Eval(eval::EvalArgs),
    /// Classify images with an ImageNet model: top-5 classes with probabilities.
    Predict(predict::PredictArgs),
    /// Train a net on CIFAR-10 or an image folder (or resume a run) with the paper's recipe.
    Train(train::TrainArgs),
    /// Download datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
}

/// mimalloc, keeping freed memory for reuse (see `resnet-alloc`).
#[global_allocator]
static GLOBAL: resnet_alloc::MiMalloc = resnet_alloc::MiMalloc;

fn main() {
    resnet_alloc::keep_freed_memory();
    resnet_train::progress::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Data(command) => data::run(&command),
    };
    if let Err(err) = result {
        eprintln!("error: {}", one_line(&err));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, `outer: cause: ...`, leaving out a
/// cause whose text the line already holds (the library errors name their
/// source in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    /// An error that names its source in its own message, as the library
    /// errors do.
    #[derive(Debug)]
    struct Wrapper {
        source: std::io::Error,
    }

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot open `x`: {}", self.source)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let err = anyhow::Error::new(Wrapper { source: io });
        assert_eq!(one_line(&err), "cannot open `x`: disk on fire");
    }

    #[test]
    fn causes_not_in_the_message_follow_it() {
        let err = anyhow::anyhow!("inner problem").context("loading weights");
        assert_eq!(one_line(&err), "loading weights: inner problem");
    }
}
