//! A reproduction session: options, the runs it trains (each once, shared
//! between targets), and the provenance stamped on every report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use resnet_data::{fetch_cifar10, Cifar10, CIFAR10_MD5, CIFAR10_URL};
use resnet_models::Precision;
use resnet_train::collective::Collective;

use crate::deviation;
use crate::profile::{DataFacts, Profile, ProfileName};
use crate::report::{commit, today, Provenance};
use crate::runs::{ensure_run, run_dir, FinishedRun};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The training recipe.
    pub profile: Profile,
    /// CIFAR-10 folder.
    pub data: PathBuf,
    /// Device to train on.
    pub device: String,
    /// First seed; run k of a net uses `seed + k`.
    pub seed: u64,
    /// Output folder (reports, plots, and `runs/` with every training run).
    pub out: PathBuf,
}

impl Options {
    /// `runs` seeds from the first: `seed`, `seed + 1`, ...
    pub fn seeds(&self, runs: usize) -> Vec<u64> {
        (0..runs as u64).map(|k| self.seed + k).collect()
    }

    /// The command that reproduces `target` with these options.
    pub fn command(&self, target: &str) -> String {
        let p = &self.profile;
        let mut command = format!("cargo xtask reproduce {target} --profile {}", p.name);
        if p.val_size != Profile::new(p.name).val_size {
            command.push_str(&format!(" --val-size {}", p.val_size));
        }
        if p.runs != Profile::new(p.name).runs {
            command.push_str(&format!(" --runs {}", p.runs));
        }
        if p.bn_group != Profile::new(p.name).bn_group {
            match p.bn_group {
                Some(group) => command.push_str(&format!(" --bn-group {group}")),
                // No flag gives the whole batch back to a profile with groups.
                None => command.push_str(" (batch norm over the whole batch)"),
            }
        }
        if p.precision != Precision::Fp32 {
            command.push_str(&format!(" --precision {}", p.precision));
        }
        if p.channels_last {
            command.push_str(" --channels-last");
        }
        command
    }

    /// The data folder and what it holds, in words.
    pub fn data_words(&self, data: &DataFacts) -> String {
        let kind = if data.train_images == 50_000 {
            "full CIFAR-10"
        } else {
            "CIFAR-10 sample"
        };
        format!(
            "{kind} in {} ({} training images, {} held out for validation, {} test images)",
            self.data.display(),
            data.train_images,
            self.profile.val_size,
            data.test_images
        )
    }
}

/// The state shared by the targets of one command, on one rank of `group`.
pub struct Reproduction<'a> {
    /// The options.
    pub opts: Options,
    group: &'a dyn Collective,
    /// Where the runs are: `runs/PROFILE` in the output folder of rank 0.
    runs_root: PathBuf,
    runs: HashMap<(String, u64), FinishedRun>,
    data: DataFacts,
    started: Instant,
}

impl<'a> Reproduction<'a> {
    /// Checks the data folder and prepares the session, whose runs train on
    /// the ranks of `group` in `runs_root`. The paper profile downloads the
    /// full dataset when its folder is missing.
    pub fn new(
        opts: Options,
        runs_root: PathBuf,
        group: &'a dyn Collective,
    ) -> Result<Reproduction<'a>> {
        if opts.profile.name == ProfileName::Paper && !opts.data.exists() {
            let parent = opts.data.parent().unwrap_or(Path::new("."));
            tracing::info!(
                "{} is missing: downloading CIFAR-10 into {}",
                opts.data.display(),
                parent.display()
            );
            let fetched = fetch_cifar10(CIFAR10_URL, parent, CIFAR10_MD5)?;
            anyhow::ensure!(
                fetched == opts.data,
                "CIFAR-10 was fetched into {}, not {}; pass --data {}",
                fetched.display(),
                opts.data.display(),
                fetched.display()
            );
        }
        let data = Cifar10::load(&opts.data).with_context(|| {
            let hint = if opts.profile.name == ProfileName::Paper {
                " (the paper profile needs the full dataset: `resnet data fetch cifar10 --dir data`, then --data data/cifar-10-batches-bin)"
            } else {
                ""
            };
            format!("cannot read CIFAR-10 from {}{hint}", opts.data.display())
        })?;
        Ok(Reproduction {
            data: DataFacts {
                train_images: data.train.len(),
                test_images: data.test.len(),
            },
            opts,
            group,
            runs_root,
            runs: HashMap::new(),
            started: Instant::now(),
        })
    }

    /// The seeds every net is trained with for Table 6.
    pub fn seeds(&self) -> Vec<u64> {
        self.opts.seeds(self.opts.profile.runs)
    }

    /// The seeds of the Fig. 7 nets, whose spread an ordering must exceed.
    pub fn fig7_seeds(&self) -> Vec<u64> {
        self.opts.seeds(self.opts.profile.fig7_runs)
    }

    /// The finished run of `arch` with `seed`: trained, resumed or reused.
    pub fn run(&mut self, arch: &str, seed: u64) -> Result<FinishedRun> {
        let key = (arch.to_string(), seed);
        if let Some(run) = self.runs.get(&key) {
            return Ok(run.clone());
        }
        let o = &self.opts;
        let config = o.profile.train_config(arch, seed, &o.data, &o.device);
        let run = ensure_run(&config, &run_dir(&self.runs_root, &config), self.group)?;
        self.runs.insert(key, run.clone());
        Ok(run)
    }

    /// How a result made from `runs` was made.
    pub fn provenance(&self, target: &str, runs: &[&FinishedRun]) -> Provenance {
        let p = &self.opts.profile;
        let mut seeds: Vec<u64> = runs.iter().map(|r| r.config.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        let world_sizes: Vec<usize> = runs.iter().map(|r| r.world_size).collect();
        let parallelism = p.parallelism(&world_sizes);
        let mut deviations = p.deviations(&self.data, &parallelism);
        deviations.extend(runs.iter().filter_map(|r| deviation::warmup_end(r)));
        Provenance {
            command: self.opts.command(target),
            profile: p.name.to_string(),
            data: self.opts.data_words(&self.data),
            schedule: p.schedule_words(),
            seeds,
            device: self.opts.device.clone(),
            commit: commit(),
            date: today(),
            train_seconds: runs.iter().map(|r| r.summary.wall_time).sum(),
            parallelism,
            deviations,
        }
    }

    /// Seconds since the session started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    /// The command a report prints repeats every flag that changed the recipe.
    #[test]
    fn the_command_names_a_changed_bn_group() {
        let mut opts = Options {
            profile: Profile::new(ProfileName::Quick),
            data: PathBuf::from("data"),
            device: "cpu".into(),
            seed: 0,
            out: PathBuf::from("results"),
        };
        assert_eq!(
            opts.command("fig1"),
            "cargo xtask reproduce fig1 --profile quick"
        );
        opts.profile.bn_group = NonZeroUsize::new(64);
        assert_eq!(
            opts.command("fig1"),
            "cargo xtask reproduce fig1 --profile quick --bn-group 64"
        );
        let paper = Options {
            profile: Profile::new(ProfileName::Paper),
            ..opts
        };
        assert!(!paper.command("all").contains("--bn-group"));
    }
}
