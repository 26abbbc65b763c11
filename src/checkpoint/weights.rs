//! Which weight files a checkpoint holds. Only the files are identified here; the
//! model loader reads them (safetensors memory-mapped, pickles with a reader that runs no code).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_json, AdapterFiles, CheckpointError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    Safetensors(PathBuf),
    /// Shards named by `model.safetensors.index.json`, in name order.
    ShardedSafetensors {
        index: PathBuf,
        shards: Vec<PathBuf>,
    },
    /// A `torch.save` pickle: read by candle's pickle reader, which interprets the
    /// pickle opcodes as data and never imports or calls anything.
    Pickle(PathBuf),
    /// A peft adapter: the model is its base model with the adapter merged.
    Adapter(AdapterFiles),
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

impl WeightFiles {
    /// Finds the weights in `dir`, preferring safetensors, then full weights over an
    /// adapter; `None` when there are none.
    pub fn find(dir: &Path) -> Result<Option<WeightFiles>, CheckpointError> {
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Ok(Some(WeightFiles::Safetensors(single)));
        }
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            let parsed: ShardIndex = read_json(&index)?;
            let names: BTreeSet<&String> = parsed.weight_map.values().collect();
            let mut shards = Vec::with_capacity(names.len());
            for name in names {
                let shard = dir.join(name);
                if !shard.is_file() {
                    return Err(CheckpointError::Invalid {
                        path: index.clone(),
                        message: format!("names shard {name} which does not exist"),
                    });
                }
                shards.push(shard);
            }
            if shards.is_empty() {
                return Err(CheckpointError::Invalid {
                    path: index,
                    message: "weight_map is empty".into(),
                });
            }
            return Ok(Some(WeightFiles::ShardedSafetensors { index, shards }));
        }
        let pickle = dir.join("pytorch_model.bin");
        if pickle.is_file() {
            return Ok(Some(WeightFiles::Pickle(pickle)));
        }
        if dir.join("pytorch_model.bin.index.json").is_file() {
            return Err(CheckpointError::Invalid {
                path: dir.join("pytorch_model.bin.index.json"),
                message: "sharded pickle weights are not supported; save with safetensors".into(),
            });
        }
        Ok(AdapterFiles::find(dir)?.map(WeightFiles::Adapter))
    }

    /// Every file the weights consist of (the index too), for change detection.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            WeightFiles::Safetensors(path) | WeightFiles::Pickle(path) => vec![path],
            WeightFiles::ShardedSafetensors { index, shards } => std::iter::once(index.as_path())
                .chain(shards.iter().map(PathBuf::as_path))
                .collect(),
            WeightFiles::Adapter(adapter) => vec![&adapter.config, &adapter.tensors],
        }
    }

    /// Total bytes on disk.
    pub fn size(&self) -> Result<u64, CheckpointError> {
        self.files().into_iter().try_fold(0, |total, path| {
            let metadata = std::fs::metadata(path).map_err(|e| CheckpointError::io(path, e))?;
            Ok(total + metadata.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn finds_each_layout() {
        assert!(matches!(
            WeightFiles::find(&fixture("hf-tiny-run/checkpoint-40")).unwrap(),
            Some(WeightFiles::Safetensors(_))
        ));
        let Some(WeightFiles::ShardedSafetensors { shards, .. }) =
            WeightFiles::find(&fixture("sharded-model")).unwrap()
        else {
            panic!("expected shards");
        };
        assert_eq!(shards.len(), 3);
        assert!(matches!(
            WeightFiles::find(&fixture("legacy-model")).unwrap(),
            Some(WeightFiles::Pickle(_))
        ));
    }

    #[test]
    fn an_index_naming_a_missing_shard_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let message = WeightFiles::find(dir.path()).unwrap_err().to_string();
        assert!(message.contains("model-00001-of-00002.safetensors"));
    }
}
