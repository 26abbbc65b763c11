//! The trainable BERT sequence classifier: parameters under the tensor names of
//! transformers' `BertForSequenceClassification`, and a forward pass for training.
//!
//! The forward repeats the math of `embed::CandleEncoder` with differentiable ops:
//! candle-nn's fused layer norm and last-dimension softmax have no backward pass, so
//! gradients through them would silently stop. A test holds the two to 1e-5.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::Rng;

use crate::embed::NamedTensors;

/// The shape of the tiny BERT: the fixture run's (`hf_finetune.py --tiny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Architecture {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub num_labels: usize,
}

pub(crate) const LAYER_NORM_EPS: f64 = 1e-12;
pub(crate) const INITIALIZER_RANGE: f64 = 0.02;

/// Every parameter as a `Var`, by its transformers name.
pub(crate) struct TrainableBert {
    architecture: Architecture,
    vars: BTreeMap<String, Var>,
}

struct Init {
    shape: Vec<usize>,
    kind: InitKind,
}

#[derive(Clone, Copy)]
enum InitKind {
    Normal,
    Zeros,
    Ones,
}

#[derive(Default)]
struct Layout(Vec<(String, Init)>);

impl Layout {
    fn add(&mut self, name: String, shape: Vec<usize>, kind: InitKind) {
        self.0.push((name, Init { shape, kind }));
    }

    fn linear(&mut self, prefix: &str, out_dim: usize, in_dim: usize) {
        self.add(
            format!("{prefix}.weight"),
            vec![out_dim, in_dim],
            InitKind::Normal,
        );
        self.add(format!("{prefix}.bias"), vec![out_dim], InitKind::Zeros);
    }

    fn layer_norm(&mut self, prefix: &str, dim: usize) {
        self.add(format!("{prefix}.weight"), vec![dim], InitKind::Ones);
        self.add(format!("{prefix}.bias"), vec![dim], InitKind::Zeros);
    }
}

impl Architecture {
    /// Parameter names, shapes and initialisations, as `BertForSequenceClassification` has them.
    fn parameters(&self) -> Vec<(String, Init)> {
        let hidden = self.hidden_size;
        let mut layout = Layout::default();
        for (name, rows) in [
            ("word_embeddings", self.vocab_size),
            ("position_embeddings", self.max_position_embeddings),
            ("token_type_embeddings", self.type_vocab_size),
        ] {
            layout.add(
                format!("bert.embeddings.{name}.weight"),
                vec![rows, hidden],
                InitKind::Normal,
            );
        }
        layout.layer_norm("bert.embeddings.LayerNorm", hidden);
        for index in 0..self.num_hidden_layers {
            let prefix = format!("bert.encoder.layer.{index}");
            for part in ["query", "key", "value"] {
                layout.linear(&format!("{prefix}.attention.self.{part}"), hidden, hidden);
            }
            layout.linear(&format!("{prefix}.attention.output.dense"), hidden, hidden);
            layout.layer_norm(&format!("{prefix}.attention.output.LayerNorm"), hidden);
            layout.linear(
                &format!("{prefix}.intermediate.dense"),
                self.intermediate_size,
                hidden,
            );
            layout.linear(
                &format!("{prefix}.output.dense"),
                hidden,
                self.intermediate_size,
            );
            layout.layer_norm(&format!("{prefix}.output.LayerNorm"), hidden);
        }
        layout.linear("bert.pooler.dense", hidden, hidden);
        layout.linear("classifier", self.num_labels, hidden);
        layout.0
    }
}

/// One draw of N(0, std²) by Box–Muller: rand's own normal lives in rand_distr.
fn normal(rng: &mut StdRng, std: f64) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
}

impl TrainableBert {
    /// BERT's initialisation: weights N(0, 0.02²), biases 0, LayerNorm 1 and 0,
    /// and the `[PAD]` row of the word embeddings 0 (transformers' `padding_idx`).
    pub(crate) fn new(
        architecture: Architecture,
        pad_id: usize,
        rng: &mut StdRng,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, init) in architecture.parameters() {
            let count: usize = init.shape.iter().product();
            let mut values: Vec<f32> = match init.kind {
                InitKind::Normal => (0..count).map(|_| normal(rng, INITIALIZER_RANGE)).collect(),
                InitKind::Zeros => vec![0.0; count],
                InitKind::Ones => vec![1.0; count],
            };
            if name == "bert.embeddings.word_embeddings.weight" {
                let hidden = architecture.hidden_size;
                values[pad_id * hidden..(pad_id + 1) * hidden].fill(0.0);
            }
            let tensor = Tensor::from_vec(values, init.shape, device)?;
            vars.insert(name, Var::from_tensor(&tensor)?);
        }
        Ok(Self { architecture, vars })
    }

    pub(crate) fn vars(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// The current values by name, detached from the graph but sharing storage with the
    /// parameters: the next optimizer step changes them, so use them before it.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect()
    }

    /// The current values in the form the inference model loads.
    pub(crate) fn named_tensors(&self, device: &Device) -> NamedTensors {
        let tensors: HashMap<String, Tensor> = self.snapshot().into_iter().collect();
        NamedTensors::new(tensors, "the model in training".into(), device)
    }

    fn get(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.vars
            .get(name)
            .map(Var::as_tensor)
            .ok_or_else(|| candle_core::Error::Msg(format!("no parameter {name}")))
    }

    /// `xs W^T + b` over the last dimension, as one 2-D matmul.
    fn linear(&self, prefix: &str, xs: &Tensor) -> candle_core::Result<Tensor> {
        let weight = self.get(&format!("{prefix}.weight"))?;
        let bias = self.get(&format!("{prefix}.bias"))?;
        let mut dims = xs.dims().to_vec();
        let inputs = dims.pop().unwrap_or(1);
        let rows: usize = dims.iter().product();
        dims.push(weight.dim(0)?);
        xs.reshape((rows, inputs))?
            .matmul(&weight.t()?)?
            .broadcast_add(bias)?
            .reshape(dims)
    }

    fn layer_norm(&self, prefix: &str, xs: &Tensor) -> candle_core::Result<Tensor> {
        let centred = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(variance + LAYER_NORM_EPS)?.sqrt()?)?
            .broadcast_mul(self.get(&format!("{prefix}.weight"))?)?
            .broadcast_add(self.get(&format!("{prefix}.bias"))?)
    }

    /// Logits [b, C] for token ids [b, L] (u32) and per-row token counts;
    /// padding positions are masked out of attention as in `CandleEncoder`.
    pub(crate) fn forward(&self, ids: &Tensor, lengths: &[usize]) -> candle_core::Result<Tensor> {
        let a = self.architecture;
        let (size, length) = ids.dims2()?;
        let (hidden, heads) = (a.hidden_size, a.num_attention_heads);
        let head_dim = hidden / heads;
        let embedded = self
            .get("bert.embeddings.word_embeddings.weight")?
            .embedding(&ids.flatten_all()?)?
            .reshape((size, length, hidden))?
            .broadcast_add(
                &self
                    .get("bert.embeddings.position_embeddings.weight")?
                    .narrow(0, 0, length)?,
            )?
            .broadcast_add(
                &self
                    .get("bert.embeddings.token_type_embeddings.weight")?
                    .narrow(0, 0, 1)?,
            )?;
        let mut states = self.layer_norm("bert.embeddings.LayerNorm", &embedded)?;
        let mut bias = vec![0f32; size * length];
        for (row, &tokens) in lengths.iter().enumerate() {
            bias[row * length + tokens..(row + 1) * length].fill(f32::MIN);
        }
        let mask = Tensor::from_vec(bias, (size, 1, 1, length), ids.device())?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for index in 0..a.num_hidden_layers {
            let prefix = format!("bert.encoder.layer.{index}");
            let split = |xs: Tensor| -> candle_core::Result<Tensor> {
                let rows = xs.dim(1)?;
                xs.reshape((size, rows, heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let key = split(self.linear(&format!("{prefix}.attention.self.key"), &states)?)?;
            let value = split(self.linear(&format!("{prefix}.attention.self.value"), &states)?)?;
            // Only the [CLS] row of the last layer reaches the loss, as in inference.
            let residual = if index + 1 == a.num_hidden_layers {
                states.narrow(1, 0, 1)?
            } else {
                states.clone()
            };
            let query = split(self.linear(&format!("{prefix}.attention.self.query"), &residual)?)?;
            let rows = query.dim(2)?;
            let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(&mask)?;
            let probabilities = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let context = probabilities
                .matmul(&value)?
                .transpose(1, 2)?
                .reshape((size, rows, hidden))?;
            let attended = self.layer_norm(
                &format!("{prefix}.attention.output.LayerNorm"),
                &(self.linear(&format!("{prefix}.attention.output.dense"), &context)? + residual)?,
            )?;
            let intermediate = self
                .linear(&format!("{prefix}.intermediate.dense"), &attended)?
                .gelu_erf()?;
            states = self.layer_norm(
                &format!("{prefix}.output.LayerNorm"),
                &(self.linear(&format!("{prefix}.output.dense"), &intermediate)? + attended)?,
            )?;
        }
        let cls = states.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.linear("bert.pooler.dense", &cls)?.tanh()?;
        self.linear("classifier", &pooled)
    }
}

/// Row-major u32 ids [rows, longest] padded with `pad_id`, and the row lengths.
pub(crate) fn pad_batch(
    sequences: &[&[u32]],
    pad_id: u32,
    device: &Device,
) -> candle_core::Result<(Tensor, Vec<usize>)> {
    let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let mut ids = vec![pad_id; sequences.len() * longest];
    for (row, tokens) in sequences.iter().enumerate() {
        ids[row * longest..row * longest + tokens.len()].copy_from_slice(tokens);
    }
    let ids = Tensor::from_vec(ids, (sequences.len(), longest), device)?;
    Ok((ids, lengths))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ModelConfig;
    use crate::embed::{Batch, CandleEncoder};
    use rand::SeedableRng;

    const TINY: Architecture = Architecture {
        vocab_size: 50,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        max_position_embeddings: 20,
        type_vocab_size: 2,
        num_labels: 3,
    };

    fn config(a: Architecture) -> ModelConfig {
        ModelConfig::from_value(&serde_json::json!({
            "model_type": "bert",
            "hidden_size": a.hidden_size,
            "num_hidden_layers": a.num_hidden_layers,
            "num_attention_heads": a.num_attention_heads,
            "intermediate_size": a.intermediate_size,
            "max_position_embeddings": a.max_position_embeddings,
            "vocab_size": a.vocab_size,
        }))
        .unwrap()
    }

    /// Random (not initial) values everywhere, so LayerNorm and biases are exercised.
    fn perturbed(model: &TrainableBert, rng: &mut StdRng) {
        for (_, var) in model.vars() {
            let noise: Vec<f32> = (0..var.elem_count()).map(|_| normal(rng, 0.5)).collect();
            let noise = Tensor::from_vec(noise, var.shape(), &Device::Cpu).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
    }

    fn sequences() -> Vec<Vec<u32>> {
        vec![
            vec![2, 7, 9, 11, 3],
            vec![2, 40, 3],
            vec![2, 5, 6, 7, 8, 9, 10, 3],
        ]
    }

    #[test]
    fn logits_equal_the_inference_model_on_the_same_weights() {
        let mut rng = StdRng::seed_from_u64(7);
        let model = TrainableBert::new(TINY, 0, &mut rng, &Device::Cpu).unwrap();
        perturbed(&model, &mut rng);
        let sequences = sequences();
        let slices: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        let (ids, lengths) = pad_batch(&slices, 0, &Device::Cpu).unwrap();
        let trained = model.forward(&ids, &lengths).unwrap();

        let inference =
            CandleEncoder::load(&config(TINY), &model.named_tensors(&Device::Cpu)).unwrap();
        let batch = Batch {
            ids: ids.flatten_all().unwrap().to_vec1().unwrap(),
            padded_length: ids.dim(1).unwrap(),
            lengths,
            rows: vec![0, 1, 2],
        };
        let expected = inference.forward(&batch).unwrap().logits.unwrap();
        let difference = (trained - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(difference < 1e-5, "max |Δlogit| = {difference}");
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let mut rng = StdRng::seed_from_u64(3);
        let model = TrainableBert::new(TINY, 0, &mut rng, &Device::Cpu).unwrap();
        let sequences = sequences();
        let slices: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        let (ids, lengths) = pad_batch(&slices, 0, &Device::Cpu).unwrap();
        let logits = model.forward(&ids, &lengths).unwrap();
        let targets = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in model.vars() {
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = grad
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
    }
}
