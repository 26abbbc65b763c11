//! Gaps in the trajectory: checkpoints that were seen in the run directory but removed
//! (the Trainer's rotation) before they could be secured or read. Kept in `gaps.json`
//! so that the report lists them after a restart too.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{StateDir, StoreError};

const GAPS_FILE: &str = "gaps.json";
const GAPS_SCHEMA: &str = "dwell.gaps/1";

/// The file is read, extended and replaced; the watcher's two threads may both record.
static RECORDING: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub step: u64,
    /// Where the checkpoint was.
    pub checkpoint: PathBuf,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct GapsFile {
    schema: String,
    gaps: Vec<Gap>,
}

impl StateDir {
    /// Every gap recorded, in step order.
    pub fn gaps(&self) -> Result<Vec<Gap>, StoreError> {
        let Some(bytes) = self.read_file(GAPS_FILE)? else {
            return Ok(Vec::new());
        };
        let file: GapsFile = serde_json::from_slice(&bytes)
            .ok()
            .filter(|file: &GapsFile| file.schema == GAPS_SCHEMA)
            .ok_or_else(|| StoreError::Corrupt {
                path: self.root().join(GAPS_FILE),
                message: format!("not a {GAPS_SCHEMA} file"),
            })?;
        Ok(file.gaps)
    }

    /// Records a gap once per step; true if it was not known yet.
    pub fn record_gap(&self, gap: Gap) -> Result<bool, StoreError> {
        let _one_at_a_time = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
        let mut gaps = self.gaps()?;
        if gaps.iter().any(|known| known.step == gap.step) {
            return Ok(false);
        }
        gaps.push(gap);
        gaps.sort_by_key(|gap| gap.step);
        let file = GapsFile {
            schema: GAPS_SCHEMA.into(),
            gaps,
        };
        let json = serde_json::to_vec_pretty(&file).expect("gaps serialise");
        self.write_file(GAPS_FILE, &json)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_recorded_once_in_step_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: dir.path().to_path_buf(),
        };
        assert!(state.gaps().unwrap().is_empty());
        let gap = |step| Gap {
            step,
            checkpoint: PathBuf::from(format!("run/checkpoint-{step}")),
            reason: "removed".into(),
        };
        assert!(state.record_gap(gap(80)).unwrap());
        assert!(state.record_gap(gap(40)).unwrap());
        assert!(!state.record_gap(gap(80)).unwrap());
        let steps: Vec<u64> = state.gaps().unwrap().iter().map(|g| g.step).collect();
        assert_eq!(steps, [40, 80]);
        std::fs::write(dir.path().join(GAPS_FILE), "[1]").unwrap();
        let message = state.gaps().unwrap_err().to_string();
        assert!(message.contains("gaps.json"), "{message}");
    }
}
