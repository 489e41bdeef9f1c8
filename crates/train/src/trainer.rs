//! The training loop: step, evaluate, log and checkpoint, resumable bit for bit.
//!
//! One loop trains on CIFAR-10 or on an image folder; what differs between
//! them (loading, normalisation, batches, evaluation) is in [`crate::dataset`].

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use resnet_data::LoaderPosition;
use resnet_eval::{MODEL_FILE, NORMALIZATION_PREFIX};
use resnet_models::{BlockKind, ResNet};
use resnet_ops::DeviceSpec;

use crate::checkpoint::{
    checkpoint_files, load_checkpoint_tensors, read_checkpoint, save_checkpoint, CheckpointState,
};
use crate::config::{Freeze, RunConfigFile, TrainConfig};
use crate::dataset::{Dataset, Evaluation, RunData, StoredNormalization};
use crate::metrics::{MetricRecord, MetricWindow, MetricsLog};
use crate::run_dir::{
    read_json, save_tensors, write_json, RunLock, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE,
    SUMMARY_FILE,
};
use crate::summary::RunSummary;
use crate::{Result, Scheduler, Sgd, TrainError, MOMENTUM_PREFIX};

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
    config.validate()?;
    let config = &config.with_absolute_paths()?;
    let config_path = run_dir.join(CONFIG_FILE);
    if config_path.exists() {
        return Err(TrainError::RunExists {
            path: run_dir.to_path_buf(),
        });
    }
    let dataset = Dataset::open(config)?;
    if config.weights.is_some() {
        // Weights that do not fit are refused before the run folder is written.
        load_initial_weights(config, &build_model(config, &Device::Cpu)?)?;
    }
    std::fs::create_dir_all(run_dir).map_err(crate::run_dir::io_error(run_dir))?;
    let _lock = RunLock::acquire(run_dir)?;
    // Checked again under the lock: another process may have started a run
    // here while the data was being opened.
    if config_path.exists() {
        return Err(TrainError::RunExists {
            path: run_dir.to_path_buf(),
        });
    }
    write_json(
        &config_path,
        &RunConfigFile::new(config.clone(), dataset.classes()),
    )?;
    run(config, dataset, run_dir, observer)
}

/// Continues the run in `run_dir` from its last checkpoint with the config
/// it was started with; a finished run just returns its summary. A latest
/// checkpoint that does not read is skipped, with a warning, for the one
/// before it. A folder in use by another process is refused.
pub fn resume(run_dir: &Path, observer: &mut dyn TrainObserver) -> Result<RunSummary> {
    let config_path = run_dir.join(CONFIG_FILE);
    if !config_path.exists() {
        return Err(TrainError::NoRun {
            path: run_dir.to_path_buf(),
        });
    }
    let _lock = RunLock::acquire(run_dir)?;
    let summary = run_dir.join(SUMMARY_FILE);
    if summary.exists() {
        return read_json(&summary);
    }
    let file: RunConfigFile = read_json(&config_path)?;
    file.config.validate()?;
    let dataset = Dataset::open(&file.config)?;
    run(&file.config, dataset, run_dir, observer)
}

/// The model described by a config, freshly initialised from its seed (its
/// backbone frozen if the config says so; its `weights` are loaded by the
/// run, see [`load_initial_weights`]).
pub fn build_model(config: &TrainConfig, device: &Device) -> Result<ResNet> {
    Ok(ResNet::new(&config.spec()?, config.seed, device)?
        .with_bn_group(config.bn_group)
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
    recent_errors: VecDeque<f64>,
    wall_time: f64,
    window: MetricWindow,
    data: RunData,
}

/// Restores model, optimizer, scheduler and input normalisation from the
/// run's latest checkpoint that reads, if any; a fresh run computes its
/// normalisation.
fn restore(
    run_dir: &Path,
    config: &TrainConfig,
    dataset: Dataset,
    model: &ResNet,
    sgd: &mut Sgd,
    scheduler: &mut Scheduler,
) -> Result<Start> {
    let candidates = checkpoint_files(run_dir);
    if candidates.is_empty() {
        load_initial_weights(config, model)?;
        return Ok(Start {
            iteration: 0,
            loader: LoaderPosition::default(),
            recent_errors: VecDeque::new(),
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
            write_json(&run_dir.join(CHECKPOINT_FILE), &state)?;
        }
        tracing::info!(iteration = state.iteration, "resuming from checkpoint");
        return Ok(Start {
            iteration: state.iteration,
            loader: state.loader,
            recent_errors: state.recent_errors.into_iter().collect(),
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
    scheduler.load_state(state.scheduler.clone())?;
    dataset.stored_normalization(&norm, &source)
}

fn run(
    config: &TrainConfig,
    dataset: Dataset,
    run_dir: &Path,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary> {
    let device = config.device.parse::<DeviceSpec>()?.open()?;
    let model = build_model(config, &device)?;
    let mut sgd =
        Sgd::new(model.trainable_parameters(), config.sgd)?.with_update_rule(config.update_rule);
    let mut scheduler = Scheduler::new(config.schedule.clone())?;
    let start = restore(run_dir, config, dataset, &model, &mut sgd, &mut scheduler)?;
    let mut metrics = MetricsLog::open_at(&run_dir.join(METRICS_FILE), start.iteration)?;
    let data = start.data;
    let metadata = data.weights_metadata(&model);
    let train_images = data.train_images();
    let mut loader = data.train_loader(config, start.loader)?;
    let evaluate = || data.evaluate(&model, config.loader_threads, &device);

    let mut recent_errors = start.recent_errors;
    let mut wall_time = start.wall_time;
    let mut window = start.window;
    let mut last = (f64::NAN, f64::NAN);
    let mut final_eval = None;
    observer.on_start(start.iteration, config.iterations);
    for iteration in start.iteration..config.iterations {
        let step_started = Instant::now();
        let lr = scheduler.lr_at(iteration);
        sgd.set_lr(lr);
        let mut step = || -> Result<_> {
            let batch = loader.next_batch(&device)?;
            let logits = model.forward_t(&batch.images, true)?;
            let loss = crate::loss::cross_entropy(&logits, &batch.labels, config.label_smoothing)?;
            sgd.step(&loss.backward()?)?;
            // Read back only now: on a GPU, the backward pass and the update
            // are then queued behind the forward pass without waiting for it.
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            Ok((batch, logits, loss_value))
        };
        let (batch, logits, loss_value) = step().map_err(|e| name_out_of_memory(e, config))?;
        // A non-finite loss ends the run, so the update it made is never saved.
        if !loss_value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                iteration: iteration + 1,
                loss: loss_value,
            });
        }
        let (wrong, _) = resnet_eval::batch_errors(&logits, &batch.labels)?;
        let done = iteration + 1;

        recent_errors.push_back(wrong as f64 / batch.size as f64);
        while recent_errors.len() > config.warmup_window {
            recent_errors.pop_front();
        }
        if scheduler.in_warmup() && recent_errors.len() == config.warmup_window {
            let mean = recent_errors.iter().sum::<f64>() / recent_errors.len() as f64;
            if scheduler.observe_train_error(mean) {
                tracing::info!(iteration = done, train_error = mean, "warm-up finished");
            }
        }
        let step_seconds = step_started.elapsed().as_secs_f64();
        wall_time += step_seconds;
        window = MetricWindow {
            loss: window.loss + loss_value,
            wrong: window.wrong + wrong,
            images: window.images + batch.size,
            steps: window.steps + 1,
            seconds: window.seconds + step_seconds,
        };
        observer.on_step(done, loss_value, lr);

        let finished = done == config.iterations;
        let evaluating = finished || (config.eval_every > 0 && done % config.eval_every == 0);
        let mut eval = Evaluation {
            val: None,
            test: None,
        };
        if evaluating {
            let eval_started = Instant::now();
            eval = evaluate().map_err(|e| name_out_of_memory(e, config))?;
            if let Some(error) = data.plateau_error(&eval, &recent_errors) {
                scheduler.observe_val_error(error);
            }
            wall_time += eval_started.elapsed().as_secs_f64();
        }
        if evaluating || done % config.log_every == 0 {
            last = (
                window.loss / window.steps as f64,
                window.wrong as f64 / window.images as f64,
            );
            let record = MetricRecord {
                iteration: done,
                epoch: done as f64 * config.batch_size as f64 / train_images as f64,
                lr,
                train_loss: last.0,
                train_error: last.1,
                val_error: eval.val.as_ref().map(|r| r.top1_error),
                test_error: eval.test.as_ref().map(|r| r.top1_error),
                test_top5_error: eval.test.as_ref().map(|r| r.top5_error),
                images_per_sec: window.images as f64 / window.seconds.max(1e-9),
                wall_time,
            };
            metrics.append(&record)?;
            observer.on_record(&record);
            window = MetricWindow::default();
        }
        let stopping = !finished && observer.stop_requested();
        if stopping
            || finished
            || (config.checkpoint_every > 0 && done % config.checkpoint_every == 0)
        {
            let state = CheckpointState {
                iteration: done,
                loader: batch.position,
                scheduler: scheduler.state(),
                recent_errors: recent_errors.iter().copied().collect(),
                wall_time,
                last_lr: sgd.last_step_lr(),
                window,
                tensors: String::new(),
                tensors_md5: None,
            };
            save_checkpoint(
                run_dir,
                state,
                model.state_tensors(),
                sgd.state_tensors()?,
                data.normalization_tensors()?,
                &metadata,
            )?;
        }
        if stopping {
            return Err(TrainError::Stopped {
                path: run_dir.to_path_buf(),
                iteration: done,
            });
        }
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
    let mut weights = model.state_tensors();
    weights.extend(data.normalization_tensors()?);
    save_tensors(&run_dir.join(MODEL_FILE), &weights, &metadata)?;
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
    };
    write_json(&run_dir.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
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
    use super::*;

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
