//! Parameters of the trajectory analytics: the `[analysis]` TOML section.
//!
//! Every default lives in [`DEFAULT_ANALYSIS_TOML`] and in the `Default` impls
//! below; a test keeps the two identical.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `[analysis]` section with every default spelled out. A user's section
/// may give any subset of these keys; the rest keep these values.
pub const DEFAULT_ANALYSIS_TOML: &str = r#"[analysis]
# "full": the hidden vectors as they are; "pca2": 2-D PCA fitted on the latest
# checkpoint (recomputed whenever a newer checkpoint arrives).
space = "full"
# Steps per reference interval Δ that speeds are normalised to.
# "auto": the most common checkpoint interval of the run, the smallest on a tie.
reference_interval = "auto"

# Distance detector (D, T): interval t is slow when w_t < D; T consecutive
# slow intervals make a stay.
[analysis.distance]
# D. "auto": auto_fraction × the median of every probe example's speeds over
# the first auto_early_intervals intervals (the run's own early speed), so it
# means the same for any model scale. A number means exactly that speed.
threshold = "auto"
auto_fraction = 0.5
auto_early_intervals = 3
# T
min_run = 4

# Straightness detector (k, ε): S_t = |v_{t+k} - v_t| / path length over k
# intervals; checkpoint t is a stay point when S_t < ε.
[analysis.straightness]
# k
window = 5
# ε. In many dimensions, jitter around a fixed point gives S ≈ 1/k (0.2 for
# k = 5), a random walk S ≈ 1/√k (0.45), directed motion S → 1; 0.3 ≈ k^(-3/4)
# separates dwelling from drifting noise.
epsilon = 0.3

# Relative detector (β, T, W): interval t is slow when w_t < β·r, r being the
# median of the example's own first W speeds.
[analysis.relative]
# β
beta = 0.5
# T
min_run = 3
# W
early_window = 3
"#;

/// `[analysis]`: the space, the reference interval and the three detectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisParams {
    pub space: Space,
    /// Δ in steps; `Auto` is the run's most common interval, smallest on a tie.
    pub reference_interval: Setting<u64>,
    pub distance: DistanceParams,
    pub straightness: StraightnessParams,
    pub relative: RelativeParams,
}

impl Default for AnalysisParams {
    fn default() -> Self {
        Self {
            space: Space::Full,
            reference_interval: Setting::Auto,
            distance: DistanceParams::default(),
            straightness: StraightnessParams::default(),
            relative: RelativeParams::default(),
        }
    }
}

/// The space the trajectories are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Space {
    Full,
    Pca2,
}

/// `[analysis.distance]`: the conventional stay-point rule (D, T).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistanceParams {
    /// D. `Auto` derives it from the run's early speeds (see the module docs
    /// and `docs/ANALYTICS.md`); a number is used as is.
    pub threshold: Setting<f64>,
    /// Only for `threshold = "auto"`: the share of the median early speed.
    pub auto_fraction: f64,
    /// Only for `threshold = "auto"`: how many leading intervals count as early.
    pub auto_early_intervals: usize,
    /// T: consecutive slow intervals needed for a stay.
    pub min_run: usize,
}

impl Default for DistanceParams {
    fn default() -> Self {
        Self {
            threshold: Setting::Auto,
            auto_fraction: 0.5,
            auto_early_intervals: 3,
            min_run: 4,
        }
    }
}

/// `[analysis.straightness]`: the paper's detector (k, ε). Also the rule
/// applied to straightness series, as is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StraightnessParams {
    /// k: intervals per straightness window.
    pub window: usize,
    /// ε: a checkpoint is a stay point when its straightness is below this.
    pub epsilon: f64,
}

impl Default for StraightnessParams {
    fn default() -> Self {
        Self {
            window: 5,
            epsilon: 0.3,
        }
    }
}

/// `[analysis.relative]`: the scale-free detector (β, T, W). Also the rule
/// applied to speed series, as is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelativeParams {
    /// β: slow means below this share of the example's own early speed.
    pub beta: f64,
    /// T: consecutive slow intervals needed for a stay.
    pub min_run: usize,
    /// W: the early speed is the median of the first W speeds.
    pub early_window: usize,
}

impl Default for RelativeParams {
    fn default() -> Self {
        Self {
            beta: 0.5,
            min_run: 3,
            early_window: 3,
        }
    }
}

/// A value the user may leave to the analysis (`"auto"`) or fix (a number).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting<T> {
    Auto,
    Fixed(T),
}

const AUTO: &str = "auto";

impl<T: Serialize> Serialize for Setting<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Setting::Auto => serializer.serialize_str(AUTO),
            Setting::Fixed(value) => value.serialize(serializer),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Setting<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Word(String),
            Value(T),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Word(word) if word == AUTO => Ok(Setting::Auto),
            Raw::Word(word) => Err(serde::de::Error::custom(format!(
                "expected \"auto\" or a number, found \"{word}\""
            ))),
            Raw::Value(value) => Ok(Setting::Fixed(value)),
        }
    }
}

/// A parameter outside its domain, named by its TOML key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("analysis.{key} {requirement}")]
pub struct InvalidParameter {
    pub key: &'static str,
    pub requirement: &'static str,
}

impl AnalysisParams {
    /// Rejects values for which the SPEC's rules are meaningless (a zero-length
    /// window, a negative or non-finite threshold), naming the key.
    pub fn validate(&self) -> Result<(), InvalidParameter> {
        let check = |ok: bool, key, requirement| {
            if ok {
                Ok(())
            } else {
                Err(InvalidParameter { key, requirement })
            }
        };
        const AT_LEAST_ONE: &str = "must be at least 1";
        const NON_NEGATIVE: &str = "must be a finite number >= 0";
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if let Setting::Fixed(delta) = self.reference_interval {
            check(delta >= 1, "reference_interval", AT_LEAST_ONE)?;
        }
        let distance = &self.distance;
        if let Setting::Fixed(threshold) = distance.threshold {
            check(non_negative(threshold), "distance.threshold", NON_NEGATIVE)?;
        }
        check(
            non_negative(distance.auto_fraction),
            "distance.auto_fraction",
            NON_NEGATIVE,
        )?;
        check(
            distance.auto_early_intervals >= 1,
            "distance.auto_early_intervals",
            AT_LEAST_ONE,
        )?;
        check(distance.min_run >= 1, "distance.min_run", AT_LEAST_ONE)?;
        check(
            self.straightness.window >= 1,
            "straightness.window",
            AT_LEAST_ONE,
        )?;
        check(
            non_negative(self.straightness.epsilon),
            "straightness.epsilon",
            NON_NEGATIVE,
        )?;
        check(
            non_negative(self.relative.beta),
            "relative.beta",
            NON_NEGATIVE,
        )?;
        check(self.relative.min_run >= 1, "relative.min_run", AT_LEAST_ONE)?;
        check(
            self.relative.early_window >= 1,
            "relative.early_window",
            AT_LEAST_ONE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Document {
        analysis: AnalysisParams,
    }

    fn parse(text: &str) -> Result<AnalysisParams, toml::de::Error> {
        toml::from_str::<Document>(text).map(|document| document.analysis)
    }

    #[test]
    fn default_toml_is_the_default() {
        assert_eq!(
            parse(DEFAULT_ANALYSIS_TOML).unwrap(),
            AnalysisParams::default()
        );
        assert_eq!(AnalysisParams::default().validate(), Ok(()));
    }

    #[test]
    fn partial_section_keeps_other_defaults_and_numbers_mean_numbers() {
        let params = parse(
            "[analysis]\nspace = \"pca2\"\nreference_interval = 50\n\
             [analysis.distance]\nthreshold = 0.25\n",
        )
        .unwrap();
        assert_eq!(params.space, Space::Pca2);
        assert_eq!(params.reference_interval, Setting::Fixed(50));
        assert_eq!(params.distance.threshold, Setting::Fixed(0.25));
        assert_eq!(params.distance.min_run, 4);
        assert_eq!(params.straightness, StraightnessParams::default());
        let integer = parse("[analysis.distance]\nthreshold = 2\n").unwrap();
        assert_eq!(integer.distance.threshold, Setting::Fixed(2.0));
    }

    #[test]
    fn unknown_keys_and_words_are_rejected() {
        assert!(parse("[analysis]\nspeed = 1\n").is_err());
        assert!(parse("[analysis.relative]\nwindow = 3\n").is_err());
        let error = parse("[analysis.distance]\nthreshold = \"big\"\n").unwrap_err();
        assert!(
            error.to_string().contains("\"auto\" or a number"),
            "{error}"
        );
    }

    #[test]
    fn out_of_domain_values_name_their_key() {
        let mut params = AnalysisParams::default();
        params.straightness.window = 0;
        assert_eq!(
            params.validate().unwrap_err().to_string(),
            "analysis.straightness.window must be at least 1"
        );
        let mut params = AnalysisParams::default();
        params.distance.threshold = Setting::Fixed(f64::NAN);
        assert_eq!(params.validate().unwrap_err().key, "distance.threshold");
        let mut params = AnalysisParams::default();
        params.relative.beta = -0.1;
        assert_eq!(params.validate().unwrap_err().key, "relative.beta");
    }
}
