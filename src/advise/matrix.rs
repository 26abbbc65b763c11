//! The strategy matrix (SPEC §5) applied to plain per-class inputs.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::advice::{
    Action, Advice, Basis, Confusion, CutoffBasis, EarlyCutoff, Evidence, Quadrant, Recommendation,
    RunAdvice, RunEvidence, RunFinding,
};
use super::rules::Rules;
use super::template::{Placeholder, Significant, Template};

/// One detector's verdict on a class.
#[derive(Debug, Clone, PartialEq)]
pub struct DwellInput {
    /// Class dwell onset step; None while fewer than half its examples dwell.
    pub onset_step: Option<u64>,
    pub dwell_fraction: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassEvidenceInput {
    pub label: String,
    pub probe_count: usize,
    /// Keyed by detector name: "distance", "straightness", "relative".
    pub dwell: BTreeMap<String, DwellInput>,
    /// Per-class F1 at each checkpoint seen so far, oldest first, aligned with
    /// `RunInput::steps`.
    pub f1_series: Vec<f64>,
    /// Latest class mean speed; None with fewer than 2 checkpoints.
    pub latest_speed: Option<f64>,
    /// The other class this class's probe examples are most often predicted as
    /// at the latest checkpoint, and the share of them predicted as it.
    pub most_confused_with: Option<(String, f64)>,
    pub train_count: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunInput {
    /// Steps of the checkpoints seen so far.
    pub steps: Vec<u64>,
    /// trainer_state.json `max_steps`.
    pub max_steps: Option<u64>,
}

/// Assesses every class (quadrant, action, message, evidence) and ranks the
/// ones that need data. Never fails: missing or odd inputs make a class
/// `undetermined` rather than an error, because advice is re-run at every
/// checkpoint and must not stop the daemon.
pub fn advise(rules: &Rules, run: &RunInput, classes: &[ClassEvidenceInput]) -> Advice {
    let latest_step = run.steps.iter().max().copied();
    let max_steps = run.max_steps.filter(|&m| m > 0);
    let shortfall = evidence_shortfall(rules, run.steps.len(), latest_step, max_steps);
    let early_cutoff = early_cutoff(rules, max_steps, classes);
    let median_train_count = median(
        classes
            .iter()
            .filter_map(|c| c.train_count.map(|n| n as f64))
            .collect(),
    );

    let mut assessed: Vec<Assessed> = classes
        .iter()
        .map(|class| assess(rules, class, shortfall, early_cutoff, median_train_count))
        .collect();
    let run_advice = run_finding(rules, &assessed).map(|(finding, pattern)| {
        let advice = run_advice(rules, finding, &pattern, &assessed, classes, run, max_steps);
        for &index in &pattern {
            if !is_specific(rules, finding, &assessed[index], median_train_count) {
                assessed[index].action = Action::RunLevel;
                assessed[index].evidence.basis = Basis::RunLevel;
            }
        }
        advice
    });

    let priorities = data_priorities(&assessed, classes);
    let classes: Vec<Recommendation> = assessed
        .into_iter()
        .zip(classes)
        .enumerate()
        .map(|(index, (assessed, class))| {
            let message = render(rules, &assessed, class, latest_step);
            Recommendation {
                id: format!("{}:{}", assessed.action.name(), class.label),
                class: class.label.clone(),
                action: assessed.action,
                quadrant: assessed.quadrant,
                priority: priorities.get(&index).copied(),
                message,
                evidence: assessed.evidence,
            }
        })
        .collect();

    let mut recommendations: Vec<Recommendation> = classes
        .iter()
        .filter(|r| r.action.is_actionable())
        .cloned()
        .collect();
    // Data collection in priority order first, then the classes to redefine
    // (stable sort keeps input order among those).
    recommendations.sort_by_key(|r| r.priority.unwrap_or(usize::MAX));

    Advice {
        detector: rules.dwell.detector,
        latest_step,
        max_steps,
        evidence_sufficient: shortfall.is_none(),
        early_cutoff,
        classes,
        recommendations,
        run_advice,
    }
}

/// The run-level pattern, if more than `run.majority` of the decided classes
/// show it, and the indices of those classes. Settled early with low F1
/// everywhere is the model's or the training's limit; not settled almost
/// anywhere means the run cannot tell yet what each class needs.
fn run_finding(rules: &Rules, assessed: &[Assessed]) -> Option<(RunFinding, Vec<usize>)> {
    let decided = assessed
        .iter()
        .filter(|a| a.quadrant != Quadrant::Undetermined)
        .count();
    let pattern = |quadrants: &[Quadrant]| -> Vec<usize> {
        (0..assessed.len())
            .filter(|&i| quadrants.contains(&assessed[i].quadrant))
            .collect()
    };
    let most = |pattern: &Vec<usize>| pattern.len() as f64 > rules.run.majority * decided as f64;
    let early_low = pattern(&[Quadrant::EarlyLow]);
    let late = pattern(&[Quadrant::LateLow, Quadrant::LateHigh]);
    if decided < rules.run.min_classes {
        None
    } else if most(&early_low) {
        Some((RunFinding::CapacityLimit, early_low))
    } else if most(&late) {
        Some((RunFinding::RunTooShort, late))
    } else {
        None
    }
}

/// Whether a class in the run-level pattern still has advice of its own: a
/// collapse (its few training examples, not the run, explain it), or, in a
/// run too short to judge, a late class whose training count is small.
fn is_specific(
    rules: &Rules,
    finding: RunFinding,
    assessed: &Assessed,
    median_train_count: Option<f64>,
) -> bool {
    match finding {
        RunFinding::CapacityLimit => assessed.evidence.basis == Basis::CollapseTrap,
        RunFinding::RunTooShort => assessed
            .evidence
            .train_count
            .is_some_and(|count| is_small_count(rules, count, median_train_count)),
    }
}

fn is_small_count(rules: &Rules, count: usize, median_train_count: Option<f64>) -> bool {
    count <= rules.collapse.max_train_count
        || median_train_count
            .is_some_and(|m| count as f64 <= rules.collapse.max_share_of_median * m)
}

fn run_advice(
    rules: &Rules,
    finding: RunFinding,
    pattern: &[usize],
    assessed: &[Assessed],
    classes: &[ClassEvidenceInput],
    run: &RunInput,
    max_steps: Option<u64>,
) -> RunAdvice {
    let decided = assessed
        .iter()
        .filter(|a| a.quadrant != Quadrant::Undetermined)
        .count();
    let f1s: Vec<f64> = pattern
        .iter()
        .filter_map(|&i| assessed[i].evidence.f1)
        .collect();
    let mean_f1 = (!f1s.is_empty()).then(|| f1s.iter().sum::<f64>() / f1s.len() as f64);
    let onsets: Vec<f64> = pattern
        .iter()
        .filter_map(|&i| assessed[i].evidence.onset_step)
        .map(|s| s as f64)
        .collect();
    let evidence = RunEvidence {
        classes: pattern.iter().map(|&i| classes[i].label.clone()).collect(),
        decided,
        share: pattern.len() as f64 / decided as f64,
        mean_f1,
        median_onset_step: median(onsets).map(|m| m.floor() as u64),
        latest_step: run.steps.iter().max().copied(),
        max_steps,
    };
    let template = match finding {
        RunFinding::CapacityLimit => &rules.messages.run_capacity_limit,
        RunFinding::RunTooShort => &rules.messages.run_too_short,
    };
    let message = template.render(|placeholder| match placeholder {
        Placeholder::Classes => Some(format!("{} of {decided} classes", pattern.len())),
        Placeholder::Step => evidence.latest_step.map(|s| s.to_string()),
        Placeholder::MaxSteps => evidence.max_steps.map(|s| s.to_string()),
        Placeholder::Onset => evidence.median_onset_step.map(|s| s.to_string()),
        Placeholder::F1 => evidence.mean_f1.map(|f| format!("{f:.2}")),
        _ => None,
    });
    let id = format!(
        "run:{}",
        match finding {
            RunFinding::CapacityLimit => "capacity_limit",
            RunFinding::RunTooShort => "run_too_short",
        }
    );
    RunAdvice {
        id,
        finding,
        message,
        evidence,
    }
}

struct Assessed {
    quadrant: Quadrant,
    action: Action,
    evidence: Evidence,
}

fn evidence_shortfall(
    rules: &Rules,
    checkpoints: usize,
    latest_step: Option<u64>,
    max_steps: Option<u64>,
) -> Option<Basis> {
    if checkpoints < rules.evidence.min_checkpoints {
        return Some(Basis::TooFewCheckpoints);
    }
    let reached = latest_step.unwrap_or(0) as f64;
    match max_steps {
        Some(max) if reached < rules.evidence.min_planned_share * max as f64 => {
            Some(Basis::TooEarlyInRun)
        }
        _ => None,
    }
}

/// The plan is the natural yardstick (a class that needs the whole run to
/// settle is late whatever the others do); without one, the other classes are.
fn early_cutoff(
    rules: &Rules,
    max_steps: Option<u64>,
    classes: &[ClassEvidenceInput],
) -> Option<EarlyCutoff> {
    if let Some(max) = max_steps {
        return Some(EarlyCutoff {
            basis: CutoffBasis::PlannedSteps,
            step: (rules.dwell.early_fraction * max as f64).floor() as u64,
        });
    }
    let onsets = classes
        .iter()
        .filter_map(|c| c.dwell.get(rules.dwell.detector.name())?.onset_step)
        .map(|s| s as f64)
        .collect();
    median(onsets).map(|m| EarlyCutoff {
        basis: CutoffBasis::PeerMedian,
        step: (rules.dwell.peer_factor * m).floor() as u64,
    })
}

fn assess(
    rules: &Rules,
    class: &ClassEvidenceInput,
    shortfall: Option<Basis>,
    early_cutoff: Option<EarlyCutoff>,
    median_train_count: Option<f64>,
) -> Assessed {
    let dwell = class.dwell.get(rules.dwell.detector.name());
    let f1 = F1Summary::of(&class.f1_series, rules.f1.smoothing_window);
    let mut evidence = Evidence {
        basis: Basis::Matrix,
        onset_step: dwell.and_then(|d| d.onset_step),
        dwell_fraction: dwell.map(|d| d.dwell_fraction),
        f1: f1.as_ref().map(|f| f.smoothed),
        f1_latest: f1.as_ref().map(|f| f.latest),
        f1_trend: f1.as_ref().and_then(|f| f.trend),
        latest_speed: class.latest_speed,
        most_confused_with: class
            .most_confused_with
            .as_ref()
            .map(|(label, share)| Confusion {
                label: label.clone(),
                share: *share,
            }),
        probe_count: class.probe_count,
        train_count: class.train_count,
    };
    let undetermined = |basis, evidence: Evidence| Assessed {
        quadrant: Quadrant::Undetermined,
        action: Action::Wait,
        evidence: Evidence { basis, ..evidence },
    };
    if let Some(basis) = shortfall {
        return undetermined(basis, evidence);
    }
    if dwell.is_none() {
        return undetermined(Basis::NoDwellData, evidence);
    }
    let Some(f1) = f1 else {
        return undetermined(Basis::NoF1Data, evidence);
    };

    let early = evidence
        .onset_step
        .zip(early_cutoff)
        .is_some_and(|(onset, cutoff)| onset <= cutoff.step);
    let high = f1.smoothed >= rules.f1.high_threshold;
    let (quadrant, action) = match (early, high) {
        (true, true) => (Quadrant::EarlyHigh, Action::None),
        (true, false) => {
            let (action, basis) = early_low_action(rules, class, median_train_count);
            evidence.basis = basis;
            (Quadrant::EarlyLow, action)
        }
        (false, true) => (Quadrant::LateHigh, Action::TargetedData),
        (false, false) => (Quadrant::LateLow, Action::AddData),
    };
    Assessed {
        quadrant,
        action,
        evidence,
    }
}

/// The collapse trap. A class with too few examples to own a region gets
/// absorbed by a neighbour: its points settle early (inside the neighbour's
/// region) and its F1 stays low, which the bare matrix reads as "intrinsically
/// hard". Being absorbed by ONE class is what a hard class does too, so the
/// small training count is what tips it to data shortage.
fn early_low_action(
    rules: &Rules,
    class: &ClassEvidenceInput,
    median_train_count: Option<f64>,
) -> (Action, Basis) {
    let absorbed = class
        .most_confused_with
        .as_ref()
        .is_some_and(|(_, share)| *share >= rules.collapse.min_absorbed_share);
    if !absorbed {
        return (Action::RedefineClass, Basis::Matrix);
    }
    match class.train_count {
        None => (Action::RedefineClass, Basis::CollapseUnconfirmed),
        Some(count) => {
            if is_small_count(rules, count, median_train_count) {
                (Action::AddData, Basis::CollapseTrap)
            } else {
                (Action::RedefineClass, Basis::Matrix)
            }
        }
    }
}

struct F1Summary {
    smoothed: f64,
    latest: f64,
    trend: Option<f64>,
}

impl F1Summary {
    /// Mean of the last `window` values; trend against the same mean
    /// `window` checkpoints earlier (None until that many exist). A moving
    /// mean, not a regression slope: it is what the threshold is applied to,
    /// and its difference reads directly as "F1 gained this much".
    fn of(series: &[f64], window: usize) -> Option<F1Summary> {
        let window = window.max(1);
        let smoothed_until = |end: usize| {
            let values = &series[end.saturating_sub(window)..end];
            values.iter().sum::<f64>() / values.len() as f64
        };
        let latest = *series.last()?;
        let smoothed = smoothed_until(series.len());
        let trend =
            (series.len() > window).then(|| smoothed - smoothed_until(series.len() - window));
        Some(F1Summary {
            smoothed,
            latest,
            trend,
        })
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Which data to collect first: a class short of data everywhere (late_low)
/// gains most per example, then collapsed classes (few examples, fixed by
/// more of them), then late_high classes that need targeted examples only.
/// Within a group the weaker class (lower smoothed F1, then fewer training
/// examples) first; the label breaks ties so the order never flickers.
fn data_priorities(
    assessed: &[Assessed],
    classes: &[ClassEvidenceInput],
) -> BTreeMap<usize, usize> {
    let group = |a: &Assessed| match (a.action, a.evidence.basis) {
        (Action::AddData, Basis::CollapseTrap) => Some(1),
        (Action::AddData, _) => Some(0),
        (Action::TargetedData, _) => Some(2),
        _ => None,
    };
    let mut needing_data: Vec<(usize, u8)> = assessed
        .iter()
        .enumerate()
        .filter_map(|(index, a)| group(a).map(|g| (index, g)))
        .collect();
    needing_data.sort_by(|&(i, gi), &(j, gj)| {
        let (a, b) = (&assessed[i].evidence, &assessed[j].evidence);
        gi.cmp(&gj)
            .then_with(|| cmp_f1(a.f1, b.f1))
            .then_with(|| cmp_unknown_last(a.train_count, b.train_count))
            .then_with(|| classes[i].label.cmp(&classes[j].label))
    });
    needing_data
        .into_iter()
        .enumerate()
        .map(|(rank, (index, _))| (index, rank + 1))
        .collect()
}

fn cmp_f1(a: Option<f64>, b: Option<f64>) -> Ordering {
    a.unwrap_or(f64::INFINITY)
        .total_cmp(&b.unwrap_or(f64::INFINITY))
}

fn cmp_unknown_last(a: Option<usize>, b: Option<usize>) -> Ordering {
    a.unwrap_or(usize::MAX).cmp(&b.unwrap_or(usize::MAX))
}

fn render(
    rules: &Rules,
    assessed: &Assessed,
    class: &ClassEvidenceInput,
    latest_step: Option<u64>,
) -> String {
    let messages = &rules.messages;
    let template: &Template = match (assessed.action, assessed.evidence.basis) {
        (Action::Wait, _) => &messages.wait,
        (Action::RunLevel, _) => &messages.run_level,
        (Action::None, _) => &messages.healthy,
        (Action::RedefineClass, Basis::CollapseUnconfirmed) => {
            &messages.redefine_class_unconfirmed_collapse
        }
        (Action::RedefineClass, _) => &messages.redefine_class,
        (Action::TargetedData, _) => &messages.targeted_data,
        (Action::AddData, Basis::CollapseTrap) => &messages.add_data_collapse,
        (Action::AddData, _) => &messages.add_data,
    };
    let evidence = &assessed.evidence;
    template.render(|placeholder| match placeholder {
        Placeholder::Label => Some(class.label.clone()),
        Placeholder::Step => latest_step.map(|s| s.to_string()),
        Placeholder::Onset => evidence.onset_step.map(|s| s.to_string()),
        Placeholder::Dwell => match (evidence.dwell_fraction, evidence.onset_step) {
            (None, _) => None,
            (Some(_), Some(onset)) => Some(format!("dwelling since step {onset}")),
            (Some(_), None) => Some(match latest_step {
                Some(step) => format!("still moving at step {step}, no dwell yet"),
                None => "still moving, no dwell yet".to_owned(),
            }),
        },
        Placeholder::DwellFraction => evidence
            .dwell_fraction
            .map(|f| format!("{:.0}%", f * 100.0)),
        Placeholder::F1 => evidence.f1.map(|f| format!("{f:.2}")),
        Placeholder::Trend => evidence.f1_trend.map(|t| format!("{t:+.2}")),
        Placeholder::Speed => evidence
            .latest_speed
            .filter(|s| s.is_finite())
            .map(|s| Significant(s).to_string()),
        Placeholder::ConfusedWith => evidence
            .most_confused_with
            .as_ref()
            .map(|c| format!("`{}` ({:.0}%)", c.label, c.share * 100.0)),
        Placeholder::TrainCount => evidence.train_count.map(|n| n.to_string()),
        Placeholder::Classes | Placeholder::MaxSteps => None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::diff::{extend_streaks, material_changes, ActionChange, Streaks};
    use super::*;

    fn run(last: u64, max_steps: Option<u64>) -> RunInput {
        RunInput {
            steps: (1..=last / 100).map(|i| i * 100).collect(),
            max_steps,
        }
    }

    fn class(label: &str, onset: Option<u64>, f1_series: &[f64]) -> ClassEvidenceInput {
        let dwell = DwellInput {
            onset_step: onset,
            dwell_fraction: if onset.is_some() { 0.75 } else { 0.25 },
        };
        ClassEvidenceInput {
            label: label.to_owned(),
            probe_count: 20,
            dwell: ["distance", "straightness", "relative"]
                .into_iter()
                .map(|d| (d.to_owned(), dwell.clone()))
                .collect(),
            f1_series: f1_series.to_vec(),
            latest_speed: Some(0.0421),
            most_confused_with: None,
            train_count: None,
        }
    }

    fn with_train(mut c: ClassEvidenceInput, count: usize) -> ClassEvidenceInput {
        c.train_count = Some(count);
        c
    }

    fn confused(mut c: ClassEvidenceInput, with: &str, share: f64) -> ClassEvidenceInput {
        c.most_confused_with = Some((with.to_owned(), share));
        c
    }

    fn trained(mut c: ClassEvidenceInput, count: usize) -> ClassEvidenceInput {
        c.train_count = Some(count);
        c
    }

    fn only(advice: &Advice) -> &Recommendation {
        assert_eq!(advice.classes.len(), 1);
        &advice.classes[0]
    }

    const HIGH: &[f64] = &[0.5, 0.7, 0.85, 0.9, 0.9, 0.9];
    const LOW: &[f64] = &[0.1, 0.1, 0.2, 0.2, 0.3, 0.3];

    #[test]
    fn most_classes_early_and_low_is_said_once_for_the_run() {
        let classes = [
            confused(class("a", Some(200), LOW), "b", 0.1),
            class("b", Some(300), &[0.2, 0.3, 0.4]),
            class("c", Some(100), HIGH),
            with_train(confused(class("d", Some(200), LOW), "a", 0.6), 5),
        ];
        let advice = advise(&Rules::default(), &run(600, Some(1000)), &classes);
        let run_advice = advice.run_advice.as_ref().expect("a run-level finding");
        assert_eq!(run_advice.id, "run:capacity_limit");
        assert_eq!(run_advice.finding, RunFinding::CapacityLimit);
        // a, b and d settled early with low F1: 3 of 4 decided classes.
        assert_eq!(run_advice.evidence.classes, ["a", "b", "d"]);
        assert_eq!(run_advice.evidence.share, 0.75);
        assert_eq!(run_advice.evidence.median_onset_step, Some(200));
        // Mean smoothed F1 (last 3): a and d (0.2 + 0.3 + 0.3) / 3, b 0.3.
        let mean = run_advice.evidence.mean_f1.unwrap();
        assert!(
            (mean - (0.8 / 3.0 * 2.0 + 0.3) / 3.0).abs() < 1e-12,
            "{mean}"
        );
        assert!(
            run_advice
                .message
                .starts_with("the run, not the labels, is the limit: 3 of 4 classes settled early (median onset step 200) with low F1 (mean 0.28)"),
            "{}",
            run_advice.message
        );
        let action = |label: &str| {
            let c = advice.classes.iter().find(|c| c.class == label).unwrap();
            (c.quadrant, c.action, c.evidence.basis)
        };
        assert_eq!(
            action("a"),
            (Quadrant::EarlyLow, Action::RunLevel, Basis::RunLevel)
        );
        assert_eq!(
            action("b"),
            (Quadrant::EarlyLow, Action::RunLevel, Basis::RunLevel)
        );
        // d's own cause stays: five training examples, absorbed by a.
        assert_eq!(
            action("d"),
            (Quadrant::EarlyLow, Action::AddData, Basis::CollapseTrap)
        );
        let ids: Vec<&str> = advice
            .recommendations
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["add_data:d"]);
    }

    #[test]
    fn most_classes_not_settled_is_a_run_too_short_and_small_classes_keep_their_advice() {
        let classes = [
            class("a", None, LOW),
            class("b", None, HIGH),
            with_train(class("c", None, LOW), 10),
            class("d", Some(100), HIGH),
        ];
        let advice = advise(&Rules::default(), &run(1000, Some(1000)), &classes);
        let run_advice = advice.run_advice.as_ref().expect("a run-level finding");
        assert_eq!(run_advice.finding, RunFinding::RunTooShort);
        assert_eq!(run_advice.evidence.classes, ["a", "b", "c"]);
        assert_eq!(run_advice.evidence.median_onset_step, None);
        assert!(
            run_advice
                .message
                .contains("3 of 4 classes have not settled by step 1000 of 1000"),
            "{}",
            run_advice.message
        );
        let actions: Vec<Action> = advice.classes.iter().map(|c| c.action).collect();
        assert_eq!(
            actions,
            [
                Action::RunLevel,
                Action::RunLevel,
                Action::AddData,
                Action::None
            ]
        );
        let a = &advice.classes[0];
        assert!(
            a.message.ends_with("see the run-level advice"),
            "{}",
            a.message
        );
        assert_eq!(a.priority, None);
    }

    #[test]
    fn no_run_level_finding_without_a_majority_or_with_few_classes() {
        let split = [
            class("a", Some(100), LOW),
            class("b", Some(100), LOW),
            class("c", None, LOW),
            class("d", None, LOW),
        ];
        // 2 of 4 early_low and 2 of 4 late: neither is more than half.
        let advice = advise(&Rules::default(), &run(600, Some(1000)), &split);
        assert_eq!(advice.run_advice, None);
        let two = [class("a", Some(100), LOW), class("b", Some(100), LOW)];
        let advice = advise(&Rules::default(), &run(600, Some(1000)), &two);
        assert_eq!(advice.run_advice, None);
        assert_eq!(advice.classes[0].action, Action::RedefineClass);
    }

    #[test]
    fn early_and_high_is_healthy() {
        let advice = advise(
            &Rules::default(),
            &run(600, Some(1000)),
            &[class("a", Some(300), HIGH)],
        );
        let a = only(&advice);
        assert_eq!(
            (a.quadrant, a.action, a.priority),
            (Quadrant::EarlyHigh, Action::None, None)
        );
        assert_eq!(a.id, "none:a");
        assert!(advice.recommendations.is_empty());
        assert_eq!(
            advice.early_cutoff,
            Some(EarlyCutoff {
                basis: CutoffBasis::PlannedSteps,
                step: 500
            })
        );
    }

    #[test]
    fn early_and_low_is_intrinsically_hard() {
        let c = confused(class("a", Some(500), LOW), "b", 0.1);
        let advice = advise(&Rules::default(), &run(600, Some(1000)), &[c]);
        let a = only(&advice);
        assert_eq!(
            (a.quadrant, a.action),
            (Quadrant::EarlyLow, Action::RedefineClass)
        );
        assert_eq!((a.evidence.basis, a.priority), (Basis::Matrix, None));
        assert_eq!(advice.recommendations.len(), 1);
        assert!(a.message.starts_with("redefine class `a`"), "{}", a.message);
        assert!(
            a.message.contains("most often predicted as `b` (10%)"),
            "{}",
            a.message
        );
    }

    #[test]
    fn late_or_not_yet_and_high_needs_targeted_data() {
        for onset in [Some(501), None] {
            let advice = advise(
                &Rules::default(),
                &run(600, Some(1000)),
                &[class("a", onset, HIGH)],
            );
            let a = only(&advice);
            assert_eq!(
                (a.quadrant, a.action),
                (Quadrant::LateHigh, Action::TargetedData)
            );
            assert_eq!((a.id.as_str(), a.priority), ("targeted_data:a", Some(1)));
        }
    }

    #[test]
    fn late_and_low_needs_data() {
        let c = confused(
            class("mail", None, &[0.05, 0.1, 0.1, 0.12, 0.12, 0.12]),
            "net",
            0.62,
        );
        let advice = advise(&Rules::default(), &run(600, Some(1000)), &[c]);
        let a = only(&advice);
        assert_eq!((a.quadrant, a.action), (Quadrant::LateLow, Action::AddData));
        assert_eq!((a.id.as_str(), a.priority), ("add_data:mail", Some(1)));
        assert_eq!(
            a.message,
            "add data to class `mail`: F1 0.12 (trend +0.04) and still moving at step 600, \
             no dwell yet; most often predicted as `net` (62%)"
        );
    }

    #[test]
    fn short_evidence_leaves_every_class_undetermined() {
        let classes = [class("a", Some(100), HIGH), class("b", None, LOW)];
        let cases = [
            (run(200, None), Basis::TooFewCheckpoints),
            (run(300, Some(2000)), Basis::TooEarlyInRun),
        ];
        for (run, basis) in cases {
            let advice = advise(&Rules::default(), &run, &classes);
            assert!(!advice.evidence_sufficient);
            assert!(advice.recommendations.is_empty());
            for c in &advice.classes {
                assert_eq!(
                    (c.quadrant, c.action, c.evidence.basis),
                    (Quadrant::Undetermined, Action::Wait, basis)
                );
                assert!(
                    c.message.starts_with("no advice for class"),
                    "{}",
                    c.message
                );
            }
        }
        // 400 of 2000 planned steps is exactly the default 20%.
        assert!(advise(&Rules::default(), &run(400, Some(2000)), &classes).evidence_sufficient);
    }

    #[test]
    fn a_class_without_onset_or_f1_data_waits() {
        let mut no_dwell = class("a", Some(100), HIGH);
        no_dwell
            .dwell
            .remove(Rules::default().dwell.detector.name());
        let no_f1 = class("b", Some(100), &[]);
        let advice = advise(&Rules::default(), &run(600, Some(1000)), &[no_dwell, no_f1]);
        assert!(advice.evidence_sufficient);
        let bases: Vec<_> = advice
            .classes
            .iter()
            .map(|c| (c.action, c.evidence.basis))
            .collect();
        assert_eq!(
            bases,
            [
                (Action::Wait, Basis::NoDwellData),
                (Action::Wait, Basis::NoF1Data)
            ]
        );
    }

    #[test]
    fn without_max_steps_early_means_not_later_than_the_median_peer() {
        let classes = [
            class("a", Some(200), HIGH),
            class("b", Some(300), HIGH),
            class("c", Some(600), HIGH),
            class("d", None, HIGH),
        ];
        let advice = advise(&Rules::default(), &run(600, None), &classes);
        assert_eq!(
            advice.early_cutoff,
            Some(EarlyCutoff {
                basis: CutoffBasis::PeerMedian,
                step: 300
            })
        );
        let quadrants: Vec<_> = advice.classes.iter().map(|c| c.quadrant).collect();
        assert_eq!(
            quadrants,
            [
                Quadrant::EarlyHigh,
                Quadrant::EarlyHigh,
                Quadrant::LateHigh,
                Quadrant::LateHigh
            ]
        );
    }

    #[test]
    fn without_max_steps_and_no_dwelling_class_everything_is_late() {
        let advice = advise(
            &Rules::default(),
            &run(600, None),
            &[class("a", None, HIGH), class("b", None, LOW)],
        );
        assert_eq!(advice.early_cutoff, None);
        let quadrants: Vec<_> = advice.classes.iter().map(|c| c.quadrant).collect();
        assert_eq!(quadrants, [Quadrant::LateHigh, Quadrant::LateLow]);
    }

    #[test]
    fn detector_is_chosen_by_the_rules() {
        let mut c = class("a", None, HIGH);
        c.dwell.insert(
            "distance".to_owned(),
            DwellInput {
                onset_step: Some(200),
                dwell_fraction: 0.9,
            },
        );
        let mut rules = Rules::default();
        rules.dwell.detector = super::super::Detector::Straightness;
        assert_eq!(
            advise(&rules, &run(600, Some(1000)), &[c.clone()]).classes[0].quadrant,
            Quadrant::LateHigh
        );
        rules.dwell.detector = super::super::Detector::Distance;
        assert_eq!(
            advise(&rules, &run(600, Some(1000)), &[c]).classes[0].quadrant,
            Quadrant::EarlyHigh
        );
    }

    #[test]
    fn collapse_trap_turns_redefine_into_add_data() {
        let absorbed = |count: Option<usize>| {
            let mut c = confused(class("rare", Some(300), LOW), "common", 0.7);
            c.train_count = count;
            c
        };
        let rules = Rules::default();
        let plan = run(600, Some(1000));

        let few = advise(&rules, &plan, &[absorbed(Some(20))]);
        let a = only(&few);
        assert_eq!(
            (a.quadrant, a.action, a.evidence.basis),
            (Quadrant::EarlyLow, Action::AddData, Basis::CollapseTrap)
        );
        assert_eq!((a.id.as_str(), a.priority), ("add_data:rare", Some(1)));
        assert_eq!(
            a.message,
            "add data to class `rare`: only 20 training examples and `common` (70%) absorbs it \
             (settled at step 300, F1 0.27); this is data shortage, not a bad label"
        );

        let unknown = advise(&rules, &plan, &[absorbed(None)]);
        let a = only(&unknown);
        assert_eq!(
            (a.action, a.evidence.basis),
            (Action::RedefineClass, Basis::CollapseUnconfirmed)
        );
        assert!(
            a.message.contains("give training counts to decide"),
            "{}",
            a.message
        );

        let plenty = advise(&rules, &plan, &[absorbed(Some(5000))]);
        assert_eq!(only(&plenty).action, Action::RedefineClass);

        // Not absorbed by one class: spread confusion is what a hard class shows.
        let spread = trained(confused(class("rare", Some(300), LOW), "common", 0.1), 20);
        assert_eq!(
            only(&advise(&rules, &plan, &[spread])).action,
            Action::RedefineClass
        );
    }

    #[test]
    fn collapse_trap_counts_small_relative_to_the_median_class() {
        let classes = [
            trained(confused(class("rare", Some(300), LOW), "big", 0.6), 400),
            trained(class("big", Some(200), HIGH), 2000),
            trained(class("other", Some(200), HIGH), 1600),
        ];
        // 400 > 100, but 400 <= 0.25 * median(400, 1600, 2000).
        let advice = advise(&Rules::default(), &run(600, Some(1000)), &classes);
        assert_eq!(advice.classes[0].evidence.basis, Basis::CollapseTrap);
        assert_eq!(advice.classes[0].action, Action::AddData);
    }

    #[test]
    fn data_priority_orders_shortage_then_collapse_then_targeted() {
        let classes = [
            class("targeted", None, HIGH),
            trained(
                confused(class("collapsed", Some(300), &[0.05; 3]), "x", 0.8),
                10,
            ),
            trained(class("short_fewer", None, &[0.3; 3]), 100),
            trained(class("short_more", None, &[0.3; 3]), 500),
            class("short_worst", None, &[0.1; 3]),
            class("short_tie_b", None, &[0.3; 3]),
            class("short_tie_a", None, &[0.3; 3]),
            confused(class("hard", Some(300), LOW), "x", 0.2),
            class("fine", Some(300), HIGH),
        ];
        // Six of nine classes late would be a run too short to judge; with the
        // run-level diagnosis off, the per-class order shows.
        let mut rules = Rules::default();
        rules.run.majority = 1.0;
        let advice = advise(&rules, &run(600, Some(1000)), &classes);
        let order: Vec<(&str, Option<usize>)> = advice
            .recommendations
            .iter()
            .map(|r| (r.class.as_str(), r.priority))
            .collect();
        assert_eq!(
            order,
            [
                ("short_worst", Some(1)),
                ("short_fewer", Some(2)),
                ("short_more", Some(3)),
                ("short_tie_a", Some(4)),
                ("short_tie_b", Some(5)),
                ("collapsed", Some(6)),
                ("targeted", Some(7)),
                ("hard", None),
            ]
        );
    }

    #[test]
    fn f1_is_smoothed_over_the_window_and_trended_against_the_window_before() {
        // One bad checkpoint does not flip a class to low.
        let dip = advise(
            &Rules::default(),
            &run(600, Some(1000)),
            &[class("a", Some(300), &[0.9, 0.9, 0.9, 0.9, 0.9, 0.7])],
        );
        let a = only(&dip);
        assert_eq!(a.quadrant, Quadrant::EarlyHigh);
        assert!((a.evidence.f1.unwrap() - 0.8333).abs() < 1e-3);
        assert_eq!(a.evidence.f1_latest, Some(0.7));
        assert!((a.evidence.f1_trend.unwrap() + 0.0667).abs() < 1e-3);

        let rising = F1Summary::of(&[0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 3).unwrap();
        assert!((rising.smoothed - 0.6).abs() < 1e-9);
        assert!((rising.trend.unwrap() - 0.3).abs() < 1e-9);
        assert!(F1Summary::of(&[0.2, 0.3, 0.4], 3).unwrap().trend.is_none());
        assert!((F1Summary::of(&[0.2, 0.3, 0.4], 1).unwrap().trend.unwrap() - 0.1).abs() < 1e-9);
        assert!(F1Summary::of(&[], 3).is_none());

        let mut rules = Rules::default();
        rules.f1.smoothing_window = 1;
        let unsmoothed = advise(
            &rules,
            &run(600, Some(1000)),
            &[class("a", Some(300), &[0.9, 0.9, 0.9, 0.9, 0.9, 0.7])],
        );
        assert_eq!(only(&unsmoothed).quadrant, Quadrant::EarlyLow);
    }

    #[test]
    fn ids_stay_stable_across_checkpoints() {
        let at = |last: u64, f1: f64, speed: f64| {
            let mut c = confused(
                class("mail", None, &vec![f1; (last / 100) as usize]),
                "net",
                0.6,
            );
            c.latest_speed = Some(speed);
            let healthy = class("net", Some(200), HIGH);
            advise(&Rules::default(), &run(last, Some(1000)), &[c, healthy])
        };
        let before = at(500, 0.2, 0.05);
        let after = at(600, 0.25, 0.03);
        assert_ne!(
            before.recommendations[0].message,
            after.recommendations[0].message
        );
        assert_eq!(before.recommendations[0].id, after.recommendations[0].id);
        let mut streaks = Streaks::new();
        extend_streaks(
            &mut streaks,
            &before.recommendations,
            &after.recommendations,
        );
        assert!(streaks.is_empty(), "new numbers alone are no change");

        // Better F1 turns add_data into targeted_data: a different piece of advice.
        let improved = at(700, 0.9, 0.03);
        extend_streaks(
            &mut streaks,
            &after.recommendations,
            &improved.recommendations,
        );
        assert_eq!(
            material_changes(&streaks, &after.recommendations, 1),
            [(
                "mail".to_owned(),
                ActionChange::Changed {
                    from: Action::AddData,
                    to: Action::TargetedData
                }
            )]
        );
        assert_eq!(improved.recommendations[0].id, "targeted_data:mail");
    }

    #[test]
    fn bad_numbers_do_not_panic() {
        let mut c = class("a", Some(300), &[f64::NAN, 0.5]);
        c.latest_speed = Some(f64::INFINITY);
        c.most_confused_with = Some(("b".to_owned(), f64::NAN));
        let weird_run = RunInput {
            steps: vec![500, 100, 100, 0],
            max_steps: Some(0),
        };
        let advice = advise(&Rules::default(), &weird_run, &[c.clone(), c]);
        assert_eq!(advice.classes.len(), 2);
        assert!(serde_json::to_string(&advice).is_ok());
    }

    #[test]
    fn four_class_advice_snapshot() {
        let classes = [
            trained(
                class("sport", Some(200), &[0.6, 0.8, 0.9, 0.93, 0.95, 0.95]),
                1200,
            ),
            trained(
                confused(
                    class("business", None, &[0.2, 0.25, 0.3, 0.35, 0.38, 0.4]),
                    "world",
                    0.41,
                ),
                150,
            ),
            trained(
                confused(
                    class("tech", Some(1200), &[0.5, 0.7, 0.8, 0.84, 0.86, 0.88]),
                    "business",
                    0.08,
                ),
                900,
            ),
            trained(
                confused(
                    class("science", Some(300), &[0.1, 0.1, 0.1, 0.12, 0.1, 0.1]),
                    "tech",
                    0.74,
                ),
                40,
            ),
        ];
        let every_200 = RunInput {
            steps: vec![200, 400, 600, 800, 1000, 1200],
            max_steps: Some(2000),
        };
        let advice = advise(&Rules::default(), &every_200, &classes);
        insta::assert_json_snapshot!(advice);
    }
}
