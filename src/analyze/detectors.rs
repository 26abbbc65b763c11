//! The three stay-point detectors of SPEC §4, applied to one example's speed
//! and straightness series, and the medians the analytics use.

use serde::{Deserialize, Serialize};

use super::params::{DistanceParams, RelativeParams, Setting, StraightnessParams};

/// One example's series over a run of N checkpoints: `speeds[i]` is w_{i+1}
/// (N-1 values), `straightness[t]` is S_t (N values, `None` where undefined).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExampleSeries<'a> {
    pub speeds: &'a [f64],
    pub straightness: &'a [Option<f64>],
}

impl ExampleSeries<'_> {
    pub fn checkpoints(&self) -> usize {
        self.straightness.len()
    }
}

/// A detector with every parameter resolved.
pub trait StayPointRule {
    /// One flag per checkpoint: whether it is a stay point.
    fn stay_points(&self, series: ExampleSeries<'_>) -> Vec<bool>;

    /// Index of the first stay point.
    fn first_stay_point(&self, series: ExampleSeries<'_>) -> Option<usize> {
        self.stay_points(series).iter().position(|&stay| stay)
    }
}

/// Names a detector, e.g. for a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    Distance,
    Straightness,
    Relative,
}

/// The distance detector as applied: D resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistanceRule {
    /// D; `None` only when it is auto and the run has no interval yet.
    pub threshold: Option<f64>,
    /// T
    pub min_run: usize,
    /// How D was derived, when it was not given as a number.
    pub auto: Option<AutoThreshold>,
}

/// The evidence behind an automatic D: D = fraction × median_early_speed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AutoThreshold {
    pub fraction: f64,
    pub early_intervals: usize,
    /// Median over every example of w_1..w_m, m = min(early_intervals, N-1).
    pub median_early_speed: Option<f64>,
}

impl DistanceRule {
    /// Resolves D against the run: a fixed number is kept; `auto` scales the
    /// median early speed of all examples, so D follows the model's scale
    /// (and the space) instead of assuming one.
    pub fn resolve(params: &DistanceParams, speeds: &[Vec<f64>]) -> Self {
        match params.threshold {
            Setting::Fixed(threshold) => Self {
                threshold: Some(threshold),
                min_run: params.min_run,
                auto: None,
            },
            Setting::Auto => {
                let mut early: Vec<f64> = speeds
                    .iter()
                    .flat_map(|series| series.iter().take(params.auto_early_intervals))
                    .copied()
                    .collect();
                let median_early_speed = median(&mut early);
                Self {
                    threshold: median_early_speed.map(|speed| params.auto_fraction * speed),
                    min_run: params.min_run,
                    auto: Some(AutoThreshold {
                        fraction: params.auto_fraction,
                        early_intervals: params.auto_early_intervals,
                        median_early_speed,
                    }),
                }
            }
        }
    }
}

impl StayPointRule for DistanceRule {
    fn stay_points(&self, series: ExampleSeries<'_>) -> Vec<bool> {
        let slow: Vec<bool> = match self.threshold {
            Some(threshold) => series.speeds.iter().map(|&w| w < threshold).collect(),
            None => vec![false; series.speeds.len()],
        };
        stay_points_from_slow_intervals(&slow, self.min_run, series.checkpoints())
    }
}

impl StayPointRule for StraightnessParams {
    fn stay_points(&self, series: ExampleSeries<'_>) -> Vec<bool> {
        series
            .straightness
            .iter()
            .map(|s| s.is_some_and(|s| s < self.epsilon))
            .collect()
    }
}

impl StayPointRule for RelativeParams {
    fn stay_points(&self, series: ExampleSeries<'_>) -> Vec<bool> {
        let speeds = series.speeds;
        let early_speed = (speeds.len() >= self.early_window)
            .then(|| median(&mut speeds[..self.early_window].to_vec()))
            .flatten()
            .filter(|&r| r != 0.0);
        let slow: Vec<bool> = match early_speed {
            Some(r) => speeds.iter().map(|&w| w < self.beta * r).collect(),
            None => vec![false; speeds.len()],
        };
        stay_points_from_slow_intervals(&slow, self.min_run, series.checkpoints())
    }
}

/// `slow[i]` flags interval t = i + 1. A maximal slow run of intervals a..b
/// with b - a + 1 >= `min_run` makes checkpoints a-1..b stay points; a run
/// still open at the end is judged on its length so far.
fn stay_points_from_slow_intervals(slow: &[bool], min_run: usize, checkpoints: usize) -> Vec<bool> {
    let mut stay = vec![false; checkpoints];
    let mut run_start = None;
    // One step past the end closes a run still open at the latest checkpoint.
    for i in 0..=slow.len() {
        let is_slow = slow.get(i).copied().unwrap_or(false);
        match (is_slow, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                // Intervals start..i-1 are t = start+1..i: checkpoints start..=i.
                if i - start >= min_run {
                    stay[start..=i].fill(true);
                }
                run_start = None;
            }
            _ => {}
        }
    }
    stay
}

/// The usual median (mean of the two middle values for an even count);
/// reorders `values`. `None` for no values.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

/// Class dwell onset: the median of the examples' onset steps with "no stay
/// point" counted as +∞. It takes the lower middle value on an even count, so
/// that the onset is always a real checkpoint step and is "none yet" exactly
/// while fewer than half of the examples dwell (SPEC §4).
pub fn censored_median_onset(onsets: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    let mut sorted: Vec<Option<u64>> = onsets.into_iter().collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_unstable_by_key(|onset| (onset.is_none(), *onset));
    sorted[(sorted.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series<'a>(speeds: &'a [f64], straightness: &'a [Option<f64>]) -> ExampleSeries<'a> {
        ExampleSeries {
            speeds,
            straightness,
        }
    }

    fn distance(threshold: f64, min_run: usize) -> DistanceRule {
        DistanceRule {
            threshold: Some(threshold),
            min_run,
            auto: None,
        }
    }

    const UNDEFINED_5: [Option<f64>; 5] = [None; 5];

    #[test]
    fn distance_slow_is_strictly_below_d() {
        // w = 1.0 equals D: not slow, so the run 2,3 is too short for T = 3.
        let speeds = [2.0, 1.0, 0.5, 0.5];
        assert_eq!(
            distance(1.0, 3).stay_points(series(&speeds, &UNDEFINED_5)),
            [false; 5]
        );
        assert_eq!(
            distance(1.0 + 1e-12, 3).stay_points(series(&speeds, &UNDEFINED_5)),
            [false, true, true, true, true]
        );
    }

    #[test]
    fn a_run_exactly_t_long_qualifies_and_t_minus_one_does_not() {
        // Slow intervals t = 2,3 (a = 2, b = 3): checkpoints 1..=3.
        let speeds = [5.0, 0.1, 0.1, 5.0];
        assert_eq!(
            distance(1.0, 2).stay_points(series(&speeds, &UNDEFINED_5)),
            [false, true, true, true, false]
        );
        assert_eq!(
            distance(1.0, 3).stay_points(series(&speeds, &UNDEFINED_5)),
            [false; 5]
        );
    }

    #[test]
    fn a_run_open_at_the_end_qualifies_once_it_reaches_t() {
        let straightness = [None; 6];
        let speeds = [5.0, 5.0, 0.1, 0.1, 0.1];
        assert_eq!(
            distance(1.0, 3).stay_points(series(&speeds, &straightness)),
            [false, false, true, true, true, true]
        );
        // One checkpoint earlier the open run has length 2 < T.
        assert_eq!(
            distance(1.0, 3).stay_points(series(&speeds[..4], &straightness[..5])),
            [false; 5]
        );
    }

    #[test]
    fn two_separate_runs_mark_only_the_qualifying_one() {
        let straightness = [None; 8];
        let speeds = [0.1, 0.1, 5.0, 0.1, 0.1, 0.1, 5.0];
        assert_eq!(
            distance(1.0, 3).stay_points(series(&speeds, &straightness)),
            [false, false, false, true, true, true, true, false]
        );
        assert_eq!(
            distance(1.0, 2).first_stay_point(series(&speeds, &straightness)),
            Some(0)
        );
    }

    #[test]
    fn no_intervals_or_unresolved_d_give_no_stay_points() {
        assert_eq!(distance(1.0, 1).stay_points(series(&[], &[None])), [false]);
        assert!(distance(1.0, 1).stay_points(series(&[], &[])).is_empty());
        let unresolved = DistanceRule {
            threshold: None,
            min_run: 1,
            auto: None,
        };
        assert_eq!(
            unresolved.stay_points(series(&[0.0, 0.0], &[None; 3])),
            [false; 3]
        );
    }

    #[test]
    fn straightness_stay_points_are_strictly_below_epsilon_and_never_undefined() {
        let rule = StraightnessParams {
            window: 2,
            epsilon: 0.2,
        };
        let straightness = [Some(0.0), Some(0.2), Some(0.19), None, None];
        assert_eq!(
            rule.stay_points(series(&[1.0; 4], &straightness)),
            [true, false, true, false, false]
        );
    }

    #[test]
    fn relative_detector_uses_the_examples_own_early_median() {
        let rule = RelativeParams {
            beta: 0.5,
            min_run: 2,
            early_window: 3,
        };
        // r = median(4, 2, 6) = 4; slow below 2.0 (strict): t = 5, 6.
        let speeds = [4.0, 2.0, 6.0, 2.0, 1.0, 1.9];
        assert_eq!(
            rule.stay_points(series(&speeds, &[None; 7])),
            [false, false, false, false, true, true, true]
        );
        // Even W: r = (4 + 2) / 2 = 3, slow below 1.5: t = 5 only, too short.
        let even = RelativeParams {
            early_window: 2,
            ..rule
        };
        assert_eq!(even.stay_points(series(&speeds, &[None; 7])), [false; 7]);
    }

    #[test]
    fn relative_detector_is_undefined_before_w_intervals_and_for_zero_early_speed() {
        let rule = RelativeParams {
            beta: 0.5,
            min_run: 1,
            early_window: 3,
        };
        assert_eq!(
            rule.stay_points(series(&[4.0, 0.0], &[None; 3])),
            [false; 3]
        );
        assert_eq!(
            rule.stay_points(series(&[4.0, 0.0, 1.0], &[None; 4])),
            [false, true, true, false]
        );
        // r = median(0, 0, 5) = 0: nothing can be slower, no stay points.
        assert_eq!(
            rule.stay_points(series(&[0.0, 0.0, 5.0, 0.0], &[None; 5])),
            [false; 5]
        );
    }

    #[test]
    fn auto_threshold_is_a_fraction_of_the_median_early_speed_of_all_examples() {
        let params = DistanceParams {
            threshold: Setting::Auto,
            auto_fraction: 0.5,
            auto_early_intervals: 2,
            min_run: 4,
        };
        // Early speeds: 1, 3 | 5, 7 | 9 (a short series): median 5.
        let speeds = vec![vec![1.0, 3.0, 100.0], vec![5.0, 7.0, 100.0], vec![9.0]];
        let rule = DistanceRule::resolve(&params, &speeds);
        assert_eq!(rule.threshold, Some(2.5));
        assert_eq!(rule.auto.unwrap().median_early_speed, Some(5.0));
        assert_eq!(
            DistanceRule::resolve(&params, &[vec![], vec![]]).threshold,
            None
        );
        let fixed = DistanceParams {
            threshold: Setting::Fixed(0.75),
            ..params
        };
        assert_eq!(
            DistanceRule::resolve(&fixed, &speeds),
            DistanceRule {
                threshold: Some(0.75),
                min_run: 4,
                auto: None
            }
        );
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn censored_median_counts_no_stay_point_as_infinity() {
        assert_eq!(censored_median_onset([Some(30), None, Some(10)]), Some(30));
        // Fewer than half dwell: none yet.
        assert_eq!(censored_median_onset([Some(10), None, None]), None);
        assert_eq!(censored_median_onset([Some(10), None, None, None]), None);
        // Exactly half dwell: the lower middle value, a real step.
        assert_eq!(
            censored_median_onset([None, Some(20), Some(10), None]),
            Some(20)
        );
        assert_eq!(censored_median_onset([Some(40)]), Some(40));
        assert_eq!(censored_median_onset([None]), None);
        assert_eq!(censored_median_onset([]), None);
    }
}
