//! The candle backend: any encoder description on any CPU, or the GPU with
//! `--features cuda`. Length-bucketed padded batches; each family's layers in a module
//! of its own, one head for all (`head`).

mod deberta;
mod head;
mod modernbert;
mod post_norm;

use candle_core::{IndexOp, Tensor};

use super::tensors::NamedTensors;
use super::{Batch, BatchOutput, EmbedError};
use crate::checkpoint::{LayerSpec, ModelConfig};

use head::Head;

enum Layers {
    PostNorm(post_norm::PostNorm),
    DebertaV2(Box<deberta::Deberta>),
    ModernBert(modernbert::ModernBert),
}

/// A checkpoint's encoder and head on candle, as its [`ModelConfig`] describes them.
pub struct CandleEncoder {
    layers: Layers,
    head: Option<Head>,
    hidden_size: usize,
    max_tokens: usize,
}

impl CandleEncoder {
    pub fn load(config: &ModelConfig, tensors: &NamedTensors) -> Result<Self, EmbedError> {
        let spec = &config.encoder;
        let prefix = tensors.backbone_prefix(spec);
        let layers = match &spec.layers {
            LayerSpec::PostNorm(names) => {
                Layers::PostNorm(post_norm::PostNorm::load(config, names, tensors, &prefix)?)
            }
            LayerSpec::DebertaV2(deberta) => Layers::DebertaV2(Box::new(deberta::Deberta::load(
                config, deberta, tensors, &prefix,
            )?)),
            LayerSpec::ModernBert(modern) => {
                Layers::ModernBert(modernbert::ModernBert::load(config, modern, tensors)?)
            }
        };
        let head_eps = match &spec.layers {
            LayerSpec::ModernBert(modern) => modern.norm_eps,
            _ => config.layer_norm_eps,
        };
        Ok(Self {
            layers,
            head: Head::load(&spec.head, &prefix, config.hidden_size, head_eps, tensors)?,
            hidden_size: config.hidden_size,
            max_tokens: config.max_tokens(),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    pub fn num_labels(&self) -> Option<usize> {
        self.head.as_ref().map(Head::num_labels)
    }

    pub fn max_positions(&self) -> usize {
        self.max_tokens
    }

    /// `[CLS]` hidden states [b, H] and, with a head, logits [b, C] for one padded batch.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<BatchOutput> {
        // The post-norm layers compute only the [CLS] row in the last layer; the others
        // give every position, which mean pooling needs.
        let (cls, states) = match &self.layers {
            Layers::PostNorm(layers) => (layers.forward(batch)?, None),
            Layers::DebertaV2(layers) => {
                let states = layers.forward(batch)?;
                (states.i((.., 0, ..))?.contiguous()?, Some(states))
            }
            Layers::ModernBert(layers) => {
                let states = layers.forward(batch)?;
                (states.i((.., 0, ..))?.contiguous()?, Some(states))
            }
        };
        let logits = match &self.head {
            Some(head) => Some(
                head.forward(
                    &cls,
                    states
                        .as_ref()
                        .map(|s: &Tensor| (s, batch.lengths.as_slice())),
                )?,
            ),
            None => None,
        };
        Ok(BatchOutput { cls, logits })
    }
}
