//! What every candle model shares: the activations by name and the
//! sequence-classification head `classifier(norm(act(dense(pool(states)))))`.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use crate::checkpoint::{Activation, HeadSpec, Pooling};
use crate::embed::tensors::NamedTensors;
use crate::embed::EmbedError;

/// `activation` as transformers computes it.
pub(crate) fn activate(activation: Activation, xs: &Tensor) -> candle_core::Result<Tensor> {
    match activation {
        Activation::GeluErf => xs.gelu_erf(),
        // candle's `gelu` is the tanh approximation.
        Activation::GeluTanh => xs.gelu(),
        Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        Activation::Relu => xs.relu(),
        Activation::ReluSquared => xs.relu()?.sqr(),
        Activation::Relu6 => xs.clamp(0f32, 6f32),
        Activation::LeakyRelu => candle_nn::ops::leaky_relu(xs, 0.01),
        Activation::Silu => xs.silu(),
        Activation::Mish => {
            // softplus as torch computes it: linear above 20.
            let softplus = xs.exp()?.affine(1.0, 1.0)?.log()?;
            let linear = xs.gt(20f64)?;
            xs * linear.where_cond(xs, &softplus)?.tanh()?
        }
        Activation::Tanh => xs.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(xs),
        Activation::Identity => Ok(xs.clone()),
    }
}

pub(crate) struct Head {
    pooling: Pooling,
    dense: Linear,
    activation: Activation,
    norm: Option<LayerNorm>,
    classifier: Linear,
}

impl Head {
    /// The head `spec` describes, or `None` when the weights have no classifier.
    pub(crate) fn load(
        spec: &HeadSpec,
        prefix: &str,
        hidden: usize,
        eps: f64,
        tensors: &NamedTensors,
    ) -> Result<Option<Self>, EmbedError> {
        let Some(labels) = tensors.rows_of(&format!("{}.weight", spec.classifier)) else {
            return Ok(None);
        };
        let dense = spec.dense_name(prefix);
        let width = spec.dense_width;
        Ok(Some(Self {
            pooling: spec.pooling,
            dense: tensors.linear_with(&dense, width, hidden, spec.dense_bias)?,
            activation: spec.activation,
            norm: match spec.norm {
                Some((name, bias)) => Some(tensors.layer_norm_with(name, width, eps, bias)?),
                None => None,
            },
            classifier: tensors.linear(spec.classifier, labels, width)?,
        }))
    }

    pub(crate) fn num_labels(&self) -> usize {
        self.classifier.weight().dims()[0]
    }

    /// Logits [b, C] from the `[CLS]` states [b, H] and, for mean pooling, every
    /// position's state [b, L, H] with the texts' lengths.
    pub(crate) fn forward(
        &self,
        cls: &Tensor,
        states: Option<(&Tensor, &[usize])>,
    ) -> candle_core::Result<Tensor> {
        let pooled = match (self.pooling, states) {
            (Pooling::Cls, _) => cls.clone(),
            (Pooling::Mean, Some((states, lengths))) => masked_mean(states, lengths)?,
            (Pooling::Mean, None) => {
                candle_core::bail!("mean pooling needs the state of every position")
            }
        };
        let mut xs = activate(self.activation, &self.dense.forward(&pooled)?)?;
        if let Some(norm) = &self.norm {
            xs = norm.forward(&xs)?;
        }
        self.classifier.forward(&xs)
    }
}

/// The mean of each text's states over its own tokens (padding left out).
fn masked_mean(states: &Tensor, lengths: &[usize]) -> candle_core::Result<Tensor> {
    let (size, length, _) = states.dims3()?;
    let mut mask = vec![0f32; size * length];
    for (row, &tokens) in lengths.iter().enumerate() {
        mask[row * length..row * length + tokens].fill(1.0);
    }
    let mask = Tensor::from_vec(mask, (size, length, 1), states.device())?;
    let counts: Vec<f32> = lengths.iter().map(|&n| n as f32).collect();
    let counts = Tensor::from_vec(counts, (size, 1), states.device())?;
    states
        .broadcast_mul(&mask)?
        .sum(D::Minus2)?
        .to_dtype(DType::F32)?
        .broadcast_div(&counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every activation on candle against its definition: catches a name mapped to the
    /// wrong function (candle-transformers' DistilBERT runs the tanh GELU for `gelu`).
    #[test]
    fn every_activation_on_candle_equals_its_definition() {
        let xs: Vec<f32> = (-160..=160).map(|i| i as f32 / 20.0).collect();
        let input = Tensor::from_slice(&xs, xs.len(), &Device::Cpu).unwrap();
        for activation in Activation::ALL {
            let got: Vec<f32> = activate(activation, &input).unwrap().to_vec1().unwrap();
            for (&x, &y) in xs.iter().zip(&got) {
                let expected = activation.reference(f64::from(x));
                assert!(
                    (f64::from(y) - expected).abs() <= 2e-6 * expected.abs().max(1.0),
                    "{activation:?}({x}) = {y}, expected {expected}"
                );
            }
        }
        // The two GELUs differ by more than the parity tolerance near x = -2.
        let gelu = |a: Activation| a.reference(-2.0);
        assert!((gelu(Activation::GeluErf) - gelu(Activation::GeluTanh)).abs() > 9e-5);
    }
}
