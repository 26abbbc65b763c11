//! A Trainer `output_dir`: finding `checkpoint-<step>` folders, deciding whether each
//! is complete (SPEC §2.1), and reading what a model needs from one. Nothing here ever
//! writes inside a checkpoint, and `training_args.bin` and optimizer files are never opened.

mod adapter;
mod config;
mod discovery;
mod encoder;
mod hub;
mod japanese;
mod remote;
mod tokenizer;
mod trainer_state;
mod weights;

pub use adapter::{AdapterConfig, AdapterFiles, ADAPTER_CONFIG};
pub use config::{ModelConfig, SUPPORTED_MODEL_TYPES};
pub use discovery::{discover, CheckpointDir, Completeness, Discovery};
pub use encoder::{
    Activation, DebertaSpec, EmbeddingSpec, EncoderSpec, Family, HeadSpec, LayerSpec,
    ModernBertSpec, Pooling, Positions, PostNormNames,
};
pub use hub::locate_model;
pub use japanese::DictionarySearch;
pub use remote::{
    is_remote, mirror_dir, prune_mirror, Mirror, MirrorScan, RemoteError, RemoteRun, RANGE_BYTES,
};
pub use tokenizer::{
    build_tokenizer, load_tokenizer, resolve_tokenizer, Encoded, TextTokenizer, TokenizerSource,
};
pub use trainer_state::{EvalRecord, TrainerState};
pub use weights::WeightFiles;

use std::path::PathBuf;

/// Why a checkpoint (or a base model folder) could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin")]
    NoWeights { path: PathBuf },
    #[error("{dir}: no tokenizer: looked for tokenizer.json in the checkpoint and the run directory, and for vocab.txt with tokenizer_config.json{}", .hint)]
    NoTokenizer { dir: PathBuf, hint: String },
    #[error("{path}: cannot build the tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error(
        "{path}: the checkpoint vanished while it was read (removed by the Trainer's rotation?)"
    )]
    Vanished { path: PathBuf },
    #[error(
        "{asked_by}: model {name:?} is nowhere to be found offline; looked in {}; give \
         --base-model DIR (a folder with config.json and the weights) or a hub id present \
         in the local Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else \
         ~/.cache/huggingface/hub); nothing is downloaded",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ModelNotFound {
        asked_by: PathBuf,
        name: String,
        searched: Vec<PathBuf>,
    },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        let path = path.into();
        if error.kind() == std::io::ErrorKind::NotFound {
            CheckpointError::Vanished { path }
        } else {
            CheckpointError::Io { path, error }
        }
    }

    /// A vanished checkpoint is a gap in the trajectory, not a fault of the run.
    pub fn is_vanished(&self) -> bool {
        matches!(self, CheckpointError::Vanished { .. })
    }

    /// The file the error is about, for the report's list of skipped checkpoints.
    pub fn path(&self) -> &std::path::Path {
        match self {
            CheckpointError::Io { path, .. }
            | CheckpointError::Json { path, .. }
            | CheckpointError::Invalid { path, .. }
            | CheckpointError::NoWeights { path }
            | CheckpointError::Tokenizer { path, .. }
            | CheckpointError::Vanished { path } => path,
            CheckpointError::NoTokenizer { dir, .. } => dir,
            CheckpointError::ModelNotFound { asked_by, .. } => asked_by,
        }
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<T, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
