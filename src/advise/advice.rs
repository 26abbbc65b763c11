//! What `advise` produces: per-class quadrant, action, message and evidence.
//! Serialised into `report.json` and read back to diff against the next advice.

use serde::{Deserialize, Serialize};

use super::rules::Detector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quadrant {
    EarlyHigh,
    EarlyLow,
    LateHigh,
    LateLow,
    Undetermined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    RedefineClass,
    TargetedData,
    AddData,
    Wait,
    /// Nothing specific to this class: the run-level advice covers it.
    RunLevel,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::RedefineClass => "redefine_class",
            Action::TargetedData => "targeted_data",
            Action::AddData => "add_data",
            Action::Wait => "wait",
            Action::RunLevel => "run_level",
        }
    }

    /// Whether the user is asked to do something (and so to be told about it).
    pub fn is_actionable(self) -> bool {
        matches!(
            self,
            Action::RedefineClass | Action::TargetedData | Action::AddData
        )
    }
}

/// Why a class got its quadrant and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The bare strategy matrix.
    Matrix,
    /// Early + low F1, but few training examples and absorbed by one other
    /// class: data shortage, so add_data instead of redefine_class.
    CollapseTrap,
    /// Early + low F1 and absorbed by one other class, but no training count
    /// to tell a collapse from a hard class: stays redefine_class.
    CollapseUnconfirmed,
    TooFewCheckpoints,
    TooEarlyInRun,
    /// The class has no onset from the rules' detector.
    NoDwellData,
    /// The class has no F1 value yet.
    NoF1Data,
    /// Its quadrant is the one most classes share for a reason about the run
    /// (see `Advice::run_advice`), and nothing sets it apart.
    RunLevel,
}

/// What "early" meant for this advice: onset <= `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyCutoff {
    pub basis: CutoffBasis,
    pub step: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutoffBasis {
    /// `early_fraction` x the run's `max_steps`.
    PlannedSteps,
    /// `peer_factor` x the median onset of the classes that dwell.
    PeerMedian,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub label: String,
    /// Share of this class's probe examples predicted as `label`.
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub basis: Basis,
    pub onset_step: Option<u64>,
    pub dwell_fraction: Option<f64>,
    /// Mean over the last `smoothing_window` checkpoints.
    pub f1: Option<f64>,
    pub f1_latest: Option<f64>,
    /// Smoothed F1 now minus smoothed F1 `smoothing_window` checkpoints earlier.
    pub f1_trend: Option<f64>,
    pub latest_speed: Option<f64>,
    pub most_confused_with: Option<Confusion>,
    pub probe_count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_count: Option<usize>,
}

/// A cause that is about the run, not about one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunFinding {
    /// Most classes settled early with low F1: the model or the training
    /// (capacity, learning rate, epochs) limits them, not their labels.
    CapacityLimit,
    /// Most classes have not settled: the run is too short to judge what
    /// each class needs.
    RunTooShort,
}

/// Advice said once for the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunAdvice {
    /// `run:<finding>`, stable across checkpoints.
    pub id: String,
    pub finding: RunFinding,
    pub message: String,
    pub evidence: RunEvidence,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvidence {
    /// The classes that show the pattern, in input order.
    pub classes: Vec<String>,
    /// Classes with a quadrant (not undetermined).
    pub decided: usize,
    /// `classes.len() / decided`.
    pub share: f64,
    /// Mean smoothed F1 of `classes`.
    pub mean_f1: Option<f64>,
    /// Median class dwell onset of `classes` that dwell (None: none does).
    pub median_onset_step: Option<u64>,
    pub latest_step: Option<u64>,
    pub max_steps: Option<u64>,
}

/// The advice for one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// `<action>:<class>`: the same advice keeps the same id across
    /// checkpoints, whatever its numbers do.
    pub id: String,
    pub class: String,
    pub action: Action,
    pub quadrant: Quadrant,
    /// Data-collection order, 1 = most urgent; only for add_data and
    /// targeted_data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<usize>,
    pub message: String,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    pub detector: Detector,
    pub latest_step: Option<u64>,
    pub max_steps: Option<u64>,
    /// False until the rules' minimum evidence is met; every class then waits.
    pub evidence_sufficient: bool,
    /// None when nothing makes a class early (no class dwells yet).
    pub early_cutoff: Option<EarlyCutoff>,
    /// Every class, in input order, including those with action none or wait.
    pub classes: Vec<Recommendation>,
    /// The actionable subset: data collection by priority, then
    /// redefine_class.
    pub recommendations: Vec<Recommendation>,
    /// Said once when most classes share a quadrant for a reason about the
    /// run; the classes it covers get action `run_level`.
    #[serde(default)]
    pub run_advice: Option<RunAdvice>,
}
