//! Checkpoints secured at first sight: the files `dwell` reads from a checkpoint,
//! hard-linked into `<state>/secured/checkpoint-<step>/` as soon as its
//! `trainer_state.json` parses, so that the Trainer's `save_total_limit` rotation can
//! remove the folder while it waits to be embedded. A hard link is a second name for the
//! same file: the Trainer's `rmtree` removes its names, the data stays until `dwell`
//! releases its own. Linking writes nothing in the checkpoint folder (its entries and
//! mtime, which the rotation sorts by, stay as they are). Where linking is impossible
//! (the state directory is on another file system) the files are copied, within a bound
//! on the disk the copies hold.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{io_error, StateDir, StoreError};

/// Bytes that copies (and links whose original is gone) may hold at once unless told
/// otherwise: several checkpoints of a base-size model.
pub const DEFAULT_COPY_LIMIT_BYTES: u64 = 4 << 30;

const SECURED_DIR: &str = "secured";
const PARTIAL_PREFIX: &str = ".partial-";

/// Files of a checkpoint folder that `dwell` never opens (training arguments, optimizer,
/// scheduler, scaler and RNG states): not secured, so a copy costs the model's size only.
fn never_read(name: &str) -> bool {
    matches!(
        name,
        "training_args.bin" | "optimizer.pt" | "scheduler.pt" | "scaler.pt"
    ) || name.starts_with("rng_state")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureOutcome {
    /// Every needed file hard-linked.
    Linked,
    /// Some files copied (linking was refused), `bytes` in all.
    Copied { bytes: u64 },
    /// Copying would take the secured copies past the limit: not secured.
    OverCopyLimit { needed: u64, limit: u64 },
    /// The checkpoint (or one of its files) went away while it was being secured.
    Vanished,
}

/// `<state>/secured/`: one folder per secured checkpoint, named like the original so
/// that everything downstream (sources, messages) reads the same.
#[derive(Debug, Clone)]
pub struct SecuredCheckpoints {
    root: PathBuf,
    copy_limit: u64,
}

impl SecuredCheckpoints {
    /// Opens (creating) the secured folder of `state`.
    pub fn open(state: &StateDir, copy_limit: u64) -> Result<Self, StoreError> {
        let root = state.root().join(SECURED_DIR);
        std::fs::create_dir_all(&root).map_err(io_error(&root))?;
        Ok(Self { root, copy_limit })
    }

    /// Removes folders left half-made by a stopped process; finished ones stay for the
    /// pipeline to embed. Only the one process that secures may call it, before it does.
    pub fn remove_partial(&self) -> Result<(), StoreError> {
        for entry in std::fs::read_dir(&self.root).map_err(io_error(&self.root))? {
            let entry = entry.map_err(io_error(&self.root))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(PARTIAL_PREFIX)
            {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
            }
        }
        Ok(())
    }

    /// The secured folder of a state directory, without creating it.
    pub fn root_of(state: &StateDir) -> PathBuf {
        state.root().join(SECURED_DIR)
    }

    pub fn path(&self, step: u64) -> PathBuf {
        self.root.join(format!("checkpoint-{step}"))
    }

    /// Links (or copies) the files `dwell` reads from `source`, replacing an earlier
    /// secured copy of the same step. The folder appears complete or not at all.
    pub fn secure(&self, step: u64, source: &Path) -> Result<SecureOutcome, StoreError> {
        let partial = self.root.join(format!("{PARTIAL_PREFIX}checkpoint-{step}"));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
        }
        std::fs::create_dir(&partial).map_err(io_error(&partial))?;
        let outcome = self.fill(source, &partial);
        match outcome {
            Ok(SecureOutcome::Linked | SecureOutcome::Copied { .. }) => {
                let target = self.path(step);
                if target.exists() {
                    std::fs::remove_dir_all(&target).map_err(io_error(&target))?;
                }
                std::fs::rename(&partial, &target).map_err(io_error(&target))?;
            }
            _ => {
                std::fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
            }
        }
        outcome
    }

    fn fill(&self, source: &Path, into: &Path) -> Result<SecureOutcome, StoreError> {
        let entries = match std::fs::read_dir(source) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SecureOutcome::Vanished)
            }
            Err(e) => return Err(io_error(source)(e)),
        };
        let mut copied = 0u64;
        let mut held = None;
        for entry in entries {
            let Ok(entry) = entry else {
                return Ok(SecureOutcome::Vanished);
            };
            let name = entry.file_name();
            if never_read(&name.to_string_lossy()) {
                continue;
            }
            // A file that is itself a link is secured as its target: linking the link
            // would keep a name that breaks once the target is removed.
            let original = match std::fs::canonicalize(entry.path()) {
                Ok(original) => original,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(SecureOutcome::Vanished)
                }
                Err(e) => return Err(io_error(&entry.path())(e)),
            };
            let metadata = match std::fs::metadata(&original) {
                Ok(metadata) if metadata.is_file() => metadata,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(SecureOutcome::Vanished)
                }
                Err(e) => return Err(io_error(&original)(e)),
            };
            let target = into.join(&name);
            match std::fs::hard_link(&original, &target) {
                Ok(()) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(SecureOutcome::Vanished)
                }
                // Another file system, or one that has no hard links: copy instead.
                Err(_) => {}
            }
            let in_use = match held {
                Some(bytes) => bytes,
                None => *held.insert(self.held_bytes()?),
            };
            let needed = copied + metadata.len();
            if in_use + needed > self.copy_limit {
                return Ok(SecureOutcome::OverCopyLimit {
                    needed,
                    limit: self.copy_limit.saturating_sub(in_use),
                });
            }
            match std::fs::copy(&original, &target) {
                Ok(bytes) => copied += bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(SecureOutcome::Vanished)
                }
                Err(e) => return Err(io_error(&target)(e)),
            }
        }
        Ok(if copied > 0 {
            SecureOutcome::Copied { bytes: copied }
        } else {
            SecureOutcome::Linked
        })
    }

    /// Bytes only the secured folders hold: copies, and links whose original is gone.
    fn held_bytes(&self) -> Result<u64, StoreError> {
        let mut bytes = 0;
        for step in self.steps()? {
            let dir = self.path(step);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(metadata) = entry.metadata() {
                    if metadata.nlink() == 1 {
                        bytes += metadata.len();
                    }
                }
            }
        }
        Ok(bytes)
    }

    /// Removes the secured copy of `step` (embedded, or its original gone after a
    /// failed read); nothing to do when there is none.
    pub fn release(&self, step: u64) -> Result<(), StoreError> {
        let path = self.path(step);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Steps with a finished secured copy.
    pub fn steps(&self) -> Result<BTreeSet<u64>, StoreError> {
        secured_steps(&self.root)
    }
}

/// Steps secured under `root` (none when it does not exist).
pub fn secured_steps(root: &Path) -> Result<BTreeSet<u64>, StoreError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(io_error(root)(e)),
    };
    let mut steps = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(io_error(root))?;
        let step = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_prefix("checkpoint-"))
            .and_then(|digits| digits.parse().ok());
        if let Some(step) = step {
            steps.insert(step);
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, StateDir) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = super::super::one_class_manifest(1);
        let state = StateDir::open(&dir.path().join("state"), &manifest).unwrap();
        (dir, state)
    }

    fn checkpoint(dir: &Path, step: u64) -> PathBuf {
        let path = dir.join(format!("run/checkpoint-{step}"));
        std::fs::create_dir_all(&path).unwrap();
        for (name, bytes) in [
            ("config.json", &b"{}"[..]),
            ("model.safetensors", &[7u8; 1000][..]),
            ("optimizer.pt", &[1u8; 2000][..]),
            ("rng_state.pth", &b"rng"[..]),
            ("trainer_state.json", &b"{\"global_step\": 1}"[..]),
        ] {
            std::fs::write(path.join(name), bytes).unwrap();
        }
        path
    }

    #[test]
    fn linked_files_outlive_the_trainers_rmtree_and_the_folder_is_untouched() {
        let (dir, state) = state();
        let source = checkpoint(dir.path(), 40);
        let mtime = std::fs::metadata(&source).unwrap().modified().unwrap();
        let secured = SecuredCheckpoints::open(&state, 0).unwrap();
        // A zero copy limit: linking needs no room.
        assert_eq!(secured.secure(40, &source).unwrap(), SecureOutcome::Linked);
        assert_eq!(
            std::fs::metadata(&source).unwrap().modified().unwrap(),
            mtime
        );
        let mut names: Vec<String> = std::fs::read_dir(secured.path(40))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["config.json", "model.safetensors", "trainer_state.json"]
        );
        std::fs::remove_dir_all(&source).unwrap();
        assert_eq!(
            std::fs::read(secured.path(40).join("model.safetensors")).unwrap(),
            vec![7u8; 1000]
        );
        assert_eq!(secured.steps().unwrap(), BTreeSet::from([40]));
        // The only names left are ours: they count against the limit now.
        assert_eq!(secured.held_bytes().unwrap(), 1000 + 2 + 18);
        secured.release(40).unwrap();
        assert!(secured.steps().unwrap().is_empty());
        secured.release(40).unwrap();
    }

    #[test]
    fn a_vanished_source_and_a_half_made_folder_leave_nothing() {
        let (dir, state) = state();
        std::fs::create_dir_all(SecuredCheckpoints::root_of(&state).join(".partial-checkpoint-9"))
            .unwrap();
        let secured = SecuredCheckpoints::open(&state, u64::MAX).unwrap();
        secured.remove_partial().unwrap();
        assert_eq!(
            std::fs::read_dir(SecuredCheckpoints::root_of(&state))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            secured
                .secure(9, &dir.path().join("run/checkpoint-9"))
                .unwrap(),
            SecureOutcome::Vanished
        );
        assert!(secured.steps().unwrap().is_empty());
    }

    /// /dev/shm is a tmpfs, another file system than the temporary folder's, so linking
    /// fails there as it does for a state directory on another disk.
    #[test]
    fn across_file_systems_files_are_copied_within_the_limit() {
        let (_dir, state) = state();
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        assert_ne!(
            std::fs::metadata(other.path()).unwrap().dev(),
            std::fs::metadata(state.root()).unwrap().dev(),
            "the test needs two file systems"
        );
        let source = checkpoint(other.path(), 80);
        let tight = SecuredCheckpoints::open(&state, 500).unwrap();
        assert!(matches!(
            tight.secure(80, &source).unwrap(),
            SecureOutcome::OverCopyLimit { .. }
        ));
        assert!(tight.steps().unwrap().is_empty(), "nothing half-secured");
        let roomy = SecuredCheckpoints::open(&state, 10_000).unwrap();
        assert_eq!(
            roomy.secure(80, &source).unwrap(),
            SecureOutcome::Copied { bytes: 1020 }
        );
        assert_eq!(
            std::fs::read(roomy.path(80).join("model.safetensors")).unwrap(),
            vec![7u8; 1000]
        );
        // The copy now holds its bytes: a second checkpoint no longer fits in 1,500.
        let source = checkpoint(other.path(), 120);
        let limited = SecuredCheckpoints::open(&state, 1500).unwrap();
        assert!(matches!(
            limited.secure(120, &source).unwrap(),
            SecureOutcome::OverCopyLimit { .. }
        ));
    }
}
