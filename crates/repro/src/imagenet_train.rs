//! Table 2 and Fig. 4: plain-18/34 and ResNet-18/34 (option A, as in the
//! paper's Table 2) trained on the user's ImageNet with the paper's recipe,
//! then tested with 10 crops on its validation set.
//!
//! ImageNet is `DIR/train/<synset>/<image>` and `DIR/val/<synset>/<image>`.
//! The `paper` profile is the recipe of Section 3.4 (a machine with GPUs:
//! 600k iterations of batch 256 per net); `smoke` runs a few iterations of
//! everything to check that every file is produced.

use std::fmt::Write;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use resnet_data::{CropGeometry, ImageFolder, TestViews, ViewConfig};
use resnet_eval::{evaluate_folder, load_imagenet_weights, Member, MODEL_FILE};
use resnet_models::{ArchSpec, Precision, ResNet, Shortcut};
use resnet_ops::DeviceSpec;
use resnet_train::collective::Collective;
use resnet_train::{NormalizationKind, TrainConfig};
use serde_json::json;

use crate::curves::{curves_json, display_name, final_train_error, test_series, train_series};
use crate::deviation::{self, Deviation};
use crate::imagenet_paper::TABLE2;
use crate::parallelism::{PaperSetup, Parallelism};
use crate::plot::{Figure, Panel, Scale};
use crate::profile::ProfileName;
use crate::report::{commit, today, write_report};
use crate::runs::{ensure_run, run_dir, FinishedRun};
use crate::verdict::{chance_error_pct, imagenet_depth, TRAINED_RULE};

/// The nets of Table 2 and Fig. 4, plain then residual, 18 then 34 layers.
const NETS: [&str; 4] = ["plain18", "plain34", "resnet18", "resnet34"];

/// What `cargo xtask reproduce table2|fig4 --imagenet DIR` was given.
#[derive(Debug, Clone)]
pub struct ImageNetTrainOptions {
    /// The folder holding `train/` and `val/`.
    pub imagenet: PathBuf,
    /// `paper` or `smoke`.
    pub profile: ProfileName,
    /// Device to train on.
    pub device: String,
    /// Seed of every run.
    pub seed: u64,
    /// Output folder of the reports and plots.
    pub out: PathBuf,
    /// Folder of the training runs (`runs/imagenet-PROFILE/` in rank 0's
    /// output folder).
    pub runs: PathBuf,
    /// Test only this many validation images with 10 crops, evenly spaced (None: all).
    pub limit: Option<usize>,
    /// The precision of the convolutions and the fc layer, in training and testing.
    pub precision: Precision,
    /// Whether the nets train with channels-last activations.
    pub channels_last: bool,
}

/// The training config of `arch` under `opts`: the paper's ImageNet recipe,
/// or a few iterations of it for the smoke profile.
fn train_config(arch: &str, opts: &ImageNetTrainOptions) -> Result<TrainConfig> {
    let mut config = TrainConfig {
        arch: arch.to_string(),
        data: opts.imagenet.join("train"),
        val_data: Some(opts.imagenet.join("val")),
        seed: opts.seed,
        device: opts.device.clone(),
        precision: opts.precision,
        channels_last: opts.channels_last,
        // Table 2's ResNets add no parameters: identity shortcuts, zero-padded.
        shortcut: arch.starts_with("resnet").then_some(Shortcut::A),
        ..TrainConfig::imagenet()
    };
    match opts.profile {
        // The paper's 8 GPUs each normalised 32 images of the batch of 256.
        ProfileName::Paper => {
            config.bn_group = NonZeroUsize::new(32);
            config.update_rule = resnet_train::UpdateRule::Caffe;
        }
        ProfileName::Smoke => {
            config.batch_size = 2;
            config.iterations = 3;
            config.eval_every = 1;
            config.checkpoint_every = 0;
            config.log_every = 1;
            config.loader_threads = 2;
            config.normalization = NormalizationKind::PerChannel;
        }
        ProfileName::Quick | ProfileName::Gpu => bail!(
            "table2 and fig4 train four ImageNet nets for 600k iterations each: there is no {} profile for them; \
             use --profile paper (a machine with GPUs) or --profile smoke (a few iterations, to check the outputs)",
            opts.profile
        ),
    }
    Ok(config)
}

/// Trains (or reuses, or resumes) the four nets on the ranks of `group`.
fn train_all(opts: &ImageNetTrainOptions, group: &dyn Collective) -> Result<Vec<FinishedRun>> {
    for (name, what) in [("train", "training"), ("val", "validation")] {
        let dir = opts.imagenet.join(name);
        if !dir.is_dir() {
            bail!(
                "{} has no {name}/ folder: table2 and fig4 need ImageNet as DIR/train/<synset>/<image> and \
                 DIR/val/<synset>/<image> (the ILSVRC-2012 {what} set)",
                opts.imagenet.display()
            );
        }
    }
    NETS.iter()
        .map(|arch| {
            let config = train_config(arch, opts)?;
            ensure_run(&config, &run_dir(&opts.runs, &config), group)
        })
        .collect()
}

/// The ranks and batch-norm groups the runs trained with, beside the
/// paper's 8 GPUs of 32 images.
fn parallelism(runs: &[FinishedRun]) -> Parallelism {
    let c = &runs[0].config;
    let world_sizes: Vec<usize> = runs.iter().map(|r| r.world_size).collect();
    Parallelism::new(
        &world_sizes,
        c.batch_size,
        c.bn_group.map(NonZeroUsize::get),
        PaperSetup::IMAGENET,
    )
}

/// Every way the runs depart from the paper's ImageNet recipe.
fn deviations(opts: &ImageNetTrainOptions, runs: &[FinishedRun]) -> Vec<Deviation> {
    let c = &runs[0].config;
    let mut out = Vec::new();
    if opts.profile != ProfileName::Paper {
        out.push(Deviation::new(
            "iterations",
            format!(
                "a smoke run of {} iterations of batch {} instead of up to 600,000 of batch 256: it checks the \
                 pipeline, its numbers mean nothing",
                c.iterations, c.batch_size
            ),
        ));
        out.push(Deviation::new(
            "normalization",
            "per-channel normalisation (torchvision's constants) instead of the per-pixel mean",
        ));
    }
    if let Some(limit) = opts.limit {
        out.push(Deviation::new(
            "test-images",
            format!("tested on {limit} evenly spaced validation images instead of all 50,000"),
        ));
    }
    if let resnet_train::LrSchedule::Plateau {
        patience,
        threshold,
        min_lr,
        ..
    } = c.schedule.schedule
    {
        out.push(Deviation::new(
            "plateau",
            format!(
                "the paper divides the lr by 10 \"when the error plateaus\" without saying how that is judged; \
                 this project's rule (its choice, not the paper's): the validation error (centre crop, every {} \
                 iterations) has not improved by more than {threshold} for {patience} evaluations in a row, \
                 and the lr never goes below {min_lr}",
                c.eval_every
            ),
        ));
    }
    out.push(deviation::init());
    out.extend(deviation::update_rule(c.update_rule));
    out.extend(deviation::precision(c.precision));
    out.extend(parallelism(runs).deviation());
    out
}

/// How the runs were made, for the top of both reports.
fn header(target: &str, opts: &ImageNetTrainOptions, runs: &[FinishedRun]) -> String {
    let c = &runs[0].config;
    let mut md = format!(
        "_Made by `cargo xtask reproduce {target} --imagenet {} --profile {}` on {}, commit {}, device {}, {}; \
         {} training images; {} iterations of batch {}, SGD lr 0.1 divided by 10 when the validation error \
         plateaus, momentum 0.9, weight decay 1e-4, scale augmentation [256, 480], 224 crops, flips, PCA colour \
         shift; seed {}; {:.0} s of training{}._\n",
        opts.imagenet.display(),
        opts.profile,
        today(),
        commit(),
        opts.device,
        c.precision,
        runs[0].summary.train_images,
        c.iterations,
        c.batch_size,
        opts.seed,
        runs.iter().map(|r| r.summary.wall_time).sum::<f64>(),
        if c.channels_last {
            " with channels-last activations (`--channels-last`)"
        } else {
            ""
        }
    );
    md.push('\n');
    md.push_str(&parallelism(runs).markdown());
    md.push_str(&deviation::markdown(&deviations(opts, runs)));
    md
}

/// The 10-crop validation top-1 and top-5 error (%) of a finished run's weights.
fn ten_crop_errors(run: &FinishedRun, opts: &ImageNetTrainOptions) -> Result<(f64, f64, usize)> {
    let device = opts.device.parse::<DeviceSpec>()?.open()?;
    let mut spec = ArchSpec::from_id(&run.config.arch)?;
    if let Some(shortcut) = run.config.shortcut {
        spec = spec.with_shortcut(shortcut);
    }
    let model = ResNet::new(&spec, 0, &device)?.with_precision(run.config.precision);
    let weights = run.dir.join(MODEL_FILE);
    let normalization = load_imagenet_weights(&model, &weights)?
        .with_context(|| format!("{} stores no input normalization", weights.display()))?;
    let folder = ImageFolder::open(&opts.imagenet.join("val"), None)?;
    let folder = Arc::new(folder.evenly_spaced(opts.limit.unwrap_or(0)));
    let member = Member {
        model: &model,
        views: ViewConfig {
            geometry: CropGeometry::STANDARD,
            normalization,
        },
    };
    let report = evaluate_folder(&[member], folder, &TestViews::TenCrop, 32, 2, &device)?;
    Ok((
        100.0 * report.top1_error,
        100.0 * report.top5_error,
        report.images,
    ))
}

/// Trains the four nets and writes `table2.{md,json}`: 10-crop top-1 error
/// of plain and ResNet at 18 and 34 layers beside the paper's.
pub fn write_table2(opts: &ImageNetTrainOptions, group: &dyn Collective) -> Result<()> {
    let runs = train_all(opts, group)?;
    let errors = runs
        .iter()
        .map(|r| ten_crop_errors(r, opts))
        .collect::<Result<Vec<_>>>()?;
    let mut md = format!(
        "# Table 2: ImageNet top-1 error (%, 10-crop testing), plain vs ResNet\n\n{}\n",
        header("table2", opts, &runs)
    );
    md.push_str("| layers | plain (ours) | plain (paper) | ResNet (ours) | ResNet (paper) |\n|---|---|---|---|---|\n");
    let mut rows = Vec::new();
    for (k, (depth, plain_paper, resnet_paper)) in TABLE2.iter().enumerate() {
        let (plain, resnet) = (errors[k].0, errors[k + 2].0);
        writeln!(
            md,
            "| {depth} | {plain:.2} | {plain_paper:.2} | {resnet:.2} | {resnet_paper:.2} |"
        )?;
        rows.push(json!({
            "layers": depth, "plain_top1_pct": plain, "resnet_top1_pct": resnet,
            "plain_top5_pct": errors[k].1, "resnet_top5_pct": errors[k + 2].1,
            "paper_plain_top1_pct": plain_paper, "paper_resnet_top1_pct": resnet_paper,
        }));
    }
    writeln!(
        md,
        "\nTested on {} validation images with 10 crops (4 corners and centre of the image resized to shorter side \
         256, and their mirror images). The paper: plain-34 is worse than plain-18 (28.54 vs 27.94), ResNet-34 better \
         than ResNet-18 (25.03 vs 27.88).",
        errors[0].2
    )?;
    write_report(&opts.out, "table2.md", &md)?;
    let record = json!({
        "target": "table2", "profile": opts.profile.to_string(), "date": today(), "commit": commit(),
        "device": opts.device, "validation_images": errors[0].2, "rows": rows,
        "parallelism": parallelism(&runs), "deviations": deviations(opts, &runs),
    });
    write_report(
        &opts.out,
        "table2.json",
        &serde_json::to_string_pretty(&record)?,
    )
}

/// Trains the four nets and writes `fig4.{md,json,svg,png}`: training error
/// (dashed) and centre-crop validation error (bold) of the plain nets (left)
/// and the ResNets (right).
pub fn write_fig4(opts: &ImageNetTrainOptions, group: &dyn Collective) -> Result<()> {
    let runs = train_all(opts, group)?;
    let panel = |title: &str, pair: &[FinishedRun]| Panel {
        title: title.into(),
        x_label: "iteration".into(),
        y_label: "error (%)".into(),
        y_scale: Scale::Linear,
        y_range: None,
        series: pair
            .iter()
            .enumerate()
            .flat_map(|(i, run)| [train_series(run, i), test_series(run, i)])
            .collect(),
    };
    let figure = Figure {
        title: format!("Fig. 4 ({} profile): training on ImageNet", opts.profile),
        panels: vec![
            panel("plain networks", &runs[..2]),
            panel("ResNets", &runs[2..]),
        ],
    };
    figure.write(&opts.out, "fig4")?;
    let train: Vec<f64> = runs.iter().map(|r| final_train_error(&r.metrics)).collect();
    let name = |i: usize| display_name(&runs[i].config.arch);
    // Chance among the training folder's classes (99.9% on ImageNet's 1000).
    let train_dir = opts.imagenet.join("train");
    let classes = std::fs::read_dir(&train_dir)
        .with_context(|| format!("listing {}", train_dir.display()))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    let chance = chance_error_pct(classes);
    let findings = [
        imagenet_depth(
            "plain-34 has higher training error than plain-18 (degradation)",
            (&name(0), train[0]),
            (&name(1), train[1]),
            true,
            chance,
        ),
        imagenet_depth(
            "with shortcuts, ResNet-34 has lower training error than ResNet-18",
            (&name(2), train[2]),
            (&name(3), train[3]),
            false,
            chance,
        ),
    ];
    let mut md = format!(
        "# Fig. 4: training on ImageNet, plain-18/34 and ResNet-18/34\n\n{}\n![Fig. 4](fig4.svg)\n\n",
        header("fig4", opts, &runs)
    );
    md.push_str("| net | final training error (%) | final validation error (%, centre crop) |\n|---|---|---|\n");
    for run in &runs {
        writeln!(
            md,
            "| {} | {:.2} | {} |",
            display_name(&run.config.arch),
            final_train_error(&run.metrics),
            run.summary
                .test
                .as_ref()
                .map_or("-".into(), |t| format!("{:.2}", 100.0 * t.top1_error))
        )?;
    }
    writeln!(md, "\nThe paper's findings, here:\n")?;
    for finding in &findings {
        writeln!(md, "{}", finding.markdown())?;
    }
    writeln!(
        md,
        "\nRule: {TRAINED_RULE}; with the {classes} classes of this training folder, chance is \
         {chance:.1}% error."
    )?;
    write_report(&opts.out, "fig4.md", &md)?;
    let record = json!({
        "target": "fig4", "profile": opts.profile.to_string(), "date": today(), "commit": commit(),
        "device": opts.device,
        "parallelism": parallelism(&runs), "deviations": deviations(opts, &runs),
        "findings": findings,
        "nets": runs.iter().map(|r| json!({
            "arch": r.config.arch, "final_train_error_pct": final_train_error(&r.metrics), "curves": curves_json(r),
        })).collect::<Vec<_>>(),
    });
    write_report(
        &opts.out,
        "fig4.json",
        &serde_json::to_string_pretty(&record)?,
    )
}
