//! The rules that turn our numbers into a verdict on each of the paper's
//! CIFAR-10 findings: "holds", "does not hold" or "not shown at this scale".
//!
//! A finding is about nets that trained: a net whose final training error is
//! not well below chance says nothing about depth, so a finding with such a
//! net in it is "not shown at this scale", whatever the order of the errors.
//! An ordering measured over several seeds is claimed only when the gap
//! between the means exceeds the spread across seeds.

use serde::Serialize;

use crate::curves::{display_name, final_test_error, final_train_error};
use crate::runs::FinishedRun;

/// Error (%) of a 10-class guess: chance on CIFAR-10.
pub const CHANCE_ERROR_PCT: f64 = 90.0;

/// A net counts as trained when its final training error (%) is below this:
/// three quarters of chance.
pub const TRAINED_BELOW_PCT: f64 = 0.75 * CHANCE_ERROR_PCT;

/// The rule of [`TRAINED_BELOW_PCT`] in words, for the reports.
pub const TRAINED_RULE: &str = "a net counts as trained when its final training error (mean over the last \
     tenth of the iterations) is below 67.5%, three quarters of chance (90%); a finding holds only when \
     every net in it trained, and an ordering over several seeds only when the gap between the means \
     exceeds the spread (max - min) across seeds of either net";

/// What our run says about one of the paper's findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every net in it trained and the numbers agree with the paper.
    #[serde(rename = "holds")]
    Holds,
    /// Every net in it trained and the numbers contradict the paper.
    #[serde(rename = "does not hold")]
    DoesNotHold,
    /// A net did not train, or the difference is within the seed spread.
    #[serde(rename = "not shown at this scale")]
    NotShown,
}

impl Verdict {
    /// The verdict as the reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::NotShown => "not shown at this scale",
        }
    }

    /// Holds when every part holds; does not hold when any part does not;
    /// otherwise not shown.
    pub fn all(parts: &[Verdict]) -> Verdict {
        if parts.contains(&Verdict::DoesNotHold) {
            Verdict::DoesNotHold
        } else if !parts.is_empty() && parts.iter().all(|v| *v == Verdict::Holds) {
            Verdict::Holds
        } else {
            Verdict::NotShown
        }
    }
}

/// One of the paper's findings with our verdict and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The paper's claim.
    pub claim: String,
    /// Our verdict on it.
    pub verdict: Verdict,
    /// The numbers behind the verdict.
    pub detail: String,
}

impl Finding {
    /// A Markdown bullet: claim, verdict in bold, numbers.
    pub fn markdown(&self) -> String {
        format!(
            "- {}: **{}**. {}",
            self.claim,
            self.verdict.as_str(),
            self.detail
        )
    }
}

/// A net's end-of-run errors (%).
#[derive(Debug, Clone, PartialEq)]
pub struct NetResult {
    /// The net as the paper names it (`plain-56`).
    pub name: String,
    /// Final training error (%).
    pub train_pct: f64,
    /// Final test error (%).
    pub test_pct: f64,
}

impl NetResult {
    /// The errors of a finished run.
    pub fn of(run: &FinishedRun) -> NetResult {
        NetResult {
            name: display_name(&run.config.arch),
            train_pct: final_train_error(&run.metrics),
            test_pct: final_test_error(run),
        }
    }

    /// Whether the net trained (see [`TRAINED_BELOW_PCT`]).
    pub fn trained(&self) -> bool {
        self.train_pct < TRAINED_BELOW_PCT
    }
}

/// The nets that did not train, in words; `None` when all did.
fn untrained(nets: &[&NetResult]) -> Option<String> {
    let failed: Vec<String> = nets
        .iter()
        .filter(|n| !n.trained())
        .map(|n| format!("{} ended at {:.1}% training error", n.name, n.train_pct))
        .collect();
    let pronoun = if failed.len() == 1 { "it" } else { "they" };
    (!failed.is_empty()).then(|| {
        format!(
            "{}, not below {TRAINED_BELOW_PCT}% (3/4 of chance): {pronoun} did not train, so the comparison \
             says nothing about depth",
            failed.join(", ")
        )
    })
}

fn errors(nets: &[&NetResult]) -> String {
    nets.iter()
        .map(|n| format!("{} {:.1}% / {:.1}%", n.name, n.train_pct, n.test_pct))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fig. 1: the deeper plain net ends with higher training and test error.
pub fn degradation(shallow: &NetResult, deep: &NetResult) -> Finding {
    let claim = format!(
        "{} has higher training and test error than {} (degradation, not overfitting)",
        deep.name, shallow.name
    );
    let numbers = format!("Training / test error: {}.", errors(&[shallow, deep]));
    let (verdict, detail) = match untrained(&[shallow, deep]) {
        Some(why) => (Verdict::NotShown, format!("{numbers} {why}.")),
        None if deep.train_pct > shallow.train_pct && deep.test_pct > shallow.test_pct => {
            (Verdict::Holds, numbers)
        }
        None => (Verdict::DoesNotHold, numbers),
    };
    Finding {
        claim,
        verdict,
        detail,
    }
}

/// Fig. 6: training error rises (`rises`) or falls with every step in
/// depth; `nets` are ordered by depth.
pub fn depth_order(claim: &str, nets: &[NetResult], rises: bool) -> Finding {
    let refs: Vec<&NetResult> = nets.iter().collect();
    let numbers = format!("Training / test error: {}.", errors(&refs));
    let ordered = nets.windows(2).all(|w| {
        if rises {
            w[1].train_pct > w[0].train_pct
        } else {
            w[1].train_pct < w[0].train_pct
        }
    });
    let (verdict, detail) = match untrained(&refs) {
        Some(why) => (Verdict::NotShown, format!("{numbers} {why}.")),
        None if nets.len() > 1 && ordered => (Verdict::Holds, numbers),
        None => (Verdict::DoesNotHold, numbers),
    };
    Finding {
        claim: claim.to_string(),
        verdict,
        detail,
    }
}

/// Fig. 6: every ResNet ends with lower training error than the plain net
/// of its depth; `pairs` are (ResNet, plain twin).
pub fn lower_than_twins(pairs: &[(NetResult, NetResult)]) -> Finding {
    let refs: Vec<&NetResult> = pairs.iter().flat_map(|(r, p)| [r, p]).collect();
    let numbers = format!("Training / test error: {}.", errors(&refs));
    let lower = pairs.iter().all(|(r, p)| r.train_pct < p.train_pct);
    let (verdict, detail) = match untrained(&refs) {
        Some(why) => (Verdict::NotShown, format!("{numbers} {why}.")),
        None if !pairs.is_empty() && lower => (Verdict::Holds, numbers),
        None => (Verdict::DoesNotHold, numbers),
    };
    Finding {
        claim: "every ResNet has lower training error than the plain net of the same depth".into(),
        verdict,
        detail,
    }
}

/// Fig. 6 (right): the much deeper net ends with a higher test error than
/// the shallower one (ResNet-1202 against ResNet-110: overfitting).
pub fn overfits(shallow: &NetResult, deep: &NetResult) -> Finding {
    let numbers = format!("Training / test error: {}.", errors(&[shallow, deep]));
    let (verdict, detail) = match untrained(&[shallow, deep]) {
        Some(why) => (Verdict::NotShown, format!("{numbers} {why}.")),
        None if deep.test_pct > shallow.test_pct => (Verdict::Holds, numbers),
        None => (Verdict::DoesNotHold, numbers),
    };
    Finding {
        claim: format!(
            "{} overfits: higher test error than {}",
            deep.name, shallow.name
        ),
        verdict,
        detail,
    }
}

/// Error (%) of a guess among `classes` classes: chance (99.9% on ImageNet).
pub fn chance_error_pct(classes: usize) -> f64 {
    100.0 * (1.0 - 1.0 / classes.max(1) as f64)
}

/// Fig. 4: the deeper of two nets (named, final training error %) trained on
/// an image folder whose chance error is `chance_pct` ends with higher
/// (`deeper_higher`, the plain nets' degradation) or lower (the ResNets)
/// training error. A net counts as trained below three quarters of chance,
/// the rule of [`TRAINED_RULE`].
pub fn imagenet_depth(
    claim: &str,
    shallow: (&str, f64),
    deep: (&str, f64),
    deeper_higher: bool,
    chance_pct: f64,
) -> Finding {
    let trained_below = 0.75 * chance_pct;
    let numbers = format!(
        "Final training error: {} {:.1}%, {} {:.1}%.",
        shallow.0, shallow.1, deep.0, deep.1
    );
    let failed: Vec<String> = [shallow, deep]
        .iter()
        .filter(|(_, err)| *err >= trained_below)
        .map(|(name, err)| format!("{name} ended at {err:.1}%"))
        .collect();
    let holds = if deeper_higher {
        deep.1 > shallow.1
    } else {
        deep.1 < shallow.1
    };
    let (verdict, detail) = if !failed.is_empty() {
        let why = format!(
            "{}, not below {trained_below:.1}% (3/4 of chance, {chance_pct:.1}%): not trained, \
             so the comparison says nothing about depth",
            failed.join(", ")
        );
        (Verdict::NotShown, format!("{numbers} {why}."))
    } else if holds {
        (Verdict::Holds, numbers)
    } else {
        (Verdict::DoesNotHold, numbers)
    };
    Finding {
        claim: claim.to_string(),
        verdict,
        detail,
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn range(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    max - min
}

/// Whether `smaller`'s values (one per seed) are below `larger`'s by more
/// than the spread across seeds, with the numbers in words. One seed has no
/// spread to compare with: not shown.
pub fn smaller_beyond_spread(smaller: (&str, &[f64]), larger: (&str, &[f64])) -> (Verdict, String) {
    let (a, b) = (smaller.1, larger.1);
    let (ma, mb) = (mean(a), mean(b));
    let spread = range(a).max(range(b));
    let numbers = format!(
        "{} {ma:.3} vs {} {mb:.3} (mean of {} and {} seeds, spread {spread:.3})",
        smaller.0,
        larger.0,
        a.len(),
        b.len()
    );
    if a.len() < 2 || b.len() < 2 {
        return (
            Verdict::NotShown,
            format!("{numbers}: one seed gives no spread to compare the gap with"),
        );
    }
    let gap = mb - ma;
    if gap > spread {
        (Verdict::Holds, numbers)
    } else if -gap > spread {
        (Verdict::DoesNotHold, numbers)
    } else {
        (
            Verdict::NotShown,
            format!("{numbers}: the gap is within the spread"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, train_pct: f64, test_pct: f64) -> NetResult {
        NetResult {
            name: name.into(),
            train_pct,
            test_pct,
        }
    }

    #[test]
    fn degradation_holds_only_when_both_nets_trained() {
        // The quick profile's numbers: plain-56 at chance says nothing.
        let f = degradation(&net("plain-20", 66.9, 68.7), &net("plain-56", 89.3, 88.5));
        assert_eq!(f.verdict, Verdict::NotShown);
        assert!(f.detail.contains("plain-56 ended at 89.3%"), "{}", f.detail);
        // The H200 run: plain-56 trained, and ends above plain-20.
        let f = degradation(&net("plain-20", 50.0, 52.0), &net("plain-56", 63.0, 61.0));
        assert_eq!(f.verdict, Verdict::Holds);
        let f = degradation(&net("plain-20", 63.0, 61.0), &net("plain-56", 50.0, 52.0));
        assert_eq!(f.verdict, Verdict::DoesNotHold);
        // Higher training error but lower test error is not the paper's finding.
        let f = degradation(&net("plain-20", 50.0, 62.0), &net("plain-56", 63.0, 61.0));
        assert_eq!(f.verdict, Verdict::DoesNotHold);
    }

    #[test]
    fn the_trained_threshold_is_three_quarters_of_chance() {
        assert!(net("a", 67.4, 70.0).trained());
        assert!(!net("a", 67.5, 70.0).trained());
        assert!(!net("a", f64::NAN, 70.0).trained());
    }

    #[test]
    fn depth_order_needs_every_step_and_every_net_trained() {
        let nets = |e: [f64; 3]| {
            vec![
                net("ResNet-20", e[0], 30.0),
                net("ResNet-32", e[1], 30.0),
                net("ResNet-56", e[2], 30.0),
            ]
        };
        let claim = "deeper ResNets have lower training error";
        assert_eq!(
            depth_order(claim, &nets([30.0, 25.0, 20.0]), false).verdict,
            Verdict::Holds
        );
        assert_eq!(
            depth_order(claim, &nets([30.0, 35.0, 20.0]), false).verdict,
            Verdict::DoesNotHold
        );
        assert_eq!(
            depth_order(claim, &nets([60.0, 65.0, 80.0]), true).verdict,
            Verdict::NotShown
        );
        assert_eq!(
            depth_order(claim, &nets([50.0, 55.0, 60.0]), true).verdict,
            Verdict::Holds
        );
    }

    #[test]
    fn twins_and_overfitting_follow_the_same_rule() {
        let pairs = vec![
            (net("ResNet-20", 40.0, 42.0), net("plain-20", 45.0, 46.0)),
            (net("ResNet-56", 35.0, 38.0), net("plain-56", 60.0, 61.0)),
        ];
        assert_eq!(lower_than_twins(&pairs).verdict, Verdict::Holds);
        let untrained_plain = vec![(net("ResNet-56", 35.0, 38.0), net("plain-56", 89.0, 89.0))];
        assert_eq!(
            lower_than_twins(&untrained_plain).verdict,
            Verdict::NotShown
        );
        let worse = vec![(net("ResNet-56", 50.0, 52.0), net("plain-56", 45.0, 47.0))];
        assert_eq!(lower_than_twins(&worse).verdict, Verdict::DoesNotHold);
        let (r110, r1202) = (net("ResNet-110", 1.0, 6.4), net("ResNet-1202", 1.0, 7.9));
        assert_eq!(overfits(&r110, &r1202).verdict, Verdict::Holds);
        assert_eq!(overfits(&r1202, &r110).verdict, Verdict::DoesNotHold);
    }

    #[test]
    fn an_ordering_must_exceed_the_seed_spread() {
        // After a short run every BN output has a std near 1: a gap of 0.01
        // with seeds 0.05 apart is noise.
        let (v, detail) =
            smaller_beyond_spread(("ResNet-56", &[0.98, 1.03]), ("plain-56", &[1.0, 1.04]));
        assert_eq!(v, Verdict::NotShown, "{detail}");
        assert!(detail.contains("within the spread"), "{detail}");
        let (v, _) = smaller_beyond_spread(("ResNet-56", &[0.6, 0.65]), ("plain-56", &[1.3, 1.4]));
        assert_eq!(v, Verdict::Holds);
        let (v, _) = smaller_beyond_spread(("ResNet-56", &[1.3, 1.4]), ("plain-56", &[0.6, 0.65]));
        assert_eq!(v, Verdict::DoesNotHold);
        let (v, detail) = smaller_beyond_spread(("ResNet-56", &[0.6]), ("plain-56", &[1.4]));
        assert_eq!(v, Verdict::NotShown);
        assert!(detail.contains("one seed"), "{detail}");
    }

    #[test]
    fn verdicts_combine_to_the_weakest() {
        use Verdict::*;
        assert_eq!(Verdict::all(&[Holds, Holds]), Holds);
        assert_eq!(Verdict::all(&[Holds, NotShown]), NotShown);
        assert_eq!(Verdict::all(&[NotShown, DoesNotHold, Holds]), DoesNotHold);
        assert_eq!(Verdict::all(&[]), NotShown);
    }

    #[test]
    fn imagenet_findings_need_both_nets_below_three_quarters_of_chance() {
        let claim = "deeper is worse";
        let chance = chance_error_pct(1000);
        assert!((chance - 99.9).abs() < 1e-9);
        // 74.9% is three quarters of 99.9%: a net at 80% has not trained.
        let f = imagenet_depth(claim, ("plain-18", 60.0), ("plain-34", 80.0), true, chance);
        assert_eq!(f.verdict, Verdict::NotShown, "{}", f.detail);
        assert!(f.detail.contains("plain-34 ended at 80.0%"), "{}", f.detail);
        let f = imagenet_depth(claim, ("plain-18", 60.0), ("plain-34", 65.0), true, chance);
        assert_eq!(f.verdict, Verdict::Holds);
        let f = imagenet_depth(claim, ("plain-18", 65.0), ("plain-34", 60.0), true, chance);
        assert_eq!(f.verdict, Verdict::DoesNotHold);
        let f = imagenet_depth(
            claim,
            ("ResNet-18", 65.0),
            ("ResNet-34", 60.0),
            false,
            chance,
        );
        assert_eq!(f.verdict, Verdict::Holds);
        assert!(f.markdown().contains("**holds**"));
        // Two classes: chance is 50%, so 40% is not trained.
        let f = imagenet_depth(claim, ("a", 30.0), ("b", 40.0), true, chance_error_pct(2));
        assert_eq!(f.verdict, Verdict::NotShown, "{}", f.detail);
    }
}
