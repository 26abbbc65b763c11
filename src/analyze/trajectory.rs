//! Trajectory analytics of SPEC §4, streamed over checkpoints.
//!
//! Positions are read one checkpoint at a time through [`PositionSource`];
//! only the last k+1 checkpoints' positions (k the straightness window) and
//! the last k displacements are held, plus the per-example speed and
//! straightness series that the result reports. Distances are computed in f64.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepValue {
    pub step: u64,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassDwell {
    pub distance: DwellSummary<DistanceRule>,
    pub straightness: DwellSummary<StraightnessParams>,
    pub relative: DwellSummary<RelativeParams>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
pub(super) struct CheckpointReader<'a, S> {
    pub(super) source: &'a mut S,
    pub(super) steps: &'a [u64],
    pub(super) examples: usize,
}

impl<S: PositionSource> CheckpointReader<'_, S> {
    pub(super) fn dim(&self) -> usize {
        self.source.dim()
    }

    pub(super) fn read(&mut self, checkpoint: usize) -> Result<Vec<f32>, AnalysisError<S::Error>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::params::DistanceParams;
    use proptest::prelude::*;

    /// `positions[d][t]` → one row-major matrix per checkpoint.
    fn source(dim: usize, positions: &[Vec<Vec<f32>>]) -> InMemoryPositions {
        let checkpoints = positions.first().map_or(0, Vec::len);
        InMemoryPositions::new(
            dim,
            (0..checkpoints)
                .map(|t| positions.iter().flat_map(|p| p[t].clone()).collect())
                .collect(),
        )
    }

    fn one_dimensional(positions: &[&[f32]]) -> InMemoryPositions {
        let nested: Vec<Vec<Vec<f32>>> = positions
            .iter()
            .map(|p| p.iter().map(|&x| vec![x]).collect())
            .collect();
        source(1, &nested)
    }

    fn params(window: usize) -> AnalysisParams {
        let mut params = AnalysisParams::default();
        params.straightness.window = window;
        params
    }

    fn run(
        mut positions: InMemoryPositions,
        steps: &[u64],
        labels: &[usize],
        num_classes: usize,
        params: &AnalysisParams,
    ) -> TrajectoryAnalysis {
        analyze(&mut positions, steps, labels, num_classes, params).unwrap()
    }

    #[test]
    fn irregular_gaps_are_normalised_to_the_most_common_interval() {
        // Step 20 vanished: the gap 10→30 is twice the reference Δ = 10.
        let analysis = run(
            one_dimensional(&[&[0.0, 1.0, 3.0, 2.0, 2.0]]),
            &[0, 10, 30, 40, 50],
            &[0],
            1,
            &params(2),
        );
        assert_eq!(analysis.reference_interval, Some(10));
        let series = analysis.example_series(0).unwrap();
        // u = 1, 2, 1, 0 → w = 1, 2·10/20, 1, 0.
        assert_eq!(series.speeds, [1.0, 1.0, 1.0, 0.0]);
        // S_0 = |3 - 0| / (1 + 2), S_1 = |2 - 1| / (2 + 1), S_2 = |2 - 3| / (1 + 0).
        assert_eq!(
            series.straightness,
            [Some(1.0), Some(1.0 / 3.0), Some(1.0), None, None]
        );
        let speed: Vec<(u64, Option<f64>)> = analysis.classes[0]
            .speed
            .iter()
            .map(|p| (p.step, p.value))
            .collect();
        assert_eq!(
            speed,
            [
                (10, Some(1.0)),
                (30, Some(1.0)),
                (40, Some(1.0)),
                (50, Some(0.0))
            ]
        );
    }

    #[test]
    fn reference_interval_ties_take_the_smallest_and_config_wins() {
        assert_eq!(reference_interval(Setting::Auto, &[0, 20, 30]), Some(10));
        assert_eq!(
            reference_interval(Setting::Auto, &[0, 5, 25, 45, 65]),
            Some(20)
        );
        assert_eq!(reference_interval(Setting::Auto, &[7]), None);
        assert_eq!(reference_interval(Setting::Fixed(3), &[0, 20, 30]), Some(3));
        let mut fixed = params(2);
        fixed.reference_interval = Setting::Fixed(5);
        let analysis = run(one_dimensional(&[&[0.0, 2.0]]), &[0, 10], &[0], 1, &fixed);
        assert_eq!(analysis.example_series(0).unwrap().speeds, [1.0]);
    }

    #[test]
    fn displacement_is_euclidean_in_the_full_space() {
        let positions = vec![vec![vec![1.0, 1.0], vec![4.0, 5.0]]];
        let analysis = run(source(2, &positions), &[0, 1], &[0], 1, &params(1));
        let series = analysis.example_series(0).unwrap();
        assert_eq!(series.speeds, [5.0]);
        assert_eq!(series.straightness, [Some(1.0), None]);
    }

    #[test]
    fn zero_path_length_is_straightness_zero_and_a_stay_point() {
        let analysis = run(
            one_dimensional(&[&[5.0, 5.0, 5.0, 6.0]]),
            &[0, 1, 2, 3],
            &[0],
            1,
            &params(2),
        );
        let series = analysis.example_series(0).unwrap();
        // S_1 = |6 - 5| / (0 + 1) = 1.
        assert_eq!(series.straightness, [Some(0.0), Some(1.0), None, None]);
        assert_eq!(
            analysis.stay_points(0, DetectorKind::Straightness).unwrap(),
            [true, false, false, false]
        );
        assert_eq!(analysis.examples[0].onset_step.straightness, Some(0));
        let class_straightness: Vec<Option<f64>> = analysis.classes[0]
            .straightness
            .iter()
            .map(|p| p.value)
            .collect();
        assert_eq!(class_straightness, [Some(0.0), Some(1.0), None, None]);
    }

    #[test]
    fn at_most_k_checkpoints_leave_straightness_undefined() {
        for checkpoints in 0..=3 {
            let trajectory = [0.0, 0.0, 0.0];
            let analysis = run(
                one_dimensional(&[&trajectory[..checkpoints]]),
                &[0, 1, 2][..checkpoints],
                &[0],
                1,
                &params(3),
            );
            let series = analysis.example_series(0).unwrap();
            assert_eq!(series.straightness, vec![None; checkpoints]);
            assert_eq!(series.speeds.len(), checkpoints.saturating_sub(1));
            assert_eq!(analysis.examples[0].onset_step.straightness, None);
            let summary = &analysis.classes[0].dwell.straightness;
            assert_eq!(
                (summary.onset_step, summary.dwell_fraction),
                (None, Some(0.0))
            );
        }
    }

    #[test]
    fn class_with_one_example_and_class_without_examples() {
        let mut params = params(1);
        params.distance = DistanceParams {
            threshold: Setting::Fixed(0.5),
            min_run: 2,
            ..DistanceParams::default()
        };
        // Example 0 slows at t = 2, 3: stay points 1..=3, onset step 10.
        let analysis = run(
            one_dimensional(&[&[0.0, 1.0, 1.0, 1.0], &[0.0, 1.0, 2.0, 3.0]]),
            &[0, 10, 20, 30],
            &[0, 2],
            3,
            &params,
        );
        assert_eq!(analysis.examples[0].onset_step.distance, Some(10));
        let single = &analysis.classes[0];
        assert_eq!(single.examples, 1);
        assert_eq!(single.dwell.distance.onset_step, Some(10));
        assert_eq!(single.dwell.distance.dwell_fraction, Some(1.0));
        assert_eq!(single.dwell.distance.rule.threshold, Some(0.5));
        let empty = &analysis.classes[1];
        assert_eq!(empty.examples, 0);
        assert!(empty.speed.iter().all(|p| p.value.is_none()));
        assert_eq!(empty.dwell.distance.onset_step, None);
        assert_eq!(empty.dwell.distance.dwell_fraction, None);
        assert_eq!(analysis.classes[2].dwell.distance.dwell_fraction, Some(0.0));
    }

    #[test]
    fn class_onset_is_the_censored_median_of_example_onsets() {
        let mut params = params(1);
        params.distance.threshold = Setting::Fixed(0.5);
        params.distance.min_run = 1;
        // Onsets: 0 (slow at t = 1), 10 (slow at t = 2), none, none.
        let slow_first: &[f32] = &[0.0, 0.0, 1.0];
        let slow_second: &[f32] = &[0.0, 1.0, 1.0];
        let moving: &[f32] = &[0.0, 1.0, 2.0];
        let analysis = run(
            one_dimensional(&[slow_first, slow_second, moving, moving, slow_second]),
            &[0, 10, 20],
            &[0, 0, 0, 0, 1],
            2,
            &params,
        );
        let onsets: Vec<Option<u64>> = analysis
            .examples
            .iter()
            .map(|e| e.onset_step.distance)
            .collect();
        assert_eq!(onsets, [Some(0), Some(10), None, None, Some(10)]);
        // Two of four dwell: the lower middle of (0, 10, ∞, ∞).
        assert_eq!(analysis.classes[0].dwell.distance.onset_step, Some(10));
        assert_eq!(analysis.classes[0].dwell.distance.dwell_fraction, Some(0.5));
        // Class speed at t = 1: mean of (0, 1, 1, 1).
        assert_eq!(analysis.classes[0].speed[0].value, Some(0.75));

        let one_of_three = run(
            one_dimensional(&[slow_first, moving, moving]),
            &[0, 10, 20],
            &[0, 0, 0],
            1,
            &params,
        );
        assert_eq!(one_of_three.classes[0].dwell.distance.onset_step, None);
    }

    #[test]
    fn auto_distance_threshold_is_resolved_from_the_run() {
        let mut params = params(1);
        params.distance.min_run = 1;
        // Early speeds (first 3 intervals): 2, 2, 2 and 4, 4, 4 → median 3,
        // D = 1.5; example 0 then drops to 1 at t = 4.
        let analysis = run(
            one_dimensional(&[&[0.0, 2.0, 4.0, 6.0, 7.0], &[0.0, 4.0, 8.0, 12.0, 16.0]]),
            &[0, 1, 2, 3, 4],
            &[0, 0],
            1,
            &params,
        );
        let rule = analysis.rules.distance;
        assert_eq!(rule.threshold, Some(1.5));
        assert_eq!(rule.auto.unwrap().median_early_speed, Some(3.0));
        assert_eq!(analysis.classes[0].dwell.distance.rule, rule);
        assert_eq!(analysis.examples[0].onset_step.distance, Some(3));
        assert_eq!(analysis.examples[1].onset_step.distance, None);
    }

    #[test]
    fn pca2_projects_every_checkpoint_with_the_latest_fit() {
        // The latest checkpoint is a cross in the x-y plane; the earlier one is
        // the same cross moved along z, which the fit gives no weight.
        let latest = [
            [2.0, 0.0, 0.0],
            [-2.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, -1.0, 0.0],
        ];
        let positions: Vec<Vec<Vec<f32>>> = latest
            .iter()
            .map(|p| vec![vec![p[0], p[1], p[2] + 5.0], p.to_vec()])
            .collect();
        let mut params = params(1);
        params.space = Space::Pca2;
        let analysis = run(source(3, &positions), &[0, 1], &[0; 4], 1, &params);
        let pca = analysis.pca().unwrap();
        let expected = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        for (component, expected) in pca.components.iter().zip(expected) {
            for (x, e) in component.iter().zip(expected) {
                assert!((x - e).abs() < 1e-12, "{:?}", pca.components);
            }
        }
        for d in 0..4 {
            assert!(analysis.example_series(d).unwrap().speeds[0] < 1e-12);
        }
        params.space = Space::Full;
        let full = run(source(3, &positions), &[0, 1], &[0; 4], 1, &params);
        assert_eq!(full.example_series(0).unwrap().speeds, [5.0]);
        assert!(full.pca().is_none());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut positions = one_dimensional(&[&[0.0, 1.0]]);
        let p = params(1);
        let error = |result: Result<TrajectoryAnalysis, AnalysisError<MissingCheckpoint>>| {
            result.unwrap_err().to_string()
        };
        assert_eq!(
            error(analyze(&mut positions, &[5, 5], &[0], 1, &p)),
            "steps must be strictly ascending: checkpoint 1 has step 5 after step 5"
        );
        assert_eq!(
            error(analyze(&mut positions, &[0, 1], &[1], 1, &p)),
            "probe example 0 has label 1, but there are only 1 classes"
        );
        assert_eq!(
            error(analyze(&mut positions, &[0, 1], &[0, 0], 1, &p)),
            "checkpoint 0 (step 0) has 1 position values, expected 2 (2 examples × 1)"
        );
        assert_eq!(
            error(analyze(&mut positions, &[0, 1, 2], &[0], 1, &p)),
            "could not read the positions of checkpoint 2 (step 2)"
        );
        let mut pca = params(1);
        pca.space = Space::Pca2;
        assert!(matches!(
            analyze(&mut positions, &[0, 1], &[0], 1, &pca),
            Err(AnalysisError::PcaNeedsTwoDimensions { dim: 1 })
        ));
        let mut invalid = params(1);
        invalid.relative.min_run = 0;
        assert_eq!(
            error(analyze(&mut positions, &[0, 1], &[0], 1, &invalid)),
            "analysis.relative.min_run must be at least 1"
        );
        let mut not_finite = one_dimensional(&[&[0.0, f32::NAN]]);
        assert!(matches!(
            analyze(&mut not_finite, &[0, 1], &[0], 1, &p),
            Err(AnalysisError::NonFinitePosition {
                checkpoint: 1,
                step: 1,
                example: 0
            })
        ));
        let mut no_dimensions = InMemoryPositions::new(0, vec![vec![]]);
        assert!(matches!(
            analyze(&mut no_dimensions, &[0], &[0], 1, &p),
            Err(AnalysisError::NoDimensions)
        ));
    }

    #[test]
    fn serialises_classes_and_onsets_but_not_the_series() {
        let analysis = run(
            one_dimensional(&[&[0.0, 1.0, 1.0]]),
            &[0, 10, 20],
            &[0],
            1,
            &params(1),
        );
        let json = serde_json::to_value(&analysis).unwrap();
        assert_eq!(
            json["classes"][0]["straightness"][2]["value"],
            serde_json::Value::Null
        );
        assert_eq!(
            json["classes"][0]["dwell"]["straightness"]["rule"]["window"],
            1
        );
        assert_eq!(json["examples"][0]["onset_step"]["straightness"], 10);
        assert!(json.get("speeds").is_none());
    }

    /// SPEC §4 computed directly from all positions held in memory.
    struct Direct {
        speeds: Vec<Vec<f64>>,
        straightness: Vec<Vec<Option<f64>>>,
        onsets: Vec<[Option<u64>; 3]>,
        class_onsets: Vec<[Option<u64>; 3]>,
        class_fractions: Vec<[Option<f64>; 3]>,
        class_speed: Vec<Vec<Option<f64>>>,
        class_straightness: Vec<Vec<Option<f64>>>,
    }

    fn direct(
        positions: &[Vec<f32>],
        dim: usize,
        steps: &[u64],
        labels: &[usize],
        num_classes: usize,
        params: &AnalysisParams,
    ) -> Direct {
        let (n, p) = (steps.len(), labels.len());
        let (space_dim, v): (usize, Vec<Vec<f64>>) = match params.space {
            Space::Full => (
                dim,
                positions
                    .iter()
                    .map(|m| m.iter().map(|&x| x as f64).collect())
                    .collect(),
            ),
            Space::Pca2 => {
                let pca = n
                    .checked_sub(1)
                    .map(|last| Pca2::fit(&positions[last], p, dim));
                let project = |m: &Vec<f32>| {
                    let mut out = Vec::new();
                    pca.as_ref().unwrap().project_into(m, &mut out);
                    out
                };
                (2, positions.iter().map(project).collect())
            }
        };
        let at = |t: usize, d: usize| &v[t][d * space_dim..(d + 1) * space_dim];
        let dist = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt()
        };
        let mut gaps: Vec<u64> = steps.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        let count = |g: u64| gaps.iter().filter(|&&x| x == g).count();
        let delta = match params.reference_interval {
            Setting::Fixed(delta) => delta,
            Setting::Auto => gaps
                .iter()
                .copied()
                .max_by_key(|&g| (count(g), u64::MAX - g))
                .unwrap_or(0),
        };
        let k = params.straightness.window;
        let u = |t: usize, d: usize| dist(at(t - 1, d), at(t, d));
        let speeds: Vec<Vec<f64>> = (0..p)
            .map(|d| {
                (1..n)
                    .map(|t| u(t, d) * delta as f64 / (steps[t] - steps[t - 1]) as f64)
                    .collect()
            })
            .collect();
        let straightness: Vec<Vec<Option<f64>>> = (0..p)
            .map(|d| {
                (0..n)
                    .map(|t| {
                        (t + k < n).then(|| {
                            let path: f64 = (t + 1..=t + k).map(|h| u(h, d)).sum();
                            if path == 0.0 {
                                0.0
                            } else {
                                dist(at(t + k, d), at(t, d)) / path
                            }
                        })
                    })
                    .collect()
            })
            .collect();
        let plain_median = |mut xs: Vec<f64>| {
            xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let m = xs.len() / 2;
            if xs.len() % 2 == 1 {
                xs[m]
            } else {
                (xs[m - 1] + xs[m]) / 2.0
            }
        };
        // Stay points from slowness of intervals t = 1..n-1, by explicit runs.
        let stays = |slow: &dyn Fn(usize) -> bool, min_run: usize| {
            let mut stay = vec![false; n];
            let mut a = 1;
            while a < n {
                if !slow(a) {
                    a += 1;
                    continue;
                }
                let mut b = a;
                while b + 1 < n && slow(b + 1) {
                    b += 1;
                }
                if b - a + 1 >= min_run {
                    (a - 1..=b).for_each(|i| stay[i] = true);
                }
                a = b + 1;
            }
            stay
        };
        let distance_threshold = match params.distance.threshold {
            Setting::Fixed(d) => Some(d),
            Setting::Auto => {
                let early: Vec<f64> = speeds
                    .iter()
                    .flat_map(|w| w.iter().take(params.distance.auto_early_intervals).copied())
                    .collect();
                (!early.is_empty()).then(|| params.distance.auto_fraction * plain_median(early))
            }
        };
        let first = |stay: Vec<bool>| stay.iter().position(|&s| s).map(|t| steps[t]);
        let onsets: Vec<[Option<u64>; 3]> = (0..p)
            .map(|d| {
                let w = &speeds[d];
                let distance = stays(
                    &|t| distance_threshold.is_some_and(|dd| w[t - 1] < dd),
                    params.distance.min_run,
                );
                let straight = (0..n)
                    .map(|t| straightness[d][t].is_some_and(|s| s < params.straightness.epsilon))
                    .collect();
                let relative_params = params.relative;
                let r = (w.len() >= relative_params.early_window)
                    .then(|| plain_median(w[..relative_params.early_window].to_vec()))
                    .filter(|&r| r != 0.0);
                let relative = stays(
                    &|t| r.is_some_and(|r| w[t - 1] < relative_params.beta * r),
                    relative_params.min_run,
                );
                [first(distance), first(straight), first(relative)]
            })
            .collect();
        let members = |c: usize| (0..p).filter(move |&d| labels[d] == c);
        let class_onsets = (0..num_classes)
            .map(|c| {
                std::array::from_fn(|i| {
                    let mut xs: Vec<f64> = members(c)
                        .map(|d| onsets[d][i].map_or(f64::INFINITY, |s| s as f64))
                        .collect();
                    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
                    xs.get(xs.len().saturating_sub(1) / 2)
                        .filter(|x| x.is_finite())
                        .map(|&x| x as u64)
                })
            })
            .collect();
        let class_fractions = (0..num_classes)
            .map(|c| {
                std::array::from_fn(|i| {
                    let total = members(c).count();
                    let dwelling = members(c).filter(|&d| onsets[d][i].is_some()).count();
                    (total > 0).then(|| dwelling as f64 / total as f64)
                })
            })
            .collect();
        let class_mean = |c: usize, value: &dyn Fn(usize) -> Option<f64>| {
            let values: Option<Vec<f64>> = members(c).map(value).collect();
            values
                .filter(|v| !v.is_empty())
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        };
        let class_speed = (0..num_classes)
            .map(|c| {
                (1..n)
                    .map(|t| class_mean(c, &|d| Some(speeds[d][t - 1])))
                    .collect()
            })
            .collect();
        let class_straightness = (0..num_classes)
            .map(|c| {
                (0..n)
                    .map(|t| class_mean(c, &|d| straightness[d][t]))
                    .collect()
            })
            .collect();
        Direct {
            speeds,
            straightness,
            onsets,
            class_onsets,
            class_fractions,
            class_speed,
            class_straightness,
        }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs())),
            (a, b) => a == b,
        }
    }

    #[derive(Debug, Clone)]
    struct Case {
        dim: usize,
        steps: Vec<u64>,
        labels: Vec<usize>,
        num_classes: usize,
        positions: Vec<Vec<f32>>,
        params: AnalysisParams,
    }

    fn case() -> impl Strategy<Value = Case> {
        (1usize..5, 0usize..10, 2usize..4, 1usize..4).prop_flat_map(
            |(examples, checkpoints, dim, num_classes)| {
                // A small integer grid makes repeated positions (zero path
                // length) and exact speed ties common.
                let matrix = prop::collection::vec(-2i8..=2, examples * dim);
                (
                    prop::collection::vec(1u64..4, checkpoints),
                    prop::collection::vec(0..num_classes, examples),
                    prop::collection::vec(matrix, checkpoints),
                    (1usize..5, 1usize..5, 1usize..5, 1usize..5),
                    (prop::option::of(0.0f64..3.0), 0.0f64..1.0, 0.0f64..1.0),
                    (any::<bool>(), prop::option::of(1u64..4)),
                )
                    .prop_map(
                        move |(gaps, labels, matrices, integers, thresholds, choices)| {
                            let (window, distance_run, relative_run, early) = integers;
                            let (distance, epsilon, beta) = thresholds;
                            let (pca2, reference) = choices;
                            let params = AnalysisParams {
                                space: if pca2 { Space::Pca2 } else { Space::Full },
                                reference_interval: reference.map_or(Setting::Auto, Setting::Fixed),
                                distance: DistanceParams {
                                    threshold: distance.map_or(Setting::Auto, Setting::Fixed),
                                    auto_fraction: 0.5,
                                    auto_early_intervals: early,
                                    min_run: distance_run,
                                },
                                straightness: StraightnessParams { window, epsilon },
                                relative: RelativeParams {
                                    beta,
                                    min_run: relative_run,
                                    early_window: early,
                                },
                            };
                            Case {
                                dim,
                                steps: gaps
                                    .iter()
                                    .scan(0, |step, gap| {
                                        *step += gap;
                                        Some(*step)
                                    })
                                    .collect(),
                                labels,
                                num_classes,
                                positions: matrices
                                    .into_iter()
                                    .map(|m| m.into_iter().map(f32::from).collect())
                                    .collect(),
                                params,
                            }
                        },
                    )
            },
        )
    }

    proptest! {
        #[test]
        fn streaming_equals_the_all_in_memory_computation(case in case()) {
            let mut positions = InMemoryPositions::new(case.dim, case.positions.clone());
            let analysis = analyze(
                &mut positions, &case.steps, &case.labels, case.num_classes, &case.params,
            ).unwrap();
            let expected = direct(
                &case.positions, case.dim, &case.steps, &case.labels, case.num_classes,
                &case.params,
            );
            for (d, example) in analysis.examples.iter().enumerate() {
                let series = analysis.example_series(d).unwrap();
                prop_assert_eq!(series.speeds, &expected.speeds[d][..]);
                prop_assert_eq!(series.straightness, &expected.straightness[d][..]);
                let onsets = example.onset_step;
                prop_assert_eq!(
                    [onsets.distance, onsets.straightness, onsets.relative],
                    expected.onsets[d]
                );
                for (kind, onset) in [
                    (DetectorKind::Distance, onsets.distance),
                    (DetectorKind::Straightness, onsets.straightness),
                    (DetectorKind::Relative, onsets.relative),
                ] {
                    let stays = analysis.stay_points(d, kind).unwrap();
                    let first = stays.iter().position(|&s| s).map(|t| case.steps[t]);
                    prop_assert_eq!(first, onset);
                }
            }
            for (c, class) in analysis.classes.iter().enumerate() {
                let dwell = &class.dwell;
                prop_assert_eq!(
                    [dwell.distance.onset_step, dwell.straightness.onset_step, dwell.relative.onset_step],
                    expected.class_onsets[c]
                );
                prop_assert_eq!(
                    [
                        dwell.distance.dwell_fraction,
                        dwell.straightness.dwell_fraction,
                        dwell.relative.dwell_fraction,
                    ],
                    expected.class_fractions[c]
                );
                prop_assert_eq!(class.speed.len(), expected.class_speed[c].len());
                for (point, &value) in class.speed.iter().zip(&expected.class_speed[c]) {
                    prop_assert!(close(point.value, value), "{:?} vs {:?}", point.value, value);
                }
                prop_assert_eq!(class.straightness.len(), expected.class_straightness[c].len());
                for (point, &value) in class.straightness.iter().zip(&expected.class_straightness[c]) {
                    prop_assert!(close(point.value, value), "{:?} vs {:?}", point.value, value);
                }
            }
        }
    }
}
