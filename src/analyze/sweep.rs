//! Threshold sweeps (the paper's Tables 1 and 2): how many trajectories have
//! at least one stay point as one detector's threshold varies.

use serde::Serialize;

use super::detectors::{DetectorKind, DistanceRule, StayPointRule};
use super::params::{RelativeParams, StraightnessParams};
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassSweep {
    pub class: usize,
    pub examples: usize,
    pub trajectories: usize,
    /// `None` for a class without probe examples.
    pub share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sweep threshold {threshold} is not a finite number >= 0")]
pub struct InvalidThreshold {
    pub threshold: f64,
}

/// One row per threshold: the detector's threshold replaced (D for distance,
/// ε for straightness, β for relative), its other parameters as in
/// `analysis.rules`.
pub fn sweep(
    analysis: &TrajectoryAnalysis,
    detector: DetectorKind,
    thresholds: &[f64],
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
        .collect())
}

fn sweep_row(analysis: &TrajectoryAnalysis, threshold: f64, rule: &impl StayPointRule) -> SweepRow {
    let mut per_class: Vec<ClassSweep> = (0..analysis.classes.len())
        .map(|class| ClassSweep {
            class,
            examples: 0,
            trajectories: 0,
            share: None,
        })
        .collect();
    let mut trajectories = 0;
    for (example, onsets) in analysis.examples.iter().enumerate() {
        let class = &mut per_class[onsets.class];
        class.examples += 1;
        let dwells = analysis
            .example_series(example)
            .and_then(|series| rule.first_stay_point(series))
            .is_some();
        if dwells {
            class.trajectories += 1;
            trajectories += 1;
        }
    }
    for class in &mut per_class {
        class.share = share(class.trajectories, class.examples);
    }
    SweepRow {
        threshold,
        trajectories,
        share: share(trajectories, analysis.examples.len()),
        per_class,
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
        let rows = sweep(&analysis(), DetectorKind::Distance, &[0.2, 0.5 + 1e-9, 2.0]).unwrap();
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
        let rows = sweep(&analysis(), DetectorKind::Relative, &[0.3, 0.6]).unwrap();
        assert_eq!(counts(&rows), [(1, vec![0, 1, 0]), (2, vec![1, 1, 0])]);
    }

    #[test]
    fn straightness_sweep_and_bad_thresholds() {
        // Every 1-D path here is monotone: S = 1 wherever defined (t <= 2).
        let rows = sweep(&analysis(), DetectorKind::Straightness, &[1.0, 1.5]).unwrap();
        assert_eq!(counts(&rows), [(0, vec![0, 0, 0]), (3, vec![2, 1, 0])]);
        assert_eq!(
            sweep(&analysis(), DetectorKind::Straightness, &[0.1, f64::NAN])
                .unwrap_err()
                .to_string(),
            "sweep threshold NaN is not a finite number >= 0"
        );
        assert!(sweep(&analysis(), DetectorKind::Distance, &[-1.0]).is_err());
        assert!(sweep(&analysis(), DetectorKind::Distance, &[])
            .unwrap()
            .is_empty());
    }
}
