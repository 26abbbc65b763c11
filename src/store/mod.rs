//! The state directory: what has been embedded, tied to one probe file.
//!
//! Layout: `state.json` (the probe's hash and the embedding settings),
//! `embeddings/step-<step>.safetensors` (`cls` [P, H] and `logits` [P, C], probe order),
//! and the reports. Every file is replaced atomically, so a crash leaves the old or the new.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::embed::Embeddings;

mod gaps;
mod positions;
mod secured;

pub use gaps::Gap;
pub use positions::{
    analyze_stored, cluster_stored, project_stored, PositionCache, StoredAnalysisError,
    DEFAULT_CACHE_BYTES,
};
pub use secured::{secured_steps, SecureOutcome, SecuredCheckpoints, DEFAULT_COPY_LIMIT_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("the probe set changed since {state} was made: it was {was_path} (sha256 {was}), now {now_path} (sha256 {now}). Mixing them would make the trajectories meaningless: use another --state directory, or delete this one to start over")]
    ProbeChanged {
        state: PathBuf,
        was_path: String,
        was: String,
        now_path: String,
        now: String,
    },
    #[error("{path}: another dwell is already using this state directory (the lock is held); stop it first or use another --state")]
    Locked { path: PathBuf },
    #[error("{state} was made with {setting} = {was}, now {now}: embeddings made with different settings cannot share one trajectory; use another --state directory or the same setting")]
    SettingChanged {
        state: PathBuf,
        setting: &'static str,
        was: String,
        now: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// What a state directory is tied to: changing any of these invalidates stored embeddings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub probe_path: String,
    pub probe_sha256: String,
    pub probe_examples: usize,
    pub max_len: usize,
    /// The model's class names in id order, and each probe example's class: enough
    /// for commands such as `sweep` to analyse without the probe file at hand.
    pub labels: Vec<String>,
    pub example_classes: Vec<usize>,
}

impl Manifest {
    pub const SCHEMA: &'static str = "dwell.state/1";
}

/// One stored checkpoint, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbeddings {
    pub step: u64,
    pub cls: Vec<f32>,
    pub hidden: usize,
    pub logits: Option<Vec<f32>>,
    pub num_labels: usize,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens `root`, creating it for `manifest`, or refusing it when it was made for another probe set.
    pub fn open(root: &Path, manifest: &Manifest) -> Result<Self, StoreError> {
        let state = Self {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(state.embeddings_dir()).map_err(io_error(root))?;
        let manifest_path = state.manifest_path();
        match std::fs::read(&manifest_path) {
            Ok(bytes) => {
                let existing: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: manifest_path.clone(),
                        message: e.to_string(),
                    })?;
                state.check_compatible(&existing, manifest)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
                write_atomically(&manifest_path, &json)?;
            }
            Err(e) => return Err(io_error(&manifest_path)(e)),
        }
        Ok(state)
    }

    /// The state directory as the watcher's intake uses it before the pipeline has
    /// opened it (and checked the probe): to list stored steps and secure checkpoints.
    pub fn open_for_intake(root: &Path) -> Result<Self, StoreError> {
        let state = Self {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(state.embeddings_dir()).map_err(io_error(root))?;
        Ok(state)
    }

    /// Opens an existing state directory for reading, without a probe file at hand.
    pub fn open_existing(root: &Path) -> Result<(Self, Manifest), StoreError> {
        let state = Self {
            root: root.to_path_buf(),
        };
        let manifest_path = state.manifest_path();
        let bytes = std::fs::read(&manifest_path).map_err(io_error(&manifest_path))?;
        let manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        Ok((state, manifest))
    }

    fn check_compatible(&self, was: &Manifest, now: &Manifest) -> Result<(), StoreError> {
        if was.probe_sha256 != now.probe_sha256 {
            return Err(StoreError::ProbeChanged {
                state: self.root.clone(),
                was_path: was.probe_path.clone(),
                was: was.probe_sha256.clone(),
                now_path: now.probe_path.clone(),
                now: now.probe_sha256.clone(),
            });
        }
        if was.max_len != now.max_len {
            return Err(StoreError::SettingChanged {
                state: self.root.clone(),
                setting: "--max-len",
                was: was.max_len.to_string(),
                now: now.max_len.to_string(),
            });
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn manifest_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    fn embeddings_dir(&self) -> PathBuf {
        self.root.join("embeddings")
    }

    fn embeddings_path(&self, step: u64) -> PathBuf {
        self.embeddings_dir()
            .join(format!("step-{step}.safetensors"))
    }

    /// Steps with stored embeddings, ascending. Half-written temporary files do not count.
    pub fn stored_steps(&self) -> Result<BTreeSet<u64>, StoreError> {
        let dir = self.embeddings_dir();
        let mut steps = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name();
            let step = name
                .to_str()
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.strip_suffix(".safetensors"))
                .and_then(|n| n.parse().ok());
            if let Some(step) = step {
                steps.insert(step);
            }
        }
        Ok(steps)
    }

    pub fn write_embeddings(
        &self,
        step: u64,
        embeddings: &Embeddings,
        source: &str,
    ) -> Result<(), StoreError> {
        let path = self.embeddings_path(step);
        let rows = embeddings.rows();
        let cls_bytes = f32_bytes(&embeddings.cls);
        let logits_bytes = embeddings.logits.as_deref().map(f32_bytes);
        let corrupt = |e: safetensors::SafeTensorError| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut views = vec![(
            "cls",
            TensorView::new(Dtype::F32, vec![rows, embeddings.hidden], &cls_bytes)
                .map_err(corrupt)?,
        )];
        if let Some(bytes) = &logits_bytes {
            views.push((
                "logits",
                TensorView::new(Dtype::F32, vec![rows, embeddings.num_labels], bytes)
                    .map_err(corrupt)?,
            ));
        }
        let metadata: std::collections::HashMap<String, String> = [
            ("step".to_string(), step.to_string()),
            ("source".to_string(), source.to_string()),
        ]
        .into();
        let bytes = safetensors::serialize(views, Some(metadata)).map_err(corrupt)?;
        write_atomically(&path, &bytes)
    }

    pub fn read_embeddings(&self, step: u64) -> Result<StoredEmbeddings, StoreError> {
        let path = self.embeddings_path(step);
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.clone(),
            message,
        };
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let matrix = |name: &str| -> Result<Option<(Vec<f32>, usize, usize)>, StoreError> {
            let view = match tensors.tensor(name) {
                Ok(view) => view,
                Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
                Err(e) => return Err(corrupt(e.to_string())),
            };
            let [rows, columns] = view.shape() else {
                return Err(corrupt(format!("{name} is not a matrix")));
            };
            if view.dtype() != Dtype::F32 {
                return Err(corrupt(format!("{name} is not float32")));
            }
            let values = f32_from_le_bytes(view.data());
            Ok(Some((values, *rows, *columns)))
        };
        let (cls, rows, hidden) = matrix("cls")?.ok_or_else(|| corrupt("no cls tensor".into()))?;
        let logits = matrix("logits")?;
        if let Some((_, logit_rows, _)) = &logits {
            if *logit_rows != rows {
                return Err(corrupt("cls and logits have different row counts".into()));
            }
        }
        let num_labels = logits.as_ref().map_or(0, |l| l.2);
        Ok(StoredEmbeddings {
            step,
            cls,
            hidden,
            logits: logits.map(|l| l.0),
            num_labels,
        })
    }

    /// Writes `name` in the state directory atomically.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.root.join(name);
        write_atomically(&path, bytes)?;
        Ok(path)
    }

    pub fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.root.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }
}

/// Holds `DIR/dwell.lock` for as long as it lives: one daemon per state directory.
/// The OS releases the lock when the process dies, so a crash leaves nothing stale.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    pub fn acquire(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(io_error(root))?;
        let path = root.join("dwell.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(&path)(e)),
        }
    }
}

/// Little-endian float32 data, as safetensors stores it.
pub fn f32_from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the
/// folder: readers see the old file or the new one, never a torn one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = folder.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_error(path))?;
    if let Ok(dir) = std::fs::File::open(folder) {
        // Durability of the rename; not all file systems allow syncing a folder.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// A manifest of `examples` probe examples of one class `a`, for tests of the state.
#[cfg(test)]
pub(crate) fn one_class_manifest(examples: usize) -> Manifest {
    Manifest {
        schema: Manifest::SCHEMA.into(),
        probe_path: "probe.jsonl".into(),
        probe_sha256: "aa".into(),
        probe_examples: examples,
        max_len: 8,
        labels: vec!["a".into()],
        example_classes: vec![0; examples],
    }
}

/// Per-class probe counts, for the report.
pub fn class_counts(labels: &[usize], names: &[String]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
    for &label in labels {
        if let Some(count) = names.get(label).and_then(|n| counts.get_mut(n)) {
            *count += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(sha: &str) -> Manifest {
        Manifest {
            schema: Manifest::SCHEMA.into(),
            probe_path: "probe.jsonl".into(),
            probe_sha256: sha.into(),
            probe_examples: 2,
            max_len: 64,
            labels: vec!["a".into(), "b".into()],
            example_classes: vec![0, 1],
        }
    }

    #[test]
    fn embeddings_round_trip_and_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), &manifest("aa")).unwrap();
        let embeddings = Embeddings {
            cls: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            hidden: 3,
            logits: Some(vec![0.5, -0.5, 1.5, 2.5]),
            num_labels: 2,
        };
        state
            .write_embeddings(40, &embeddings, "checkpoint-40")
            .unwrap();
        state
            .write_embeddings(8, &embeddings, "checkpoint-8")
            .unwrap();
        assert_eq!(
            state
                .stored_steps()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![8, 40]
        );
        let read = state.read_embeddings(40).unwrap();
        assert_eq!(read.cls, embeddings.cls);
        assert_eq!((read.hidden, read.num_labels), (3, 2));
        assert_eq!(read.logits, embeddings.logits);
    }

    #[test]
    fn a_changed_probe_file_or_max_len_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        StateDir::open(dir.path(), &manifest("aa")).unwrap();
        assert!(StateDir::open(dir.path(), &manifest("aa")).is_ok());
        let message = StateDir::open(dir.path(), &manifest("bb"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("probe set changed"), "{message}");
        let mut longer = manifest("aa");
        longer.max_len = 128;
        assert!(matches!(
            StateDir::open(dir.path(), &longer),
            Err(StoreError::SettingChanged { .. })
        ));
    }

    #[test]
    fn a_second_lock_on_the_same_state_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let message = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(message.contains("another dwell"), "{message}");
        drop(first);
        assert!(StateLock::acquire(dir.path()).is_ok());
    }

    #[test]
    fn a_corrupt_embeddings_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), &manifest("aa")).unwrap();
        std::fs::write(dir.path().join("embeddings/step-3.safetensors"), b"junk").unwrap();
        let message = state.read_embeddings(3).unwrap_err().to_string();
        assert!(message.contains("step-3.safetensors"), "{message}");
    }
}
