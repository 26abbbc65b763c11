//! BERT's post-norm encoder on candle, for every family with BERT's layers: BERT,
//! DistilBERT, RoBERTa, XLM-R and ELECTRA (SPEC §3). The family decides the tensor
//! names, the positions (RoBERTa's count from `pad_token_id + 1`), whether there are
//! token types, and ELECTRA's projection of narrower embeddings.
//!
//! Written here rather than taken from candle-transformers: its DistilBERT uses the
//! tanh GELU for `gelu` and an inverted mask, its BERT has no pooler and no `gelu_new`,
//! and none of them computes only the `[CLS]` row in the last layer (the only position
//! anything downstream reads), or fuses the query, key and value products.

use candle_core::{Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::head::activate;
use crate::checkpoint::{Activation, ModelConfig, Positions, PostNormNames};
use crate::embed::tensors::NamedTensors;
use crate::embed::{Batch, EmbedError};

struct Layer {
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

pub(crate) struct PostNorm {
    word_embeddings: Tensor,
    /// The table rows of positions 0, 1, ... (RoBERTa's start at `pad_token_id + 1`).
    position_embeddings: Tensor,
    token_type_row: Option<Tensor>,
    embeddings_norm: LayerNorm,
    /// ELECTRA's `embeddings_project`, when the embeddings are narrower than the encoder.
    projection: Option<Linear>,
    layers: Vec<Layer>,
    activation: Activation,
    num_heads: usize,
    head_dim: usize,
    width: usize,
    device: Device,
}

impl PostNorm {
    pub(crate) fn load(
        config: &ModelConfig,
        names: &PostNormNames,
        tensors: &NamedTensors,
        base: &str,
    ) -> Result<Self, EmbedError> {
        let spec = &config.encoder;
        let hidden = config.hidden_size;
        let width = spec.embeddings.width;
        let eps = config.layer_norm_eps;
        let Positions::Learned { first, rows } = spec.embeddings.positions else {
            return Err(EmbedError::Unsupported(format!(
                "{}: BERT's layers need learned positions",
                config.model_type
            )));
        };
        let token_type_row = match spec.embeddings.token_types {
            0 => None,
            types => Some(
                tensors
                    .get(
                        &format!("{base}{}.weight", names.token_type_embeddings),
                        &[types, width],
                    )?
                    // Single-segment inputs: every token has token type 0.
                    .i(0)
                    .map_err(|e| tensors.candle(e))?,
            ),
        };
        let projection = if width == hidden {
            None
        } else {
            Some(tensors.linear(
                &format!("{base}{}", names.embeddings_projection),
                hidden,
                width,
            )?)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let prefix = format!("{base}{}.{index}", names.layers);
            let weight =
                |name: &str| tensors.get(&format!("{prefix}.{name}.weight"), &[hidden, hidden]);
            let bias = |name: &str| tensors.get(&format!("{prefix}.{name}.bias"), &[hidden]);
            let fuse = |parts: [Tensor; 3]| Tensor::cat(&parts, 0).map_err(|e| tensors.candle(e));
            let qkv_weight = fuse([
                weight(names.query)?,
                weight(names.key)?,
                weight(names.value)?,
            ])?;
            let qkv_bias = fuse([bias(names.query)?, bias(names.key)?, bias(names.value)?])?;
            let dense = |name: &str, out_dim, in_dim| {
                tensors.linear(&format!("{prefix}.{name}"), out_dim, in_dim)
            };
            let norm = |name: &str| tensors.layer_norm(&format!("{prefix}.{name}"), hidden, eps);
            layers.push(Layer {
                qkv: Linear::new(qkv_weight, Some(qkv_bias)),
                attention_output: dense(names.attention_output, hidden, hidden)?,
                attention_norm: norm(names.attention_norm)?,
                intermediate: dense(names.intermediate, config.intermediate_size, hidden)?,
                output: dense(names.output, hidden, config.intermediate_size)?,
                output_norm: norm(names.output_norm)?,
            });
        }
        let position_table = tensors.get(
            &format!("{base}{}.weight", names.position_embeddings),
            &[rows, width],
        )?;
        Ok(Self {
            word_embeddings: tensors.get(
                &format!("{base}{}.weight", names.word_embeddings),
                &[config.vocab_size, width],
            )?,
            position_embeddings: position_table
                .narrow(0, first, rows - first)
                .map_err(|e| tensors.candle(e))?,
            token_type_row,
            embeddings_norm: tensors.layer_norm(
                &format!("{base}{}", names.embeddings_norm),
                width,
                eps,
            )?,
            projection,
            layers,
            activation: spec.activation,
            num_heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            width,
            device: tensors.device().clone(),
        })
    }

    /// `[CLS]` hidden states [b, H] of one padded batch.
    pub(crate) fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (size, length) = (batch.lengths.len(), batch.padded_length);
        let ids = Tensor::from_slice(&batch.ids, (size, length), &self.device)?;
        let positions = self.position_embeddings.narrow(0, 0, length)?;
        let mut embedded = self
            .word_embeddings
            .embedding(&ids.flatten_all()?)?
            .reshape((size, length, self.width))?
            .broadcast_add(&positions)?;
        if let Some(token_type) = &self.token_type_row {
            embedded = embedded.broadcast_add(token_type)?;
        }
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        if let Some(projection) = &self.projection {
            hidden = projection.forward(&hidden)?;
        }
        let mask = attention_bias(batch, &self.device)?;
        let last = self.layers.len().saturating_sub(1);
        for (index, layer) in self.layers.iter().enumerate() {
            hidden = self.layer_forward(layer, &hidden, &mask, index == last)?;
        }
        hidden.i((.., 0, ..))?.contiguous()
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        mask: &Tensor,
        only_cls: bool,
    ) -> candle_core::Result<Tensor> {
        let (size, length, width) = hidden.dims3()?;
        let (heads, head_dim) = (self.num_heads, self.head_dim);
        let qkv = layer
            .qkv
            .forward(hidden)?
            .reshape((size, length, 3, heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let mut query = qkv.i(0)?;
        let key = qkv.i(1)?.contiguous()?;
        let value = qkv.i(2)?.contiguous()?;
        // The final layer's other positions are never read: attend from [CLS] alone.
        let residual = if only_cls {
            query = query.narrow(2, 0, 1)?;
            hidden.narrow(1, 0, 1)?
        } else {
            hidden.clone()
        };
        let query = query.contiguous()?;
        let query_length = query.dim(2)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(mask)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&scores)?;
        let context =
            probabilities
                .matmul(&value)?
                .transpose(1, 2)?
                .reshape((size, query_length, width))?;
        let attended = layer
            .attention_norm
            .forward(&(layer.attention_output.forward(&context)? + residual)?)?;
        let intermediate = activate(self.activation, &layer.intermediate.forward(&attended)?)?;
        layer
            .output_norm
            .forward(&(layer.output.forward(&intermediate)? + attended)?)
    }
}

/// Additive attention mask [b, 1, 1, L]: 0 for tokens, a large negative for padding.
fn attention_bias(batch: &Batch, device: &Device) -> candle_core::Result<Tensor> {
    let length = batch.padded_length;
    let mut bias = vec![0f32; batch.lengths.len() * length];
    for (row, &tokens) in batch.lengths.iter().enumerate() {
        bias[row * length + tokens..(row + 1) * length].fill(f32::MIN);
    }
    Tensor::from_vec(bias, (batch.lengths.len(), 1, 1, length), device)
}
