//! The advice rules (`rules/*.toml`): thresholds for early/late and high/low,
//! the minimum evidence, the collapse trap and the message templates.
//!
//! Loading is pure: the caller reads the file and passes its text and name, so
//! errors can point at `file:line` without this module touching the disk.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::template::Template;

const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");
const DEFAULT_RULES_NAME: &str = "rules/default.toml (built in)";

/// The analytics detector whose class dwell onset decides early/late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    Distance,
    Straightness,
    Relative,
}

impl Detector {
    /// The key of `ClassEvidenceInput::dwell` this detector's onset is under.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Distance => "distance",
            Detector::Straightness => "straightness",
            Detector::Relative => "relative",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRules {
    pub min_checkpoints: usize,
    /// Ignored when the run's `max_steps` is unknown.
    pub min_planned_share: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DwellRules {
    pub detector: Detector,
    /// Early when onset <= early_fraction * max_steps (max_steps known).
    pub early_fraction: f64,
    /// Early when onset <= peer_factor * median onset of the dwelling classes
    /// (max_steps unknown).
    pub peer_factor: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct F1Rules {
    pub high_threshold: f64,
    pub smoothing_window: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CollapseRules {
    pub max_train_count: usize,
    pub max_share_of_median: f64,
    pub min_absorbed_share: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRules {
    /// A run-level finding needs more than this share of the decided
    /// classes in its pattern.
    pub majority: f64,
    /// ... and at least this many decided classes: with one or two, a shared
    /// quadrant says nothing about the run.
    pub min_classes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Messages {
    pub(super) healthy: Template,
    pub(super) redefine_class: Template,
    pub(super) redefine_class_unconfirmed_collapse: Template,
    pub(super) targeted_data: Template,
    pub(super) add_data: Template,
    pub(super) add_data_collapse: Template,
    pub(super) wait: Template,
    pub(super) run_level: Template,
    pub(super) run_capacity_limit: Template,
    pub(super) run_too_short: Template,
}

/// Validated rules. The thresholds are public so callers can show them; the
/// templates are only usable through `advise`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub evidence: EvidenceRules,
    pub dwell: DwellRules,
    pub f1: F1Rules,
    pub collapse: CollapseRules,
    pub run: RunRules,
    pub(super) messages: Messages,
}

/// A rules file that was refused: where, which key (when one can be named)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {}{message}", key_prefix(.key))]
pub struct RulesError {
    pub source_name: String,
    /// 1-based; 1 when the parser could not place the error.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted key, e.g. `f1.high_threshold`.
    pub key: Option<String>,
    pub message: String,
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default()
}

impl Default for Rules {
    fn default() -> Rules {
        // The built-in file is checked by a unit test; failing here would mean
        // a broken build, which no user input can cause.
        Rules::from_toml_str(DEFAULT_RULES, DEFAULT_RULES_NAME)
            .expect("the built-in rules/default.toml is valid")
    }
}

impl Rules {
    /// Parses and validates a rules file. `source_name` (usually the path) is
    /// only used in error messages.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            let (line, column) = line_col(text, span.start);
            let message = error.message().trim_end().to_owned();
            // A missing key's span is its table, so the key itself is only
            // in the message.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let key = match (key_at(text, span.start), missing) {
                (Some(table), Some(field)) => Some(format!("{table}.{field}")),
                (None, Some(field)) => Some(field.to_owned()),
                (found, None) => found,
            };
            RulesError {
                source_name: source_name.to_owned(),
                line,
                column,
                key,
                message,
            }
        })?;
        let check = Checker { text, source_name };
        let RulesFile {
            evidence,
            dwell,
            f1,
            collapse,
            run,
            messages,
        } = file;
        Ok(Rules {
            evidence: EvidenceRules {
                min_checkpoints: check
                    .at_least_one(&evidence.min_checkpoints, "evidence.min_checkpoints")?,
                min_planned_share: check
                    .share(&evidence.min_planned_share, "evidence.min_planned_share")?,
            },
            dwell: DwellRules {
                detector: dwell.detector,
                early_fraction: check.share(&dwell.early_fraction, "dwell.early_fraction")?,
                peer_factor: check.positive(&dwell.peer_factor, "dwell.peer_factor")?,
            },
            f1: F1Rules {
                high_threshold: check.share(&f1.high_threshold, "f1.high_threshold")?,
                smoothing_window: check
                    .at_least_one(&f1.smoothing_window, "f1.smoothing_window")?,
            },
            collapse: CollapseRules {
                max_train_count: collapse.max_train_count,
                max_share_of_median: check.share(
                    &collapse.max_share_of_median,
                    "collapse.max_share_of_median",
                )?,
                min_absorbed_share: check
                    .share(&collapse.min_absorbed_share, "collapse.min_absorbed_share")?,
            },
            run: RunRules {
                majority: check.share(&run.majority, "run.majority")?,
                min_classes: check.at_least_one(&run.min_classes, "run.min_classes")?,
            },
            messages: Messages {
                healthy: check.template(&messages.healthy, "messages.healthy")?,
                redefine_class: check
                    .template(&messages.redefine_class, "messages.redefine_class")?,
                redefine_class_unconfirmed_collapse: check.template(
                    &messages.redefine_class_unconfirmed_collapse,
                    "messages.redefine_class_unconfirmed_collapse",
                )?,
                targeted_data: check.template(&messages.targeted_data, "messages.targeted_data")?,
                add_data: check.template(&messages.add_data, "messages.add_data")?,
                add_data_collapse: check
                    .template(&messages.add_data_collapse, "messages.add_data_collapse")?,
                wait: check.template(&messages.wait, "messages.wait")?,
                run_level: check.template(&messages.run_level, "messages.run_level")?,
                run_capacity_limit: check
                    .template(&messages.run_capacity_limit, "messages.run_capacity_limit")?,
                run_too_short: check.template(&messages.run_too_short, "messages.run_too_short")?,
            },
        })
    }
}

// The file as written, with spans so that a semantically bad value can be
// reported at its line. Every key is required: a replacement rules file that
// silently inherited defaults for a misspelt section would be worse than one
// that is refused.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    evidence: EvidenceFile,
    dwell: DwellFile,
    f1: F1File,
    collapse: CollapseFile,
    run: RunFile,
    messages: MessagesFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFile {
    majority: Spanned<f64>,
    min_classes: Spanned<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceFile {
    min_checkpoints: Spanned<usize>,
    min_planned_share: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DwellFile {
    detector: Detector,
    early_fraction: Spanned<f64>,
    peer_factor: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct F1File {
    high_threshold: Spanned<f64>,
    smoothing_window: Spanned<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollapseFile {
    max_train_count: usize,
    max_share_of_median: Spanned<f64>,
    min_absorbed_share: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesFile {
    healthy: Spanned<String>,
    redefine_class: Spanned<String>,
    redefine_class_unconfirmed_collapse: Spanned<String>,
    targeted_data: Spanned<String>,
    add_data: Spanned<String>,
    add_data_collapse: Spanned<String>,
    wait: Spanned<String>,
    run_level: Spanned<String>,
    run_capacity_limit: Spanned<String>,
    run_too_short: Spanned<String>,
}

struct Checker<'a> {
    text: &'a str,
    source_name: &'a str,
}

impl Checker<'_> {
    fn refuse(&self, span: Range<usize>, key: &str, message: String) -> RulesError {
        let (line, column) = line_col(self.text, span.start);
        RulesError {
            source_name: self.source_name.to_owned(),
            line,
            column,
            key: Some(key.to_owned()),
            message,
        }
    }

    fn share(&self, value: &Spanned<f64>, key: &str) -> Result<f64, RulesError> {
        let v = *value.get_ref();
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.refuse(value.span(), key, format!("{v} is outside 0..1")))
        }
    }

    fn positive(&self, value: &Spanned<f64>, key: &str) -> Result<f64, RulesError> {
        let v = *value.get_ref();
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.refuse(value.span(), key, format!("{v} must be a positive number")))
        }
    }

    fn at_least_one(&self, value: &Spanned<usize>, key: &str) -> Result<usize, RulesError> {
        match *value.get_ref() {
            0 => Err(self.refuse(value.span(), key, "must be at least 1".to_owned())),
            v => Ok(v),
        }
    }

    fn template(&self, value: &Spanned<String>, key: &str) -> Result<Template, RulesError> {
        Template::parse(value.get_ref())
            .map_err(|error| self.refuse(value.span(), key, error.to_string()))
    }
}

/// 1-based line and character column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key written on the line holding `offset` (e.g. `f1.bogus` for
/// `bogus = 1` under `[f1]`), or the table name on a `[table]` line. toml's
/// errors carry a span but no key, and a user fixing a file thinks in keys.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    if let Some(table) = table_header(line) {
        return Some(table.to_owned());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| table_header(l.trim()));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

fn table_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(inner[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_with(from: &str, to: &str) -> String {
        assert!(DEFAULT_RULES.contains(from), "default rules lack {from:?}");
        DEFAULT_RULES.replacen(from, to, 1)
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn built_in_rules_parse_with_documented_defaults() {
        let rules = Rules::from_toml_str(DEFAULT_RULES, "default.toml").unwrap();
        assert_eq!(
            rules.evidence,
            EvidenceRules {
                min_checkpoints: 3,
                min_planned_share: 0.2
            }
        );
        assert_eq!(
            rules.dwell,
            DwellRules {
                detector: Detector::Distance,
                early_fraction: 0.5,
                peer_factor: 1.0
            }
        );
        assert_eq!(
            rules.f1,
            F1Rules {
                high_threshold: 0.8,
                smoothing_window: 3
            }
        );
        assert_eq!(
            rules.collapse,
            CollapseRules {
                max_train_count: 50,
                max_share_of_median: 0.25,
                min_absorbed_share: 0.2
            }
        );
        assert_eq!(
            rules.run,
            RunRules {
                majority: 0.5,
                min_classes: 3
            }
        );
        assert_eq!(Rules::default(), rules);
    }

    #[test]
    fn out_of_range_value_names_key_and_line() {
        let text = default_with("high_threshold = 0.8", "high_threshold = 1.5");
        let error = Rules::from_toml_str(&text, "my.toml").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("f1.high_threshold"));
        assert_eq!(error.line, line_of(&text, "high_threshold = 1.5"));
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("my.toml:{}:", error.line)),
            "{shown}"
        );
        assert!(
            shown.contains("`f1.high_threshold`: 1.5 is outside 0..1"),
            "{shown}"
        );
    }

    #[test]
    fn zero_window_is_refused() {
        let text = default_with("smoothing_window = 3", "smoothing_window = 0");
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("f1.smoothing_window"));
        assert_eq!(error.line, line_of(&text, "smoothing_window = 0"));
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = default_with(
            "smoothing_window = 3",
            "smoothing_window = 3\nsmoothing = 5",
        );
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("f1.smoothing"));
        assert_eq!(error.line, line_of(&text, "smoothing = 5"));
        assert!(
            error.message.contains("unknown field `smoothing`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_table_is_refused() {
        let text = format!("{DEFAULT_RULES}\n[extras]\nx = 1\n");
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("extras"));
        assert_eq!(error.line, line_of(&text, "[extras]"));
    }

    #[test]
    fn unknown_detector_is_refused() {
        let text = default_with("detector = \"distance\"", "detector = \"speed\"");
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("dwell.detector"));
        assert_eq!(error.line, line_of(&text, "detector = \"speed\""));
    }

    #[test]
    fn wrong_type_is_refused_with_its_key() {
        let text = default_with("min_checkpoints = 3", "min_checkpoints = \"three\"");
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("evidence.min_checkpoints"));
        assert_eq!(error.line, line_of(&text, "min_checkpoints = \"three\""));
    }

    #[test]
    fn syntax_error_is_placed() {
        let text = default_with("peer_factor = 1.0", "peer_factor = = 1.0");
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert_eq!(error.line, line_of(&text, "peer_factor = = 1.0"));
    }

    #[test]
    fn missing_key_is_refused() {
        let text = default_with("peer_factor = 1.0\n", "");
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert!(
            error.message.contains("missing field `peer_factor`"),
            "{error}"
        );
        assert_eq!(error.key.as_deref(), Some("dwell.peer_factor"));
        assert_eq!(error.line, line_of(&text, "[dwell]"));
    }

    #[test]
    fn template_with_unknown_placeholder_names_the_key() {
        let text = default_with("wait = \"no advice", "wait = \"{lable} no advice");
        let error = Rules::from_toml_str(&text, "r.toml").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("messages.wait"));
        assert_eq!(error.line, line_of(&text, "{lable}"));
        assert!(
            error.message.contains("unknown placeholder `{lable}`"),
            "{error}"
        );
    }
}
