//! The data behind `report.html`: one JSON object built from a [`Report`] and the
//! analyses of the stored embeddings ([`FigureAnalyses`]: the pipeline hands over the one
//! it made for the report), numbers rounded to 4 significant digits to keep the page small.
//!
//! Trajectories are drawn in `pca2` whatever space the report's analysis used, because a
//! person can only look at two dimensions; their stay points come from a `pca2` analysis
//! with the report's detector settings, so the red segments are the ones in the picture.
//! Speeds, straightness, onsets and sweeps are the report's own (its space).

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::{AnalysisInfo, ClusteringReport, DetectorEvidence, Report, SkippedCheckpoint};
use crate::advise::{Action, Detector, Quadrant, Recommendation, RunAdvice};
use crate::analyze::detectors::DetectorKind;
use crate::analyze::params::{AnalysisParams, DistanceParams, Setting, Space};
use crate::analyze::sweep::sweep;
use crate::analyze::trajectory::{StepValue, TrajectoryAnalysis};
use crate::store::{analyze_stored, project_stored, PositionCache, StateDir, StoredAnalysisError};

/// Trajectories drawn per class (all of a smaller class).
pub const TRAJECTORIES_PER_CLASS: usize = 10;
/// The same examples are drawn on every rewrite, so successive pages compare.
const SAMPLE_SEED: u64 = 0;
/// Distance sweep thresholds as multiples of D as applied, because D's scale is the
/// model's: fixed numbers would mean nothing across models.
const DISTANCE_MULTIPLES: [f64; 6] = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0];
const EPSILONS: [f64; 5] = [0.1, 0.15, 0.2, 0.25, 0.3];
const BETAS: [f64; 4] = [0.25, 0.5, 0.75, 1.0];
pub(super) const DETECTORS: [DetectorKind; 3] = [
    DetectorKind::Distance,
    DetectorKind::Straightness,
    DetectorKind::Relative,
];

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub run: String,
    /// The encoder family (`bert`, `deberta-v2`, ...).
    pub model_type: String,
    pub generated_by: String,
    pub labels: Vec<String>,
    pub probe_counts: Vec<usize>,
    /// Every series below is aligned with these checkpoint steps.
    pub steps: Vec<u64>,
    pub max_steps: Option<u64>,
    pub macro_f1: Vec<Option<f64>>,
    /// Per class.
    pub f1: Vec<Vec<Option<f64>>>,
    /// Per class; the first checkpoint has no interval before it.
    pub speed: Vec<Vec<Option<f64>>>,
    pub straightness: Vec<Vec<Option<f64>>>,
    pub analysis: Option<AnalysisInfo>,
    pub trajectories: Option<Trajectories>,
    pub matrix: Option<Matrix>,
    pub sweeps: Vec<SweepTable>,
    /// Priority order, as in the report.
    pub recommendations: Vec<Recommendation>,
    pub run_advice: Option<RunAdvice>,
    pub clustering: Option<ClusteringReport>,
    pub detector_evidence: Option<DetectorEvidence>,
    pub skipped: Vec<SkippedCheckpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trajectories {
    /// The class of every probe example.
    pub classes: Vec<usize>,
    /// Per checkpoint, every probe example's `pca2` position: x0, y0, x1, y1, …
    pub cloud: Vec<Vec<f64>>,
    /// Probe indices of the drawn trajectories, class by class.
    pub sampled: Vec<usize>,
    pub panels: Vec<DetectorPanel>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectorPanel {
    pub detector: DetectorKind,
    /// The parameters as applied in `pca2`.
    pub parameters: String,
    /// Per sampled trajectory, one character per checkpoint, `1` for a stay point.
    pub stays: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub detector: Detector,
    pub evidence_sufficient: bool,
    /// Early means onset at or before this step; `None` while no class dwells.
    pub early_cutoff: Option<u64>,
    pub f1_high_threshold: f64,
    pub classes: Vec<MatrixClass>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixClass {
    pub label: String,
    pub onset: Option<u64>,
    pub f1: Option<f64>,
    pub quadrant: Quadrant,
    pub action: Action,
    pub priority: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepTable {
    pub detector: DetectorKind,
    /// The swept threshold's symbol.
    pub symbol: &'static str,
    /// The other parameters, held as applied.
    pub fixed: String,
    pub space: Space,
    pub rows: Vec<SweepLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepLine {
    pub threshold: f64,
    pub trajectories: usize,
    pub share: Option<f64>,
    /// Trajectories with a stay point, per class.
    pub per_class: Vec<usize>,
}

/// What the figures need beyond the report: the report's analysis (its sweeps), one in
/// `pca2` (the drawn stay points; the same analysis when the report's space is `pca2`)
/// and every checkpoint projected into that plane.
pub struct FigureAnalyses {
    report_space: TrajectoryAnalysis,
    planar: Option<TrajectoryAnalysis>,
    cloud: Vec<Vec<f64>>,
    classes: Vec<usize>,
}

impl FigureAnalyses {
    /// `analysis` is the report's own when the caller has it (the pipeline just made it);
    /// without it (`dwell report`), it is recomputed from the stored embeddings.
    /// `None` before any checkpoint is stored.
    pub fn compute(
        state: &StateDir,
        cache: &mut PositionCache,
        report: &Report,
        classes: &[usize],
        analysis: Option<TrajectoryAnalysis>,
    ) -> Result<Option<Self>, StoredAnalysisError> {
        let Some(info) = &report.analysis else {
            return Ok(None);
        };
        let steps: Vec<u64> = report.checkpoints.iter().map(|c| c.step).collect();
        if steps.is_empty() {
            return Ok(None);
        }
        let params = params_of(info);
        let num_classes = report.run.labels.len();
        let report_space = match analysis {
            Some(analysis) => analysis,
            None => analyze_stored(state, cache, &steps, classes, num_classes, &params)?,
        };
        let planar = match params.space {
            Space::Pca2 => None,
            Space::Full => {
                let planar_params = AnalysisParams {
                    space: Space::Pca2,
                    ..params
                };
                Some(analyze_stored(
                    state,
                    cache,
                    &steps,
                    classes,
                    num_classes,
                    &planar_params,
                )?)
            }
        };
        let pca = planar
            .as_ref()
            .unwrap_or(&report_space)
            .pca()
            .expect("a pca2 analysis over at least one checkpoint has a projection");
        let cloud = project_stored(state, cache, &steps, pca)?;
        Ok(Some(Self {
            report_space,
            planar,
            cloud,
            classes: classes.to_vec(),
        }))
    }

    fn planar(&self) -> &TrajectoryAnalysis {
        self.planar.as_ref().unwrap_or(&self.report_space)
    }
}

impl Figures {
    /// The page's data from the report, and from `analyses` the trajectories and sweeps
    /// (absent before any checkpoint).
    pub fn build(report: &Report, analyses: Option<FigureAnalyses>) -> Self {
        let labels = report.run.labels.clone();
        let steps: Vec<u64> = report.checkpoints.iter().map(|c| c.step).collect();
        let per_class_f1 = labels
            .iter()
            .map(|label| {
                report
                    .checkpoints
                    .iter()
                    .map(|c| {
                        c.per_class_f1
                            .as_ref()
                            .and_then(|f1| f1.get(label).copied())
                    })
                    .collect()
            })
            .collect();
        let aligned = |series: &[StepValue]| -> Vec<Option<f64>> {
            steps
                .iter()
                .map(|step| {
                    series
                        .iter()
                        .find(|v| v.step == *step)
                        .and_then(|v| v.value)
                })
                .collect()
        };
        let num_classes = labels.len();
        Self {
            run: report.run.directory.display().to_string(),
            model_type: report.run.model_type.clone(),
            generated_by: report.generated_by.clone(),
            probe_counts: labels
                .iter()
                .map(|label| report.probe.per_class.get(label).copied().unwrap_or(0))
                .collect(),
            labels,
            max_steps: report.run.max_steps,
            macro_f1: report.checkpoints.iter().map(|c| c.macro_f1).collect(),
            f1: per_class_f1,
            speed: report.classes.iter().map(|c| aligned(&c.speed)).collect(),
            straightness: report
                .classes
                .iter()
                .map(|c| aligned(&c.straightness))
                .collect(),
            analysis: report.analysis.clone(),
            sweeps: analyses
                .as_ref()
                .map(|a| sweep_tables(&a.report_space))
                .unwrap_or_default(),
            trajectories: analyses.map(|a| trajectories(a, num_classes)),
            matrix: matrix(report),
            recommendations: report.recommendations.clone(),
            run_advice: report.run_advice.clone(),
            clustering: report.clustering.clone(),
            detector_evidence: report.detector_evidence.clone(),
            skipped: report.skipped.clone(),
            steps,
        }
    }

    /// The JSON the page embeds, floats rounded to 4 significant digits.
    pub fn to_json(&self) -> serde_json::Value {
        rounded(serde_json::to_value(self).expect("the figures serialise"))
    }
}

/// The settings that reproduce the report's analysis: D is automatic again when it was,
/// so that it is re-derived in `pca2`'s scale rather than carried over from `full`.
fn params_of(info: &AnalysisInfo) -> AnalysisParams {
    let rule = &info.distance;
    let distance = match (rule.auto, rule.threshold) {
        (None, Some(threshold)) => DistanceParams {
            threshold: Setting::Fixed(threshold),
            min_run: rule.min_run,
            ..DistanceParams::default()
        },
        (auto, _) => DistanceParams {
            threshold: Setting::Auto,
            auto_fraction: auto.map_or(DistanceParams::default().auto_fraction, |a| a.fraction),
            auto_early_intervals: auto
                .map_or(DistanceParams::default().auto_early_intervals, |a| {
                    a.early_intervals
                }),
            min_run: rule.min_run,
        },
    };
    AnalysisParams {
        space: info.space,
        // Δ as resolved over these same steps equals what "auto" would give again.
        reference_interval: info
            .reference_interval
            .map_or(Setting::Auto, Setting::Fixed),
        distance,
        straightness: info.straightness,
        relative: info.relative,
    }
}

fn matrix(report: &Report) -> Option<Matrix> {
    let advice = report.advice.as_ref()?;
    let classes = report
        .classes
        .iter()
        .map(|class| MatrixClass {
            label: class.label.clone(),
            onset: match advice.detector {
                Detector::Distance => class.dwell.distance.onset_step,
                Detector::Straightness => class.dwell.straightness.onset_step,
                Detector::Relative => class.dwell.relative.onset_step,
            },
            f1: class.f1_smoothed,
            quadrant: class.quadrant,
            action: class.action,
            priority: report
                .recommendations
                .iter()
                .find(|r| r.class == class.label)
                .and_then(|r| r.priority),
        })
        .collect();
    Some(Matrix {
        detector: advice.detector,
        evidence_sufficient: advice.evidence_sufficient,
        early_cutoff: advice.early_cutoff.map(|cutoff| cutoff.step),
        f1_high_threshold: advice.f1_high_threshold,
        classes,
    })
}

/// The thresholds the report sweeps for `detector`: its symbol, the parameters held
/// fixed, and the values; `None` for the distance detector while D is unknown.
pub(super) fn sweep_grid(
    detector: DetectorKind,
    analysis: &TrajectoryAnalysis,
) -> Option<(&'static str, String, Vec<f64>)> {
    let rules = &analysis.rules;
    Some(match detector {
        DetectorKind::Distance => {
            let d = rules.distance.threshold?;
            (
                "D",
                format!(
                    "T = {}; D as applied = {}",
                    rules.distance.min_run,
                    significant(d)
                ),
                DISTANCE_MULTIPLES.iter().map(|m| m * d).collect(),
            )
        }
        DetectorKind::Straightness => (
            "ε",
            format!("k = {}", rules.straightness.window),
            EPSILONS.to_vec(),
        ),
        DetectorKind::Relative => (
            "β",
            format!(
                "T = {}, W = {}",
                rules.relative.min_run, rules.relative.early_window
            ),
            BETAS.to_vec(),
        ),
    })
}

fn sweep_tables(analysis: &TrajectoryAnalysis) -> Vec<SweepTable> {
    DETECTORS
        .into_iter()
        .filter_map(|detector| {
            let (symbol, fixed, thresholds) = sweep_grid(detector, analysis)?;
            let rows = sweep(analysis, detector, &thresholds, None)
                .expect("sweep thresholds are finite and >= 0")
                .into_iter()
                .map(|row| SweepLine {
                    threshold: row.threshold,
                    trajectories: row.trajectories,
                    share: row.share,
                    per_class: row.per_class.iter().map(|c| c.trajectories).collect(),
                })
                .collect();
            Some(SweepTable {
                detector,
                symbol,
                fixed,
                space: analysis.space,
                rows,
            })
        })
        .collect()
}

fn trajectories(analyses: FigureAnalyses, num_classes: usize) -> Trajectories {
    let planar = analyses.planar();
    let sampled = sample(&analyses.classes, num_classes);
    let rules = &planar.rules;
    let panels = DETECTORS
        .into_iter()
        .map(|detector| DetectorPanel {
            detector,
            parameters: match detector {
                DetectorKind::Distance => match (rules.distance.threshold, rules.distance.auto) {
                    (Some(d), Some(auto)) => format!(
                        "D = {} ({} × median early speed in pca2), T = {}",
                        significant(d),
                        auto.fraction,
                        rules.distance.min_run
                    ),
                    (Some(d), None) => {
                        format!("D = {}, T = {}", significant(d), rules.distance.min_run)
                    }
                    (None, _) => format!("D not known yet, T = {}", rules.distance.min_run),
                },
                DetectorKind::Straightness => format!(
                    "k = {}, ε = {}",
                    rules.straightness.window, rules.straightness.epsilon
                ),
                DetectorKind::Relative => format!(
                    "β = {}, T = {}, W = {}",
                    rules.relative.beta, rules.relative.min_run, rules.relative.early_window
                ),
            },
            stays: sampled
                .iter()
                .map(|&example| {
                    planar
                        .stay_points(example, detector)
                        .unwrap_or_default()
                        .iter()
                        .map(|&stay| if stay { '1' } else { '0' })
                        .collect()
                })
                .collect(),
        })
        .collect();
    Trajectories {
        classes: analyses.classes,
        cloud: analyses.cloud,
        sampled,
        panels,
    }
}

/// Up to [`TRAJECTORIES_PER_CLASS`] examples of each class, in probe order within a class.
fn sample(classes: &[usize], num_classes: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(SAMPLE_SEED);
    let mut sampled = Vec::new();
    for class in 0..num_classes {
        let members: Vec<usize> = (0..classes.len())
            .filter(|&example| classes[example] == class)
            .collect();
        let amount = TRAJECTORIES_PER_CLASS.min(members.len());
        let mut chosen = rand::seq::index::sample(&mut rng, members.len(), amount).into_vec();
        chosen.sort_unstable();
        sampled.extend(chosen.into_iter().map(|i| members[i]));
    }
    sampled
}

fn significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.3e}")
        .parse()
        .expect("a formatted float parses")
}

fn rounded(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            serde_json::json!(significant(n.as_f64().expect("an f64 number")))
        }
        Value::Array(items) => items.into_iter().map(rounded).collect(),
        Value::Object(map) => map.into_iter().map(|(k, v)| (k, rounded(v))).collect(),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_four_significant_digits() {
        assert_eq!(significant(2.4750790003728085), 2.475);
        assert_eq!(significant(-0.000123456), -0.0001235);
        assert_eq!(significant(12345.6), 12350.0);
        assert_eq!(significant(0.0), 0.0);
        let json = rounded(serde_json::json!({"a": [1.23456, 7], "b": null}));
        assert_eq!(json, serde_json::json!({"a": [1.235, 7], "b": null}));
    }

    #[test]
    fn sampling_is_deterministic_and_capped_per_class() {
        let classes: Vec<usize> = (0..100).map(|i| if i < 95 { i % 2 } else { 2 }).collect();
        let sampled = sample(&classes, 4);
        assert_eq!(sampled, sample(&classes, 4));
        let count = |class| sampled.iter().filter(|&&e| classes[e] == class).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (10, 10, 5, 0));
    }
}
