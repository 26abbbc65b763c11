//! The configuration file (`--config dwell.toml`): every tunable with its documented
//! default. Command-line flags override what the file says.

use serde::Deserialize;

use crate::analyze::params::AnalysisParams;
use crate::sinks::WebhookUrl;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DwellConfig {
    pub analysis: AnalysisParams,
    pub watch: WatchSection,
}

/// `[watch]`: the daemon's settings. A flag or its environment variable wins over these.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchSection {
    /// Seconds between rescans of the run directory (default 10).
    pub poll_seconds: Option<f64>,
    /// Seconds a checkpoint's files must stay unchanged before it is read (default 2).
    pub settle_seconds: Option<f64>,
    pub exit_on_finish: Option<bool>,
    /// A Slack incoming-webhook URL: a secret, shown in logs as its host only.
    pub slack_webhook: Option<WebhookUrl>,
    /// A URL that receives the recommendations as JSON.
    pub webhook: Option<WebhookUrl>,
    /// Consecutive checkpoints a class's new action must hold before it is announced
    /// (default 2).
    pub hold_checkpoints: Option<usize>,
    /// Least seconds between two advice messages (default 300).
    pub min_interval_seconds: Option<f64>,
    /// Where to serve `/metrics` and `/healthz` (default: nowhere).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// MiB that copies of checkpoints may take when hard links are impossible (default 4096).
    pub secure_copy_limit_mib: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

impl DwellConfig {
    /// Parses a TOML configuration; errors name the file, the line and the key.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let config: DwellConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_string(),
            message: located_message(text, &e),
        })?;
        config
            .analysis
            .validate()
            .map_err(|e| ConfigError::Invalid {
                source_name: source_name.to_string(),
                message: e.to_string(),
            })?;
        Ok(config)
    }
}

/// toml's message with the 1-based line number where its span starts.
pub fn located_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_string();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::params::DEFAULT_ANALYSIS_TOML;

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let parsed = DwellConfig::from_toml_str(DEFAULT_ANALYSIS_TOML, "defaults").unwrap();
        assert_eq!(parsed, DwellConfig::default());
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../examples/dwell.toml");
        let config = DwellConfig::from_toml_str(text, "examples/dwell.toml").unwrap();
        assert_eq!(config.watch.poll_seconds, Some(10.0));
        assert_eq!(config.analysis, AnalysisParams::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let message =
            DwellConfig::from_toml_str("[analysis]\nspace = \"full\"\nspeed = 3\n", "dwell.toml")
                .unwrap_err()
                .to_string();
        assert!(message.starts_with("dwell.toml: line 3"), "{message}");
        assert!(message.contains("speed"), "{message}");
        let message = DwellConfig::from_toml_str(
            "[analysis.straightness]\nwindow = \"five\"\n",
            "dwell.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("line 2"), "{message}");
    }
}
