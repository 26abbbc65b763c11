//! `config.json`: the architecture and the label names.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{read_json, CheckpointError};
use crate::probe::LabelSet;

pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Label names by class id; keys are decimal strings in the file.
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_type_vocab_size() -> usize {
    2
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let value: serde_json::Value = read_json(path)?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("(none)");
        if !SUPPORTED_MODEL_TYPES.contains(&model_type) {
            return Err(CheckpointError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "model_type {model_type:?} is not supported; supported: {}",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ),
            });
        }
        let config: ModelConfig =
            serde_json::from_value(value).map_err(|e| CheckpointError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config
            .validate()
            .map_err(|message| CheckpointError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.intermediate_size == 0 {
            return Err(
                "hidden_size, num_attention_heads and intermediate_size must be positive".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(kind) = &self.position_embedding_type {
            if kind != "absolute" {
                return Err(format!(
                    "position_embedding_type {kind:?} is not supported; supported: absolute"
                ));
            }
        }
        Ok(())
    }

    /// The label set in id order; `None` for a model without a classification head's labels.
    pub fn labels(&self) -> Result<Option<LabelSet>, String> {
        let Some(id2label) = &self.id2label else {
            return Ok(None);
        };
        let mut by_id: Vec<(usize, String)> = Vec::with_capacity(id2label.len());
        for (id, name) in id2label {
            let id: usize = id
                .parse()
                .map_err(|_| format!("id2label key {id:?} is not a class id"))?;
            by_id.push((id, name.clone()));
        }
        by_id.sort();
        if by_id.iter().enumerate().any(|(i, (id, _))| i != *id) {
            return Err("id2label ids are not 0..n-1".into());
        }
        Ok(Some(LabelSet {
            names: by_id.into_iter().map(|(_, name)| name).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
        let path = dir.path().join("config.json");
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn fixture_config_parses_with_labels_in_id_order() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf-tiny-run/checkpoint-40/config.json");
        let config = ModelConfig::load(&path).unwrap();
        assert_eq!(config.hidden_size, 64);
        let labels = config.labels().unwrap().unwrap();
        assert_eq!(labels.names[0], "games");
        assert_eq!(labels.names[8], "database");
    }

    #[test]
    fn unsupported_model_type_names_the_supported_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, r#"{"model_type": "roberta", "hidden_size": 8}"#);
        let message = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("\"roberta\" is not supported; supported: bert"));
        assert!(message.contains("config.json"));
    }

    #[test]
    fn a_zero_size_is_refused_before_any_weight_is_read() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf-tiny-run/checkpoint-40/config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        config["intermediate_size"] = 0.into();
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, &config.to_string());
        let message = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("intermediate_size must be positive"),
            "{message}"
        );
    }

    #[test]
    fn missing_fields_and_bad_json_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, r#"{"model_type": "bert"}"#);
        let message = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("config.json") && message.contains("hidden_size"));
        let path = write_config(&dir, "{not json");
        assert!(ModelConfig::load(&path)
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
    }
}
