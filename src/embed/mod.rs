//! Embedding the probe set with one checkpoint: tokenising, length-bucketed batching,
//! and the model behind a small synchronous trait that runs on its own thread.

mod bert;
mod worker;

pub use bert::{BertClassifier, NamedTensors};
pub use worker::{EmbedJob, EmbedWorker, JobOutcome};

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use crate::checkpoint::{CheckpointError, ModelConfig, WeightFiles};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: cannot read weights: {message}")]
    Weights { path: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: tokenising probe example {index}: {message}")]
    Tokenize {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("--max-len {max_len} exceeds the model's max_position_embeddings {max_positions}")]
    TooLong {
        max_len: usize,
        max_positions: usize,
    },
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Token ids of every probe text, in probe order, with special tokens, truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedProbe {
    pub ids: Vec<Vec<u32>>,
}

impl TokenizedProbe {
    pub fn new(
        tokenizer: &Tokenizer,
        texts: &[String],
        tokenizer_path: &std::path::Path,
    ) -> Result<Self, EmbedError> {
        let mut ids = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let encoding =
                tokenizer
                    .encode(text.as_str(), true)
                    .map_err(|e| EmbedError::Tokenize {
                        path: tokenizer_path.to_path_buf(),
                        index,
                        message: e.to_string(),
                    })?;
            ids.push(encoding.get_ids().to_vec());
        }
        Ok(Self { ids })
    }

    pub fn longest(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0)
    }

    pub fn token_count(&self) -> usize {
        self.ids.iter().map(Vec::len).sum()
    }
}

/// A padded batch of probe examples of similar length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Row-major [rows, padded_length] token ids, padding filled with `pad_id`.
    pub ids: Vec<u32>,
    pub lengths: Vec<usize>,
    pub padded_length: usize,
    /// Probe index of each row.
    pub rows: Vec<usize>,
}

pub struct BatchOutput {
    pub cls: Tensor,
    pub logits: Option<Tensor>,
}

/// Groups examples by token length so that a batch pads little: examples are sorted
/// by length (longest first, ties in probe order) and cut into batches of `batch_size`.
pub fn plan_batches(probe: &TokenizedProbe, batch_size: usize, pad_id: u32) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..probe.ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(probe.ids[i].len()));
    order
        .chunks(batch_size.max(1))
        .map(|rows| {
            let lengths: Vec<usize> = rows.iter().map(|&i| probe.ids[i].len()).collect();
            let padded_length = lengths.iter().copied().max().unwrap_or(0);
            let mut ids = vec![pad_id; rows.len() * padded_length];
            for (row, &index) in rows.iter().enumerate() {
                let tokens = &probe.ids[index];
                ids[row * padded_length..row * padded_length + tokens.len()]
                    .copy_from_slice(tokens);
            }
            Batch {
                ids,
                lengths,
                padded_length,
                rows: rows.to_vec(),
            }
        })
        .collect()
}

/// What one checkpoint computes for the probe set, rows in probe order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// Row-major [P, hidden].
    pub cls: Vec<f32>,
    pub hidden: usize,
    /// Row-major [P, num_labels], when the model has a classification head.
    pub logits: Option<Vec<f32>>,
    pub num_labels: usize,
}

impl Embeddings {
    pub fn rows(&self) -> usize {
        self.cls.len() / self.hidden.max(1)
    }
}

/// A model folder to embed with: a checkpoint, or the base model at step 0.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: WeightFiles,
}

/// The model side of the pipeline: synchronous, owned by one worker thread.
pub trait Embedder: Send {
    fn embed(
        &mut self,
        model: &ModelSource,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError>;
}

/// Embeds with candle on the CPU (or a CUDA device when built with `--features cuda`).
pub struct CandleEmbedder {
    device: Device,
    batch_size: usize,
}

impl CandleEmbedder {
    pub fn new(batch_size: usize) -> Result<Self, EmbedError> {
        Ok(Self {
            device: default_device()?,
            batch_size,
        })
    }

    pub fn load_model(&self, model: &ModelSource) -> Result<BertClassifier, EmbedError> {
        let tensors = read_weights(&model.weights, &self.device)?;
        BertClassifier::load(&model.config, &tensors)
    }
}

#[cfg(feature = "cuda")]
fn default_device() -> Result<Device, EmbedError> {
    Ok(Device::new_cuda(0)?)
}

#[cfg(not(feature = "cuda"))]
fn default_device() -> Result<Device, EmbedError> {
    Ok(Device::Cpu)
}

impl Embedder for CandleEmbedder {
    fn embed(
        &mut self,
        model: &ModelSource,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError> {
        let bert = self.load_model(model)?;
        self.embed_loaded(&bert, probe)
    }
}

impl CandleEmbedder {
    /// The padded batches this embedder computes for `probe`.
    pub fn batches(&self, probe: &TokenizedProbe) -> Vec<Batch> {
        plan_batches(probe, self.batch_size, 0)
    }

    /// Embeds `probe` with a model already loaded by [`CandleEmbedder::load_model`].
    pub fn embed_loaded(
        &self,
        bert: &BertClassifier,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError> {
        if probe.longest() > bert.max_positions() {
            return Err(EmbedError::TooLong {
                max_len: probe.longest(),
                max_positions: bert.max_positions(),
            });
        }
        let hidden = bert.hidden_size();
        let num_labels = bert.num_labels().unwrap_or(0);
        let examples = probe.ids.len();
        let mut cls = vec![0f32; examples * hidden];
        let mut logits = bert.num_labels().map(|c| vec![0f32; examples * c]);
        for batch in self.batches(probe) {
            let output = bert.forward(&batch)?;
            scatter_rows(&mut cls, hidden, &batch.rows, &output.cls)?;
            if let (Some(all), Some(batch_logits)) = (logits.as_mut(), output.logits.as_ref()) {
                scatter_rows(all, num_labels, &batch.rows, batch_logits)?;
            }
        }
        Ok(Embeddings {
            cls,
            hidden,
            logits,
            num_labels,
        })
    }
}

fn scatter_rows(
    target: &mut [f32],
    width: usize,
    rows: &[usize],
    values: &Tensor,
) -> Result<(), EmbedError> {
    let values = values.flatten_all()?.to_vec1::<f32>()?;
    for (row, &index) in rows.iter().enumerate() {
        target[index * width..(index + 1) * width]
            .copy_from_slice(&values[row * width..(row + 1) * width]);
    }
    Ok(())
}

/// Reads every weight tensor. Safetensors are memory-mapped; the values are copied
/// into the model at load, so the Trainer deleting the files afterwards is harmless.
fn read_weights(weights: &WeightFiles, device: &Device) -> Result<NamedTensors, EmbedError> {
    let weight_error = |path: &std::path::Path, e: candle_core::Error| EmbedError::Weights {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let check_exists = |path: &std::path::Path| {
        if path.exists() {
            Ok(())
        } else {
            Err(EmbedError::Checkpoint(CheckpointError::Vanished {
                path: path.to_path_buf(),
            }))
        }
    };
    let mut tensors = HashMap::new();
    let source;
    match weights {
        WeightFiles::Safetensors(path) => {
            check_exists(path)?;
            source = path.display().to_string();
            tensors = load_safetensors(path).map_err(|e| weight_error(path, e))?;
        }
        WeightFiles::ShardedSafetensors { index, shards } => {
            source = index.display().to_string();
            for shard in shards {
                check_exists(shard)?;
                tensors.extend(load_safetensors(shard).map_err(|e| weight_error(shard, e))?);
            }
        }
        WeightFiles::Pickle(path) => {
            check_exists(path)?;
            source = path.display().to_string();
            // candle's reader interprets pickle opcodes as data: no class is imported, no code runs.
            let read = candle_core::pickle::read_all(path).map_err(|e| weight_error(path, e))?;
            tensors.extend(read);
        }
    }
    Ok(NamedTensors::new(tensors, source, device))
}

fn load_safetensors(path: &std::path::Path) -> candle_core::Result<HashMap<String, Tensor>> {
    // SAFETY: the mapping is only read while the tensors are copied out below; the Trainer
    // writes checkpoint files once and removes them whole, never rewriting them in place.
    let mapped = unsafe { candle_core::safetensors::MmapedSafetensors::new(path)? };
    mapped
        .tensors()
        .into_iter()
        .map(|(name, _)| Ok((name.clone(), mapped.load(&name, &Device::Cpu)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_group_similar_lengths_and_keep_probe_indices() {
        let probe = TokenizedProbe {
            ids: vec![
                vec![2, 5, 3],
                vec![2, 3],
                vec![2, 7, 8, 9, 3],
                vec![2, 6, 6, 3],
            ],
        };
        let batches = plan_batches(&probe, 2, 0);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].rows, vec![2, 3]);
        assert_eq!(batches[0].padded_length, 5);
        assert_eq!(batches[0].ids, vec![2, 7, 8, 9, 3, 2, 6, 6, 3, 0]);
        assert_eq!(batches[1].rows, vec![0, 1]);
        assert_eq!(batches[1].lengths, vec![3, 2]);
        assert_eq!(batches[1].ids, vec![2, 5, 3, 2, 3, 0]);
    }
}
