//! Training runs of a reproduction: each in its own folder, reused when
//! finished, resumed when interrupted, so rerunning a target only re-plots.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use resnet_models::Precision;
use resnet_term::ProgressObserver;
use resnet_train::collective::Collective;
use resnet_train::config::RunConfigFile;
use resnet_train::run_dir::{read_json, CONFIG_FILE, METRICS_FILE};
use resnet_train::{
    read_metrics, MetricRecord, NoObserver, RunSummary, TrainConfig, TrainObserver,
};

/// A finished run: its config, summary and metric records.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// The run's folder.
    pub dir: PathBuf,
    /// Its config.
    pub config: TrainConfig,
    /// The ranks it trained on, from its `config.json`: 1 for the runs a
    /// reproduction trains, more for a finished run trained under `mpirun`
    /// that it reuses.
    pub world_size: usize,
    /// Its final errors.
    pub summary: RunSummary,
    /// Its metric records, in iteration order.
    pub metrics: Vec<MetricRecord>,
}

/// The folder of the run of `config` under `runs_root`: `ARCH-seedN`, with
/// `-bf16` after it for a bf16 run and `-channels-last` for a channels-last
/// one, so that the precisions and layouts of one profile keep runs of
/// their own.
pub fn run_dir(runs_root: &Path, config: &TrainConfig) -> PathBuf {
    let precision = match config.precision {
        Precision::Fp32 => "",
        Precision::Bf16 => "-bf16",
    };
    let layout = if config.channels_last {
        "-channels-last"
    } else {
        ""
    };
    runs_root.join(format!(
        "{}-seed{}{precision}{layout}",
        config.arch, config.seed
    ))
}

/// Trains `config` in `dir`, or resumes it there, or reuses it if finished,
/// on the ranks of `group` (one process:
/// [`resnet_train::collective::SingleProcess`]):
/// as `resnet train` does, every rank trains its share of every batch and
/// rank 0 alone writes the folder, which every rank reads (shared between
/// them). Whether the run is new is rank 0's view of the folder. A folder
/// holding a run of another config is an error: results are never silently
/// mixed.
pub fn ensure_run(config: &TrainConfig, dir: &Path, group: &dyn Collective) -> Result<FinishedRun> {
    let label = format!("{}-seed{}", config.arch, config.seed);
    let mut progress;
    let mut quiet = NoObserver;
    let observer: &mut dyn TrainObserver = match group.rank() {
        0 => {
            progress = ProgressObserver::new(&label);
            &mut progress
        }
        _ => &mut quiet,
    };
    let config_path = dir.join(CONFIG_FILE);
    let summary = if rank0_says(group, config_path.exists())? {
        let existing: RunConfigFile = read_json(&config_path)?;
        if existing.config != *config {
            bail!(
                "{} holds a run with another config; delete the folder to retrain it with this profile",
                dir.display()
            );
        }
        resnet_train::resume_data_parallel(dir, observer, group)
    } else {
        resnet_train::train_data_parallel(config, dir, observer, group)
    }
    .with_context(|| format!("run {}", dir.display()))?;
    // Rank 0 writes the run's last files after the others have returned.
    rank0_says(group, true)?;
    let metrics = read_metrics(&dir.join(METRICS_FILE))?;
    let file: RunConfigFile = read_json(&config_path)?;
    Ok(FinishedRun {
        dir: dir.to_path_buf(),
        config: config.clone(),
        world_size: file.world_size,
        summary,
        metrics,
    })
}

/// Rank 0's `value`, on every rank of `group`, once every rank has asked.
pub(crate) fn rank0_says(group: &dyn Collective, value: bool) -> Result<bool> {
    let mut said = [f64::from(u8::from(group.rank() == 0 && value))];
    group.all_reduce_sum_f64(&mut said)?;
    Ok(said[0] > 0.0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use resnet_models::Precision;
    use resnet_train::TrainConfig;

    use super::run_dir;

    #[test]
    fn bf16_and_channels_last_runs_have_folders_of_their_own() {
        let fp32 = TrainConfig {
            seed: 3,
            ..TrainConfig::default()
        };
        let bf16 = TrainConfig {
            precision: Precision::Bf16,
            ..fp32.clone()
        };
        let root = Path::new("runs/quick");
        assert_eq!(run_dir(root, &fp32), root.join("resnet20-seed3"));
        assert_eq!(run_dir(root, &bf16), root.join("resnet20-seed3-bf16"));
        let both = TrainConfig {
            channels_last: true,
            ..bf16
        };
        assert_eq!(
            run_dir(root, &both),
            root.join("resnet20-seed3-bf16-channels-last")
        );
    }
}
