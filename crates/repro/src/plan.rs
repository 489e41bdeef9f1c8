//! `--dry-run`: what a reproduction would train and how it departs from the
//! paper, without training anything.

use std::fmt::Write;

use anyhow::{Context, Result};
use resnet_data::Cifar10;

use crate::deviation::{self, Deviation};
use crate::fig6::nets;
use crate::profile::{DataFacts, ProfileName};
use crate::{Options, Target};

/// The nets of Fig. 1 and Fig. 7 (Fig. 6 and Table 6 take theirs from the profile).
const FIG1: [&str; 2] = ["plain20", "plain56"];
const FIG7: [&str; 5] = ["plain20", "plain56", "resnet20", "resnet56", "resnet110"];

/// Every training run `target` needs: arch, seeds, and the targets using it.
fn runs(target: Target, opts: &Options) -> Vec<(String, Vec<u64>, Vec<&'static str>)> {
    let p = &opts.profile;
    let (plain, resnets) = nets(p);
    let fig6: Vec<String> = plain.iter().chain(&resnets).cloned().collect();
    let one = opts.seeds(1);
    let mut wanted: Vec<(&'static str, Vec<String>, Vec<u64>)> = Vec::new();
    let mut add = |t: Target, archs: Vec<String>, seeds: Vec<u64>| {
        if target == t || target == Target::All {
            wanted.push((t.name(), archs, seeds));
        }
    };
    add(Target::Fig1, FIG1.map(String::from).to_vec(), one.clone());
    add(Target::Fig6, fig6.clone(), one);
    add(Target::Table6, fig6, opts.seeds(p.runs));
    add(
        Target::Fig7,
        FIG7.map(String::from).to_vec(),
        opts.seeds(p.fig7_runs),
    );
    let mut out: Vec<(String, Vec<u64>, Vec<&'static str>)> = Vec::new();
    for (name, archs, seeds) in wanted {
        for arch in archs {
            let slot = match out.iter().position(|(a, _, _)| *a == arch) {
                Some(i) => &mut out[i],
                None => {
                    out.push((arch, Vec::new(), Vec::new()));
                    out.last_mut().expect("just pushed")
                }
            };
            for &s in &seeds {
                if !slot.1.contains(&s) {
                    slot.1.push(s);
                }
            }
            slot.2.push(name);
        }
    }
    out.iter_mut()
        .for_each(|(_, seeds, _)| seeds.sort_unstable());
    out
}

/// What the data folder holds, or what the paper profile would fetch into it.
fn data_facts(opts: &Options) -> Result<(DataFacts, String)> {
    if !opts.data.exists() && opts.profile.name == ProfileName::Paper {
        return Ok((
            DataFacts::FULL,
            format!(
                "{} is missing: the paper profile downloads CIFAR-10 (50000 training, 10000 test images) there first",
                opts.data.display()
            ),
        ));
    }
    let data = Cifar10::load(&opts.data)
        .with_context(|| format!("cannot read CIFAR-10 from --data {}", opts.data.display()))?;
    let facts = DataFacts {
        train_images: data.train.len(),
        test_images: data.test.len(),
    };
    Ok((facts, opts.data_words(&facts)))
}

/// The plan of `target` with `opts`, in words: profile, data, device,
/// schedule, every training run, and every deviation from the paper.
pub fn plan(target: Target, opts: &Options) -> Result<String> {
    let p = &opts.profile;
    let mut out = format!(
        "Plan of `{}` (dry run: nothing is trained or written)\n\nprofile: {}\n",
        opts.command(target.name()),
        p.name
    );
    if target == Target::Table1 {
        out.push_str("Table 1 counts parameters and FLOPs from the specs: no training, no data.\n");
        return Ok(out);
    }
    let (facts, data) = data_facts(opts)?;
    writeln!(out, "data: {data}")?;
    writeln!(out, "device: {}", opts.device)?;
    writeln!(out, "schedule: {}", p.schedule_words())?;
    // The runner trains in one process.
    let parallelism = p.parallelism(&[1]);
    write!(out, "{}", parallelism.markdown())?;
    writeln!(out, "output: {}", opts.out.display())?;
    let runs = runs(target, opts);
    let total: usize = runs.iter().map(|(_, seeds, _)| seeds.len()).sum();
    writeln!(
        out,
        "\ntraining runs ({total}, {} iterations each; finished runs in {} are reused):",
        p.iterations,
        opts.out.join("runs").join(p.name.to_string()).display()
    )?;
    for (arch, seeds, targets) in &runs {
        writeln!(
            out,
            "- {arch}: seeds {seeds:?} (for {})",
            targets.join(", ")
        )?;
    }
    let mut deviations = p.deviations(&facts, &parallelism);
    if runs
        .iter()
        .any(|(a, _, _)| a == "resnet110" || a == "resnet1202")
    {
        deviations.push(Deviation::new(
            "warmup-end",
            "ResNet-110 (and 1202) warm up at lr 0.01 until their training error is below 80%; the iteration \
             the warm-up ends at is recorded in the reports once they have trained (the paper's ended after \
             about 400 iterations)",
        ));
    }
    write!(out, "{}", deviation::markdown(&deviations))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Profile;
    use resnet_models::Precision;

    fn opts(profile: ProfileName) -> Options {
        Options {
            profile: Profile::new(profile),
            data: std::path::PathBuf::from("/nonexistent/cifar-10-batches-bin"),
            device: "cpu".into(),
            seed: 0,
            out: "results".into(),
        }
    }

    #[test]
    fn every_net_is_planned_once_with_all_its_seeds() {
        let o = opts(ProfileName::Paper);
        let all = runs(Target::All, &o);
        let r110 = all.iter().find(|(a, _, _)| a == "resnet110").unwrap();
        assert_eq!(r110.1, [0, 1, 2, 3, 4]);
        assert_eq!(r110.2, ["fig6", "table6", "fig7"]);
        assert_eq!(all.iter().filter(|(a, _, _)| a == "plain20").count(), 1);
        assert!(all.iter().any(|(a, _, _)| a == "resnet1202"));
        let fig1 = runs(Target::Fig1, &o);
        assert_eq!(fig1.len(), 2);
        assert!(fig1.iter().all(|(_, seeds, _)| seeds == &[0]));
    }

    #[test]
    fn the_paper_plan_lists_its_deviations_without_the_data() {
        let text = plan(Target::All, &opts(ProfileName::Paper)).unwrap();
        for needle in [
            "- `init`:",
            "- `warmup-end`:",
            "downloads CIFAR-10",
            "resnet1202: seeds [0, 1, 2, 3, 4]",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert!(
            !text.contains("- `precision`:"),
            "fp32 is the paper's:\n{text}"
        );
        let err = plan(Target::All, &opts(ProfileName::Quick)).unwrap_err();
        assert!(
            format!("{err:#}").contains("--data /nonexistent"),
            "{err:#}"
        );
    }

    #[test]
    fn a_bf16_plan_trains_in_bf16_and_lists_it_as_a_deviation() {
        let mut o = opts(ProfileName::Paper);
        o.profile.precision = Precision::Bf16;
        let config = o.profile.train_config("resnet20", 0, &o.data, &o.device);
        assert_eq!(config.precision, Precision::Bf16);
        let text = plan(Target::Fig6, &o).unwrap();
        assert!(
            text.contains("- `precision`: convolutions and the fc layer multiply bf16"),
            "{text}"
        );
        let command = o.command("fig6");
        assert!(command.ends_with(" --precision bf16"), "{command}");
    }
}
