//! Tables 3, 4 and 5: public pretrained weights evaluated on the user's
//! ImageNet validation set with the paper's test protocols (10-crop,
//! multi-scale fully-convolutional, ensembles), beside the paper's numbers.
//!
//! The validation set is `DIR/val/<class>/<image>` or `DIR/<class>/<image>`,
//! with the 1000 ILSVRC-2012 synset folders (`n01440764`, ...): sorted, they
//! give the class indices every public ImageNet model uses.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use resnet_data::{ImageFolder, TestViews, ViewConfig};
use resnet_eval::{evaluate_folder, EvalReport, Member};
use resnet_hub::{load_model, registry, HubOptions};
use resnet_models::{ArchSpec, Precision, ResNet, StridePlacement};
use resnet_ops::DeviceSpec;
use serde_json::json;

use crate::imagenet_paper::{PaperRow, TABLE3, TABLE4, TABLE5};
use crate::report::{commit, today, write_report};

/// What `cargo xtask reproduce table3|table4|table5 --imagenet DIR` was given.
#[derive(Debug, Clone)]
pub struct ImageNetEvalOptions {
    /// The validation set, or a folder holding it as `val/`.
    pub imagenet: PathBuf,
    /// Evaluate only this many images, evenly spaced over the set (None: all).
    pub limit: Option<usize>,
    /// Device to evaluate on.
    pub device: String,
    /// The precision of the forward passes.
    pub precision: Precision,
    /// Output folder.
    pub out: PathBuf,
    /// Views per forward pass.
    pub batch_size: usize,
    /// Threads decoding images.
    pub threads: usize,
    /// Weights for each of our models (`resnet34`, `resnet50`, ...), a
    /// registry name, `hf:` spec or local file; [`default_weights`] by default.
    pub weights: Vec<(String, String)>,
}

/// The public weights that stand for the paper's models: torchvision's
/// original ImageNet weights, through timm's hub copies.
pub fn default_weights() -> Vec<(String, String)> {
    ["resnet34", "resnet50", "resnet101", "resnet152"]
        .iter()
        .map(|arch| (arch.to_string(), format!("{arch}.tv_in1k")))
        .collect()
}

/// The validation folder `imagenet` names: `imagenet/val` if it exists, else `imagenet`.
pub fn validation_folder(imagenet: &Path) -> PathBuf {
    let val = imagenet.join("val");
    if val.is_dir() {
        val
    } else {
        imagenet.to_path_buf()
    }
}

/// One of our models, loaded, with the views its weights expect.
struct Loaded {
    key: String,
    model: ResNet,
    views: ViewConfig,
    origin: String,
}

/// Builds `key`'s model and loads `weights` (a registry name, `hf:` spec or local file).
fn load(
    key: &str,
    weights: &str,
    device: &candle_core::Device,
    precision: Precision,
) -> Result<Loaded> {
    let arch = ArchSpec::from_id(key)?;
    // Weights the registry does not know are taken as torchvision's layout
    // (v1.5 strides), as the reports say.
    let placement = registry::find(weights)
        .is_none()
        .then_some(StridePlacement::V1_5);
    let pretrained = load_model(weights, &arch, placement, device, &HubOptions::default())
        .with_context(|| format!("loading {weights} for {key}"))?;
    let origin = match pretrained.entry {
        Some(e) => format!(
            "{} (hf:{}/{}): {}, reported top-1 {}; {}",
            e.name,
            e.repo,
            e.file,
            e.stride_placement,
            e.top1.map_or("unknown".into(), |t| format!("{t}%")),
            e.top1_source
        ),
        None => format!(
            "{weights} (not in the registry: torchvision's v1.5 strides and preprocessing assumed)"
        ),
    };
    Ok(Loaded {
        key: key.to_string(),
        views: pretrained.preprocessing.view_config(),
        model: pretrained.model.with_precision(precision),
        origin,
    })
}

/// The state of one evaluation command: the validation set and the device.
struct Session {
    opts: ImageNetEvalOptions,
    folder: Arc<ImageFolder>,
    total_images: usize,
    device: candle_core::Device,
    started: Instant,
}

impl Session {
    fn new(opts: ImageNetEvalOptions) -> Result<Session> {
        let dir = validation_folder(&opts.imagenet);
        let full = ImageFolder::open(&dir, None).with_context(|| {
            format!(
                "cannot read an ImageNet validation set from {} (expected DIR/val/<class>/<image> \
                 or DIR/<class>/<image>, the 1000 ILSVRC-2012 synset folders)",
                opts.imagenet.display()
            )
        })?;
        let total_images = full.len();
        let folder = Arc::new(full.evenly_spaced(opts.limit.unwrap_or(0)));
        let device = opts.device.parse::<DeviceSpec>()?.open()?;
        Ok(Session {
            opts,
            folder,
            total_images,
            device,
            started: Instant::now(),
        })
    }

    /// Loads the weights of `key`, if the options give any.
    fn model(&self, key: &str) -> Result<Option<Loaded>> {
        self.opts
            .weights
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, w)| load(key, w, &self.device, self.opts.precision))
            .transpose()
    }

    fn evaluate(&self, members: &[&Loaded], views: &TestViews) -> Result<EvalReport> {
        let members: Vec<Member> = members
            .iter()
            .map(|l| Member {
                model: &l.model,
                views: l.views.clone(),
            })
            .collect();
        let keys: Vec<&str> = members.iter().map(|m| m.model.spec().id.as_str()).collect();
        tracing::info!(models = ?keys, views = views.name(), images = self.folder.len(), "evaluating");
        Ok(evaluate_folder(
            &members,
            Arc::clone(&self.folder),
            views,
            self.opts.batch_size,
            self.opts.threads,
            &self.device,
        )?)
    }

    /// The header every report starts with: how it was made.
    fn header(&self, target: &str, views: &TestViews) -> String {
        format!(
            "_Made by `cargo xtask reproduce {target} --imagenet {}` on {}, commit {}, device {}, {}; {} of the {} \
             validation images in {}{}; test views: {}; {:.0} s of evaluation._\n",
            self.opts.imagenet.display(),
            today(),
            commit(),
            self.opts.device,
            self.opts.precision,
            self.folder.len(),
            self.total_images,
            self.folder.root().display(),
            if self.folder.len() < self.total_images {
                " (an evenly spaced subset)"
            } else {
                ""
            },
            views_in_words(views),
            self.started.elapsed().as_secs_f64()
        )
    }
}

fn views_in_words(views: &TestViews) -> String {
    match views {
        TestViews::Center => "the centre crop".into(),
        TestViews::TenCrop => {
            "10-crop (4 corners and centre, and their mirror images), softmax averaged".into()
        }
        TestViews::MultiScale(scales) => format!(
            "fully-convolutional, whole image at shorter sides {scales:?}, softmax averaged"
        ),
    }
}

/// What every evaluation report says about the public weights.
const WEIGHTS_NOTE: &str = "The public weights are not the paper's models: torchvision trained them with its own recipe \
(90 epochs, lr 0.1 divided by 10 every 30, random-resized crops, no colour augmentation); its ResNet-50/101/152 put \
the stride on the 3x3 conv (v1.5), the paper on the first 1x1 (v1). The paper's models were never released. Rows \
without public weights are listed with the paper's numbers only.";

/// The weights column of a row: where ours come from, or why there are none.
fn weights_cell(row: &PaperRow, loaded: Option<&Loaded>) -> String {
    match (loaded, row.ours) {
        (Some(l), _) => l.origin.clone(),
        (None, Some(key)) => format!("left out (--weights {key}=none)"),
        (None, None) if row.model.starts_with("ResNet") || row.model.starts_with("plain") => {
            "no public weights".into()
        }
        (None, None) => "another paper's model".into(),
    }
}

/// Evaluates every row of `rows` that has weights, single model, over `views`,
/// and writes `name.{md,json}`.
fn write_single_model_table(
    s: &Session,
    name: &str,
    title: &str,
    rows: &[PaperRow],
    views: &TestViews,
) -> Result<()> {
    let mut table = String::from(
        "| model | top-1 (ours) | top-1 (paper) | difference | top-5 (ours) | top-5 (paper) | difference | weights |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mut records = Vec::new();
    for row in rows {
        let loaded = match row.ours {
            Some(key) => s.model(key)?,
            None => None,
        };
        let report = loaded
            .as_ref()
            .map(|l| s.evaluate(&[l], views))
            .transpose()?;
        let ours = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}", 100.0 * v));
        let diff = |ours: Option<f64>, paper: Option<f64>| match (ours, paper) {
            (Some(o), Some(p)) => format!("{:+.2}", 100.0 * o - p),
            _ => "-".into(),
        };
        let (top1, top5) = (
            report.as_ref().map(|r| r.top1_error),
            report.as_ref().map(|r| r.top5_error),
        );
        writeln!(
            table,
            "| {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            row.model,
            ours(top1),
            row.top1.map_or("-".into(), |t| format!("{t:.2}")),
            diff(top1, row.top1),
            ours(top5),
            row.top5,
            diff(top5, Some(row.top5)),
            weights_cell(row, loaded.as_ref()),
        )?;
        records.push(json!({
            "model": row.model, "paper_top1_pct": row.top1, "paper_top5_pct": row.top5,
            "ours": loaded.as_ref().map(|l| json!({
                "arch": l.key, "weights": l.origin, "top1_pct": top1.map(|v| 100.0 * v),
                "top5_pct": top5.map(|v| 100.0 * v), "images": report.as_ref().map(|r| r.images),
            })),
        }));
    }
    let mut md = format!(
        "# {title}\n\n{}\n{table}\n{WEIGHTS_NOTE}\n",
        s.header(name, views)
    );
    if s.folder.len() < s.total_images {
        md.push_str("\nOnly a subset of the validation set was evaluated (`--limit`): the errors are estimates.\n");
    }
    write_report(&s.opts.out, &format!("{name}.md"), &md)?;
    let record = json!({
        "target": name, "views": views.name(), "images": s.folder.len(), "total_images": s.total_images,
        "date": today(), "commit": commit(), "device": s.opts.device, "rows": records,
    });
    write_report(
        &s.opts.out,
        &format!("{name}.json"),
        &serde_json::to_string_pretty(&record)?,
    )
}

/// Table 3: 10-crop errors of the public ResNet-34/50/101/152 weights.
pub fn write_table3(opts: ImageNetEvalOptions) -> Result<()> {
    let s = Session::new(opts)?;
    let title = "Table 3: ImageNet validation error (%), 10-crop testing";
    write_single_model_table(&s, "table3", title, &TABLE3, &TestViews::TenCrop)
}

/// Table 4: multi-scale fully-convolutional errors of the same weights.
pub fn write_table4(opts: ImageNetEvalOptions) -> Result<()> {
    let s = Session::new(opts)?;
    let title = "Table 4: ImageNet validation error (%) of single models, multi-scale testing";
    write_single_model_table(
        &s,
        "table4",
        title,
        &TABLE4,
        &TestViews::paper_multi_scale(),
    )
}

/// Table 5: the ensemble of every available model (softmax averaged,
/// multi-scale views) beside the paper's ensembles.
pub fn write_table5(opts: ImageNetEvalOptions) -> Result<()> {
    let s = Session::new(opts)?;
    let keys: Vec<String> = s.opts.weights.iter().map(|(k, _)| k.clone()).collect();
    let loaded = keys
        .iter()
        .map(|k| s.model(k))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    if loaded.is_empty() {
        bail!("table5 needs at least one model's weights");
    }
    let views = TestViews::paper_multi_scale();
    let members: Vec<&Loaded> = loaded.iter().collect();
    let report = s.evaluate(&members, &views)?;
    let mut md = format!(
        "# Table 5: ensembles, top-5 error (%)\n\n{}\n",
        s.header("table5", &views)
    );
    md.push_str("| method | top-5 error (%) | set |\n|---|---|---|\n");
    for (method, top5) in TABLE5 {
        writeln!(md, "| {method} (paper) | {top5:.2} | ImageNet test |")?;
    }
    let names: Vec<&str> = loaded.iter().map(|l| l.key.as_str()).collect();
    writeln!(
        md,
        "| **ours: {} ({} models), top-1 {:.2}** | **{:.2}** | ImageNet validation |",
        names.join(" + "),
        loaded.len(),
        100.0 * report.top1_error,
        100.0 * report.top5_error
    )?;
    md.push_str("\nMembers:\n");
    for l in &loaded {
        writeln!(md, "- {}: {}", l.key, l.origin)?;
    }
    writeln!(
        md,
        "\nThe paper's 3.57 is on the test set (labels not public) with six models of its own; ours is on the \
         validation set.\n\n{WEIGHTS_NOTE}"
    )?;
    write_report(&s.opts.out, "table5.md", &md)?;
    let record = json!({
        "target": "table5", "views": views.name(), "images": s.folder.len(), "total_images": s.total_images,
        "members": loaded.iter().map(|l| json!({"arch": l.key, "weights": l.origin})).collect::<Vec<_>>(),
        "top1_pct": 100.0 * report.top1_error, "top5_pct": 100.0 * report.top5_error,
        "paper": TABLE5.iter().map(|(m, t)| json!({"method": m, "top5_pct": t})).collect::<Vec<_>>(),
        "date": today(), "commit": commit(), "device": s.opts.device,
    });
    write_report(
        &s.opts.out,
        "table5.json",
        &serde_json::to_string_pretty(&record)?,
    )
}
