//! The configuration file (`--config dwell.toml`): every tunable with its documented
//! default. Command-line flags override what the file says.

use serde::Deserialize;

use crate::analyze::params::AnalysisParams;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DwellConfig {
    pub analysis: AnalysisParams,
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
