//! What an encoder is made of, read once from `config.json`: the embeddings and their
//! position scheme, the kind of layer (attention and norm placement), the activations
//! and the classification head, with the tensor names of the family. The embedding
//! backends execute this description; none of them reads `config.json` itself.

/// The encoder families `dwell` runs, by `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Bert,
    DistilBert,
    Roberta,
    XlmRoberta,
    Electra,
    DebertaV2,
    ModernBert,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Bert,
        Family::DistilBert,
        Family::Roberta,
        Family::XlmRoberta,
        Family::Electra,
        Family::DebertaV2,
        Family::ModernBert,
    ];

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::DistilBert => "distilbert",
            Family::Roberta => "roberta",
            Family::XlmRoberta => "xlm-roberta",
            Family::Electra => "electra",
            Family::DebertaV2 => "deberta-v2",
            Family::ModernBert => "modernbert",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|family| family.model_type() == model_type)
    }
}

/// An activation function by the name transformers gives it (`ACT2FN`), meaning what
/// it means there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`, `gelu_python`: the exact GELU, `x · Φ(x)` with erf.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`, `gelu_accurate`: the tanh approximation.
    GeluTanh,
    /// `quick_gelu`: `x · σ(1.702 x)`.
    QuickGelu,
    Relu,
    /// `relu2`: `relu(x)²`.
    ReluSquared,
    Relu6,
    /// `leaky_relu`: slope 0.01 below zero (torch's default).
    LeakyRelu,
    /// `silu`, `swish`.
    Silu,
    /// `mish`: `x · tanh(softplus(x))`.
    Mish,
    Tanh,
    Sigmoid,
    /// `linear`: the identity.
    Identity,
}

impl Activation {
    pub const ALL: [Activation; 12] = [
        Activation::GeluErf,
        Activation::GeluTanh,
        Activation::QuickGelu,
        Activation::Relu,
        Activation::ReluSquared,
        Activation::Relu6,
        Activation::LeakyRelu,
        Activation::Silu,
        Activation::Mish,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Identity,
    ];

    const NAMES: &'static [(&'static str, Activation)] = &[
        ("gelu", Activation::GeluErf),
        ("gelu_python", Activation::GeluErf),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("gelu_fast", Activation::GeluTanh),
        ("gelu_accurate", Activation::GeluTanh),
        ("quick_gelu", Activation::QuickGelu),
        ("relu", Activation::Relu),
        ("relu2", Activation::ReluSquared),
        ("relu6", Activation::Relu6),
        ("leaky_relu", Activation::LeakyRelu),
        ("silu", Activation::Silu),
        ("swish", Activation::Silu),
        ("mish", Activation::Mish),
        ("tanh", Activation::Tanh),
        ("sigmoid", Activation::Sigmoid),
        ("linear", Activation::Identity),
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, activation)| activation)
    }

    pub fn supported_names() -> String {
        Self::NAMES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The function in f64, as PyTorch defines it: the reference the kernels are held to,
    /// and the scalar path of the CPU kernels for the rarer activations.
    pub fn reference(self, x: f64) -> f64 {
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        match self {
            Activation::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            }
            Activation::QuickGelu => x * sigmoid(1.702 * x),
            Activation::Relu => x.max(0.0),
            Activation::ReluSquared => x.max(0.0).powi(2),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    0.01 * x
                }
            }
            Activation::Silu => x * sigmoid(x),
            // torch's softplus is linear above 20.
            Activation::Mish => x * (if x > 20.0 { x } else { x.exp().ln_1p() }).tanh(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => sigmoid(x),
            Activation::Identity => x,
        }
    }
}

/// erf to about 1e-15 (a continued series for small |x|, the complementary expansion
/// beyond): only for [`Activation::reference`], which runs on a handful of values.
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let value = if a < 2.5 {
        // Maclaurin series: erf(a) = 2/√π Σ (-1)^n a^(2n+1) / (n! (2n+1)).
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Continued fraction for erfc, evaluated from the tail.
        let mut fraction = 0.0;
        for k in (1..60).rev() {
            fraction = (k as f64 / 2.0) / (a + fraction);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction)
    };
    value.copysign(x)
}

/// Where the token embeddings come from and how positions enter.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSpec {
    /// Width of the embedding tables: ELECTRA's and DeBERTa's `embedding_size`, projected
    /// to `hidden_size` when it differs.
    pub width: usize,
    pub positions: Positions,
    /// Rows of the token-type table; 0 when the family has none.
    pub token_types: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// A learned table of `rows` rows; the token at index i takes row `first + i`
    /// (RoBERTa and XLM-R count from `pad_token_id + 1`).
    Learned { first: usize, rows: usize },
    /// No absolute positions: DeBERTa's relative attention, ModernBERT's rotary one.
    None,
}

/// A BERT-shaped (post-norm, absolute-position) family's tensor names, relative to the
/// backbone prefix (`bert.`, `roberta.`, ...) that a classifier wraps them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostNormNames {
    /// The backbone's name inside a `...ForSequenceClassification` (without the dot).
    pub backbone: &'static str,
    pub word_embeddings: &'static str,
    pub position_embeddings: &'static str,
    pub token_type_embeddings: &'static str,
    pub embeddings_norm: &'static str,
    /// ELECTRA's projection from the embedding width to `hidden_size`.
    pub embeddings_projection: &'static str,
    /// The layers, each `{layers}.{index}.{...}`.
    pub layers: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_output: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
}

pub(super) const BERT_NAMES: PostNormNames = PostNormNames {
    backbone: "bert",
    word_embeddings: "embeddings.word_embeddings",
    position_embeddings: "embeddings.position_embeddings",
    token_type_embeddings: "embeddings.token_type_embeddings",
    embeddings_norm: "embeddings.LayerNorm",
    embeddings_projection: "embeddings_project",
    layers: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_output: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

pub(super) const DISTILBERT_NAMES: PostNormNames = PostNormNames {
    backbone: "distilbert",
    layers: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_output: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
    ..BERT_NAMES
};

/// DeBERTa-v2's disentangled attention (DeBERTa-v3 checkpoints use this model type).
#[derive(Debug, Clone, PartialEq)]
pub struct DebertaSpec {
    pub relative_attention: bool,
    pub max_relative_positions: isize,
    pub position_buckets: isize,
    /// `c2p`, `p2c`, in the config's order.
    pub pos_att_type: Vec<String>,
    pub share_att_key: bool,
    /// `norm_rel_ebd`: the relative embeddings go through the encoder's LayerNorm.
    pub norm_relative_embeddings: bool,
    pub position_biased_input: bool,
    pub attention_head_size: Option<usize>,
    pub pad_token_id: Option<usize>,
}

/// ModernBERT's pre-norm layers with rotary attention, global or sliding-window.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertSpec {
    /// Per layer: true where it attends within the sliding window only.
    pub sliding: Vec<bool>,
    /// `local_attention`: a sliding layer's position i sees j when |i − j| ≤ window / 2.
    pub local_attention: usize,
    pub global_rope_theta: f64,
    pub local_rope_theta: f64,
    pub norm_eps: f64,
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

/// The layer stack: the part of the forward pass that differs most between families.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    /// BERT's layer: self-attention, add & LayerNorm, feed-forward, add & LayerNorm.
    PostNorm(PostNormNames),
    DebertaV2(DebertaSpec),
    ModernBert(ModernBertSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's final state.
    Cls,
    /// The mean of the final states over the text's tokens.
    Mean,
}

/// The sequence-classification head: `classifier(norm(act(dense(pool(states)))))`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSpec {
    pub pooling: Pooling,
    /// The dense layer's tensor prefix; inside the backbone for BERT's pooler.
    pub dense: &'static str,
    pub dense_in_backbone: bool,
    pub dense_bias: bool,
    /// The dense layer's output width (DeBERTa's `pooler_hidden_size`).
    pub dense_width: usize,
    pub activation: Activation,
    /// ModernBERT's `head.norm`: its prefix and whether it has a bias.
    pub norm: Option<(&'static str, bool)>,
    pub classifier: &'static str,
}

impl HeadSpec {
    /// The dense layer's tensor prefix in weights whose backbone prefix is `backbone`
    /// (`"bert."`, or `""` for a bare encoder).
    pub fn dense_name(&self, backbone: &str) -> String {
        if self.dense_in_backbone {
            format!("{backbone}{}", self.dense)
        } else {
            self.dense.to_string()
        }
    }
}

/// The whole description of an encoder with its head.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    pub family: Family,
    pub embeddings: EmbeddingSpec,
    pub layers: LayerSpec,
    pub activation: Activation,
    pub head: HeadSpec,
}

impl EncoderSpec {
    /// The backbone's name inside a classifier (`bert`, `deberta`, `model`, ...).
    pub fn backbone(&self) -> &'static str {
        match &self.layers {
            LayerSpec::PostNorm(names) => names.backbone,
            LayerSpec::DebertaV2(_) => "deberta",
            LayerSpec::ModernBert(_) => "model",
        }
    }

    /// The word-embedding table's name inside the backbone, to tell a classifier's
    /// weights (`bert.embeddings...`) from a bare encoder's (`embeddings...`).
    pub fn word_embeddings(&self) -> &'static str {
        match &self.layers {
            LayerSpec::PostNorm(names) => names.word_embeddings,
            LayerSpec::DebertaV2(_) => "embeddings.word_embeddings",
            LayerSpec::ModernBert(_) => "embeddings.tok_embeddings",
        }
    }
}

/// BERT's names under another backbone (RoBERTa and XLM-R: `roberta`, ELECTRA: `electra`).
pub(super) const fn backbone_names(backbone: &'static str) -> PostNormNames {
    PostNormNames {
        backbone,
        ..BERT_NAMES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_activation_name_means_what_it_means_in_transformers() {
        // Values at x = 1 and x = -2, hand-computed from each definition.
        let cases = [
            ("gelu", 0.841_344_746, -0.045_500_264),
            ("gelu_python", 0.841_344_746, -0.045_500_264),
            ("gelu_new", 0.841_191_991, -0.045_402_306),
            ("gelu_pytorch_tanh", 0.841_191_991, -0.045_402_306),
            ("quick_gelu", 0.845_795_766, -0.064_341_377),
            ("relu", 1.0, 0.0),
            ("relu2", 1.0, 0.0),
            ("relu6", 1.0, 0.0),
            ("leaky_relu", 1.0, -0.02),
            ("silu", 0.731_058_579, -0.238_405_844),
            ("swish", 0.731_058_579, -0.238_405_844),
            ("mish", 0.865_098_388, -0.252_501_483),
            ("tanh", 0.761_594_156, -0.964_027_580),
            ("sigmoid", 0.731_058_579, 0.119_202_922),
            ("linear", 1.0, -2.0),
        ];
        for (name, at_one, at_minus_two) in cases {
            let activation = Activation::from_name(name).unwrap();
            assert!(
                (activation.reference(1.0) - at_one).abs() < 1e-9,
                "{name}(1) = {}",
                activation.reference(1.0)
            );
            assert!(
                (activation.reference(-2.0) - at_minus_two).abs() < 1e-9,
                "{name}(-2) = {}",
                activation.reference(-2.0)
            );
        }
        assert_eq!(Activation::from_name("gelu_10"), None);
    }

    #[test]
    fn erf_matches_tabulated_values() {
        for (x, expected) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!((erf(x) - expected).abs() < 1e-13, "erf({x}) = {}", erf(x));
        }
    }
}
