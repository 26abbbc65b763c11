//! `report.json` (SPEC §6): the machine-readable result, replaced atomically, and
//! `report.html` drawn from it (see [`html`]).

mod figures;
mod html;

pub use figures::{FigureAnalyses, Figures, TRAJECTORIES_PER_CLASS};
pub use html::{escape_html, render_html, rewrite_html, write_html, HtmlError, HTML_FILE};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::advise::{Action, Detector, EarlyCutoff, Quadrant, Recommendation, RunAdvice};
use crate::analyze::cluster::{Clustering, MethodResult};
use crate::analyze::detectors::{DetectorKind, DistanceRule};
use crate::analyze::params::{RelativeParams, Space, StraightnessParams};
use crate::analyze::sweep::sweep;
use crate::analyze::trajectory::{ClassDwell, Onsets, StepValue, TrajectoryAnalysis};
use crate::store::{Gap, StateDir, StoreError};

pub const REPORT_SCHEMA: &str = "dwell.report/1";
pub const REPORT_FILE: &str = "report.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    #[serde(deserialize_with = "this_schema")]
    pub schema: String,
    pub generated_by: String,
    pub run: RunInfo,
    pub probe: ProbeInfo,
    pub checkpoints: Vec<CheckpointSummary>,
    /// Checkpoints that could not be embedded, with the file and the reason.
    pub skipped: Vec<SkippedCheckpoint>,
    /// Checkpoints removed by the run (rotation) before they could be secured or read:
    /// missing points of the trajectory.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// The trajectory analysis settings actually used; `null` before any checkpoint.
    pub analysis: Option<AnalysisInfo>,
    /// How the advice was decided; `null` before any checkpoint.
    pub advice: Option<AdviceInfo>,
    /// Per class, in class-id order.
    pub classes: Vec<ClassReport>,
    /// Advice about the run as a whole, said once (docs/ADVICE.md); `null` when
    /// nothing is about the run.
    #[serde(default)]
    pub run_advice: Option<RunAdvice>,
    /// What to do, data collection first in priority order, then redefinitions.
    pub recommendations: Vec<Recommendation>,
    /// Per probe example, in probe-file order: its dwell onset under each detector.
    pub examples: Vec<ExampleReport>,
    /// The probe examples clustered three ways; `null` before any checkpoint.
    #[serde(default)]
    pub clustering: Option<ClusteringReport>,
    /// How well each detector's thresholds order the classes by training count;
    /// `null` without `--train`.
    #[serde(default)]
    pub detector_evidence: Option<DetectorEvidence>,
}

/// Per detector and threshold (the report's sweep grid), each class's dwell fraction
/// and onset, and Spearman's ρ of both against the training counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorEvidence {
    pub sweeps: Vec<DetectorSweep>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorSweep {
    pub detector: DetectorKind,
    /// The parameters held fixed.
    pub fixed: String,
    pub rows: Vec<EvidenceRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvidenceRow {
    pub threshold: f64,
    /// More data should dwell more: near +1 is good.
    pub dwell_fraction_rho: Option<f64>,
    /// More data should dwell earlier: near −1 is good.
    pub onset_rho: Option<f64>,
    /// Per class, in `run.labels` order.
    pub dwell_fraction: Vec<Option<f64>>,
    pub onset_step: Vec<Option<u64>>,
}

impl DetectorEvidence {
    /// `train_counts` per class index.
    pub fn new(analysis: &TrajectoryAnalysis, train_counts: &[Option<usize>]) -> Self {
        let sweeps = figures::DETECTORS
            .into_iter()
            .filter_map(|detector| {
                let (_, fixed, thresholds) = figures::sweep_grid(detector, analysis)?;
                let rows = sweep(analysis, detector, &thresholds, Some(train_counts))
                    .expect("sweep thresholds are finite and >= 0")
                    .into_iter()
                    .map(|row| EvidenceRow {
                        threshold: row.threshold,
                        dwell_fraction_rho: row.training_order.and_then(|o| o.dwell_fraction_rho),
                        onset_rho: row.training_order.and_then(|o| o.onset_rho),
                        dwell_fraction: row.per_class.iter().map(|c| c.share).collect(),
                        onset_step: row.per_class.iter().map(|c| c.onset_step).collect(),
                    })
                    .collect();
                Some(DetectorSweep {
                    detector,
                    fixed,
                    rows,
                })
            })
            .collect();
        DetectorEvidence { sweeps }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalysisInfo {
    pub space: Space,
    /// Δ, the steps that speeds are normalised to.
    pub reference_interval: Option<u64>,
    pub distance: DistanceRule,
    pub straightness: StraightnessParams,
    pub relative: RelativeParams,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdviceInfo {
    /// The detector whose onset decides early or late.
    pub detector: Detector,
    /// False until the rules' minimum evidence is met; every class waits until then.
    pub evidence_sufficient: bool,
    pub early_cutoff: Option<EarlyCutoff>,
    /// Smoothed F1 at or above this is "high".
    pub f1_high_threshold: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassReport {
    pub label: String,
    pub probe_count: usize,
    /// F1 at the latest checkpoint with logits.
    pub f1: Option<f64>,
    /// The F1 the strategy matrix judged: smoothed over the rules' window.
    pub f1_smoothed: Option<f64>,
    pub quadrant: Quadrant,
    pub action: Action,
    /// Class mean speed per interval, at the interval's closing step.
    pub speed: Vec<StepValue>,
    /// Class mean straightness per checkpoint; `null` in the undefined tail.
    pub straightness: Vec<StepValue>,
    /// Per detector: its parameters, the class dwell onset step and the dwell fraction.
    pub dwell: ClassDwell,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExampleReport {
    pub index: usize,
    pub id: Option<String>,
    pub label: String,
    pub onset_step: Onsets,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub directory: PathBuf,
    pub model_type: String,
    /// Class names in class-id order.
    pub labels: Vec<String>,
    pub latest_step: Option<u64>,
    pub max_steps: Option<u64>,
    pub finished: bool,
    pub base_model: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub path: PathBuf,
    pub sha256: String,
    pub examples: usize,
    pub per_class: BTreeMap<String, usize>,
    pub max_len: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointSummary {
    pub step: u64,
    /// `checkpoint-<step>`, or `base model` for step 0.
    pub source: String,
    /// `null` for a model without a classification head (a base model).
    pub macro_f1: Option<f64>,
    pub accuracy: Option<f64>,
    pub per_class_f1: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedCheckpoint {
    pub step: u64,
    pub checkpoint: PathBuf,
    /// The file at fault.
    pub file: PathBuf,
    pub reason: String,
}

impl ClassReport {
    /// The class dwell onset step and dwell fraction under `detector`.
    pub fn dwell_under(&self, detector: Detector) -> (Option<u64>, Option<f64>) {
        match detector {
            Detector::Distance => (
                self.dwell.distance.onset_step,
                self.dwell.distance.dwell_fraction,
            ),
            Detector::Straightness => (
                self.dwell.straightness.onset_step,
                self.dwell.straightness.dwell_fraction,
            ),
            Detector::Relative => (
                self.dwell.relative.onset_step,
                self.dwell.relative.dwell_fraction,
            ),
        }
    }
}

/// The three clusterings of the probe examples (docs/ANALYTICS.md, "Clustering").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusteringReport {
    /// Clusters per method: the classes with probe examples.
    pub clusters: usize,
    /// The detector whose onsets end the trimmed trajectories (the advice's).
    pub trimmed_by: DetectorKind,
    /// The checkpoint steps trajectories are compared over.
    pub steps: Vec<u64>,
    pub methods: ClusteringMethods,
    /// Examples whose trimmed-trajectory cluster is not their final one: they
    /// travelled with one group of examples and settled with another.
    pub moved: Vec<MovedExampleReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusteringMethods {
    /// Ward linkage on Euclidean distances of the latest checkpoint's embeddings.
    #[serde(rename = "final")]
    pub final_embeddings: MethodReport,
    /// Ward linkage on DTW distances of the whole trajectories.
    pub trajectory: MethodReport,
    /// Ward linkage on DTW distances of the trajectories up to each example's onset.
    pub trimmed: MethodReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodReport {
    /// Adjusted Rand index against the probe's classes.
    pub ari_vs_classes: f64,
    /// Adjusted Rand index against the final-embedding clustering.
    pub ari_vs_final: f64,
    pub clusters: Vec<ClusterReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterReport {
    pub cluster: usize,
    pub size: usize,
    /// The class most of its examples have, and their share.
    pub majority: String,
    pub majority_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MovedExampleReport {
    pub index: usize,
    pub id: Option<String>,
    pub label: String,
    pub trimmed_cluster: usize,
    pub final_cluster: usize,
    /// The majority class of its trimmed-trajectory cluster.
    pub travels_with: String,
    /// The majority class of its final cluster.
    pub settles_with: String,
}

impl ClusteringReport {
    /// Names classes by label and examples by their probe id.
    pub fn new(clustering: &Clustering, labels: &[String], ids: &[Option<String>]) -> Self {
        let method = |result: &MethodResult| MethodReport {
            ari_vs_classes: result.ari_vs_classes,
            ari_vs_final: result.ari_vs_final,
            clusters: result
                .cluster_summary
                .iter()
                .map(|cluster| ClusterReport {
                    cluster: cluster.cluster,
                    size: cluster.size,
                    majority: labels[cluster.majority_class].clone(),
                    majority_share: cluster.majority_share,
                })
                .collect(),
        };
        ClusteringReport {
            clusters: clustering.clusters,
            trimmed_by: clustering.detector,
            steps: clustering.steps.clone(),
            methods: ClusteringMethods {
                final_embeddings: method(&clustering.methods.final_embeddings),
                trajectory: method(&clustering.methods.trajectory),
                trimmed: method(&clustering.methods.trimmed),
            },
            moved: clustering
                .moved
                .iter()
                .map(|moved| MovedExampleReport {
                    index: moved.example,
                    id: ids.get(moved.example).cloned().flatten(),
                    label: labels[moved.class].clone(),
                    trimmed_cluster: moved.trimmed_cluster,
                    final_cluster: moved.final_cluster,
                    travels_with: labels[moved.travels_with].clone(),
                    settles_with: labels[moved.settles_with].clone(),
                })
                .collect(),
        }
    }
}

/// The analytics' name for the advice rules' detector.
pub fn detector_kind(detector: Detector) -> DetectorKind {
    match detector {
        Detector::Distance => DetectorKind::Distance,
        Detector::Straightness => DetectorKind::Straightness,
        Detector::Relative => DetectorKind::Relative,
    }
}

/// The name an enum value has in `report.json` (e.g. `early_low`).
pub fn serde_name(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn write_json(state: &StateDir, report: &Report) -> Result<PathBuf, StoreError> {
    let json = serde_json::to_vec_pretty(report).expect("the report serialises");
    state.write_file(REPORT_FILE, &json)
}

/// Reads back the `report.json` of an earlier `analyze`, e.g. to redraw `report.html`.
pub fn read_json(state: &StateDir) -> Result<Report, HtmlError> {
    let path = state.root().join(REPORT_FILE);
    let bytes = state
        .read_file(REPORT_FILE)?
        .ok_or_else(|| HtmlError::NoReport(path.clone()))?;
    serde_json::from_slice(&bytes).map_err(|error| HtmlError::BadReport {
        path,
        message: error.to_string(),
    })
}

/// A report of another schema would be misread field by field; refuse it whole.
fn this_schema<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let schema = String::deserialize(deserializer)?;
    if schema == REPORT_SCHEMA {
        Ok(schema)
    } else {
        Err(serde::de::Error::custom(format!(
            "schema {schema:?}, this dwell reads {REPORT_SCHEMA:?}"
        )))
    }
}
