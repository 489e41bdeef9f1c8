//! Reproductions of the paper's tables and figures: training runs driven by
//! profiles, Markdown/JSON reports beside the paper's numbers, and plots.
//!
//! Every target writes `NAME.md` (our numbers beside the paper's, and how
//! they were made), `NAME.json`, and for figures `NAME.svg` and `NAME.png`.
//! Training runs live in `OUT/runs/PROFILE/ARCH-seedS/`: a finished run is
//! reused, an interrupted one resumed, so rerunning a target only re-plots.

mod curves;
pub mod deviation;
pub mod fig1;
pub mod fig6;
pub mod fig7;
pub mod imagenet_eval;
pub mod imagenet_paper;
pub mod imagenet_train;
pub mod index;
pub mod parallelism;
mod plan;
pub mod plot;
pub mod profile;
pub mod report;
mod reproduction;
pub mod runs;
pub mod table1;
pub mod table6;
pub mod verdict;

use anyhow::Result;
use std::path::PathBuf;

use resnet_models::Precision;
use resnet_train::collective::{Collective, SingleProcess};

pub use plan::plan;
pub use profile::{DataFacts, Profile, ProfileName};
pub use reproduction::{Options, Reproduction};

/// A table or figure of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Target {
    /// Table 1: architectures, parameters, FLOPs (no training).
    Table1,
    /// Fig. 1: plain-20 vs plain-56.
    Fig1,
    /// Fig. 6: plain nets and ResNets by depth.
    Fig6,
    /// Table 6: test error by depth.
    Table6,
    /// Fig. 7: standard deviations of layer responses.
    Fig7,
    /// Every target above, sharing the training runs.
    All,
}

impl Target {
    /// The target's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Table1 => "table1",
            Target::Fig1 => "fig1",
            Target::Fig6 => "fig6",
            Target::Table6 => "table6",
            Target::Fig7 => "fig7",
            Target::All => "all",
        }
    }
}

/// Table 1's entry in the results index.
fn table1_entry() -> index::Entry {
    index::Entry::table(
        "table1",
        "Table 1: architectures, parameters and FLOPs",
        "our exact parameter and FLOP counts beside the paper's (no training)".to_string(),
    )
}

/// Produces `target`'s files in `opts.out`; `all` also writes the folder's
/// `README.md`, an index of every report with its findings' verdicts.
pub fn reproduce(target: Target, opts: Options) -> Result<()> {
    reproduce_data_parallel(target, opts, &SingleProcess)
}

/// [`reproduce`] as one rank of a data-parallel job (`WORLD_SIZE` processes
/// started as `torchrun` starts them, see `resnet_train::collective`):
/// every rank trains every run of the target, each its share of every
/// batch, as `resnet train` does on several ranks, and the reports record
/// the world size. Rank 0 alone writes `opts.out` (it first fetches the data
/// where the profile does, while the others wait); the other ranks' reports
/// go to a temporary folder, removed at the end.
pub fn reproduce_data_parallel(
    target: Target,
    mut opts: Options,
    group: &dyn Collective,
) -> Result<()> {
    let writer = group.rank() == 0;
    if target == Target::Table1 {
        return match writer {
            true => table1::write(&opts.out),
            false => Ok(()),
        };
    }
    let runs_root = opts.out.join("runs").join(opts.profile.name.to_string());
    let _scratch = reports_folder(&mut opts.out, group)?;
    let mut r = match writer {
        true => {
            let r = Reproduction::new(opts, runs_root, group);
            runs::rank0_says(group, r.is_ok())?;
            r?
        }
        false => {
            anyhow::ensure!(
                runs::rank0_says(group, true)?,
                "rank {}: rank 0 could not open the data",
                group.rank()
            );
            Reproduction::new(opts, runs_root, group)?
        }
    };
    match target {
        Target::Table1 => unreachable!("handled above"),
        Target::Fig1 => {
            fig1::write(&mut r)?;
        }
        Target::Fig6 => {
            fig6::write(&mut r)?;
        }
        Target::Table6 => {
            table6::write(&mut r)?;
        }
        Target::Fig7 => {
            fig7::write(&mut r)?;
        }
        Target::All => {
            table1::write(&r.opts.out)?;
            let entries = vec![
                table1_entry(),
                fig1::write(&mut r)?,
                fig6::write(&mut r)?,
                table6::write(&mut r)?,
                fig7::write(&mut r)?,
            ];
            index::write(&r.opts.out, &r.opts.profile.name.to_string(), &entries)?;
        }
    }
    tracing::info!("done in {:.0} s", r.elapsed());
    Ok(())
}

/// A table or figure of the paper's ImageNet half: it needs the user's
/// ImageNet (`--imagenet DIR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ImageNetTarget {
    /// Table 2: plain-18/34 and ResNet-18/34 trained on ImageNet, 10-crop top-1 error.
    Table2,
    /// Fig. 4: their training and validation error curves.
    Fig4,
    /// Table 3: 10-crop validation errors of public ResNet weights.
    Table3,
    /// Table 4: multi-scale validation errors of the same weights.
    Table4,
    /// Table 5: their ensemble.
    Table5,
}

impl ImageNetTarget {
    /// The target's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ImageNetTarget::Table2 => "table2",
            ImageNetTarget::Fig4 => "fig4",
            ImageNetTarget::Table3 => "table3",
            ImageNetTarget::Table4 => "table4",
            ImageNetTarget::Table5 => "table5",
        }
    }
}

/// Points `out` at this rank's reports folder: `out` itself on rank 0, a
/// temporary folder on the others, removed when the returned guard drops.
fn reports_folder(out: &mut PathBuf, group: &dyn Collective) -> Result<Option<tempfile::TempDir>> {
    if group.rank() == 0 {
        return Ok(None);
    }
    let scratch = tempfile::tempdir()?;
    *out = scratch.path().to_path_buf();
    Ok(Some(scratch))
}

/// What an ImageNet target was given.
#[derive(Debug, Clone)]
pub struct ImageNetOptions {
    /// The ImageNet folder (`DIR/val/<class>/<image>`, or the validation set itself).
    pub imagenet: Option<PathBuf>,
    /// Evaluate only this many validation images, evenly spaced (None: all).
    pub limit: Option<usize>,
    /// Device to run on.
    pub device: String,
    /// Output folder.
    pub out: PathBuf,
    /// The profile of the training targets (`paper` or `smoke`).
    pub profile: ProfileName,
    /// Seed of the training runs.
    pub seed: u64,
    /// Weights for our models by arch id, overriding [`imagenet_eval::default_weights`]
    /// (`none` leaves that model out).
    pub weights: Vec<(String, String)>,
    /// The precision of the convolutions and the fc layer.
    pub precision: Precision,
    /// Whether the nets train with channels-last activations.
    pub channels_last: bool,
}

/// Produces `target`'s files in `opts.out`; without `--imagenet` it says
/// what it needs and fails.
pub fn reproduce_imagenet(target: ImageNetTarget, opts: ImageNetOptions) -> Result<()> {
    reproduce_imagenet_data_parallel(target, opts, &SingleProcess)
}

/// [`reproduce_imagenet`] as one rank of a data-parallel job, as
/// [`reproduce_data_parallel`] runs the CIFAR-10 targets: the training
/// targets (`table2`, `fig4`) train every run on every rank, rank 0 alone
/// writing; the evaluation targets (`table3`-`table5`) run in one process.
pub fn reproduce_imagenet_data_parallel(
    target: ImageNetTarget,
    mut opts: ImageNetOptions,
    group: &dyn Collective,
) -> Result<()> {
    let Some(imagenet) = opts.imagenet else {
        let needs = match target {
            ImageNetTarget::Table2 | ImageNetTarget::Fig4 => {
                "trains plain-18/34 and ResNet-18/34 on ImageNet (ILSVRC-2012), which is not bundled: pass \
                 --imagenet DIR with DIR/train/<synset>/<image> and DIR/val/<synset>/<image>, and --profile paper \
                 on a machine with GPUs (600k iterations of batch 256 per net)"
            }
            _ => {
                "evaluates public ResNet weights on the ImageNet (ILSVRC-2012) validation set, which is not \
                 bundled: pass --imagenet DIR with DIR/val/<synset>/<image> (the 1000 synset folders), and a \
                 network or a filled hub cache for the weights"
            }
        };
        anyhow::bail!("{} {needs}", target.name());
    };
    if matches!(target, ImageNetTarget::Table2 | ImageNetTarget::Fig4) {
        let runs = opts
            .out
            .join("runs")
            .join(format!("imagenet-{}", opts.profile));
        let _scratch = reports_folder(&mut opts.out, group)?;
        let train = imagenet_train::ImageNetTrainOptions {
            imagenet,
            profile: opts.profile,
            device: opts.device,
            seed: opts.seed,
            out: opts.out,
            runs,
            limit: opts.limit,
            precision: opts.precision,
            channels_last: opts.channels_last,
        };
        return match target {
            ImageNetTarget::Table2 => imagenet_train::write_table2(&train, group),
            _ => imagenet_train::write_fig4(&train, group),
        };
    }
    anyhow::ensure!(
        group.world_size() == 1,
        "{} evaluates in one process: start it without RANK and WORLD_SIZE",
        target.name()
    );
    anyhow::ensure!(
        !opts.channels_last,
        "--channels-last is a training option, and {} only evaluates (its nets run folded, NCHW)",
        target.name()
    );
    let mut weights = imagenet_eval::default_weights();
    for (arch, source) in opts.weights {
        match weights.iter_mut().find(|(a, _)| *a == arch) {
            Some(slot) => slot.1 = source,
            None => weights.push((arch, source)),
        }
    }
    weights.retain(|(_, source)| source != "none");
    let eval = imagenet_eval::ImageNetEvalOptions {
        imagenet,
        limit: opts.limit,
        device: opts.device,
        precision: opts.precision,
        out: opts.out,
        batch_size: 32,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        weights,
    };
    match target {
        ImageNetTarget::Table3 => imagenet_eval::write_table3(eval),
        ImageNetTarget::Table4 => imagenet_eval::write_table4(eval),
        ImageNetTarget::Table5 => imagenet_eval::write_table5(eval),
        ImageNetTarget::Table2 | ImageNetTarget::Fig4 => unreachable!("trained above"),
    }
}
