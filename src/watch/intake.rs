//! The watcher's checkpoint source: lists the run directory and secures each checkpoint
//! the moment its `trainer_state.json` parses (the Trainer writes it last), on a thread
//! of its own, so that neither a slow embedding pass nor a report in the making delays
//! it. The pipeline then settles and embeds from the secured copy, whatever the
//! rotation does to the original. A checkpoint seen but removed before it could be
//! secured is a gap: logged at warn with its step and recorded for the report.
//!
//! The seam for other sources (a polling lister for object storage): `scan` lists,
//! applies the "complete" rule and secures; what wakes it is the caller's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::checkpoint::{discover, CheckpointError, Completeness};
use crate::store::{Gap, SecureOutcome, SecuredCheckpoints, StateDir, StoreError};

use super::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What one scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Checkpoint folders whose `trainer_state.json` does not parse yet.
    pub being_written: usize,
    /// Steps secured by this scan.
    pub secured: Vec<u64>,
    /// Steps that vanished before they could be secured.
    pub gaps: Vec<u64>,
}

pub struct Intake {
    run_dir: PathBuf,
    state: StateDir,
    secured: SecuredCheckpoints,
    metrics: Metrics,
    /// Folders seen and neither secured nor stored yet, by step.
    pending: BTreeMap<u64, PathBuf>,
    /// Steps already told to be over the copy limit (told once, read from the run).
    over_limit: std::collections::BTreeSet<u64>,
    known: std::collections::BTreeSet<u64>,
}

impl Intake {
    pub fn new(
        run_dir: PathBuf,
        state: StateDir,
        secured: SecuredCheckpoints,
        metrics: Metrics,
    ) -> Self {
        Self {
            run_dir,
            state,
            secured,
            metrics,
            pending: BTreeMap::new(),
            over_limit: Default::default(),
            known: Default::default(),
        }
    }

    /// Lists the run directory once and secures every complete checkpoint that is
    /// neither stored nor secured. A run directory that does not exist yet holds nothing.
    pub fn scan(&mut self) -> Result<Scan, IntakeError> {
        let mut scan = Scan::default();
        if !self.run_dir.is_dir() {
            return Ok(scan);
        }
        let stored = self.state.stored_steps()?;
        let secured = self.secured.steps()?;
        let listed = discover(&self.run_dir)?.checkpoints;
        let mut still_pending = BTreeMap::new();
        for checkpoint in listed {
            if self.known.insert(checkpoint.step) {
                self.metrics.checkpoint_seen();
            }
            if stored.contains(&checkpoint.step) || secured.contains(&checkpoint.step) {
                continue;
            }
            match checkpoint.completeness() {
                Ok(Completeness::Complete { .. }) => {}
                Ok(Completeness::Incomplete { .. }) => {
                    scan.being_written += 1;
                    still_pending.insert(checkpoint.step, checkpoint.path);
                    continue;
                }
                Err(error) if error.is_vanished() => {
                    still_pending.insert(checkpoint.step, checkpoint.path);
                    continue;
                }
                // Not readable as it is (no weights): the pipeline names it as skipped.
                Err(_) => continue,
            }
            match self.secured.secure(checkpoint.step, &checkpoint.path)? {
                SecureOutcome::Linked | SecureOutcome::Copied { .. } => {
                    tracing::debug!(step = checkpoint.step, "secured");
                    self.metrics.secured();
                    scan.secured.push(checkpoint.step);
                }
                SecureOutcome::OverCopyLimit { needed, limit } => {
                    if self.over_limit.insert(checkpoint.step) {
                        tracing::warn!(
                            step = checkpoint.step,
                            needed,
                            limit,
                            "cannot link into the state directory (another file system?) and a copy would pass --secure-copy-limit; reading this checkpoint in place, where rotation may remove it first"
                        );
                    }
                }
                SecureOutcome::Vanished => {
                    still_pending.insert(checkpoint.step, checkpoint.path);
                }
            }
        }
        let secured = self.secured.steps()?;
        let seen = std::mem::take(&mut self.pending)
            .into_iter()
            .chain(still_pending);
        for (step, path) in seen {
            if secured.contains(&step) {
                continue;
            }
            if path.is_dir() {
                self.pending.insert(step, path);
                continue;
            }
            if stored.contains(&step) || scan.gaps.contains(&step) {
                continue;
            }
            let gap = Gap {
                step,
                checkpoint: path.clone(),
                reason:
                    "removed by the run (save_total_limit rotation?) before it could be secured"
                        .into(),
            };
            if self.state.record_gap(gap)? {
                tracing::warn!(step, checkpoint = %path.display(), "checkpoint removed before it could be secured: a gap in the trajectory");
                self.metrics.gap();
            }
            scan.gaps.push(step);
        }
        Ok(scan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(dir: &std::path::Path) -> Intake {
        let manifest = crate::store::one_class_manifest(1);
        let state = StateDir::open(&dir.join("state"), &manifest).unwrap();
        let secured = SecuredCheckpoints::open(&state, 0).unwrap();
        Intake::new(dir.join("run"), state, secured, Metrics::new())
    }

    fn write(dir: &std::path::Path, step: u64, files: &[(&str, &str)]) {
        let path = dir.join(format!("run/checkpoint-{step}"));
        std::fs::create_dir_all(&path).unwrap();
        for (name, text) in files {
            std::fs::write(path.join(name), text).unwrap();
        }
    }

    #[test]
    fn secured_once_complete_and_a_gap_when_removed_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(dir.path());
        assert_eq!(
            intake.scan().unwrap(),
            Scan::default(),
            "no run directory yet"
        );
        write(
            dir.path(),
            40,
            &[("config.json", "{"), ("model.safetensors", "x")],
        );
        write(
            dir.path(),
            80,
            &[("config.json", "{}"), ("model.safetensors", "y")],
        );
        let scan = intake.scan().unwrap();
        assert_eq!((scan.being_written, scan.secured.len()), (2, 0));
        write(
            dir.path(),
            40,
            &[("trainer_state.json", r#"{"global_step": 40}"#)],
        );
        // Still half-written: not a state yet.
        write(dir.path(), 80, &[("trainer_state.json", r#"{"global_st"#)]);
        let scan = intake.scan().unwrap();
        assert_eq!((scan.being_written, scan.secured.clone()), (1, vec![40]));
        std::fs::remove_dir_all(dir.path().join("run/checkpoint-40")).unwrap();
        std::fs::remove_dir_all(dir.path().join("run/checkpoint-80")).unwrap();
        let scan = intake.scan().unwrap();
        assert_eq!(scan.gaps, vec![80], "40 was secured in time");
        let gaps = intake.state.gaps().unwrap();
        assert_eq!(gaps.iter().map(|g| g.step).collect::<Vec<_>>(), [80]);
        assert!(intake.scan().unwrap().gaps.is_empty(), "recorded once");
    }
}
