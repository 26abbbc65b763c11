//! `trainer_state.json`: the Trainer writes it last, so its presence marks a finished save.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{read_json, CheckpointError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TrainerState {
    pub global_step: u64,
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub save_steps: Option<u64>,
    #[serde(default)]
    pub log_history: Vec<serde_json::Value>,
}

/// One evaluation logged by the Trainer: its step and every `eval_*` number.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRecord {
    pub step: u64,
    pub metrics: BTreeMap<String, f64>,
}

impl TrainerState {
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        read_json(path)
    }

    /// True once the run has reached its planned number of steps.
    pub fn is_finished(&self) -> bool {
        self.max_steps.is_some_and(|max| self.global_step >= max)
    }

    /// The evaluations in `log_history` (entries with `eval_*` keys), in logged order.
    pub fn evaluations(&self) -> Vec<EvalRecord> {
        self.log_history
            .iter()
            .filter_map(|entry| {
                let object = entry.as_object()?;
                let step = object.get("step")?.as_u64()?;
                let metrics: BTreeMap<String, f64> = object
                    .iter()
                    .filter(|(key, _)| key.starts_with("eval_"))
                    .filter_map(|(key, value)| Some((key.clone(), value.as_f64()?)))
                    .collect();
                (!metrics.is_empty()).then_some(EvalRecord { step, metrics })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_state_has_steps_and_per_class_f1() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf-tiny-run/checkpoint-480/trainer_state.json");
        let state = TrainerState::load(&path).unwrap();
        assert_eq!(
            (state.global_step, state.max_steps, state.save_steps),
            (480, Some(480), Some(40))
        );
        assert!(state.is_finished());
        let evaluations = state.evaluations();
        assert_eq!(evaluations.len(), 12);
        assert_eq!(evaluations[0].step, 40);
        assert_eq!(evaluations[0].metrics["eval_f1_games"], 0.2);
    }

    #[test]
    fn truncated_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trainer_state.json");
        std::fs::write(&path, "{\"global_step\": 4").unwrap();
        let message = TrainerState::load(&path).unwrap_err().to_string();
        assert!(message.contains("trainer_state.json") && message.contains("invalid JSON"));
    }
}
