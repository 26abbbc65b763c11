//! DeBERTa-v2 (and the DeBERTa-v3 checkpoints, which use its model type) on candle.
//! The encoder is candle-transformers' `DebertaV2Encoder`, whose disentangled attention
//! (c2p/p2c, shared keys, log position buckets, normalised relative embeddings) equals
//! transformers' to the fixtures' 1e-4. The embeddings and the head are ours: its
//! embeddings add absolute positions without broadcasting over the batch (so
//! `position_biased_input` fails on any batch of two texts or more) and size the
//! token-type table `hidden_size` wide where transformers makes it `embedding_size`
//! wide (tests/arch_parity.rs, `deberta-v2-abs-c2p`, fails on either).

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use candle_transformers::models::debertav2::{Config, DebertaV2Encoder, HiddenAct};

use crate::checkpoint::{Activation, DebertaSpec, ModelConfig, Positions};
use crate::embed::tensors::NamedTensors;
use crate::embed::{Batch, EmbedError};

pub(crate) struct Deberta {
    word_embeddings: Tensor,
    /// The position table's rows, when `position_biased_input`.
    position_embeddings: Option<Tensor>,
    /// Token type 0's row (single-segment inputs), when the model has types.
    token_type_row: Option<Tensor>,
    /// `embed_proj`, when `embedding_size` differs from `hidden_size`.
    projection: Option<Linear>,
    norm: LayerNorm,
    encoder: DebertaV2Encoder,
    width: usize,
    device: Device,
}

impl Deberta {
    pub(crate) fn load(
        config: &ModelConfig,
        spec: &DebertaSpec,
        tensors: &NamedTensors,
        prefix: &str,
    ) -> Result<Self, EmbedError> {
        let hidden_act = match config.encoder.activation {
            Activation::GeluErf => HiddenAct::Gelu,
            Activation::GeluTanh => HiddenAct::GeluApproximate,
            Activation::Relu => HiddenAct::Relu,
            other => {
                return Err(EmbedError::Unsupported(format!(
                    "deberta-v2 with hidden_act {other:?}: the DeBERTa backbone runs gelu, \
                     gelu_new (tanh) and relu"
                )))
            }
        };
        let embeddings = &config.encoder.embeddings;
        let backbone = Config {
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            num_hidden_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            intermediate_size: config.intermediate_size,
            hidden_act,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            max_position_embeddings: config.max_position_embeddings,
            type_vocab_size: embeddings.token_types,
            initializer_range: 0.02,
            layer_norm_eps: config.layer_norm_eps,
            relative_attention: spec.relative_attention,
            max_relative_positions: spec.max_relative_positions,
            pad_token_id: spec.pad_token_id,
            position_biased_input: matches!(embeddings.positions, Positions::Learned { .. }),
            pos_att_type: spec.pos_att_type.clone(),
            position_buckets: Some(spec.position_buckets),
            share_att_key: Some(spec.share_att_key),
            attention_head_size: spec.attention_head_size,
            embedding_size: Some(embeddings.width),
            norm_rel_ebd: Some(if spec.norm_relative_embeddings {
                "layer_norm".into()
            } else {
                "none".into()
            }),
            conv_kernel_size: None,
            conv_groups: None,
            conv_act: None,
            id2label: None,
            label2id: None,
            pooler_dropout: None,
            pooler_hidden_act: None,
            pooler_hidden_size: None,
            cls_dropout: None,
        };
        let encoder_tensors = tensors.all_with_prefix(&format!("{prefix}encoder."))?;
        let vb = candle_nn::VarBuilder::from_tensors(encoder_tensors, DType::F32, tensors.device());
        let encoder = DebertaV2Encoder::load(vb, &backbone).map_err(|e| tensors.candle(e))?;
        let width = embeddings.width;
        let hidden = config.hidden_size;
        let name = |part: &str| format!("{prefix}embeddings.{part}");
        let row_zero = |table: Tensor| table.i(0).map_err(|e| tensors.candle(e));
        Ok(Self {
            word_embeddings: tensors
                .get(&name("word_embeddings.weight"), &[config.vocab_size, width])?,
            position_embeddings: match embeddings.positions {
                Positions::Learned { rows, .. } => {
                    Some(tensors.get(&name("position_embeddings.weight"), &[rows, width])?)
                }
                Positions::None => None,
            },
            token_type_row: match embeddings.token_types {
                0 => None,
                types => Some(row_zero(
                    tensors.get(&name("token_type_embeddings.weight"), &[types, width])?,
                )?),
            },
            projection: if width == hidden {
                None
            } else {
                Some(tensors.linear_with(&name("embed_proj"), hidden, width, false)?)
            },
            norm: tensors.layer_norm(&name("LayerNorm"), hidden, config.layer_norm_eps)?,
            encoder,
            width,
            device: tensors.device().clone(),
        })
    }

    /// Every position's final state [b, L, H] of one padded batch.
    pub(crate) fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (size, length) = (batch.lengths.len(), batch.padded_length);
        let ids = Tensor::from_slice(&batch.ids, (size * length,), &self.device)?;
        let mut embedded = self
            .word_embeddings
            .embedding(&ids)?
            .reshape((size, length, self.width))?;
        if let Some(positions) = &self.position_embeddings {
            embedded = embedded.broadcast_add(&positions.narrow(0, 0, length)?)?;
        }
        if let Some(token_type) = &self.token_type_row {
            embedded = embedded.broadcast_add(token_type)?;
        }
        if let Some(projection) = &self.projection {
            embedded = projection.forward(&embedded)?;
        }
        let mut mask = vec![0f32; size * length];
        for (row, &tokens) in batch.lengths.iter().enumerate() {
            mask[row * length..row * length + tokens].fill(1.0);
        }
        let mask = Tensor::from_vec(mask, (size, length), &self.device)?;
        // Padding's embeddings are zeroed before the first layer, as transformers does.
        let embedded = self
            .norm
            .forward(&embedded)?
            .broadcast_mul(&mask.unsqueeze(2)?)?;
        self.encoder.forward(&embedded, &mask, None, None)
    }
}
