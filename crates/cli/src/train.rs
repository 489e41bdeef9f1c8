//! `resnet train`: train a net with the paper's recipe, on CIFAR-10 or on an
//! ImageNet-style image folder.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use resnet_data::Cifar10;
use resnet_eval::resolve_weights;
use resnet_hub::{registry, HubOptions, WeightsSource};
use resnet_models::{read_safetensors_metadata, ArchSpec, Precision};
use resnet_term::ProgressObserver;
use resnet_train::collective::{with_backend, Collective, SingleProcess, SumBackend, TcpWorld};
use resnet_train::run_dir::CONFIG_FILE;
use resnet_train::{
    DatasetKind, Freeze, LrSchedule, NoObserver, NormalizationKind, TrainConfig, TrainError,
    TrainObserver, UpdateRule, Warmup,
};

use crate::arch::ArchArgs;
use crate::stop::{self, StopOnSignal};

/// Flags of `resnet train`. Flags override the values of `--config`, which
/// override the paper's defaults: its CIFAR-10 recipe, or its ImageNet recipe
/// when the data is an image folder. `--resume` continues a run as its
/// config.json says: the flags that set a run's config are refused with it
/// rather than ignored.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Run folder: config, metrics, checkpoints and final weights go here (with
    /// `--resume RUN_DIR`, that folder).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in `--out` (or in the folder given here) from its last checkpoint, as
    /// its config.json says (the flags that set a run's config are refused with it).
    #[arg(long, num_args = 0..=1, value_name = "RUN_DIR", conflicts_with_all = RUN_CONFIG_FLAGS)]
    #[allow(clippy::option_option)]
    resume: Option<Option<PathBuf>>,
    /// TOML or JSON file with any TrainConfig fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// --arch, --shortcut, --stride-placement, --num-classes.
    #[command(flatten)]
    net: ArchArgs,
    /// Fine-tune: start from these weights (a weights file, a checkpoint, a
    /// run folder, a registry name such as resnet50.tv_in1k, or
    /// hf:OWNER/REPO[/FILE][@REV]) instead of a fresh initialisation; --arch
    /// defaults to the one stored with local weights.
    #[arg(long, value_name = "SRC")]
    weights: Option<String>,
    /// What trains: none frozen (default), or `backbone` frozen (with
    /// --weights: only the fc head trains; the backbone's batch norms keep
    /// their running statistics).
    #[arg(long)]
    freeze: Option<Freeze>,
    /// CIFAR-10 folder, or image folder ROOT/<class>/<image> (default data/cifar-10-sample).
    #[arg(long)]
    data: Option<PathBuf>,
    /// What --data holds (default: detected).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Image folders: validation images (class folders as in --data, or flat with --val-labels); their centre-crop error is the test error.
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Image folders: label file of a flat --val-data folder (`<file name> <class>` lines).
    #[arg(long)]
    val_labels: Option<PathBuf>,
    /// Image folders: skip image files that fail to open (each one logged)
    /// instead of refusing to start with the list of them.
    #[arg(long)]
    skip_bad_images: bool,
    /// SGD steps (paper: 64000 on CIFAR-10, 600000 on ImageNet).
    #[arg(long)]
    iterations: Option<u64>,
    /// Images per step (paper: 128 on CIFAR-10, 256 on ImageNet).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Batch-norm statistics over groups of N images of the batch in training, as on the paper's GPUs (CIFAR-10: 64; ImageNet: 32); must divide --batch-size; default: the whole batch.
    #[arg(long, value_name = "N")]
    bn_group: Option<NonZeroUsize>,
    /// Form of the momentum update; the two differ at every lr change.
    #[arg(long)]
    update_rule: Option<UpdateRule>,
    /// Label smoothing ε of the loss, in [0, 1) (default 0, the paper's plain cross-entropy).
    #[arg(long, value_name = "EPS")]
    label_smoothing: Option<f64>,
    /// Initial learning rate (paper: 0.1).
    #[arg(long)]
    lr: Option<f64>,
    /// Iterations at which the lr is divided by 10 (paper, CIFAR-10: 32000,48000); replaces the ImageNet plateau schedule.
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<u64>>,
    /// Learning-rate schedule instead of the recipe's: `cosine` (from --lr
    /// down to 0 over --iterations; not the paper's). Not with --milestones.
    #[arg(long)]
    lr_schedule: Option<LrScheduleFlag>,
    /// Warm up at lr 0.01 until the training error is below 80% (default: on for resnet110 and resnet1202).
    #[arg(long)]
    warmup: Option<bool>,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// CIFAR-10: training images held out for validation, from the end (paper: 5000; default 0).
    #[arg(long)]
    val_size: Option<usize>,
    /// Steps between evaluations (0: only at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Steps between checkpoints (0: only at the end).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Steps between metric records.
    #[arg(long)]
    log_every: Option<u64>,
    /// Input normalization.
    #[arg(long)]
    normalization: Option<NormalizationKind>,
    /// Turn off the augmentation (CIFAR-10: pad-4 crop and flip; image folders: scale, flip and colour).
    #[arg(long)]
    no_augment: bool,
    /// Threads preparing batches.
    #[arg(long)]
    loader_threads: Option<usize>,
    /// Precision of the convolutions and the fc layer: bf16 is mixed
    /// precision (bf16 operands, f32 sums; parameters, batch norm, loss,
    /// update and checkpoints stay f32). On the CPU bf16 gives a GPU's bf16
    /// results, computed in f32: slower than fp32 there.
    #[arg(long)]
    precision: Option<Precision>,
    /// Keep the activations channels-last (NHWC in memory), the layout
    /// cuDNN's tensor-core kernels want: for CUDA. The same training up to
    /// the order of sums; slower on the CPU, which transposes around every
    /// convolution and batch norm.
    #[arg(long)]
    channels_last: bool,
    /// Device: cpu, cuda[:N] or metal[:N]. On several ranks, `cuda` is each
    /// rank's own GPU, by its index on its node (LOCAL_RANK from torchrun,
    /// OMPI_COMM_WORLD_LOCAL_RANK from mpirun, SLURM_LOCALID from srun).
    #[arg(long)]
    device: Option<String>,
    /// As one of several ranks (under mpirun, or torchrun's RANK and WORLD_SIZE):
    /// seconds a rank waits for the others in a collective before it ends the job,
    /// naming itself (a rank that died or hangs).
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    collective_timeout: f64,
    /// What sums the gradients of several ranks: auto (NCCL on CUDA where this
    /// build has it and libnccl.so loads, else the ranks' MPI or TCP world),
    /// host (always MPI or TCP), nccl (NCCL, even for one rank; an error
    /// where it is missing). CPU runs always sum through MPI or TCP.
    #[arg(long, value_enum, default_value_t = SumBackend::Auto)]
    collective_backend: SumBackend,
}

/// The values of --lr-schedule.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LrScheduleFlag {
    /// From --lr down to 0 over --iterations (PyTorch's CosineAnnealingLR; not the paper's).
    Cosine,
}

/// What `dir` holds, if it is a folder: CIFAR-10 if it is a CIFAR-10 folder,
/// else an image folder.
fn detect_dataset(dir: &Path) -> Option<DatasetKind> {
    if Cifar10::locate(dir).is_ok() {
        Some(DatasetKind::Cifar10)
    } else {
        dir.is_dir().then_some(DatasetKind::ImageFolder)
    }
}

/// The paper's recipe for `dataset`.
fn recipe(dataset: DatasetKind) -> TrainConfig {
    match dataset {
        DatasetKind::Cifar10 => TrainConfig::default(),
        DatasetKind::ImageFolder => TrainConfig::imagenet(),
    }
}

/// The top-level fields of a TOML or JSON config file.
fn read_config_fields(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --config {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        toml::from_str::<toml::Value>(&text)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))
            .and_then(|v| serde_json::to_value(v).map_err(|e| anyhow::anyhow!("{e}")))
    };
    match parsed.with_context(|| format!("--config {}", path.display()))? {
        serde_json::Value::Object(fields) => Ok(fields),
        _ => anyhow::bail!(
            "--config {}: expected a table of TrainConfig fields",
            path.display()
        ),
    }
}

/// `base` with the fields of a config file in place of its own. A value
/// that does not fit is an error naming the file and its field.
fn overlay(
    base: &TrainConfig,
    fields: serde_json::Map<String, serde_json::Value>,
    path: &Path,
) -> Result<TrainConfig> {
    let with = |fields: &mut dyn Iterator<Item = (&String, &serde_json::Value)>| {
        let mut merged = serde_json::to_value(base)?;
        if let Some(own) = merged.as_object_mut() {
            own.extend(fields.map(|(k, v)| (k.clone(), v.clone())));
        }
        serde_json::from_value::<TrainConfig>(merged)
    };
    with(&mut fields.iter()).map_err(|e| {
        // serde_json names an unknown field but not the field of a bad value:
        // that is the first field that fails on its own.
        let path = path.display();
        match fields
            .iter()
            .find(|&field| with(&mut std::iter::once(field)).is_err())
        {
            Some((name, _)) => anyhow::anyhow!("--config {path}: field `{name}`: {e}"),
            None => anyhow::anyhow!("--config {path}: {e}"),
        }
    })
}

impl TrainArgs {
    /// The dataset: `--dataset`, else what the `--data` folder holds, else
    /// the config file's, else CIFAR-10.
    fn dataset(
        &self,
        file: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<DatasetKind> {
        if let Some(dataset) = self
            .dataset
            .or_else(|| detect_dataset(self.data.as_deref()?))
        {
            return Ok(dataset);
        }
        match (file.and_then(|f| f.get("dataset")), &self.config) {
            (Some(value), Some(path)) => serde_json::from_value(value.clone())
                .map_err(|e| anyhow::anyhow!("--config {}: dataset: {e}", path.display())),
            _ => Ok(DatasetKind::Cifar10),
        }
    }

    /// The run's config: the recipe of its dataset, then `--config`, then flags.
    fn config(&self) -> Result<TrainConfig> {
        let file = self.config.as_deref().map(read_config_fields).transpose()?;
        let file_sets = |field: &str| file.as_ref().is_some_and(|f| f.contains_key(field));
        let file_sets = |field: &str| file_sets(field);
        let dataset = self.dataset(file.as_ref())?;
        let mut c = recipe(dataset);
        if let (Some(fields), Some(path)) = (file.clone(), &self.config) {
            c = overlay(&c, fields, path)?;
        }
        c.dataset = dataset;
        let warmup_default = self.config.is_none()
            && self
                .net
                .arch
                .as_deref()
                .is_some_and(|a| a == "resnet110" || a == "resnet1202");
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { c.$field = v.clone(); })* };
        }
        set!(
            label_smoothing,
            data,
            iterations,
            batch_size,
            seed,
            val_size,
            eval_every,
            checkpoint_every,
            log_every,
            normalization,
            loader_threads,
            device,
            precision
        );
        if let Some(arch) = &self.net.arch {
            c.arch = arch.clone();
        }
        if let Some(s) = self.net.shortcut {
            c.shortcut = Some(s);
        }
        if let Some(placement) = self.net.stride_placement {
            c.stride_placement = Some(placement);
        }
        if let Some(n) = self.net.num_classes {
            c.num_classes = Some(n);
        }
        if let Some(freeze) = self.freeze {
            c.freeze = freeze;
        }
        let arch_given = self.net.arch.is_some() || file_sets("arch");
        if let Some(weights) = self.local_weights()? {
            adopt_stored_arch(&mut c, &weights, arch_given)?;
            c.weights = Some(weights);
        } else if let Some(entry) = self.weights.as_deref().and_then(registry::find) {
            // Registry weights bring their architecture.
            if !arch_given {
                c.arch = entry.arch.to_string();
            }
        }
        if let Some(rule) = self.update_rule {
            c.update_rule = rule;
        }
        if let Some(group) = self.bn_group {
            c.bn_group = Some(group);
        }
        if let Some(dir) = &self.val_data {
            c.val_data = Some(dir.clone());
        }
        if let Some(file) = &self.val_labels {
            c.val_labels = Some(file.clone());
        }
        if self.skip_bad_images {
            c.skip_bad_images = true;
        }
        if let Some(m) = &self.milestones {
            c.schedule.schedule = match &c.schedule.schedule {
                LrSchedule::Step { base_lr, gamma, .. } => LrSchedule::Step {
                    base_lr: *base_lr,
                    milestones: m.clone(),
                    gamma: *gamma,
                },
                LrSchedule::Plateau {
                    base_lr, factor, ..
                } => LrSchedule::Step {
                    base_lr: *base_lr,
                    milestones: m.clone(),
                    gamma: *factor,
                },
                LrSchedule::Cosine { base_lr, .. } => LrSchedule::Step {
                    base_lr: *base_lr,
                    milestones: m.clone(),
                    gamma: 0.1,
                },
            };
        }
        if let Some(lr) = self.lr {
            match &mut c.schedule.schedule {
                LrSchedule::Step { base_lr, .. }
                | LrSchedule::Plateau { base_lr, .. }
                | LrSchedule::Cosine { base_lr, .. } => {
                    *base_lr = lr;
                }
            }
        }
        if self.lr_schedule.is_some() {
            if self.milestones.is_some() {
                bail!("--lr-schedule cosine and --milestones are two schedules: give one");
            }
            let base_lr = match &c.schedule.schedule {
                LrSchedule::Step { base_lr, .. }
                | LrSchedule::Plateau { base_lr, .. }
                | LrSchedule::Cosine { base_lr, .. } => *base_lr,
            };
            c.schedule.schedule = LrSchedule::Cosine {
                base_lr,
                iterations: c.iterations,
                min_lr: 0.0,
            };
        }
        if self.warmup.unwrap_or(warmup_default) {
            c.schedule.warmup.get_or_insert_with(Warmup::default);
        } else if self.warmup == Some(false) {
            c.schedule.warmup = None;
        }
        if self.channels_last {
            c.channels_last = true;
        }
        if self.no_augment {
            c.augment = false;
        }
        c.validate()?;
        Ok(c)
    }
}

/// The flags that set a new run's config (as argument ids).
const RUN_CONFIG_FLAGS: [&str; 32] = [
    "config",
    "arch",
    "shortcut",
    "stride_placement",
    "num_classes",
    "weights",
    "freeze",
    "data",
    "dataset",
    "val_data",
    "val_labels",
    "skip_bad_images",
    "iterations",
    "batch_size",
    "bn_group",
    "update_rule",
    "label_smoothing",
    "lr",
    "milestones",
    "lr_schedule",
    "warmup",
    "seed",
    "val_size",
    "eval_every",
    "checkpoint_every",
    "log_every",
    "normalization",
    "no_augment",
    "loader_threads",
    "precision",
    "channels_last",
    "device",
];

/// A run stopped on request (a signal), its checkpoint saved.
#[derive(Debug)]
struct StoppedRun {
    path: PathBuf,
    iteration: u64,
    /// The ranks it ran on, and must resume on.
    world_size: usize,
    /// Whether they were joined over TCP (RANK, WORLD_SIZE, ...) rather than
    /// by mpirun.
    tcp: bool,
}

impl std::fmt::Display for StoppedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ranks, launcher) = match self.world_size {
            1 => (String::new(), String::new()),
            n if self.tcp => (
                format!(" on {n} ranks"),
                format!("each of the {n} ranks, with the same RANK, WORLD_SIZE and MASTER_*: "),
            ),
            n => (format!(" on {n} ranks"), format!("mpirun -n {n} ")),
        };
        write!(
            f,
            "stopped after iteration {}{ranks}; the checkpoint is saved, resume with: \
             {launcher}resnet train --resume --out {}",
            self.iteration,
            self.path.display()
        )
    }
}

impl std::error::Error for StoppedRun {}

impl TrainArgs {
    /// The --weights path, when it names a local file or folder (not a
    /// registry name or a hub file).
    fn local_weights(&self) -> Result<Option<PathBuf>> {
        let Some(weights) = &self.weights else {
            return Ok(None);
        };
        match WeightsSource::parse(weights)? {
            WeightsSource::Local(path) if registry::find(weights).is_none() => Ok(Some(path)),
            _ => Ok(None),
        }
    }

    /// Fetches hub --weights (a registry name or `hf:` file) into the run
    /// folder `out` as [`HUB_WEIGHTS_FILE`], with their metadata, and points
    /// the config at it: the run starts, and resumes, from local weights.
    /// Refused in a run of `world_size` > 1 ranks, where only rank 0 may write.
    fn fetch_hub_weights(
        &self,
        config: &mut TrainConfig,
        out: &Path,
        world_size: usize,
    ) -> Result<()> {
        let Some(weights) = &self.weights else {
            return Ok(());
        };
        if self.local_weights()?.is_some() {
            return Ok(());
        }
        if world_size > 1 {
            // Every rank would write the fetched file; only rank 0 may write.
            bail!(
                "--weights from the hub in a run of {world_size} ranks: fetch them first (e.g. \
                 `resnet export --weights ... --out DIR`, in one process) and pass the local file"
            );
        }
        if out.join(CONFIG_FILE).exists() {
            bail!(
                "{} already holds a run; resume it with --resume, or give another --out",
                out.display()
            );
        }
        let mut spec = ArchSpec::from_id(&config.arch)?;
        if let Some(shortcut) = config.shortcut {
            spec = spec.with_shortcut(shortcut);
        }
        let pretrained = resnet_hub::load_model(
            weights,
            &spec,
            config.stride_placement,
            &candle_core::Device::Cpu,
            &HubOptions::default(),
        )
        .with_context(|| format!("--weights {weights}"))?;
        let spec = pretrained.model.spec();
        config.stride_placement = Some(spec.stride_placement);
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let path = std::path::absolute(out.join(HUB_WEIGHTS_FILE))?;
        pretrained.model.save(&path)?;
        tracing::info!(weights = %weights, file = %path.display(), "fetched the initial weights");
        config.weights = Some(path);
        Ok(())
    }

    /// The run folder: `--resume RUN_DIR`'s, else `--out`'s (which clap
    /// asks for unless `--resume` is given); two different folders are an
    /// error.
    fn run_dir(&self) -> Result<&Path> {
        let resumed = self.resume.as_ref().and_then(Option::as_deref);
        match (resumed, self.out.as_deref()) {
            (Some(dir), Some(out)) if dir != out => bail!(
                "--resume {} and --out {} name two run folders; give one",
                dir.display(),
                out.display()
            ),
            (Some(dir), _) | (None, Some(dir)) => Ok(dir),
            (None, None) => bail!("no run folder: give --out RUN_DIR (or --resume RUN_DIR)"),
        }
    }
}

/// The file of a run folder that holds hub weights a run was started from.
const HUB_WEIGHTS_FILE: &str = "initial-weights.safetensors";

/// Removes what a run that did not start (no config.json written) left in
/// the run folder `out` it made: the hub weights fetched into it, then the
/// folder if that left it empty. A run that started keeps its folder, to
/// resume.
fn remove_unstarted_run(out: &Path) {
    if out.join(CONFIG_FILE).exists() {
        return;
    }
    let weights = out.join(HUB_WEIGHTS_FILE);
    for removed in [std::fs::remove_file(&weights), std::fs::remove_dir(out)] {
        if let Err(e) = removed {
            tracing::debug!(folder = %out.display(), "not removed: {e}");
        }
    }
}

/// Sets `config`'s arch (and shortcut and stride placement, unless given) to
/// those stored in the metadata of the local weights `path`, unless the arch
/// was given: fine-tuning a run's weights needs no --arch.
fn adopt_stored_arch(config: &mut TrainConfig, path: &Path, arch_given: bool) -> Result<()> {
    let file = resolve_weights(path)?;
    if file.extension().is_none_or(|e| e != "safetensors") {
        return Ok(());
    }
    let Some(metadata) = read_safetensors_metadata(&file)? else {
        return Ok(());
    };
    if !arch_given {
        config.arch = metadata.arch.clone();
        config.shortcut = config.shortcut.or(metadata.shortcut);
    }
    if config.arch == metadata.arch {
        config.stride_placement = config.stride_placement.or(Some(metadata.stride_placement));
    }
    Ok(())
}

/// Trains (or resumes) and prints the final errors. SIGINT, SIGTERM or SIGUSR1 stops
/// the run after its current step with a checkpoint, and says how to resume.
/// Started by `mpirun -n N` (feature `mpi`), this process is one of N
/// data-parallel ranks: `--batch-size` is the global batch, rank 0 writes
/// the run folder and reports, and a rank that fails ends the whole job.
///
/// Started as `torchrun` starts its ranks (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
/// `MASTER_PORT` in the environment, no MPI needed), it is rank `RANK` of a
/// job joined over TCP ([`TcpWorld`]); a rank that fails ends with an error
/// naming it, and the others end with one naming it too.
pub fn run(args: &TrainArgs) -> Result<()> {
    let timeout = args.collective_timeout;
    if !(timeout.is_finite() && timeout > 0.0) {
        anyhow::bail!("--collective-timeout must be a positive number of seconds, got {timeout}");
    }
    let timeout = std::time::Duration::from_secs_f64(timeout);
    #[cfg(feature = "mpi")]
    if let Some(world) = resnet_train::collective::MpiWorld::from_launcher(timeout) {
        if world.world_size() > 1 {
            return run_rank(args, world);
        }
    }
    match TcpWorld::from_env(timeout)? {
        Some(world) => run_tcp_rank(args, &world),
        None => run_in(args, &SingleProcess),
    }
}

/// [`run_in`] as one rank of a job joined over TCP. A stop ends every rank
/// with status 1 once rank 0 has saved its checkpoint, rank 0 saying how to
/// resume; any other error is this rank's, named; ending, the rank closes
/// its connections, so that no other waits for it.
fn run_tcp_rank(args: &TrainArgs, world: &TcpWorld) -> Result<()> {
    let Err(mut err) = run_in(args, world) else {
        return Ok(());
    };
    let (rank, size) = (world.rank(), world.world_size());
    if let Some(stopped) = err.downcast_mut::<StoppedRun>() {
        if rank != 0 {
            std::process::exit(1);
        }
        stopped.tcp = true;
    }
    Err(err.context(format!("rank {rank} of {size}")))
}

/// [`run_in`] as one rank of an MPI job. A stop ends every rank with status
/// 1 once rank 0 has saved its checkpoint, rank 0 saying how to resume. Any
/// other error ends every rank (`MPI_Abort`), so that none waits for this
/// one; it is printed first, with the rank.
#[cfg(feature = "mpi")]
fn run_rank(args: &TrainArgs, world: resnet_train::collective::MpiWorld) -> Result<()> {
    let Err(err) = run_in(args, &world) else {
        return Ok(());
    };
    let (rank, size) = (world.rank(), world.world_size());
    if err.downcast_ref::<StoppedRun>().is_some() {
        // Every rank stopped after the same step, and the checkpoint is
        // saved. Printed before MPI is finalized: a launcher that is ending
        // the job (mpirun on SIGTERM) may kill the ranks while they do.
        if rank == 0 {
            eprintln!("error: {err:#}");
        }
        drop(world);
        std::process::exit(1);
    }
    eprintln!("error: rank {rank} of {size}: {err:#}");
    if let Some(TrainError::RankFailed { .. }) = err.downcast_ref::<TrainError>() {
        // The failed rank ends the job itself, after printing why; give it
        // the time to, so that its cause is not cut off by this abort.
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    world.abort(1)
}

/// Trains or resumes as rank `group.rank()` of `group`; rank 0 shows the
/// progress and prints the final errors.
fn run_in(args: &TrainArgs, host: &dyn Collective) -> Result<()> {
    let timeout = std::time::Duration::from_secs_f64(args.collective_timeout);
    let group = &*with_backend(host, args.collective_backend, timeout)?;
    let flag = stop::on_signals()?;
    let mut progress;
    let mut quiet;
    let observer: &mut dyn TrainObserver = if group.rank() == 0 {
        progress = StopOnSignal::new(ProgressObserver::new("train"), flag);
        &mut progress
    } else {
        quiet = StopOnSignal::new(NoObserver, flag);
        &mut quiet
    };
    let run_dir = args.run_dir()?;
    let summary = match &args.resume {
        Some(_) => resnet_train::resume_data_parallel(run_dir, observer, group),
        None => {
            let mut config = args.config()?;
            let fresh = !run_dir.exists();
            args.fetch_hub_weights(&mut config, run_dir, group.world_size())?;
            let summary = resnet_train::train_data_parallel(&config, run_dir, observer, group);
            if summary.is_err() && fresh {
                remove_unstarted_run(run_dir);
            }
            summary
        }
    };
    let summary = match summary {
        Err(TrainError::Stopped { path, iteration }) => {
            return Err(StoppedRun {
                path,
                iteration,
                world_size: group.world_size(),
                tcp: false,
            }
            .into())
        }
        other => other?,
    };
    if group.rank() != 0 {
        return Ok(());
    }
    let test = match summary.test.as_ref() {
        Some(test) => format!(
            "test error {:.2}% (top-5 {:.2}%) on {} images",
            100.0 * test.top1_error,
            100.0 * test.top5_error,
            test.images
        ),
        None => "no test images (no --val-data)".into(),
    };
    println!(
        "{}: {} iterations in {:.0} s; train loss {:.4}, train error {:.2}%, {test}",
        summary.arch,
        summary.iterations,
        summary.wall_time,
        summary.final_train_loss,
        100.0 * summary.final_train_error,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use resnet_models::Precision;

    use super::TrainArgs;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        train: TrainArgs,
    }

    /// The arch of the config `resnet train --out run ARGS` makes.
    fn arch(args: &[&str]) -> String {
        let args = ["train", "--out", "run", "--dataset", "cifar10"]
            .iter()
            .chain(args);
        let command = Command::try_parse_from(args).unwrap();
        command.train.config().unwrap().arch
    }

    /// Every flag of `train` but the run folder's, the ranks' and --resume
    /// itself sets a run's config, and is refused with --resume: a new flag
    /// must be placed on one side or the other.
    #[test]
    fn every_flag_that_sets_a_runs_config_conflicts_with_resume() {
        use clap::Args;
        let command = TrainArgs::augment_args(clap::Command::new("train"));
        let not_config = ["out", "resume", "collective_timeout", "collective_backend"];
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            let listed = super::RUN_CONFIG_FLAGS.contains(&id);
            assert!(listed != not_config.contains(&id), "--{id}");
        }
    }

    #[test]
    fn a_bad_value_in_a_config_file_is_an_error_naming_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "iterations = 10\nprecision = \"fp16\"\n").unwrap();
        let args = ["train", "--out", "run", "--dataset", "cifar10", "--config"];
        let command =
            Command::try_parse_from(args.iter().chain(&[file.to_str().unwrap()])).unwrap();
        let err = command.train.config().unwrap_err().to_string();
        assert!(
            err.contains("run.toml") && err.contains("field `precision`"),
            "{err}"
        );
        assert!(err.contains("fp16") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn precision_is_fp32_unless_bf16_is_asked_and_other_values_are_refused() {
        let config = |args: &[&str]| {
            let args = ["train", "--out", "run", "--dataset", "cifar10"]
                .iter()
                .chain(args);
            Command::try_parse_from(args).map(|c| c.train.config().unwrap().precision)
        };
        assert_eq!(config(&[]).unwrap(), Precision::Fp32);
        assert_eq!(config(&["--precision", "bf16"]).unwrap(), Precision::Bf16);
        let err = config(&["--precision", "fp16"]).err().unwrap().to_string();
        assert!(err.contains("--precision") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn activations_are_nchw_unless_channels_last_is_asked() {
        let channels_last = |args: &[&str]| {
            let args = ["train", "--out", "run"].iter().chain(args);
            let command = Command::try_parse_from(args).unwrap();
            command.train.config().unwrap().channels_last
        };
        assert!(!channels_last(&[]));
        assert!(channels_last(&["--channels-last"]));
        let resumed = Command::try_parse_from(["train", "--resume", "run", "--channels-last"]);
        let err = resumed
            .err()
            .expect("a config flag with --resume")
            .to_string();
        assert!(err.contains("--channels-last"), "{err}");
    }

    #[test]
    fn registry_weights_bring_their_arch_unless_one_is_given() {
        assert_eq!(arch(&[]), "resnet20");
        assert_eq!(arch(&["--weights", "resnet50.tv_in1k"]), "resnet50");
        assert_eq!(arch(&["--weights", "hf:timm/resnet18.tv_in1k"]), "resnet18");
        let given = ["--arch", "resnet101", "--weights", "resnet50.tv_in1k"];
        assert_eq!(arch(&given), "resnet101");
    }
}
