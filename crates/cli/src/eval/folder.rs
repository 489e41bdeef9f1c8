//! `resnet eval` on an ImageNet-style image folder: one model or an
//! ensemble, over the centre crop, the ten crops or the multi-scale views.

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use resnet_data::{BadImagePolicy, ImageFolder, ImageNetNormalization};
use resnet_eval::{evaluate_folder, EvalReport, Member, TestViews, ViewConfig};
use resnet_hub::{registry, WeightsSource};
use resnet_ops::DeviceSpec;
use serde_json::json;

use super::{flag_channels, EvalArgs};
use crate::arch::ArchArgs;
use crate::weights_source::{load_model, LoadedModel};

/// Default views per forward pass on image folders (ImageNet-sized inputs).
const FOLDER_BATCH_SIZE: usize = 32;

/// Evaluates one model or an ensemble on an image folder.
pub(super) fn run_folder(args: &EvalArgs) -> Result<()> {
    let data = args.data.display();
    ensure!(
        args.split.is_none(),
        "--split applies to CIFAR-10 only: {data} is read as an image folder"
    );
    ensure!(
        args.val_size == 0,
        "--val-size applies to CIFAR-10 only: {data} is read as an image folder"
    );
    let views = test_views(args)?;
    let flags = flag_channels(args.mean.as_deref(), args.std.as_deref())?
        .map(|(mean, std)| ImageNetNormalization::PerChannel { mean, std });
    let models = model_list(args)?;
    let (first_arch, first_weights) = &models[0];
    let classes = first_arch.for_weights(first_weights)?.spec()?.num_classes;
    let folder = open_folder(args, classes)?;
    let device = args.device.parse::<DeviceSpec>()?.open()?;

    let mut loaded = Vec::with_capacity(models.len());
    for (i, (arch, weights)) in models.iter().enumerate() {
        let model = load_model(arch, weights, &device).map(|m| m.with_precision(args.precision));
        loaded.push(if i == 0 {
            model?
        } else {
            model.with_context(|| format!("--ensemble entry `{}`", args.ensemble[i - 1]))?
        });
    }
    // Class folders are labelled in sorted order: the stored classes must be
    // those, or the labels would name other classes than the model's outputs.
    if let (Some(stored), None, None) = (&loaded[0].classes, &args.labels, &args.classes) {
        ensure!(
            folder.classes() == stored.as_slice(),
            "{data}: its classes [{}] are not those stored with --weights [{}], in that order",
            folder.classes().join(", "),
            stored.join(", ")
        );
    }
    let members = loaded
        .iter()
        .map(|l| {
            Ok(Member {
                model: &l.model,
                views: ViewConfig {
                    geometry: l.preprocessing.geometry(),
                    normalization: member_normalization(l, flags.as_ref())?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let images = folder.len();
    let batch_size = args.batch_size.unwrap_or(FOLDER_BATCH_SIZE);
    let report = evaluate_folder(
        &members,
        Arc::new(folder),
        &views,
        batch_size,
        args.threads,
        &device,
    )
    .with_context(|| format!("evaluating on the {images} images of {data}"))?;

    print_folder_report(args, &loaded, &views, &report);
    Ok(())
}

/// Prints the result of [`run_folder`]: one JSON object or one line of text.
fn print_folder_report(
    args: &EvalArgs,
    loaded: &[LoadedModel],
    views: &TestViews,
    report: &EvalReport,
) {
    let data = args.data.display();
    let archs: Vec<&str> = loaded.iter().map(|l| l.model.spec().id.as_str()).collect();
    if args.json {
        let models: Vec<_> = loaded
            .iter()
            .map(|l| json!({"arch": l.model.spec().id, "weights": l.weights}))
            .collect();
        let scales = match views {
            TestViews::MultiScale(scales) => json!(scales),
            _ => serde_json::Value::Null,
        };
        let out = json!({
            "arch": archs[0],
            "weights": loaded[0].weights,
            "models": models,
            "data": data.to_string(),
            "views": views.name(),
            "precision": args.precision,
            "scales": scales,
            "images": report.images,
            "top1_error": report.top1_error,
            "top5_error": report.top5_error,
            "loss": report.loss,
            "classes": loaded[0].classes,
        });
        println!("{out}");
    } else {
        let name = if archs.len() == 1 {
            archs[0].to_string()
        } else {
            format!("ensemble of {}", archs.join(" + "))
        };
        println!(
            "{name} on {data} ({} images, {}, {}): top-1 error {:.2}%, top-5 error {:.2}%, loss {:.4}",
            report.images,
            views.name(),
            args.precision,
            100.0 * report.top1_error,
            100.0 * report.top5_error,
            report.loss
        );
        if let Some(classes) = &loaded[0].classes {
            println!("classes: {}", classes.join(", "));
        }
    }
}

/// The views --ten-crop, --multi-scale and --scales ask for (the centre crop by default).
fn test_views(args: &EvalArgs) -> Result<TestViews> {
    Ok(match (args.ten_crop, args.multi_scale, &args.scales) {
        (true, _, _) => TestViews::TenCrop,
        (false, true, None) => TestViews::paper_multi_scale(),
        (false, true, Some(scales)) => {
            ensure!(
                !scales.is_empty() && !scales.contains(&0),
                "--scales: expected shorter sides > 0, e.g. 224,256,384,480,640"
            );
            TestViews::MultiScale(scales.clone())
        }
        (false, false, _) => TestViews::Center,
    })
}

/// The models to evaluate, as (architecture flags, weights): --arch with
/// --weights, then each --ensemble entry (without an arch of its own, the
/// registry's or --arch; without either, the one its weights are saved
/// with, found when it is loaded).
fn model_list(args: &EvalArgs) -> Result<Vec<(ArchArgs, String)>> {
    let mut models = vec![(args.arch.clone(), args.weights.clone())];
    for entry in &args.ensemble {
        let (arch, weights) = match entry.split_once('=') {
            Some((arch, weights)) if is_arch_id(arch) => {
                (Some(arch.to_string()), weights.to_string())
            }
            _ => {
                let source = WeightsSource::parse(entry)
                    .with_context(|| format!("--ensemble entry `{entry}`"))?;
                let known = registry::find_source(&source).map(|e| e.arch.to_string());
                (known.or_else(|| args.arch.arch.clone()), entry.clone())
            }
        };
        ensure!(
            !weights.is_empty(),
            "--ensemble entry `{entry}`: expected [ARCH=]WEIGHTS"
        );
        let arch = ArchArgs {
            arch,
            ..args.arch.clone()
        };
        models.push((arch, weights));
    }
    Ok(models)
}

/// Whether `text` looks like an architecture id (letters, digits, `-`, `_`),
/// not like a path or a hub spec.
fn is_arch_id(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Opens --data as an image folder: class sub-folders, or flat with --labels
/// (whose labels are class indices below `num_classes` unless --classes names them).
fn open_folder(args: &EvalArgs, num_classes: usize) -> Result<ImageFolder> {
    let policy = if args.skip_bad_images {
        BadImagePolicy::Skip
    } else {
        BadImagePolicy::Reject
    };
    let folder = match &args.labels {
        Some(labels) => {
            let classes = match &args.classes {
                Some(file) => read_class_list(file)?,
                None => (0..num_classes).map(|i| i.to_string()).collect(),
            };
            ImageFolder::open_flat(&args.data, labels, &classes, policy)
        }
        None => ImageFolder::open_with(&args.data, args.classes.as_deref(), policy),
    };
    folder.with_context(|| {
        format!(
            "{} is not a CIFAR-10 folder, and reading it as an image folder failed",
            args.data.display()
        )
    })
}

/// The class names of a class-list file: one per line, blank lines and `#`
/// lines ignored; at least one, no duplicates.
fn read_class_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--classes: reading {}", path.display()))?;
    let mut classes: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        ensure!(
            !classes.iter().any(|c| c == name),
            "{}:{}: class {name:?} is listed twice",
            path.display(),
            i + 1
        );
        classes.push(name.to_string());
    }
    ensure!(
        !classes.is_empty(),
        "{}: no class names (expected one per line)",
        path.display()
    );
    Ok(classes)
}

/// The normalisation of one model: --mean/--std if given, else the one its
/// views are classified with ([`LoadedModel::view_normalization`]).
fn member_normalization(
    loaded: &LoadedModel,
    flags: Option<&ImageNetNormalization>,
) -> Result<ImageNetNormalization> {
    match flags {
        Some(flags) => Ok(flags.clone()),
        None => loaded.view_normalization(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `resnet eval` flags as parsed from `args`.
    fn parse(args: &[&str]) -> std::result::Result<EvalArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            eval: EvalArgs,
        }
        let args = [
            "eval",
            "--data",
            "d",
            "--arch",
            "resnet20",
            "--weights",
            "w",
        ]
        .iter()
        .chain(args);
        <Command as clap::Parser>::try_parse_from(args).map(|c| c.eval)
    }

    #[test]
    fn ensemble_entries_take_their_arch_from_the_entry_the_registry_or_arch() {
        let args = parse(&[
            "--ensemble",
            "resnet32=b.safetensors,c,hf:timm/resnet50.tv_in1k",
            "--ensemble",
            "./x=y.safetensors",
            "--num-classes",
            "7",
        ])
        .unwrap();
        let models = model_list(&args).unwrap();
        let got: Vec<(&str, &str)> = models
            .iter()
            .map(|(a, w)| (a.arch.as_deref().unwrap_or("-"), w.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("resnet20", "w"),
                ("resnet32", "b.safetensors"),
                ("resnet20", "c"),
                ("resnet50", "hf:timm/resnet50.tv_in1k"),
                ("resnet20", "./x=y.safetensors"),
            ]
        );
        assert!(models.iter().all(|(a, _)| a.num_classes == Some(7)));
        let err = model_list(&parse(&["--ensemble", "resnet32="]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`resnet32=`: expected [ARCH=]WEIGHTS"),
            "{err}"
        );
    }

    #[test]
    fn view_flags_exclude_each_other_and_scales_need_multi_scale() {
        assert!(parse(&["--ten-crop"]).unwrap().ten_crop);
        let args = parse(&["--multi-scale", "--scales", "32,48"]).unwrap();
        assert_eq!(args.scales, Some(vec![32, 48]));
        let err = parse(&["--ten-crop", "--multi-scale"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--ten-crop") && err.contains("--multi-scale"),
            "{err}"
        );
        assert!(parse(&["--scales", "32"]).is_err());
    }

    #[test]
    fn class_lists_skip_blanks_and_comments_and_reject_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("classes.txt");
        std::fs::write(&file, "# synsets\nn01\n\n  n02  \n").unwrap();
        assert_eq!(read_class_list(&file).unwrap(), ["n01", "n02"]);
        std::fs::write(&file, "n01\nn02\nn01\n").unwrap();
        let err = read_class_list(&file).unwrap_err().to_string();
        assert!(
            err.contains("classes.txt:3: class \"n01\" is listed twice"),
            "{err}"
        );
        std::fs::write(&file, "# none\n").unwrap();
        assert!(read_class_list(&file).is_err());
    }
}
