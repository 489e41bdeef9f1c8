//! `cargo xtask`: reproduction and benchmark tasks for the workspace.
//!
//! A thin runner over the library crates (it never reimplements them), with
//! as few dependencies as possible.

use std::num::NonZeroUsize;
use std::path::PathBuf;

mod bench;
mod soak;

use anyhow::{ensure, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use resnet_models::Precision;
use resnet_repro::{ImageNetOptions, ImageNetTarget, Options, Profile, ProfileName, Target};
use resnet_train::collective::{launched_by_mpi, Collective, TcpWorld};

/// Reproduction and benchmark tasks of the workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Reproduce a table or figure of the paper.
    Reproduce(Reproduce),
    /// Every benchmark workload, each in its own process, as a table or JSON lines.
    Bench {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Only the workload with this name.
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
        /// Timed runs per workload (the median is reported).
        #[arg(long, default_value_t = 5, value_name = "N")]
        runs: usize,
    },
    /// One benchmark workload in this process, as one JSON line (what `bench` runs per workload).
    BenchOne {
        /// The workload's name.
        name: String,
        /// Timed runs (the median is reported).
        #[arg(long, default_value_t = 5, value_name = "N")]
        runs: usize,
    },
    /// Resident memory over a long CPU training run and many evaluation passes.
    Soak(SoakArgs),
    /// Writes the ImageNet loader workloads' JPEGs into a folder, so that a
    /// peer (scripts/bench_peers.py) decodes and augments the same files.
    BenchJpegs {
        /// The folder to write (class folders `class_K/` inside it).
        dir: PathBuf,
        /// How many images.
        #[arg(long, default_value_t = 64, value_name = "N")]
        images: usize,
    },
}

/// `cargo xtask reproduce`.
#[derive(Args)]
struct Reproduce {
    /// What to reproduce.
    target: AnyTarget,
    /// How much compute to spend (table2/fig4: paper or smoke).
    #[arg(long, value_enum, default_value_t = ProfileName::Quick)]
    profile: ProfileName,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The first seed; run k uses seed + k.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Precision of the convolutions and the fc layer: bf16 is mixed precision (the reports list
    /// it as a deviation; the paper used fp32). On the CPU bf16 costs more than fp32.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Keep the nets' activations channels-last (NHWC in memory), the layout cuDNN's tensor-core
    /// kernels want: for CUDA (slower on the CPU). The runs get folders of their own.
    #[arg(long)]
    channels_last: bool,
    /// Where reports, plots and runs go (default: results/ in the workspace).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    cifar: CifarFlags,
    #[command(flatten)]
    imagenet: ImageNetFlags,
}

/// Flags of the CIFAR-10 targets (table1, fig1, fig6, table6, fig7, all).
#[derive(Args)]
#[command(next_help_heading = "CIFAR-10 targets")]
struct CifarFlags {
    /// CIFAR-10 in the official binary layout (default: the profile's).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Runs (seeds) per net, instead of the profile's.
    #[arg(long, value_name = "N")]
    runs: Option<NonZeroUsize>,
    /// Hold N training images out for validation (the paper chose its schedule on a 45k/5k
    /// split; its final models, and the paper profile's, train on all 50k).
    #[arg(long, value_name = "N")]
    val_size: Option<usize>,
    /// Batch-norm statistics over groups of N images of the batch, as on the paper's GPUs
    /// (the paper and gpu profiles use 64; the others the whole batch): one process trains as
    /// batch/N ranks of N images would, and the reports record it beside the paper's 2 x 64.
    #[arg(long, value_name = "N")]
    bn_group: Option<NonZeroUsize>,
    /// Print the plan (nets, seeds, iterations, data, device) and every deviation from the
    /// paper, and exit without training.
    #[arg(long)]
    dry_run: bool,
}

/// Flags of the ImageNet targets (table2-5, fig4).
#[derive(Args)]
#[command(next_help_heading = "ImageNet targets")]
struct ImageNetFlags {
    /// ILSVRC-2012 as DIR/train/<synset>/<image> and DIR/val/<synset>/<image> (table3-5 need
    /// only the validation set, which may also be DIR/<synset>/<image>).
    #[arg(long, value_name = "DIR")]
    imagenet: Option<PathBuf>,
    /// Test on N evenly spaced validation images only (the report says so).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Weights for arch A: a registry name, hf:OWNER/REPO[/FILE][@REV], a local file, or none to
    /// leave A out (default: torchvision's, resnet34..152.tv_in1k); comma-separated.
    #[arg(long, value_name = "A=SOURCE", value_delimiter = ',', value_parser = arch_source)]
    weights: Vec<(String, String)>,
}

/// `cargo xtask soak`; the defaults are the full-length soak (about an hour).
#[derive(Args)]
struct SoakArgs {
    /// ResNet-20 training steps on the CIFAR-10 sample.
    #[arg(long, default_value_t = 5000, value_name = "N")]
    iterations: u64,
    /// Steps between resident-memory samples.
    #[arg(long, default_value_t = 100, value_name = "N")]
    every: u64,
    /// Images per training step.
    #[arg(long, default_value_t = 128, value_name = "N")]
    batch_size: usize,
    /// ResNet-18 evaluation passes over the generated image folder.
    #[arg(long, default_value_t = 50, value_name = "N")]
    passes: u64,
    /// JPEGs in the generated image folder.
    #[arg(long, default_value_t = 256, value_name = "N")]
    images: usize,
    /// The curves as JSON (default: results/soak.json in the workspace).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// A reproduction target of either half of the paper.
#[derive(Clone, Copy)]
enum AnyTarget {
    Cifar(Target),
    ImageNet(ImageNetTarget),
}

impl ValueEnum for AnyTarget {
    fn value_variants<'a>() -> &'a [Self] {
        use ImageNetTarget as I;
        use Target as C;
        &[
            AnyTarget::Cifar(C::Table1),
            AnyTarget::Cifar(C::Fig1),
            AnyTarget::Cifar(C::Fig6),
            AnyTarget::Cifar(C::Table6),
            AnyTarget::Cifar(C::Fig7),
            AnyTarget::Cifar(C::All),
            AnyTarget::ImageNet(I::Table2),
            AnyTarget::ImageNet(I::Fig4),
            AnyTarget::ImageNet(I::Table3),
            AnyTarget::ImageNet(I::Table4),
            AnyTarget::ImageNet(I::Table5),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            AnyTarget::Cifar(t) => t.to_possible_value(),
            AnyTarget::ImageNet(t) => t.to_possible_value(),
        }
    }
}

/// `A=SOURCE` as a pair.
fn arch_source(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(arch, source)| (arch.to_string(), source.to_string()))
        .ok_or_else(|| format!("expected ARCH=SOURCE, not `{pair}`"))
}

/// The workspace root, from this crate's manifest directory; for a runner
/// copied to a machine without the workspace (`target/cuda/dist/xtask`,
/// shipped with `data/cifar-10-sample` beside it), the binary's folder.
fn project_root() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    if workspace.join("Cargo.toml").exists() {
        return workspace;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or(workspace)
}

/// mimalloc, keeping freed memory for reuse (see `resnet-alloc`).
#[global_allocator]
static GLOBAL: resnet_alloc::MiMalloc = resnet_alloc::MiMalloc;

fn main() {
    resnet_term::start();
    if let Err(err) = run(Cli::parse().task) {
        resnet_term::exit_with(err.as_ref());
    }
}

/// Runs `task` from the workspace root.
fn run(task: Task) -> Result<()> {
    let root = project_root();
    match task {
        Task::Reproduce(args) => reproduce(args, &root),
        Task::Bench { json, only, runs } => bench::run(json, only.as_deref(), runs, &root),
        Task::BenchOne { name, runs } => bench::run_one(&name, runs, &root),
        Task::BenchJpegs { dir, images } => {
            let bytes = resnet_bench::write_jpeg_folder(&dir, images)?;
            println!("{images} JPEGs, {bytes} bytes, in {}", dir.display());
            Ok(())
        }
        Task::Soak(args) => soak::run(
            &soak::SoakOptions {
                iterations: args.iterations,
                every: args.every,
                batch_size: args.batch_size,
                passes: args.passes,
                images: args.images,
                out: args.out.unwrap_or_else(|| root.join("results/soak.json")),
            },
            &root,
        ),
    }
}

/// `cargo xtask reproduce`: refuses the flags of the other half of the paper.
fn reproduce(args: Reproduce, root: &std::path::Path) -> Result<()> {
    let out = args.out.unwrap_or_else(|| root.join("results"));
    let target = match args.target {
        AnyTarget::ImageNet(target) => {
            let c = &args.cifar;
            let given = [
                ("--data", c.data.is_some()),
                ("--runs", c.runs.is_some()),
                ("--val-size", c.val_size.is_some()),
                ("--bn-group", c.bn_group.is_some()),
                ("--dry-run", c.dry_run),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                anyhow::bail!(
                    "{flag} is a flag of the CIFAR-10 targets (table1, fig1, fig6, table6, fig7, all), not of {}",
                    target.name()
                );
            }
            let opts = ImageNetOptions {
                imagenet: args.imagenet.imagenet,
                limit: args.imagenet.limit,
                device: args.device,
                out,
                profile: args.profile,
                seed: args.seed,
                weights: args.imagenet.weights,
                precision: args.precision,
                channels_last: args.channels_last,
            };
            return match launched_world()? {
                Some(world) => resnet_repro::reproduce_imagenet_data_parallel(target, opts, &world)
                    .with_context(|| rank_of(&world)),
                None => resnet_repro::reproduce_imagenet(target, opts),
            };
        }
        AnyTarget::Cifar(target) => target,
    };
    let i = &args.imagenet;
    let given = [
        ("--imagenet", i.imagenet.is_some()),
        ("--limit", i.limit.is_some()),
        ("--weights", !i.weights.is_empty()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
        anyhow::bail!(
            "{flag} is a flag of the ImageNet targets (table2, fig4, table3, table4, table5), not of {}",
            target.name()
        );
    }
    let device = args.device;
    if device.starts_with("cuda") && !cfg!(feature = "cuda") {
        anyhow::bail!(
            "--device {device} needs the runner built with CUDA, and `cargo xtask` builds it without: run \
             `cargo run --release -p xtask --features cuda -- reproduce ...` (cudnn for cuDNN; needs the CUDA \
             toolkit, see scripts/build-cuda.sh)"
        );
    }
    let cifar = args.cifar;
    let mut profile = Profile::new(args.profile);
    profile.precision = args.precision;
    profile.channels_last = args.channels_last;
    if let Some(runs) = cifar.runs {
        profile.runs = runs.get();
        // Table 6 trains the Fig. 7 nets over every seed anyway: use them all.
        profile.fig7_runs = profile.fig7_runs.max(profile.runs);
    }
    if let Some(val_size) = cifar.val_size {
        profile.val_size = val_size;
    }
    if let Some(group) = cifar.bn_group {
        ensure!(
            profile.batch_size.is_multiple_of(group.get()),
            "--bn-group {group} must divide the {} profile's batch of {}",
            profile.name,
            profile.batch_size
        );
        profile.bn_group = Some(group);
    }
    let data = cifar.data.unwrap_or_else(|| profile.default_data(root));
    let opts = Options {
        profile,
        data,
        device,
        seed: args.seed,
        out,
    };
    if cifar.dry_run {
        print!("{}", resnet_repro::plan(target, &opts)?);
        return Ok(());
    }
    match launched_world()? {
        Some(world) => resnet_repro::reproduce_data_parallel(target, opts, &world)
            .with_context(|| rank_of(&world)),
        None => resnet_repro::reproduce(target, opts),
    }
}

/// The ranks this runner was started as, by torchrun or with its variables
/// (every rank trains every run together), or `None` for one process. Under
/// an MPI launcher without those variables it is refused, rather than
/// training the same runs twice side by side.
fn launched_world() -> Result<Option<TcpWorld>> {
    let world = TcpWorld::from_env(COLLECTIVE_TIMEOUT)?;
    ensure!(
        world.is_some() || !launched_by_mpi(),
        "started by an MPI launcher, but the runner joins its ranks as torchrun starts them: \
         set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in each (e.g. mpirun -n 2 sh -c \
         'RANK=$OMPI_COMM_WORLD_RANK WORLD_SIZE=$OMPI_COMM_WORLD_SIZE MASTER_ADDR=HOST \
         MASTER_PORT=29500 exec xtask reproduce ...'), or use torchrun"
    );
    Ok(world)
}

/// "rank R of N", for the errors of a rank.
fn rank_of(world: &TcpWorld) -> String {
    format!("rank {} of {}", world.rank(), world.world_size())
}

/// How long a rank of a data-parallel reproduction waits for the others in
/// a collective before it ends with an error (as `resnet train`'s default).
const COLLECTIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
