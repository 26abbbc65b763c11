//! BERT encoder with the sequence-classification head, on candle (SPEC §3).
//!
//! Written here rather than taken from candle-transformers because the daemon needs
//! what that model does not offer: the pooler and classifier of
//! `BertForSequenceClassification`, one fused QKV matmul per layer, and a last layer
//! that computes only the `[CLS]` row (the only position anything downstream reads).

use candle_core::{Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::tensors::NamedTensors;
use super::{Batch, BatchOutput, EmbedError};
use crate::checkpoint::ModelConfig;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    pub(crate) fn from_config(name: &str) -> Result<Self, EmbedError> {
        match name {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
        .ok_or_else(|| {
            EmbedError::Unsupported(format!(
                "hidden_act {name:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ))
        })
    }

    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

struct Layer {
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

struct ClassifierHead {
    pooler: Linear,
    classifier: Linear,
}

pub struct BertClassifier {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_row: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    head: Option<ClassifierHead>,
    activation: Activation,
    num_heads: usize,
    head_dim: usize,
    hidden_size: usize,
    max_positions: usize,
    device: Device,
}

impl BertClassifier {
    pub fn load(config: &ModelConfig, tensors: &NamedTensors) -> Result<Self, EmbedError> {
        let activation = Activation::from_config(&config.hidden_act)?;
        // BertForSequenceClassification nests the encoder under `bert.`; a bare BertModel does not.
        let base = if tensors.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let token_types = tensors.get(
            &format!("{base}embeddings.token_type_embeddings.weight"),
            &[config.type_vocab_size, hidden],
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let prefix = format!("{base}encoder.layer.{index}");
            let weight = |name: &str| {
                tensors.get(
                    &format!("{prefix}.attention.self.{name}.weight"),
                    &[hidden, hidden],
                )
            };
            let bias = |name: &str| {
                tensors.get(&format!("{prefix}.attention.self.{name}.bias"), &[hidden])
            };
            let fuse = |parts: [Tensor; 3]| Tensor::cat(&parts, 0).map_err(|e| tensors.candle(e));
            let qkv_weight = fuse([weight("query")?, weight("key")?, weight("value")?])?;
            let qkv_bias = fuse([bias("query")?, bias("key")?, bias("value")?])?;
            layers.push(Layer {
                qkv: Linear::new(qkv_weight, Some(qkv_bias)),
                attention_output: tensors.linear(
                    &format!("{prefix}.attention.output.dense"),
                    hidden,
                    hidden,
                )?,
                attention_norm: tensors.layer_norm(
                    &format!("{prefix}.attention.output.LayerNorm"),
                    hidden,
                    eps,
                )?,
                intermediate: tensors.linear(
                    &format!("{prefix}.intermediate.dense"),
                    config.intermediate_size,
                    hidden,
                )?,
                output: tensors.linear(
                    &format!("{prefix}.output.dense"),
                    hidden,
                    config.intermediate_size,
                )?,
                output_norm: tensors.layer_norm(
                    &format!("{prefix}.output.LayerNorm"),
                    hidden,
                    eps,
                )?,
            });
        }
        let head = match tensors.rows_of("classifier.weight") {
            Some(num_labels) => Some(ClassifierHead {
                pooler: tensors.linear(&format!("{base}pooler.dense"), hidden, hidden)?,
                classifier: tensors.linear("classifier", num_labels, hidden)?,
            }),
            None => None,
        };
        Ok(Self {
            word_embeddings: tensors.get(
                &format!("{base}embeddings.word_embeddings.weight"),
                &[config.vocab_size, hidden],
            )?,
            position_embeddings: tensors.get(
                &format!("{base}embeddings.position_embeddings.weight"),
                &[config.max_position_embeddings, hidden],
            )?,
            // Single-segment inputs: every token has token type 0.
            token_type_row: token_types.i(0).map_err(|e| tensors.candle(e))?,
            embeddings_norm: tensors.layer_norm(
                &format!("{base}embeddings.LayerNorm"),
                hidden,
                eps,
            )?,
            layers,
            head,
            activation,
            num_heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            hidden_size: hidden,
            max_positions: config.max_position_embeddings,
            device: tensors.device().clone(),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    pub fn num_labels(&self) -> Option<usize> {
        self.head
            .as_ref()
            .map(|head| head.classifier.weight().dims()[0])
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// `[CLS]` hidden states [b, H] and, with a head, logits [b, C] for one padded batch.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<BatchOutput> {
        let (size, length) = (batch.lengths.len(), batch.padded_length);
        let ids = Tensor::from_slice(&batch.ids, (size, length), &self.device)?;
        let positions = self.position_embeddings.narrow(0, 0, length)?;
        let embedded = self
            .word_embeddings
            .embedding(&ids.flatten_all()?)?
            .reshape((size, length, self.hidden_size))?
            .broadcast_add(&positions)?
            .broadcast_add(&self.token_type_row)?;
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        let mask = self.attention_bias(batch)?;
        let last = self.layers.len().saturating_sub(1);
        for (index, layer) in self.layers.iter().enumerate() {
            hidden = self.layer_forward(layer, &hidden, &mask, index == last)?;
        }
        let cls = hidden.i((.., 0, ..))?.contiguous()?;
        let logits = match &self.head {
            Some(head) => Some(
                head.classifier
                    .forward(&head.pooler.forward(&cls)?.tanh()?)?,
            ),
            None => None,
        };
        Ok(BatchOutput { cls, logits })
    }

    /// Additive attention mask [b, 1, 1, L]: 0 for tokens, a large negative for padding.
    fn attention_bias(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let length = batch.padded_length;
        let mut bias = vec![0f32; batch.lengths.len() * length];
        for (row, &tokens) in batch.lengths.iter().enumerate() {
            bias[row * length + tokens..(row + 1) * length].fill(f32::MIN);
        }
        Tensor::from_vec(bias, (batch.lengths.len(), 1, 1, length), &self.device)
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
        let intermediate = self
            .activation
            .apply(&layer.intermediate.forward(&attended)?)?;
        layer
            .output_norm
            .forward(&(layer.output.forward(&intermediate)? + attended)?)
    }
}
