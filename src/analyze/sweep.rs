//! Threshold sweeps (the paper's Tables 1 and 2): how many trajectories have
//! at least one stay point as one detector's threshold varies.

use serde::Serialize;

use super::detectors::{censored_median_onset, DetectorKind, DistanceRule, StayPointRule};
use super::params::{RelativeParams, StraightnessParams};
use super::rank::spearman;
use super::trajectory::TrajectoryAnalysis;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// D, ε or β according to the detector.
    pub threshold: f64,
    /// Trajectories with at least one stay point.
    pub trajectories: usize,
    /// Their share of all probe examples; `None` for an empty probe set.
    pub share: Option<f64>,
    pub per_class: Vec<ClassSweep>,
    /// How this threshold orders the classes by training count; only when
    /// training counts are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_order: Option<TrainingOrder>,
}

/// Spearman's ρ between the classes' training counts and what the detector
/// finds per class: more data should mean a larger dwell fraction (ρ near
/// +1) and an earlier onset (ρ near −1). `None` where one side is constant
/// (e.g. every class dwells fully): the detector then orders nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrainingOrder {
    /// Classes with probe examples and a known training count.
    pub classes: usize,
    pub dwell_fraction_rho: Option<f64>,
    /// Onsets that have not happened ("none yet") rank after every step.
    pub onset_rho: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassSweep {
    pub class: usize,
    pub examples: usize,
    pub trajectories: usize,
    /// `None` for a class without probe examples.
    pub share: Option<f64>,
    /// The class dwell onset under this threshold; `None`: none yet.
    pub onset_step: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sweep threshold {threshold} is not a finite number >= 0")]
pub struct InvalidThreshold {
    pub threshold: f64,
}

/// One row per threshold: the detector's threshold replaced (D for distance,
/// ε for straightness, β for relative), its other parameters as in
/// `analysis.rules`. With `train_counts` (per class index), each row also
/// says how well it orders the classes by training count.
pub fn sweep(
    analysis: &TrajectoryAnalysis,
    detector: DetectorKind,
    thresholds: &[f64],
    train_counts: Option<&[Option<usize>]>,
) -> Result<Vec<SweepRow>, InvalidThreshold> {
    if let Some(&threshold) = thresholds
        .iter()
        .find(|threshold| !(threshold.is_finite() && **threshold >= 0.0))
    {
        return Err(InvalidThreshold { threshold });
    }
    let rules = analysis.rules;
    Ok(thresholds
        .iter()
        .map(|&threshold| match detector {
            DetectorKind::Distance => sweep_row(
                analysis,
                threshold,
                &DistanceRule {
                    threshold: Some(threshold),
                    auto: None,
                    ..rules.distance
                },
            ),
            DetectorKind::Straightness => sweep_row(
                analysis,
                threshold,
                &StraightnessParams {
                    epsilon: threshold,
                    ..rules.straightness
                },
            ),
            DetectorKind::Relative => sweep_row(
                analysis,
                threshold,
                &RelativeParams {
                    beta: threshold,
                    ..rules.relative
                },
            ),
        })
        .map(|mut row| {
            row.training_order = train_counts.map(|counts| training_order(&row, counts));
            row
        })
        .collect())
}

/// ρ over the classes that have probe examples and a training count.
pub fn training_order(row: &SweepRow, train_counts: &[Option<usize>]) -> TrainingOrder {
    let known: Vec<(f64, f64, f64)> = row
        .per_class
        .iter()
        .filter_map(|class| {
            let count = (*train_counts.get(class.class)?)?;
            Some((
                count as f64,
                class.share?,
                class.onset_step.map_or(f64::INFINITY, |s| s as f64),
            ))
        })
        .collect();
    let counts: Vec<f64> = known.iter().map(|k| k.0).collect();
    let fractions: Vec<f64> = known.iter().map(|k| k.1).collect();
    let onsets: Vec<f64> = known.iter().map(|k| k.2).collect();
    TrainingOrder {
        classes: known.len(),
        dwell_fraction_rho: spearman(&counts, &fractions),
        onset_rho: spearman(&counts, &onsets),
    }
}

fn sweep_row(analysis: &TrajectoryAnalysis, threshold: f64, rule: &impl StayPointRule) -> SweepRow {
    let mut per_class: Vec<ClassSweep> = (0..analysis.classes.len())
        .map(|class| ClassSweep {
            class,
            examples: 0,
            trajectories: 0,
            share: None,
            onset_step: None,
        })
        .collect();
    let mut onsets: Vec<Vec<Option<u64>>> = vec![Vec::new(); per_class.len()];
    let mut trajectories = 0;
    for (example, example_onsets) in analysis.examples.iter().enumerate() {
        let class = &mut per_class[example_onsets.class];
        class.examples += 1;
        let onset = analysis
            .example_series(example)
            .and_then(|series| rule.first_stay_point(series))
            .map(|t| analysis.steps[t]);
        if onset.is_some() {
            class.trajectories += 1;
            trajectories += 1;
        }
        onsets[example_onsets.class].push(onset);
    }
    for (class, onsets) in per_class.iter_mut().zip(onsets) {
        class.share = share(class.trajectories, class.examples);
        class.onset_step = censored_median_onset(onsets);
    }
    SweepRow {
        threshold,
        trajectories,
        share: share(trajectories, analysis.examples.len()),
        per_class,
        training_order: None,
    }
}

fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::params::{AnalysisParams, Setting};
    use crate::analyze::trajectory::{analyze, InMemoryPositions};

    /// Three 1-D examples over five checkpoints, steps 10 apart: class 0 has
    /// speeds (1, 1, 1, 1) and (1, 0.5, 0.5, 0.5), class 1 (1, 0.25, 0.25, 0.25).
    fn analysis() -> TrajectoryAnalysis {
        let positions = [
            [0.0, 1.0, 2.0, 3.0, 4.0],
            [0.0, 1.0, 1.5, 2.0, 2.5],
            [0.0, 1.0, 1.25, 1.5, 1.75],
        ];
        let checkpoints = (0..5)
            .map(|t| positions.iter().map(|p| p[t] as f32).collect())
            .collect();
        let mut params = AnalysisParams::default();
        params.distance.threshold = Setting::Fixed(0.1);
        params.distance.min_run = 3;
        params.straightness.window = 2;
        params.relative.early_window = 1;
        params.relative.min_run = 3;
        analyze(
            &mut InMemoryPositions::new(1, checkpoints),
            &[0, 10, 20, 30, 40],
            &[0, 0, 1],
            3,
            &params,
        )
        .unwrap()
    }

    fn counts(rows: &[SweepRow]) -> Vec<(usize, Vec<usize>)> {
        rows.iter()
            .map(|row| {
                let per_class = row.per_class.iter().map(|c| c.trajectories).collect();
                (row.trajectories, per_class)
            })
            .collect()
    }

    #[test]
    fn distance_sweep_counts_trajectories_with_a_stay_per_threshold() {
        let rows = sweep(
            &analysis(),
            DetectorKind::Distance,
            &[0.2, 0.5 + 1e-9, 2.0],
            None,
        )
        .unwrap();
        // D = 0.2: nothing is strictly slower. D just above 0.5: two examples.
        assert_eq!(
            counts(&rows),
            [(0, vec![0, 0, 0]), (2, vec![1, 1, 0]), (3, vec![2, 1, 0])]
        );
        assert_eq!(rows[1].threshold, 0.5 + 1e-9);
        assert_eq!(rows[1].share, Some(2.0 / 3.0));
        assert_eq!(rows[1].per_class[0].share, Some(0.5));
        assert_eq!(rows[1].per_class[1].share, Some(1.0));
        assert_eq!(rows[1].per_class[2].examples, 0);
        assert_eq!(rows[1].per_class[2].share, None);
    }

    #[test]
    fn relative_sweep_replaces_beta_only() {
        // r = w_1 = 1 for everyone; β = 0.3 catches 0.25, β = 0.6 also 0.5.
        let rows = sweep(&analysis(), DetectorKind::Relative, &[0.3, 0.6], None).unwrap();
        assert_eq!(counts(&rows), [(1, vec![0, 1, 0]), (2, vec![1, 1, 0])]);
    }

    #[test]
    fn training_order_ranks_classes_with_probe_examples_and_counts() {
        // β = 0.6: class 0 has 1 of 2 dwelling (onset 10, the lower middle
        // of 10 and none), class 1 its one example (onset 10); class 2 has no
        // probe example and stays out.
        let counts = [Some(100), Some(10), Some(5)];
        let rows = sweep(&analysis(), DetectorKind::Relative, &[0.6], Some(&counts)).unwrap();
        let onsets: Vec<Option<u64>> = rows[0].per_class.iter().map(|c| c.onset_step).collect();
        assert_eq!(onsets, [Some(10), Some(10), None]);
        // The larger class dwells less (0.5 against 1.0): ρ = −1; equal
        // onsets order nothing.
        assert_eq!(
            rows[0].training_order,
            Some(TrainingOrder {
                classes: 2,
                dwell_fraction_rho: Some(-1.0),
                onset_rho: None,
            })
        );
        let unknown = [Some(100), None, None];
        let rows = sweep(&analysis(), DetectorKind::Relative, &[0.6], Some(&unknown)).unwrap();
        assert_eq!(rows[0].training_order.unwrap().classes, 1);
        assert_eq!(rows[0].training_order.unwrap().dwell_fraction_rho, None);
    }

    #[test]
    fn straightness_sweep_and_bad_thresholds() {
        // Every 1-D path here is monotone: S = 1 wherever defined (t <= 2).
        let rows = sweep(&analysis(), DetectorKind::Straightness, &[1.0, 1.5], None).unwrap();
        assert_eq!(counts(&rows), [(0, vec![0, 0, 0]), (3, vec![2, 1, 0])]);
        assert_eq!(
            sweep(
                &analysis(),
                DetectorKind::Straightness,
                &[0.1, f64::NAN],
                None
            )
            .unwrap_err()
            .to_string(),
            "sweep threshold NaN is not a finite number >= 0"
        );
        assert!(sweep(&analysis(), DetectorKind::Distance, &[-1.0], None).is_err());
        assert!(sweep(&analysis(), DetectorKind::Distance, &[], None)
            .unwrap()
            .is_empty());
    }
}
