//! Finding `checkpoint-<step>` folders and deciding which are complete.

use std::path::{Path, PathBuf};

use super::{CheckpointError, TrainerState, WeightFiles};

/// A direct subdirectory named `checkpoint-<step>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDir {
    pub step: u64,
    pub path: PathBuf,
}

#[derive(Debug)]
pub enum Completeness {
    Complete {
        weights: WeightFiles,
        state: TrainerState,
    },
    /// Still being written (or abandoned); the reason says what is missing.
    Incomplete { reason: String },
}

/// The checkpoints of a run, in ascending step order.
#[derive(Debug, Default)]
pub struct Discovery {
    pub checkpoints: Vec<CheckpointDir>,
}

/// Lists `RUN_DIR/checkpoint-<step>` folders; anything else (`tmp-checkpoint-*`,
/// `checkpoint-best`, files) is not a checkpoint and is ignored.
pub fn discover(run_dir: &Path) -> Result<Discovery, CheckpointError> {
    let entries = std::fs::read_dir(run_dir).map_err(|e| CheckpointError::Io {
        path: run_dir.to_path_buf(),
        error: e,
    })?;
    let mut checkpoints = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CheckpointError::Io {
            path: run_dir.to_path_buf(),
            error: e,
        })?;
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(parse_checkpoint_name) else {
            continue;
        };
        // A symbolic link to a folder is a checkpoint like any other (a run assembled
        // from links); one removed between read_dir and here is simply no longer there.
        if entry.path().is_dir() {
            checkpoints.push(CheckpointDir {
                step,
                path: entry.path(),
            });
        }
    }
    checkpoints.sort_by_key(|c| c.step);
    Ok(Discovery { checkpoints })
}

pub(crate) fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl CheckpointDir {
    pub fn name(&self) -> String {
        format!("checkpoint-{}", self.step)
    }

    /// SPEC §2.1: complete when `trainer_state.json` exists and parses and the weights exist.
    /// Whether the weights have stopped changing is the watcher's concern (it compares
    /// sizes and mtimes over a settle interval); the Trainer writes the state file last.
    pub fn completeness(&self) -> Result<Completeness, CheckpointError> {
        if !self.path.is_dir() {
            return Err(CheckpointError::Vanished {
                path: self.path.clone(),
            });
        }
        let state_path = self.path.join("trainer_state.json");
        if !state_path.is_file() {
            return Ok(Completeness::Incomplete {
                reason: "no trainer_state.json yet".into(),
            });
        }
        // The Trainer writes trainer_state.json in place: one that does not parse yet is
        // still being written, and one that never parses keeps the checkpoint incomplete.
        let state = match TrainerState::load(&state_path) {
            Ok(state) => state,
            Err(error @ CheckpointError::Vanished { .. }) => return Err(error),
            Err(error) => {
                return Ok(Completeness::Incomplete {
                    reason: error.to_string(),
                })
            }
        };
        let Some(weights) = WeightFiles::find(&self.path)? else {
            return Err(CheckpointError::NoWeights {
                path: self.path.clone(),
            });
        };
        Ok(Completeness::Complete { weights, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_checkpoint_step_folders_in_step_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "checkpoint-120",
            "checkpoint-40",
            "tmp-checkpoint-160",
            "checkpoint-best",
            "checkpoint-",
            "checkpoint-8",
            "runs",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("checkpoint-9"), "a file").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("checkpoint-200")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("checkpoint-300"))
            .unwrap();
        let steps: Vec<u64> = discover(dir.path())
            .unwrap()
            .checkpoints
            .iter()
            .map(|c| c.step)
            .collect();
        // The link to a folder counts; the dangling one does not.
        assert_eq!(steps, vec![8, 40, 120, 200]);
    }

    #[test]
    fn incomplete_without_state_and_error_without_weights() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = CheckpointDir {
            step: 5,
            path: dir.path().join("checkpoint-5"),
        };
        assert!(checkpoint.completeness().unwrap_err().is_vanished());
        std::fs::create_dir(&checkpoint.path).unwrap();
        std::fs::write(checkpoint.path.join("model.safetensors"), b"x").unwrap();
        assert!(matches!(
            checkpoint.completeness().unwrap(),
            Completeness::Incomplete { .. }
        ));
        std::fs::write(checkpoint.path.join("trainer_state.json"), "").unwrap();
        assert!(matches!(
            checkpoint.completeness().unwrap(),
            Completeness::Incomplete { .. }
        ));
        std::fs::remove_file(checkpoint.path.join("model.safetensors")).unwrap();
        std::fs::write(
            checkpoint.path.join("trainer_state.json"),
            r#"{"global_step": 5}"#,
        )
        .unwrap();
        assert!(matches!(
            checkpoint.completeness(),
            Err(CheckpointError::NoWeights { .. })
        ));
    }
}
