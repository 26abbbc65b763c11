//! Writing `checkpoint-<step>` folders as the Hugging Face Trainer does (SPEC §2.1):
//! `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`, and
//! `trainer_state.json` last, since a watcher takes that file as the sign of a complete
//! checkpoint. No `training_args.bin` (a pickle) and no optimizer, scheduler or RNG
//! state: nothing reads them, and the demo never resumes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::model::{Architecture, INITIALIZER_RANGE, LAYER_NORM_EPS};
use super::DemoError;

/// What one checkpoint holds besides its trainer state.
pub(crate) struct CheckpointFiles<'a> {
    pub config: &'a serde_json::Value,
    pub weights: &'a BTreeMap<String, Tensor>,
    pub tokenizer_json: &'a str,
    pub tokenizer_config: &'a serde_json::Value,
}

/// `config.json` of a `BertForSequenceClassification`, keys sorted as transformers
/// writes them. The dropout probabilities are 0: the demo trains without dropout.
pub(crate) fn model_config(architecture: &Architecture, labels: &[String]) -> serde_json::Value {
    let id2label: BTreeMap<String, &String> = labels
        .iter()
        .enumerate()
        .map(|(id, label)| (id.to_string(), label))
        .collect();
    let label2id: BTreeMap<&String, usize> = labels
        .iter()
        .enumerate()
        .map(|(id, label)| (label, id))
        .collect();
    serde_json::json!({
        "architectures": ["BertForSequenceClassification"],
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": null,
        "dtype": "float32",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": architecture.hidden_size,
        "id2label": id2label,
        "initializer_range": INITIALIZER_RANGE,
        "intermediate_size": architecture.intermediate_size,
        "label2id": label2id,
        "layer_norm_eps": LAYER_NORM_EPS,
        "max_position_embeddings": architecture.max_position_embeddings,
        "model_type": "bert",
        "num_attention_heads": architecture.num_attention_heads,
        "num_hidden_layers": architecture.num_hidden_layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "problem_type": "single_label_classification",
        "type_vocab_size": architecture.type_vocab_size,
        "vocab_size": architecture.vocab_size,
    })
}

/// Writes the checkpoint folder for `step` under `run_dir`, state file last.
pub(crate) fn write_checkpoint(
    run_dir: &Path,
    step: u64,
    files: &CheckpointFiles,
    trainer_state: &serde_json::Value,
) -> Result<PathBuf, DemoError> {
    let dir = run_dir.join(format!("checkpoint-{step}"));
    std::fs::create_dir_all(&dir).map_err(|e| DemoError::io(&dir, e))?;
    write_json(&dir.join("config.json"), files.config)?;
    write_safetensors(&dir.join("model.safetensors"), files.weights)?;
    write(&dir.join("tokenizer.json"), files.tokenizer_json.as_bytes())?;
    write_json(&dir.join("tokenizer_config.json"), files.tokenizer_config)?;
    write_json(&dir.join("trainer_state.json"), trainer_state)?;
    Ok(dir)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    std::fs::write(path, bytes).map_err(|e| DemoError::io(path, e))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), DemoError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| DemoError::Io {
        path: path.to_path_buf(),
        error: e.into(),
    })?;
    text.push('\n');
    write(path, text.as_bytes())
}

/// Little-endian f32 tensors with `{"format": "pt"}` metadata, as `save_pretrained` writes.
fn write_safetensors(path: &Path, weights: &BTreeMap<String, Tensor>) -> Result<(), DemoError> {
    let mut buffers = Vec::with_capacity(weights.len());
    for (name, tensor) in weights {
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name, tensor.dims().to_vec(), bytes));
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, bytes) in &buffers {
        let view =
            TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| DemoError::Weights {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| DemoError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
