//! The training loop: step, evaluate, log and checkpoint, resumable bit for bit.
//!
//! One loop trains on CIFAR-10 or on an image folder; what differs between
//! them (loading, normalisation, batches, evaluation) is in the `dataset`
//! module.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use resnet_data::{LoaderPosition, Shard};
use resnet_eval::{MODEL_FILE, NORMALIZATION_PREFIX};
use resnet_models::{BlockKind, Precision, ResNet, TensorKind, MOMENTUM_PREFIX};
use resnet_ops::DeviceSpec;

use crate::checkpoint::{
    checkpoint_files, load_checkpoint_tensors, read_checkpoint, save_checkpoint, CheckpointState,
};
use crate::collective::{Collective, SingleProcess};
use crate::config::{Freeze, RunConfigFile, TrainConfig};
use crate::dataset::{Dataset, Evaluation, RunData, StoredNormalization, TrainBatches};
use crate::metrics::{MetricRecord, MetricWindow, MetricsLog};
use crate::run_dir::{
    read_json, save_tensors, write_json, RunLock, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE,
    SUMMARY_FILE,
};
use crate::summary::RunSummary;
use crate::{Result, Scheduler, Sgd, TrainError};

/// Receives progress from the loop (a progress bar, a logger, a test probe).
pub trait TrainObserver {
    /// Before the first step: the iteration the run starts at and the total.
    fn on_start(&mut self, _start: u64, _total: u64) {}
    /// After every step: iterations done, the step's loss and learning rate.
    fn on_step(&mut self, _done: u64, _loss: f64, _lr: f64) {}
    /// After every metric record is written.
    fn on_record(&mut self, _record: &MetricRecord) {}
    /// Asked after every step: `true` stops the run there, after saving a
    /// checkpoint to resume from (a graceful stop, e.g. on a signal).
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl TrainObserver for NoObserver {}

/// Starts a new run in `run_dir`, which must not already hold one. A bad
/// config, data folder (a bad image header included) or initial `weights`
/// is reported before anything is written. The run holds the folder's [`RunLock`] while it
/// trains; its config is written with absolute data paths.
pub fn train(
    config: &TrainConfig,
    run_dir: &Path,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary> {
    train_data_parallel(config, run_dir, observer, &SingleProcess)
}

/// [`train`] as one rank of the data-parallel run of `group`'s ranks,
/// each of which calls it with the same arguments: `batch_size` is the
/// global batch, of which each rank takes an equal, contiguous share (the
/// same permutation and augmentation on every rank), with batch norm over
/// its share; the gradients are averaged over the ranks before every rank
/// applies the same update, and the running BN statistics are averaged over
/// the ranks after every step (the `bn_group` rule: 2 ranks of 64 images
/// train as one process with `bn_group` 64). Rank 0 alone writes the run
/// folder; a rank that fails makes every other one end with
/// [`TrainError::RankFailed`] naming it.
pub fn train_data_parallel(
    config: &TrainConfig,
    run_dir: &Path,
    observer: &mut dyn TrainObserver,
    group: &dyn Collective,
) -> Result<RunSummary> {
    let writer = group.rank() == 0;
    let config_path = run_dir.join(CONFIG_FILE);
    let run_exists = || TrainError::RunExists {
        path: run_dir.to_path_buf(),
    };
    let setup = || -> Result<_> {
        config.validate()?;
        config.validate_world(group.world_size())?;
        let config = config.with_absolute_paths()?;
        if writer && config_path.exists() {
            return Err(run_exists());
        }
        let dataset = Dataset::open(&config)?;
        // Weights that do not fit, a batch larger than the data and a device
        // that does not open are refused before the run folder is written.
        if config.weights.is_some() {
            load_initial_weights(&config, &build_model(&config, &Device::Cpu)?)?;
        }
        dataset.check_batch(&config)?;
        let device = open_device(&config, group)?;
        if !writer {
            return Ok((config, dataset, device, None));
        }
        std::fs::create_dir_all(run_dir).map_err(crate::run_dir::io_error(run_dir))?;
        let lock = RunLock::acquire(run_dir)?;
        // Checked again under the lock: another process may have started a
        // run here while the data was being opened.
        if config_path.exists() {
            return Err(run_exists());
        }
        let file = RunConfigFile {
            world_size: group.world_size(),
            ..RunConfigFile::new(config.clone(), dataset.classes())
        };
        write_json(&config_path, &file)?;
        Ok((config, dataset, device, Some(lock)))
    };
    let (config, dataset, device, _lock) = agree(group, setup(), "while setting up the run")?;
    run(&config, dataset, device, run_dir, observer, group)
}

/// Continues the run in `run_dir` from its last checkpoint with the config
/// it was started with; a finished run just returns its summary. A latest
/// checkpoint that does not read is skipped, with a warning, for the one
/// before it. A folder in use by another process is refused.
pub fn resume(run_dir: &Path, observer: &mut dyn TrainObserver) -> Result<RunSummary> {
    resume_data_parallel(run_dir, observer, &SingleProcess)
}

/// [`resume`] as one rank of a data-parallel run (see
/// [`train_data_parallel`]) on as many ranks as it was started on (the
/// ranks' batch-norm groups are part of the recipe): every rank reads the
/// run folder (shared between nodes), rank 0 alone writes it, and every rank
/// continues at the checkpoint's position.
pub fn resume_data_parallel(
    run_dir: &Path,
    observer: &mut dyn TrainObserver,
    group: &dyn Collective,
) -> Result<RunSummary> {
    let config_path = run_dir.join(CONFIG_FILE);
    let setup = || -> Result<_> {
        if !config_path.exists() {
            return Err(TrainError::NoRun {
                path: run_dir.to_path_buf(),
            });
        }
        let lock = match group.rank() {
            0 => Some(RunLock::acquire(run_dir)?),
            _ => None,
        };
        let summary = run_dir.join(SUMMARY_FILE);
        if summary.exists() {
            return Ok(Err(read_json(&summary)?));
        }
        let file: RunConfigFile = read_json(&config_path)?;
        file.config.validate()?;
        if file.world_size != group.world_size() {
            return Err(TrainError::InvalidConfig(format!(
                "{} was trained on {} rank(s) (each with its own batch-norm statistics); \
                 resume it on as many (`mpirun -n {}`), not {}",
                run_dir.display(),
                file.world_size,
                file.world_size,
                group.world_size()
            )));
        }
        let dataset = Dataset::open(&file.config)?;
        let device = open_device(&file.config, group)?;
        Ok(Ok((file.config, dataset, device, lock)))
    };
    match agree(group, setup(), "while opening the run to resume")? {
        Ok((config, dataset, device, _lock)) => {
            run(&config, dataset, device, run_dir, observer, group)
        }
        Err(summary) => Ok(summary),
    }
}

/// `local`, this rank's result of a step every rank takes, once every rank
/// has taken it: this rank's error, or else the error that another rank
/// failed (the lowest one), or else `local`'s value.
fn agree<T>(group: &dyn Collective, local: Result<T>, during: &str) -> Result<T> {
    if group.world_size() == 1 {
        return local;
    }
    let mut failed = vec![0.0; group.world_size()];
    if local.is_err() {
        failed[group.rank()] = 1.0;
    }
    group.all_reduce_sum_f64(&mut failed)?;
    let value = local?;
    match failed.iter().position(|&f| f > 0.0) {
        Some(rank) => Err(TrainError::RankFailed {
            rank,
            during: during.into(),
        }),
        None => Ok(value),
    }
}

/// The model described by a config, freshly initialised from its seed (its
/// backbone frozen if the config says so; its `weights` are loaded by the
/// run, see [`load_initial_weights`]).
pub fn build_model(config: &TrainConfig, device: &Device) -> Result<ResNet> {
    Ok(ResNet::new(&config.spec()?, config.seed, device)?
        .with_bn_group(config.bn_group)
        .with_precision(config.precision)
        .with_channels_last(config.channels_last)
        .with_frozen_backbone(config.freeze == Freeze::Backbone))
}

/// Loads the config's `weights` (a weights file or run folder) into `model`,
/// the start of a fine-tuning run: everything but the fc head when the
/// config sets `num_classes` (the head keeps its fresh initialisation),
/// everything otherwise. Metadata of the file that describe another
/// architecture, and any tensor but the head's of another shape, are errors
/// naming the file and the field or tensor, and so are bottleneck weights
/// without metadata unless the config names their stride placement.
/// Without `weights`, nothing.
pub fn load_initial_weights(config: &TrainConfig, model: &ResNet) -> Result<()> {
    let Some(weights) = &config.weights else {
        return Ok(());
    };
    let path = resnet_eval::resolve_weights(weights)?;
    let (mut tensors, metadata) = resnet_eval::read_weights(&path)?;
    tensors.retain(|name, _| !name.starts_with(NORMALIZATION_PREFIX));
    let source = path.display().to_string();
    if metadata.is_none()
        && model.spec().block == BlockKind::Bottleneck
        && config.stride_placement.is_none()
    {
        return Err(TrainError::InvalidConfig(format!(
            "{source}: bottleneck weights without metadata may place their strides as the \
             paper (v1) or as torchvision and timm (v1.5); say which with \
             stride_placement (--stride-placement)"
        )));
    }
    match config.num_classes {
        Some(_) => {
            if let Some(metadata) = metadata {
                let source_spec = model.spec().clone().with_num_classes(metadata.num_classes);
                metadata.check(&source_spec, &path)?;
            }
            model.load_backbone(&tensors, &source)?;
        }
        None => {
            if let Some(metadata) = metadata {
                metadata.check(model.spec(), &path)?;
            }
            model.load_tensors(&tensors, &source)?;
        }
    }
    tracing::info!(weights = %source, head_replaced = config.num_classes.is_some(), "loaded the initial weights");
    Ok(())
}

/// Where a run starts: fresh, or from its checkpoint.
struct Start {
    iteration: u64,
    loader: LoaderPosition,
    wall_time: f64,
    window: MetricWindow,
    data: RunData,
}

/// Restores model, optimizer, scheduler and input normalisation from the
/// run's latest checkpoint that reads, if any; a fresh run computes its
/// normalisation. Only a `writer` makes an older checkpoint the latest when
/// the latest does not read.
fn restore(
    run_dir: &Path,
    config: &TrainConfig,
    dataset: Dataset,
    model: &ResNet,
    sgd: &mut Sgd,
    scheduler: &mut Scheduler,
    writer: bool,
) -> Result<Start> {
    let candidates = checkpoint_files(run_dir);
    if candidates.is_empty() {
        load_initial_weights(config, model)?;
        return Ok(Start {
            iteration: 0,
            loader: LoaderPosition::default(),
            wall_time: 0.0,
            window: MetricWindow::default(),
            data: dataset.normalize(None, config)?,
        });
    }
    let mut failures = Vec::new();
    for path in &candidates {
        let restored = read_checkpoint(path).and_then(|state| {
            let norm = load_state(run_dir, &state, &dataset, model, sgd, scheduler)?;
            Ok((state, norm))
        });
        let (state, norm) = match restored {
            Ok(restored) => restored,
            Err(error) => {
                failures.push(format!("{}: {error}", path.display()));
                continue;
            }
        };
        if !failures.is_empty() {
            tracing::warn!(
                "the latest checkpoint does not read ({}); resuming from the one before it, {} (iteration {})",
                failures.join("; "),
                path.display(),
                state.iteration
            );
            // The older checkpoint becomes the latest, so that the next
            // checkpoint keeps it as its fallback.
            if writer {
                write_json(&run_dir.join(CHECKPOINT_FILE), &state)?;
            }
        }
        tracing::info!(iteration = state.iteration, "resuming from checkpoint");
        return Ok(Start {
            iteration: state.iteration,
            loader: state.loader,
            wall_time: state.wall_time,
            window: state.window,
            data: dataset.normalize(Some(norm), config)?,
        });
    }
    Err(TrainError::NoReadableCheckpoint {
        path: run_dir.to_path_buf(),
        failures: failures.join("; "),
    })
}

/// Loads a checkpoint's tensors into model and optimizer and its scheduler
/// state into the scheduler, and reads its input normalisation.
fn load_state(
    run_dir: &Path,
    state: &CheckpointState,
    dataset: &Dataset,
    model: &ResNet,
    sgd: &mut Sgd,
    scheduler: &mut Scheduler,
) -> Result<StoredNormalization> {
    let tensors = load_checkpoint_tensors(run_dir, state)?;
    let source = run_dir.join(&state.tensors).display().to_string();
    let (momentum, rest): (HashMap<String, Tensor>, HashMap<String, Tensor>) = tensors
        .into_iter()
        .partition(|(name, _)| name.starts_with(MOMENTUM_PREFIX));
    let (norm, weights): (HashMap<String, Tensor>, HashMap<String, Tensor>) = rest
        .into_iter()
        .partition(|(name, _)| name.starts_with(NORMALIZATION_PREFIX));
    model.load_tensors(&weights, &source)?;
    sgd.load_state(momentum)?;
    sgd.set_last_step_lr(state.last_lr);
    let mut scheduler_state = state.scheduler.clone();
    if scheduler_state.recent_train_errors.is_empty() {
        // Older checkpoints kept the window beside the scheduler's state.
        scheduler_state.recent_train_errors = state.recent_errors.iter().copied().collect();
    }
    scheduler.load_state(scheduler_state)?;
    dataset.stored_normalization(&norm, &source)
}

/// What a run needs to start its loop, on each rank.
struct Prepared {
    device: Device,
    model: ResNet,
    sgd: Sgd,
    scheduler: Scheduler,
    start: Start,
    /// Rank 0's metrics log; other ranks write none.
    metrics: Option<MetricsLog>,
}

/// Opens this rank's device for `config` (`--device cuda` is each rank's own
/// GPU), warning where the config's precision or layout only emulates a
/// GPU's on the CPU.
fn open_device(config: &TrainConfig, group: &dyn Collective) -> Result<Device> {
    let device = crate::collective::rank_device(&config.device, group.world_size())?;
    if device != config.device {
        tracing::info!(
            rank = group.rank(),
            "--device {} is {device} on this rank",
            config.device
        );
    }
    let device = device.parse::<DeviceSpec>()?.open()?;
    if config.precision == Precision::Bf16 && device.is_cpu() {
        tracing::warn!(
            "bf16 on the CPU: convolutions and the fc layer compute their bf16 operands in f32 \
             and round their outputs to bf16, a GPU's bf16 results at more than fp32's cost"
        );
    }
    if config.channels_last && device.is_cpu() {
        tracing::warn!(
            "channels-last on the CPU: every convolution and batch norm transposes its \
             values to the NCHW kernels and back, the same training at more cost"
        );
    }
    Ok(device)
}

/// Builds the model and optimizer on `device` and restores the run's
/// checkpoint, if it has one.
fn prepare(
    config: &TrainConfig,
    dataset: Dataset,
    device: Device,
    run_dir: &Path,
    group: &dyn Collective,
) -> Result<Prepared> {
    let writer = group.rank() == 0;
    let model = build_model(config, &device)?;
    let mut sgd =
        Sgd::new(model.trainable_parameters(), config.sgd)?.with_update_rule(config.update_rule);
    let mut scheduler =
        Scheduler::new(config.schedule.clone())?.with_train_error_window(config.warmup_window)?;
    let start = restore(
        run_dir,
        config,
        dataset,
        &model,
        &mut sgd,
        &mut scheduler,
        writer,
    )?;
    let metrics = match writer {
        true => Some(MetricsLog::open_at(
            &run_dir.join(METRICS_FILE),
            start.iteration,
        )?),
        false => None,
    };
    Ok(Prepared {
        device,
        model,
        sgd,
        scheduler,
        start,
        metrics,
    })
}

/// What the ranks did in one step, summed over them.
struct StepTotals {
    /// Where the loader continues.
    position: LoaderPosition,
    /// The mean loss over the global batch.
    loss: f64,
    /// Misclassified images of the global batch.
    wrong: usize,
    /// Images of the global batch.
    images: usize,
}

/// The training loop of every rank: prepare (or restore) the run, then per
/// iteration take a step ([`single_step`], or [`Replicas`] over the ranks),
/// let the scheduler observe its error, evaluate and record when due, and
/// checkpoint when due or asked to stop; finally write the weights and the
/// summary (rank 0).
fn run(
    config: &TrainConfig,
    dataset: Dataset,
    device: Device,
    run_dir: &Path,
    observer: &mut dyn TrainObserver,
    group: &dyn Collective,
) -> Result<RunSummary> {
    let writer = group.rank() == 0;
    let prepared = prepare(config, dataset, device, run_dir, group);
    let Prepared {
        device,
        model,
        mut sgd,
        mut scheduler,
        start,
        mut metrics,
    } = agree(group, prepared, "while preparing the model")?;
    same_start_on_every_rank(group, start.iteration)?;
    let data = start.data;
    let metadata = data.weights_metadata(&model);
    let train_images = data.train_images();
    let shard = Shard {
        index: group.rank(),
        count: group.world_size(),
    };
    let mut loader = data.train_loader(config, start.loader, shard)?;
    let evaluate = || data.evaluate(&model, config.loader_threads, &device);
    let replicas = Replicas::new(&model);

    let mut wall_time = start.wall_time;
    let mut window = start.window;
    let mut last = (f64::NAN, f64::NAN);
    let mut final_eval = None;
    observer.on_start(start.iteration, config.iterations);
    for iteration in start.iteration..config.iterations {
        let step_started = Instant::now();
        let lr = scheduler.lr_at(iteration);
        sgd.set_lr(lr);
        // Unless this is the last step, the next batch goes to the device
        // while this step runs there.
        let next = (iteration + 1 < config.iterations).then_some(&device);
        let totals = if group.world_size() == 1 {
            single_step(&mut loader, next, &model, &mut sgd, &device, config)?
        } else {
            let local = replicas
                .local_step(&mut loader, next, &model, &device, config.label_smoothing)
                .map_err(|e| name_out_of_memory(e, config));
            replicas.combine(group, local, &mut sgd, iteration + 1)?
        };
        let loss_value = totals.loss;
        // A non-finite loss ends the run, so the update it made is never saved.
        if !loss_value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                iteration: iteration + 1,
                loss: loss_value,
            });
        }
        let done = iteration + 1;

        if let Some(mean) =
            scheduler.observe_batch_error(totals.wrong as f64 / totals.images as f64)
        {
            tracing::info!(iteration = done, train_error = mean, "warm-up finished");
        }
        let step_seconds = step_started.elapsed().as_secs_f64();
        wall_time += step_seconds;
        window.add_step(loss_value, totals.wrong, totals.images, step_seconds);
        observer.on_step(done, loss_value, lr);

        let finished = done == config.iterations;
        let evaluating = finished || (config.eval_every > 0 && done % config.eval_every == 0);
        let mut eval = Evaluation {
            val: None,
            test: None,
        };
        // Every rank evaluates (the same weights, so the same errors), so
        // that every rank's plateau schedule sees the same error.
        if evaluating {
            let eval_started = Instant::now();
            eval = evaluate().map_err(|e| name_out_of_memory(e, config))?;
            if let Some(error) = data.plateau_error(&eval, scheduler.recent_train_error()) {
                scheduler.observe_val_error(error);
            }
            wall_time += eval_started.elapsed().as_secs_f64();
        }
        if evaluating || done % config.log_every == 0 {
            let epoch = done as f64 * config.batch_size as f64 / train_images as f64;
            let record = window.record(done, epoch, lr, &eval, wall_time);
            last = (record.train_loss, record.train_error);
            if let Some(metrics) = metrics.as_mut() {
                metrics.append(&record)?;
            }
            observer.on_record(&record);
            window = MetricWindow::default();
        }
        let stopping = !finished && any_rank(group, observer.stop_requested())?;
        let checkpointing = stopping
            || finished
            || (config.checkpoint_every > 0 && done % config.checkpoint_every == 0);
        let mut saved = Ok(());
        if writer && checkpointing {
            let state = CheckpointState {
                iteration: done,
                loader: totals.position,
                scheduler: scheduler.state(),
                wall_time,
                last_lr: sgd.last_step_lr(),
                window,
                recent_errors: Vec::new(),
                tensors: String::new(),
                tensors_md5: None,
            };
            saved = sgd.state_tensors().and_then(|momentum| {
                save_checkpoint(
                    run_dir,
                    state,
                    model.state_tensors(),
                    momentum,
                    data.normalization_tensors()?,
                    &metadata,
                )
            });
        }
        if stopping {
            // Every rank waits for the checkpoint to stop at: a rank that
            // ended first could have the launcher end the job while rank 0
            // still writes it.
            agree(group, saved, "while saving the checkpoint to stop at")?;
            return Err(TrainError::Stopped {
                path: run_dir.to_path_buf(),
                iteration: done,
            });
        }
        saved?;
        if finished {
            final_eval = Some(eval);
        }
    }
    drop(loader);
    // Without a final evaluation the run resumed from its final checkpoint
    // after a kill before the summary was written.
    let eval = match final_eval {
        Some(eval) => eval,
        None => evaluate()?,
    };
    let summary = RunSummary {
        arch: config.arch.clone(),
        params: model.num_parameters(),
        iterations: config.iterations,
        train_images,
        final_train_loss: last.0,
        final_train_error: last.1,
        val: eval.val,
        test: eval.test,
        classes: data.classes(),
        wall_time,
        peak_gpu_memory: resnet_ops::peak_device_memory(&device),
    };
    if writer {
        let mut weights = model.state_tensors();
        weights.extend(data.normalization_tensors()?);
        save_tensors(&run_dir.join(MODEL_FILE), &weights, &metadata)?;
        write_json(&run_dir.join(SUMMARY_FILE), &summary)?;
    }
    Ok(summary)
}

/// Fails, on every rank, unless every rank starts at `iteration`.
fn same_start_on_every_rank(group: &dyn Collective, iteration: u64) -> Result<()> {
    if group.world_size() == 1 {
        return Ok(());
    }
    let mut iterations = [iteration as f64];
    group.all_reduce_sum_f64(&mut iterations)?;
    if iterations[0] != (iteration * group.world_size() as u64) as f64 {
        return Err(TrainError::RanksDisagree { iteration });
    }
    Ok(())
}

/// One step of a single-process run: forward and backward on the next
/// batch and the update, then the batch after it moved to `next` (a device)
/// if given, before the step's results are read back; a GPU out of memory
/// is named as such.
fn single_step(
    loader: &mut TrainBatches,
    next: Option<&Device>,
    model: &ResNet,
    sgd: &mut Sgd,
    device: &Device,
    config: &TrainConfig,
) -> Result<StepTotals> {
    let mut step = || -> Result<_> {
        let batch = loader.next_batch(device)?;
        let logits = model.forward_t(&batch.images, true)?;
        let loss = crate::loss::cross_entropy(&logits, &batch.labels, config.label_smoothing)?;
        sgd.step(&loss.backward()?)?;
        if let Some(device) = next {
            loader.prefetch(device);
        }
        // Read back only now: on a GPU, the backward pass and the update are
        // then queued behind the forward pass without waiting for it, and the
        // next batch's copy behind them.
        let loss_value = f64::from(loss.to_scalar::<f32>()?);
        Ok((batch, logits, loss_value))
    };
    let (batch, logits, loss) = step().map_err(|e| name_out_of_memory(e, config))?;
    let (wrong, _) = resnet_eval::batch_errors(&logits, &batch.labels)?;
    Ok(StepTotals {
        position: batch.position,
        loss,
        wrong,
        images: batch.size,
    })
}

/// Whether `local` holds on any rank.
fn any_rank(group: &dyn Collective, local: bool) -> Result<bool> {
    if group.world_size() == 1 {
        return Ok(local);
    }
    let mut votes = [f64::from(u8::from(local))];
    group.all_reduce_sum_f64(&mut votes)?;
    Ok(votes[0] > 0.0)
}

/// The replicas of a data-parallel run, seen from one rank: what it sums
/// with the others after each step.
struct Replicas {
    /// The parameters, whose gradients are averaged over the ranks.
    parameters: Vec<(String, Var)>,
    /// The BN running statistics, averaged over the ranks.
    running_stats: Vec<Var>,
}

/// One rank's share of a step, its update not yet made.
struct LocalStep {
    position: LoaderPosition,
    images: usize,
    loss: f64,
    wrong: usize,
    grads: GradStore,
}

impl Replicas {
    fn new(model: &ResNet) -> Replicas {
        let running_stats = model
            .named_vars()
            .into_iter()
            .filter(|v| v.kind == TensorKind::RunningStat)
            .map(|v| v.var)
            .collect();
        Replicas {
            parameters: model.trainable_parameters(),
            running_stats,
        }
    }

    /// This rank's share of a step: forward and backward on its share of
    /// the batch (which also moves its running BN statistics), then its
    /// share of the next batch moved to `next` (a device) if given, before
    /// the step's results are read back.
    fn local_step(
        &self,
        loader: &mut TrainBatches,
        next: Option<&Device>,
        model: &ResNet,
        device: &Device,
        label_smoothing: f64,
    ) -> Result<LocalStep> {
        let batch = loader.next_batch(device)?;
        let logits = model.forward_t(&batch.images, true)?;
        let loss = crate::loss::cross_entropy(&logits, &batch.labels, label_smoothing)?;
        let grads = loss.backward()?;
        if let Some(device) = next {
            loader.prefetch(device);
        }
        let (wrong, _) = resnet_eval::batch_errors(&logits, &batch.labels)?;
        Ok(LocalStep {
            position: batch.position,
            images: batch.size,
            loss: f64::from(loss.to_scalar::<f32>()?),
            wrong,
            grads,
        })
    }

    /// Sums the ranks' steps: their images, losses and errors; the
    /// gradients, each rank's weighted by its share of the images (the
    /// gradient of the mean loss over the global batch), which `sgd` then
    /// applies; and the running BN statistics, averaged. A rank whose step
    /// failed still takes part, so that the others end with an error naming
    /// it instead of waiting for it.
    fn combine(
        &self,
        group: &dyn Collective,
        local: Result<LocalStep>,
        sgd: &mut Sgd,
        done: u64,
    ) -> Result<StepTotals> {
        let world = group.world_size();
        // Images, loss * images, misclassified images, then a failure flag per rank.
        let mut sums = vec![0.0; 3 + world];
        match &local {
            Ok(step) => {
                let images = step.images as f64;
                sums[..3].copy_from_slice(&[images, step.loss * images, step.wrong as f64]);
            }
            Err(_) => sums[3 + group.rank()] = 1.0,
        }
        group.all_reduce_sum_f64(&mut sums)?;
        let mut step = local?;
        if let Some(rank) = sums[3..].iter().position(|&f| f > 0.0) {
            return Err(TrainError::RankFailed {
                rank,
                during: format!("at iteration {done}"),
            });
        }
        let images = sums[0];
        let share = step.images as f64 / images;
        // Each kind scaled once, as one flat tensor, rather than tensor by
        // tensor: on a GPU two launches instead of one per tensor.
        let grads = self
            .parameters
            .iter()
            .map(|(name, var)| {
                let grad = step.grads.get(var.as_tensor());
                let grad = grad.ok_or_else(|| TrainError::NoGradient(name.clone()))?;
                Ok(grad.flatten_all()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let stats = self
            .running_stats
            .iter()
            .map(|stat| stat.as_tensor().flatten_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let scaled = [(grads, share), (stats, 1.0 / world as f64)]
            .into_iter()
            .filter(|(parts, _)| !parts.is_empty())
            .map(|(parts, scale)| Tensor::cat(&parts, 0)?.affine(scale, 0.0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let local = Tensor::cat(&scaled, 0)?;
        let summed = group.all_reduce_sum(&local)?;
        let mut offset = 0;
        let mut next = |var: &Var| -> Result<Tensor> {
            let n = var.elem_count();
            let part = summed.narrow(0, offset, n)?.reshape(var.shape())?;
            offset += n;
            Ok(part)
        };
        for (_, var) in &self.parameters {
            let grad = next(var)?;
            step.grads.insert(var.as_tensor(), grad);
        }
        let stats = self
            .running_stats
            .iter()
            .map(&mut next)
            .collect::<Result<Vec<_>>>()?;
        let pairs: Vec<_> = self.running_stats.iter().zip(&stats).collect();
        resnet_ops::set_all(&pairs)?;
        sgd.step(&step.grads)?;
        Ok(StepTotals {
            position: step.position,
            loss: sums[1] / images,
            wrong: sums[2] as usize,
            images: images as usize,
        })
    }
}

/// Marks the text of a CUDA out-of-memory error in the driver's words.
const CUDA_OUT_OF_MEMORY: &str = "CUDA_ERROR_OUT_OF_MEMORY";

/// A GPU out-of-memory error as one that names the run's batch size and
/// what to try; any other error as it is.
fn name_out_of_memory(error: TrainError, config: &TrainConfig) -> TrainError {
    let detail = error.to_string();
    if !detail.contains(CUDA_OUT_OF_MEMORY) {
        return error;
    }
    TrainError::OutOfMemory {
        device: config.device.clone(),
        arch: config.arch.clone(),
        batch_size: config.batch_size,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::collective::threads::{world, ThreadRank};
    use crate::metrics::read_metrics;

    fn sample() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-sample")
    }

    /// ResNet-20 for 4 steps of 16 images, a checkpoint every 2 steps, a
    /// record every step.
    fn small_config() -> TrainConfig {
        TrainConfig {
            data: sample(),
            batch_size: 16,
            iterations: 4,
            eval_every: 0,
            checkpoint_every: 2,
            log_every: 1,
            loader_threads: 1,
            schedule: crate::ScheduleConfig {
                schedule: crate::LrSchedule::Step {
                    base_lr: std::env::var("LR").map_or(0.1, |v| v.parse().unwrap()),
                    milestones: vec![],
                    gamma: 0.1,
                },
                warmup: None,
            },
            ..TrainConfig::default()
        }
    }

    /// Runs `rank_run` for each rank of a world of `size` threads; their results in rank order.
    fn on_threads<T: Send>(size: usize, rank_run: impl Fn(ThreadRank) -> T + Sync) -> Vec<T> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = world(size, Duration::from_secs(60))
                .into_iter()
                .map(|rank| scope.spawn(|| rank_run(rank)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn weights(run: &Path) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(run.join(MODEL_FILE), &Device::Cpu).unwrap()
    }

    /// The largest difference of two tensors relative to the largest
    /// magnitude of the first, over all tensors.
    fn max_relative_difference(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut worst = 0f32;
        for (name, ta) in a {
            let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let vb = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = va.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let diff = va
                .iter()
                .zip(&vb)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            if diff / scale > 0.0 {
                eprintln!("{name}: {}", diff / scale);
            }
            worst = worst.max(diff / scale);
        }
        worst
    }

    /// The tensors of the checkpoint after `iteration` steps.
    fn checkpoint(run: &Path, iteration: u64) -> HashMap<String, Tensor> {
        let path = run.join(crate::run_dir::checkpoint_tensors_name(iteration));
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    /// `|a - b| / |a|` over all the values of all tensors (L2 norms).
    fn relative_l2(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
        let (mut diff, mut norm) = (0f64, 0f64);
        for (name, ta) in a {
            let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let vb = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (x, y) in va.iter().zip(&vb) {
                diff += f64::from(x - y).powi(2);
                norm += f64::from(*x).powi(2);
            }
        }
        (diff / norm).sqrt()
    }

    /// The data-parallel sums equal the single process's up to float
    /// rounding: after one step every tensor (weights, running statistics,
    /// momentum) to 1e-6 of its largest value. Rounding differences grow
    /// with every step of a net this young (a 1e-7 nudge of the weights
    /// changes some BN biases by 1e-2 two steps later), so after two
    /// steps all the weights together are compared.
    #[test]
    fn two_ranks_of_8_train_as_one_process_with_bn_groups_of_8() {
        let dirs = tempfile::tempdir().unwrap();
        let (single, parallel, elsewhere) = (
            dirs.path().join("single"),
            dirs.path().join("parallel"),
            dirs.path().join("rank1"),
        );
        let config = TrainConfig {
            iterations: 2,
            checkpoint_every: 1,
            ..small_config()
        };
        let grouped = TrainConfig {
            bn_group: NonZeroUsize::new(8),
            ..config.clone()
        };
        train(&grouped, &single, &mut NoObserver).unwrap();
        // Rank 1 is given a folder of its own, to show that it writes nothing.
        let summaries = on_threads(2, |rank| {
            let dir = if rank.rank() == 0 {
                &parallel
            } else {
                &elsewhere
            };
            train_data_parallel(&config, dir, &mut NoObserver, &rank).unwrap()
        });
        assert!(!elsewhere.exists(), "rank 1 wrote {}", elsewhere.display());
        let first = max_relative_difference(&checkpoint(&single, 1), &checkpoint(&parallel, 1));
        assert!(
            first < 1e-6,
            "after one step, a tensor differs by {first} relative"
        );
        let last = relative_l2(&weights(&single), &weights(&parallel));
        assert!(
            last < 1e-5,
            "after two steps, the weights differ by {last} relative"
        );
        let (a, b) = (
            read_metrics(&single.join(METRICS_FILE)).unwrap(),
            read_metrics(&parallel.join(METRICS_FILE)).unwrap(),
        );
        assert_eq!(a.len(), 2);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.iteration, x.epoch, x.lr), (y.iteration, y.epoch, y.lr));
            assert_eq!(x.train_error, y.train_error, "iteration {}", x.iteration);
            let loss = (x.train_loss - y.train_loss).abs() / x.train_loss;
            assert!(
                loss < 1e-6,
                "iteration {}: loss differs by {loss}",
                x.iteration
            );
        }
        assert_eq!(
            summaries[0].test, summaries[1].test,
            "every rank evaluates the same"
        );
        let file: RunConfigFile = read_json(&parallel.join(CONFIG_FILE)).unwrap();
        assert_eq!(file.world_size, 2);
    }

    #[test]
    fn a_stopped_two_rank_run_resumes_where_it_stopped() {
        let dirs = tempfile::tempdir().unwrap();
        let (whole, stopped) = (dirs.path().join("whole"), dirs.path().join("stopped"));
        on_threads(2, |rank| {
            train_data_parallel(&small_config(), &whole, &mut NoObserver, &rank).unwrap()
        });
        // Only rank 1 is asked to stop: every rank stops after step 2.
        let errors = on_threads(2, |rank| {
            let mut observer = StopAfter(if rank.rank() == 1 { 2 } else { u64::MAX }, 0);
            train_data_parallel(&small_config(), &stopped, &mut observer, &rank).unwrap_err()
        });
        for error in errors {
            assert!(
                matches!(error, TrainError::Stopped { iteration: 2, .. }),
                "{error}"
            );
        }
        let err = resume(&stopped, &mut NoObserver).unwrap_err().to_string();
        assert!(
            err.contains("2 rank(s)") && err.contains("mpirun -n 2"),
            "{err}"
        );
        on_threads(2, |rank| {
            resume_data_parallel(&stopped, &mut NoObserver, &rank).unwrap()
        });
        let worst = max_relative_difference(&weights(&whole), &weights(&stopped));
        assert_eq!(worst, 0.0, "a resumed run continues bit for bit");
    }

    /// The other ranks wait for the checkpoint a stop is saved in, and learn
    /// that rank 0 could not write it.
    #[test]
    fn a_stop_whose_checkpoint_fails_names_rank_0_on_every_rank() {
        let dirs = tempfile::tempdir().unwrap();
        let run = dirs.path().join("run");
        // A folder where the checkpoint of iteration 2 would go.
        let blocker = run.join(crate::run_dir::checkpoint_tensors_name(2));
        std::fs::create_dir_all(blocker.join("x")).unwrap();
        let config = TrainConfig {
            checkpoint_every: 0,
            ..small_config()
        };
        let errors = on_threads(2, |rank| {
            let mut observer = StopAfter(if rank.rank() == 1 { 2 } else { u64::MAX }, 0);
            train_data_parallel(&config, &run, &mut observer, &rank).unwrap_err()
        });
        assert!(
            !matches!(
                errors[0],
                TrainError::Stopped { .. } | TrainError::RankFailed { .. }
            ),
            "rank 0 reports its own error: {}",
            errors[0]
        );
        assert!(
            matches!(&errors[1], TrainError::RankFailed { rank: 0, during }
                if during == "while saving the checkpoint to stop at"),
            "{}",
            errors[1]
        );
        assert!(!run.join(CHECKPOINT_FILE).exists());
    }

    #[test]
    fn a_rank_whose_step_fails_is_named_at_that_iteration() {
        let config = small_config();
        let errors = on_threads(2, |rank| {
            let model = build_model(&config, &Device::Cpu).unwrap();
            let mut sgd = Sgd::new(model.parameters(), config.sgd).unwrap();
            let local = if rank.rank() == 1 {
                Err(TrainError::LoaderStopped)
            } else {
                let images = Tensor::zeros((2, 3, 32, 32), candle_core::DType::F32, &Device::Cpu);
                let logits = model.forward_t(&images.unwrap(), true).unwrap();
                let labels = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
                let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
                Ok(LocalStep {
                    position: LoaderPosition::default(),
                    images: 2,
                    loss: 2.3,
                    wrong: 2,
                    grads: loss.backward().unwrap(),
                })
            };
            let copy = |tensors: HashMap<String, Tensor>| -> HashMap<String, Tensor> {
                tensors
                    .into_iter()
                    .map(|(n, t)| (n, t.copy().unwrap()))
                    .collect()
            };
            let before = copy(model.state_tensors());
            let result = Replicas::new(&model).combine(&rank, local, &mut sgd, 7);
            // No update is made when a rank failed.
            assert_eq!(
                max_relative_difference(&before, &model.state_tensors()),
                0.0
            );
            result.err().unwrap()
        });
        assert!(
            matches!(&errors[0], TrainError::RankFailed { rank: 1, during } if during == "at iteration 7"),
            "{}",
            errors[0]
        );
        assert!(
            matches!(errors[1], TrainError::LoaderStopped),
            "{}",
            errors[1]
        );
    }

    /// Asks to stop once `.0` steps are done.
    struct StopAfter(u64, u64);

    impl TrainObserver for StopAfter {
        fn on_step(&mut self, done: u64, _loss: f64, _lr: f64) {
            self.1 = done;
        }
        fn stop_requested(&mut self) -> bool {
            self.1 == self.0
        }
    }

    #[test]
    fn a_rank_that_fails_is_named_by_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let errors = on_threads(2, |rank| {
            let config = TrainConfig {
                data: if rank.rank() == 1 {
                    dir.path().join("missing")
                } else {
                    sample()
                },
                ..small_config()
            };
            train_data_parallel(&config, &dir.path().join("run"), &mut NoObserver, &rank)
                .unwrap_err()
        });
        let rank0 = errors[0].to_string();
        assert!(
            matches!(errors[0], TrainError::RankFailed { rank: 1, .. }) && rank0.contains("rank 1"),
            "{rank0}"
        );
        assert!(
            errors[1].to_string().contains("missing"),
            "rank 1 reports its own error: {}",
            errors[1]
        );
        // A batch that does not split over the ranks is refused by each.
        let odd = TrainConfig {
            batch_size: 15,
            ..small_config()
        };
        let errors = on_threads(2, |rank| {
            train_data_parallel(&odd, &dir.path().join("odd"), &mut NoObserver, &rank).unwrap_err()
        });
        for error in errors {
            assert!(error.to_string().contains("--batch-size"), "{error}");
        }
    }

    #[test]
    fn a_cuda_out_of_memory_error_names_the_batch_size_and_what_to_try() {
        let config = TrainConfig {
            device: "cuda:0".into(),
            batch_size: 512,
            ..TrainConfig::default()
        };
        // How candle reports cudarc's `DriverError` when an allocation fails.
        let driver = candle_core::Error::Msg(
            r#"DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")"#.into(),
        );
        let named = name_out_of_memory(TrainError::Candle(driver), &config);
        assert!(
            matches!(
                named,
                TrainError::OutOfMemory {
                    batch_size: 512,
                    ..
                }
            ),
            "{named}"
        );
        let message = named.to_string();
        for part in [
            "cuda:0",
            "resnet20",
            "batches of 512",
            "--batch-size",
            "out of memory",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
        let other = TrainError::InvalidConfig("x".into());
        assert!(matches!(
            name_out_of_memory(other, &config),
            TrainError::InvalidConfig(_)
        ));
    }
}
