//! Trajectory analytics of SPEC §4, streamed over checkpoints.
//!
//! Positions are read one checkpoint at a time through [`PositionSource`];
//! only the last k+1 checkpoints' positions (k the straightness window) and
//! the last k displacements are held, plus the per-example speed and
//! straightness series that the result reports. Distances are computed in f64.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::detectors::{
    censored_median_onset, DetectorKind, DistanceRule, ExampleSeries, StayPointRule,
};
use super::params::{
    AnalysisParams, InvalidParameter, RelativeParams, Setting, Space, StraightnessParams,
};
use super::pca::Pca2;

/// Where the positions come from, one checkpoint at a time. Random access
/// is needed because `pca2` fits on the latest checkpoint before streaming.
pub trait PositionSource {
    type Error;
    /// H, the width of a position.
    fn dim(&self) -> usize;
    /// The row-major [P, H] positions of checkpoint index `checkpoint`.
    fn positions(&mut self, checkpoint: usize) -> Result<Vec<f32>, Self::Error>;
}

/// Positions already in memory: one row-major [P, H] matrix per checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct InMemoryPositions {
    dim: usize,
    checkpoints: Vec<Vec<f32>>,
}

impl InMemoryPositions {
    pub fn new(dim: usize, checkpoints: Vec<Vec<f32>>) -> Self {
        Self { dim, checkpoints }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("checkpoint index {0} is not in memory")]
pub struct MissingCheckpoint(pub usize);

impl PositionSource for InMemoryPositions {
    type Error = MissingCheckpoint;

    fn dim(&self) -> usize {
        self.dim
    }

    fn positions(&mut self, checkpoint: usize) -> Result<Vec<f32>, MissingCheckpoint> {
        self.checkpoints
            .get(checkpoint)
            .cloned()
            .ok_or(MissingCheckpoint(checkpoint))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError<E> {
    #[error(transparent)]
    InvalidParameter(#[from] InvalidParameter),
    #[error("steps must be strictly ascending: checkpoint {checkpoint} has step {step} after step {previous}")]
    StepsNotAscending {
        checkpoint: usize,
        previous: u64,
        step: u64,
    },
    #[error("probe example {example} has label {label}, but there are only {num_classes} classes")]
    LabelOutOfRange {
        example: usize,
        label: usize,
        num_classes: usize,
    },
    #[error("positions must have at least one dimension")]
    NoDimensions,
    #[error("the pca2 space needs positions with at least 2 dimensions, these have {dim}")]
    PcaNeedsTwoDimensions { dim: usize },
    #[error("checkpoint {checkpoint} (step {step}) has {found} position values, expected {expected} ({examples} examples × {dim})")]
    WrongMatrixSize {
        checkpoint: usize,
        step: u64,
        found: usize,
        expected: usize,
        examples: usize,
        dim: usize,
    },
    #[error(
        "checkpoint {checkpoint} (step {step}): probe example {example} has a non-finite position"
    )]
    NonFinitePosition {
        checkpoint: usize,
        step: u64,
        example: usize,
    },
    #[error("could not read the positions of checkpoint {checkpoint} (step {step})")]
    Source {
        checkpoint: usize,
        step: u64,
        #[source]
        source: E,
    },
}

/// Everything SPEC §4 derives from a run's trajectories. Serialises the
/// per-class results and per-example onsets; the per-example series stay out
/// of the serialised form (they are large) and are reachable through
/// [`TrajectoryAnalysis::example_series`] and [`TrajectoryAnalysis::stay_points`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrajectoryAnalysis {
    pub space: Space,
    pub steps: Vec<u64>,
    /// Δ; `None` while it is automatic and the run has fewer than two checkpoints.
    pub reference_interval: Option<u64>,
    pub rules: Rules,
    /// One entry per class index, including classes without probe examples.
    pub classes: Vec<ClassTrajectories>,
    /// One entry per probe example, in probe order.
    pub examples: Vec<ExampleOnsets>,
    #[serde(skip)]
    pca: Option<Pca2>,
    #[serde(skip)]
    speeds: Vec<Vec<f64>>,
    #[serde(skip)]
    straightness: Vec<Vec<Option<f64>>>,
}

/// The three detectors with every parameter as applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rules {
    pub distance: DistanceRule,
    pub straightness: StraightnessParams,
    pub relative: RelativeParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExampleOnsets {
    pub class: usize,
    pub onset_step: Onsets,
}

/// The step of the first stay point per detector; `None`: no stay point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Onsets {
    pub distance: Option<u64>,
    pub straightness: Option<u64>,
    pub relative: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassTrajectories {
    pub class: usize,
    /// Probe examples of this class.
    pub examples: usize,
    /// Class speed at t = 1..N-1, each at step s_t.
    pub speed: Vec<StepValue>,
    /// Mean straightness S_t over the class at t = 0..N-1; null in the
    /// undefined tail t > N-1-k.
    pub straightness: Vec<StepValue>,
    pub dwell: ClassDwell,
}

/// A value at a checkpoint step; `None` where it is undefined (no examples,
/// or the straightness tail).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepValue {
    pub step: u64,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassDwell {
    pub distance: DwellSummary<DistanceRule>,
    pub straightness: DwellSummary<StraightnessParams>,
    pub relative: DwellSummary<RelativeParams>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DwellSummary<R> {
    pub rule: R,
    /// Class dwell onset: censored median of the examples' onsets; `None`
    /// ("none yet") while fewer than half of the examples dwell.
    pub onset_step: Option<u64>,
    /// Share of the class's examples with a stay point; `None` for a class
    /// without probe examples.
    pub dwell_fraction: Option<f64>,
}

impl TrajectoryAnalysis {
    /// The speed and straightness series of one probe example.
    pub fn example_series(&self, example: usize) -> Option<ExampleSeries<'_>> {
        Some(ExampleSeries {
            speeds: self.speeds.get(example)?,
            straightness: self.straightness.get(example)?,
        })
    }

    /// One stay-point flag per checkpoint for one probe example, under the
    /// detector's rule as applied in this analysis.
    pub fn stay_points(&self, example: usize, detector: DetectorKind) -> Option<Vec<bool>> {
        let series = self.example_series(example)?;
        Some(match detector {
            DetectorKind::Distance => self.rules.distance.stay_points(series),
            DetectorKind::Straightness => self.rules.straightness.stay_points(series),
            DetectorKind::Relative => self.rules.relative.stay_points(series),
        })
    }

    /// The `pca2` projection used, so that a plot can draw the same space.
    pub fn pca(&self) -> Option<&Pca2> {
        self.pca.as_ref()
    }
}

/// Runs the analytics of SPEC §4 over checkpoints t = 0..N-1 with `steps`
/// (strictly ascending, possibly irregular) and one class index per probe
/// example in `labels`.
pub fn analyze<S: PositionSource>(
    source: &mut S,
    steps: &[u64],
    labels: &[usize],
    num_classes: usize,
    params: &AnalysisParams,
) -> Result<TrajectoryAnalysis, AnalysisError<S::Error>> {
    params.validate()?;
    check_steps(steps)?;
    check_labels(labels, num_classes)?;
    let mut reader = CheckpointReader {
        source,
        steps,
        examples: labels.len(),
    };
    if reader.dim() == 0 {
        return Err(AnalysisError::NoDimensions);
    }
    let pca = match params.space {
        Space::Full => None,
        Space::Pca2 if reader.dim() < 2 => {
            return Err(AnalysisError::PcaNeedsTwoDimensions { dim: reader.dim() })
        }
        Space::Pca2 => match steps.len().checked_sub(1) {
            Some(latest) => Some(Pca2::fit(&reader.read(latest)?, labels.len(), reader.dim())),
            None => None,
        },
    };
    let reference_interval = reference_interval(params.reference_interval, steps);
    let series = stream_series(
        &mut reader,
        pca.as_ref(),
        reference_interval,
        params.straightness.window,
    )?;
    let rules = Rules {
        distance: DistanceRule::resolve(&params.distance, &series.speeds),
        straightness: params.straightness,
        relative: params.relative,
    };
    let examples: Vec<ExampleOnsets> = labels
        .iter()
        .zip(series.speeds.iter().zip(&series.straightness))
        .map(|(&class, (speeds, straightness))| {
            let series = ExampleSeries {
                speeds,
                straightness,
            };
            let onset = |first: Option<usize>| first.map(|t| steps[t]);
            ExampleOnsets {
                class,
                onset_step: Onsets {
                    distance: onset(rules.distance.first_stay_point(series)),
                    straightness: onset(rules.straightness.first_stay_point(series)),
                    relative: onset(rules.relative.first_stay_point(series)),
                },
            }
        })
        .collect();
    let classes = (0..num_classes)
        .map(|class| summarise_class(class, steps, &examples, &series, &rules))
        .collect();
    Ok(TrajectoryAnalysis {
        space: params.space,
        steps: steps.to_vec(),
        reference_interval,
        rules,
        classes,
        examples,
        pca,
        speeds: series.speeds,
        straightness: series.straightness,
    })
}

fn check_steps<E>(steps: &[u64]) -> Result<(), AnalysisError<E>> {
    match steps.windows(2).position(|pair| pair[1] <= pair[0]) {
        Some(i) => Err(AnalysisError::StepsNotAscending {
            checkpoint: i + 1,
            previous: steps[i],
            step: steps[i + 1],
        }),
        None => Ok(()),
    }
}

fn check_labels<E>(labels: &[usize], num_classes: usize) -> Result<(), AnalysisError<E>> {
    match labels.iter().position(|&label| label >= num_classes) {
        Some(example) => Err(AnalysisError::LabelOutOfRange {
            example,
            label: labels[example],
            num_classes,
        }),
        None => Ok(()),
    }
}

/// Δ: the configured value, else the most common interval, smallest on a tie.
fn reference_interval(setting: Setting<u64>, steps: &[u64]) -> Option<u64> {
    if let Setting::Fixed(delta) = setting {
        return Some(delta);
    }
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for pair in steps.windows(2) {
        *counts.entry(pair[1] - pair[0]).or_default() += 1;
    }
    // Ascending keys: max_by_key keeps the last maximum, so compare on
    // (count, Reverse(interval)) to keep the smallest interval on a tie.
    counts
        .into_iter()
        .max_by_key(|&(interval, count)| (count, std::cmp::Reverse(interval)))
        .map(|(interval, _)| interval)
}

/// Reads checkpoints and checks their shape, so the math can trust them.
struct CheckpointReader<'a, S> {
    source: &'a mut S,
    steps: &'a [u64],
    examples: usize,
}

impl<S: PositionSource> CheckpointReader<'_, S> {
    fn dim(&self) -> usize {
        self.source.dim()
    }

    fn read(&mut self, checkpoint: usize) -> Result<Vec<f32>, AnalysisError<S::Error>> {
        let step = self.steps[checkpoint];
        let dim = self.dim();
        let positions =
            self.source
                .positions(checkpoint)
                .map_err(|source| AnalysisError::Source {
                    checkpoint,
                    step,
                    source,
                })?;
        let expected = self.examples * dim;
        if positions.len() != expected {
            return Err(AnalysisError::WrongMatrixSize {
                checkpoint,
                step,
                found: positions.len(),
                expected,
                examples: self.examples,
                dim,
            });
        }
        if let Some(index) = positions.iter().position(|x| !x.is_finite()) {
            return Err(AnalysisError::NonFinitePosition {
                checkpoint,
                step,
                example: index / dim,
            });
        }
        Ok(positions)
    }
}

struct Series {
    /// Per example: w_t for t = 1..N-1.
    speeds: Vec<Vec<f64>>,
    /// Per example: S_t for t = 0..N-1.
    straightness: Vec<Vec<Option<f64>>>,
}

/// One pass over the checkpoints. S_t needs v_{t+k} and the k displacements
/// after t, so it is computed when checkpoint t+k arrives, from a window of
/// the last k+1 positions and the last k displacements.
fn stream_series<S: PositionSource>(
    reader: &mut CheckpointReader<'_, S>,
    pca: Option<&Pca2>,
    reference_interval: Option<u64>,
    window: usize,
) -> Result<Series, AnalysisError<S::Error>> {
    let steps = reader.steps;
    let examples = reader.examples;
    let space_dim = if pca.is_some() { 2 } else { reader.dim() };
    let checkpoints = steps.len();
    let mut speeds = vec![Vec::with_capacity(checkpoints.saturating_sub(1)); examples];
    let mut straightness = vec![Vec::with_capacity(checkpoints); examples];
    let mut recent_positions: VecDeque<Vec<f64>> = VecDeque::with_capacity(window + 1);
    let mut recent_displacements: VecDeque<Vec<f64>> = VecDeque::with_capacity(window);
    for (t, &step) in steps.iter().enumerate() {
        let raw = reader.read(t)?;
        let current: Vec<f64> = match pca {
            Some(pca) => {
                let mut projected = Vec::with_capacity(examples * 2);
                pca.project_into(&raw, &mut projected);
                projected
            }
            None => raw.iter().map(|&x| f64::from(x)).collect(),
        };
        drop(raw);
        if let (Some(previous), Some(delta)) = (recent_positions.back(), reference_interval) {
            let gap = (step - steps[t - 1]) as f64;
            let displacements: Vec<f64> = (0..examples)
                .map(|d| euclidean(row(previous, space_dim, d), row(&current, space_dim, d)))
                .collect();
            for (series, &u) in speeds.iter_mut().zip(&displacements) {
                series.push(u * delta as f64 / gap);
            }
            if recent_displacements.len() == window {
                recent_displacements.pop_front();
            }
            recent_displacements.push_back(displacements);
        }
        if recent_positions.len() == window + 1 {
            recent_positions.pop_front();
        }
        recent_positions.push_back(current);
        if let (true, Some(start), Some(end)) = (
            recent_positions.len() == window + 1,
            recent_positions.front(),
            recent_positions.back(),
        ) {
            for (d, series) in straightness.iter_mut().enumerate() {
                let path_length: f64 = recent_displacements.iter().map(|u| u[d]).sum();
                let net = euclidean(row(start, space_dim, d), row(end, space_dim, d));
                series.push(Some(if path_length == 0.0 {
                    0.0
                } else {
                    net / path_length
                }));
            }
        }
    }
    for series in &mut straightness {
        series.resize(checkpoints, None);
    }
    Ok(Series {
        speeds,
        straightness,
    })
}

fn row(matrix: &[f64], dim: usize, example: usize) -> &[f64] {
    &matrix[example * dim..(example + 1) * dim]
}

fn euclidean(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

fn summarise_class(
    class: usize,
    steps: &[u64],
    examples: &[ExampleOnsets],
    series: &Series,
    rules: &Rules,
) -> ClassTrajectories {
    let members: Vec<usize> = (0..examples.len())
        .filter(|&d| examples[d].class == class)
        .collect();
    let speed = (1..steps.len())
        .map(|t| StepValue {
            step: steps[t],
            value: mean(members.iter().map(|&d| Some(series.speeds[d][t - 1]))),
        })
        .collect();
    let straightness = (0..steps.len())
        .map(|t| StepValue {
            step: steps[t],
            value: mean(members.iter().map(|&d| series.straightness[d][t])),
        })
        .collect();
    let onsets = |detector: fn(&Onsets) -> Option<u64>| {
        members
            .iter()
            .map(move |&d| detector(&examples[d].onset_step))
    };
    ClassTrajectories {
        class,
        examples: members.len(),
        speed,
        straightness,
        dwell: ClassDwell {
            distance: dwell_summary(rules.distance, onsets(|o| o.distance)),
            straightness: dwell_summary(rules.straightness, onsets(|o| o.straightness)),
            relative: dwell_summary(rules.relative, onsets(|o| o.relative)),
        },
    }
}

/// The mean of the values; `None` when there are none or one is undefined.
fn mean(values: impl ExactSizeIterator<Item = Option<f64>>) -> Option<f64> {
    let count = values.len();
    let mut sum = 0.0;
    for value in values {
        sum += value?;
    }
    (count > 0).then(|| sum / count as f64)
}

fn dwell_summary<R>(rule: R, onsets: impl Iterator<Item = Option<u64>> + Clone) -> DwellSummary<R> {
    let (count, dwelling) = onsets.clone().fold((0, 0), |(count, dwelling), onset| {
        (count + 1, dwelling + usize::from(onset.is_some()))
    });
    DwellSummary {
        rule,
        onset_step: censored_median_onset(onsets),
        dwell_fraction: (count > 0).then(|| dwelling as f64 / count as f64),
    }
}
