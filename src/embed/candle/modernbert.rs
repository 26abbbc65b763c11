//! ModernBERT on candle: pre-norm layers, rotary attention with a theta for global
//! layers and one for sliding-window layers, GeGLU feed-forward, a final norm.
//!
//! Written here rather than taken from candle-transformers: its ModernBERT reads only
//! the transformers v4 config, builds every norm and linear without bias (the config's
//! `norm_bias`, `attention_bias`, `mlp_bias` are ignored) and applies GELU whatever
//! `hidden_activation` says; its classifier hard-codes the head's biases and returns
//! probabilities, not logits.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use super::head::activate;
use crate::checkpoint::{Activation, ModelConfig, ModernBertSpec};
use crate::embed::tensors::NamedTensors;
use crate::embed::{Batch, EmbedError};

struct Layer {
    /// Layer 0 has none: the embeddings' norm precedes it.
    attention_norm: Option<LayerNorm>,
    qkv: Linear,
    attention_output: Linear,
    mlp_norm: LayerNorm,
    /// Input and gate halves in one product.
    mlp_in: Linear,
    mlp_out: Linear,
    sliding: bool,
}

/// cos and sin of every position's rotation angles, [max_positions, head_dim / 2].
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(
        theta: f64,
        head_dim: usize,
        positions: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        // As transformers' default rope: inverse frequencies in f32, angles position × frequency.
        let inverse: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| (1.0 / theta.powf(i as f64 / head_dim as f64)) as f32)
            .collect();
        let half = inverse.len();
        let mut angles = Vec::with_capacity(positions * half);
        for position in 0..positions {
            angles.extend(inverse.iter().map(|&f| position as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (positions, half), device)?;
        Ok(Self {
            cos: angles.cos()?,
            sin: angles.sin()?,
        })
    }

    fn apply(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let length = xs.dim(2)?;
        candle_nn::rotary_emb::rope(
            &xs.contiguous()?,
            &self.cos.narrow(0, 0, length)?,
            &self.sin.narrow(0, 0, length)?,
        )
    }
}

pub(crate) struct ModernBert {
    embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    global: Rotary,
    local: Rotary,
    /// A sliding layer's position i sees j when |i − j| ≤ this.
    reach: usize,
    activation: Activation,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    device: Device,
}

impl ModernBert {
    pub(crate) fn load(
        config: &ModelConfig,
        spec: &ModernBertSpec,
        tensors: &NamedTensors,
    ) -> Result<Self, EmbedError> {
        let base = tensors.backbone_prefix(&config.encoder);
        let hidden = config.hidden_size;
        let inner = config.intermediate_size;
        let eps = spec.norm_eps;
        let norm = |name: String| tensors.layer_norm_with(&name, hidden, eps, spec.norm_bias);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for (index, &sliding) in spec.sliding.iter().enumerate() {
            let prefix = format!("{base}layers.{index}");
            let linear = |name: &str, out_dim, in_dim, bias| {
                tensors.linear_with(&format!("{prefix}.{name}"), out_dim, in_dim, bias)
            };
            layers.push(Layer {
                attention_norm: if index == 0 {
                    None
                } else {
                    Some(norm(format!("{prefix}.attn_norm"))?)
                },
                qkv: linear("attn.Wqkv", 3 * hidden, hidden, spec.attention_bias)?,
                attention_output: linear("attn.Wo", hidden, hidden, spec.attention_bias)?,
                mlp_norm: norm(format!("{prefix}.mlp_norm"))?,
                mlp_in: linear("mlp.Wi", 2 * inner, hidden, spec.mlp_bias)?,
                mlp_out: linear("mlp.Wo", hidden, inner, spec.mlp_bias)?,
                sliding,
            });
        }
        let head_dim = hidden / config.num_attention_heads;
        let device = tensors.device().clone();
        let rotary = |theta| {
            Rotary::new(theta, head_dim, config.max_position_embeddings, &device)
                .map_err(|e| tensors.candle(e))
        };
        Ok(Self {
            embeddings: tensors.get(
                &format!("{base}embeddings.tok_embeddings.weight"),
                &[config.vocab_size, hidden],
            )?,
            embeddings_norm: norm(format!("{base}embeddings.norm"))?,
            layers,
            final_norm: norm(format!("{base}final_norm"))?,
            global: rotary(spec.global_rope_theta)?,
            local: rotary(spec.local_rope_theta)?,
            reach: spec.local_attention / 2,
            activation: config.encoder.activation,
            heads: config.num_attention_heads,
            head_dim,
            hidden,
            device,
        })
    }

    /// Every position's final state [b, L, H] (after the final norm) of one padded batch.
    pub(crate) fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (size, length) = (batch.lengths.len(), batch.padded_length);
        let ids = Tensor::from_slice(&batch.ids, (size, length), &self.device)?;
        let mut states = self.embeddings_norm.forward(
            &self.embeddings.embedding(&ids.flatten_all()?)?.reshape((
                size,
                length,
                self.hidden,
            ))?,
        )?;
        let global_mask = self.mask(batch, None)?;
        let sliding_mask = self.mask(batch, Some(self.reach))?;
        for layer in &self.layers {
            let (mask, rotary) = if layer.sliding {
                (&sliding_mask, &self.local)
            } else {
                (&global_mask, &self.global)
            };
            let normed = match &layer.attention_norm {
                Some(norm) => norm.forward(&states)?,
                None => states.clone(),
            };
            states = (&states + self.attend(layer, &normed, mask, rotary)?)?;
            let inner = layer.mlp_in.forward(&layer.mlp_norm.forward(&states)?)?;
            let halves = inner.chunk(2, D::Minus1)?;
            let gated = (activate(self.activation, &halves[0])? * &halves[1])?;
            states = (&states + layer.mlp_out.forward(&gated)?)?;
        }
        self.final_norm.forward(&states)
    }

    fn attend(
        &self,
        layer: &Layer,
        xs: &Tensor,
        mask: &Tensor,
        rotary: &Rotary,
    ) -> candle_core::Result<Tensor> {
        let (size, length, width) = xs.dims3()?;
        let qkv = layer
            .qkv
            .forward(xs)?
            .reshape((size, length, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let query = rotary.apply(&qkv.get(0)?)?;
        let key = rotary.apply(&qkv.get(1)?)?;
        let value = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(mask)?;
        let context = candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&value)?
            .transpose(1, 2)?
            .reshape((size, length, width))?;
        layer.attention_output.forward(&context)
    }

    /// Additive mask [b, 1, L, L]: padding keys, and with `reach` keys further than that
    /// from the query, get a large negative (set, not added, so that it cannot overflow).
    fn mask(&self, batch: &Batch, reach: Option<usize>) -> candle_core::Result<Tensor> {
        let length = batch.padded_length;
        let mut mask = vec![0f32; batch.lengths.len() * length * length];
        for (row, &tokens) in batch.lengths.iter().enumerate() {
            for query in 0..length {
                let scores = &mut mask[(row * length + query) * length..][..length];
                for (key, score) in scores.iter_mut().enumerate() {
                    let far = reach.is_some_and(|reach| query.abs_diff(key) > reach);
                    if key >= tokens || far {
                        *score = f32::MIN;
                    }
                }
            }
        }
        Tensor::from_vec(mask, (batch.lengths.len(), 1, length, length), &self.device)
    }
}
