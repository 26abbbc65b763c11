//! `config.json`: what the encoder is made of (an [`EncoderSpec`]) and the label names.
//! Every key that changes the forward pass is read here, once; a value `dwell` cannot
//! run is refused with the key, its value and what is supported.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::encoder::{
    backbone_names, Activation, DebertaSpec, EmbeddingSpec, EncoderSpec, Family, HeadSpec,
    LayerSpec, ModernBertSpec, Pooling, Positions, BERT_NAMES, DISTILBERT_NAMES,
};
use super::{read_json, CheckpointError};
use crate::probe::LabelSet;

pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "bert",
    "distilbert",
    "roberta",
    "xlm-roberta",
    "electra",
    "deberta-v2",
    "modernbert",
];

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub encoder: EncoderSpec,
    /// `_name_or_path`: the model the checkpoint was fine-tuned from, as the user named it.
    pub name_or_path: Option<String>,
    /// Label names by class id; keys are decimal strings in the file.
    pub id2label: Option<BTreeMap<String, String>>,
}

/// Reads the keys of one `config.json`, each error naming the key.
struct Keys<'a> {
    value: &'a Value,
}

impl Keys<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    /// The value of `key` read by `read`, `None` when absent; an error naming the key,
    /// its value and what was `expected` when present but of another type.
    fn typed<'v, T>(
        &'v self,
        key: &str,
        read: impl FnOnce(&'v Value) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => read(v)
                .map(Some)
                .ok_or_else(|| format!("`{key}` is {v}; expected {expected}")),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, String> {
        self.optional_usize(key)?
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    fn optional_usize(&self, key: &str) -> Result<Option<usize>, String> {
        self.typed(
            key,
            |v| v.as_u64().map(|n| n as usize),
            "a non-negative integer",
        )
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, String> {
        Ok(self.optional_usize(key)?.unwrap_or(default))
    }

    fn isize_or(&self, key: &str, default: isize) -> Result<isize, String> {
        Ok(self
            .typed(key, |v| v.as_i64().map(|n| n as isize), "an integer")?
            .unwrap_or(default))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        Ok(self
            .typed(key, Value::as_f64, "a number")?
            .unwrap_or(default))
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        Ok(self
            .typed(key, Value::as_bool, "true or false")?
            .unwrap_or(default))
    }

    fn str_or<'v>(&'v self, key: &str, default: &'v str) -> Result<&'v str, String> {
        Ok(self
            .typed(key, Value::as_str, "a string")?
            .unwrap_or(default))
    }

    fn activation(&self, key: &str, default: &str) -> Result<Activation, String> {
        let name = self.str_or(key, default)?;
        Activation::from_name(name).ok_or_else(|| {
            format!(
                "`{key}` {name:?} is not supported; supported: {}",
                Activation::supported_names()
            )
        })
    }

    /// `key` must be one of `supported` (or absent, meaning `default`).
    fn one_of<'v>(
        &'v self,
        key: &str,
        default: &'v str,
        supported: &[&str],
    ) -> Result<&'v str, String> {
        let value = self.str_or(key, default)?;
        if supported.contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "`{key}` {value:?} is not supported; supported: {}",
                supported.join(", ")
            ))
        }
    }
}

/// The sizes every family has, under the family's own key names.
struct Sizes {
    hidden: usize,
    layers: usize,
    heads: usize,
    intermediate: usize,
    eps: f64,
    max_positions: usize,
    vocab: usize,
}

impl Sizes {
    /// The sizes under the usual key names, with the family's defaults for the norm's
    /// epsilon (its key and value) and for `max_position_embeddings`.
    fn read(
        keys: &Keys,
        (eps_key, eps): (&str, f64),
        max_positions: usize,
    ) -> Result<Self, String> {
        Ok(Sizes {
            hidden: keys.usize("hidden_size")?,
            layers: keys.usize("num_hidden_layers")?,
            heads: keys.usize("num_attention_heads")?,
            intermediate: keys.usize("intermediate_size")?,
            eps: keys.f64_or(eps_key, eps)?,
            max_positions: keys.usize_or("max_position_embeddings", max_positions)?,
            vocab: keys.usize("vocab_size")?,
        })
    }
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let value: Value = read_json(path)?;
        Self::from_value(&value).map_err(|message| CheckpointError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// The description of the encoder in `value`, a parsed `config.json`.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let keys = Keys { value };
        let model_type = keys.str_or("model_type", "(none)")?;
        let family = Family::from_model_type(model_type).ok_or_else(|| {
            format!(
                "model_type {model_type:?} is not supported; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            )
        })?;
        let (sizes, encoder) = match family {
            Family::DistilBert => distilbert(&keys)?,
            Family::DebertaV2 => deberta_v2(&keys)?,
            Family::ModernBert => modernbert(&keys)?,
            Family::Bert | Family::Roberta | Family::XlmRoberta | Family::Electra => {
                bert_shaped(&keys, family)?
            }
        };
        let id2label = match keys.get("id2label") {
            None => None,
            Some(v) => Some(
                serde_json::from_value(v.clone()).map_err(|e| format!("`id2label` is {v}: {e}"))?,
            ),
        };
        let config = ModelConfig {
            model_type: model_type.to_string(),
            hidden_size: sizes.hidden,
            num_hidden_layers: sizes.layers,
            num_attention_heads: sizes.heads,
            intermediate_size: sizes.intermediate,
            layer_norm_eps: sizes.eps,
            max_position_embeddings: sizes.max_positions,
            vocab_size: sizes.vocab,
            encoder,
            name_or_path: keys
                .get("_name_or_path")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .map(str::to_string),
            id2label,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn family(&self) -> Family {
        self.encoder.family
    }

    fn validate(&self) -> Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.intermediate_size == 0 {
            return Err(
                "hidden_size, num_attention_heads and intermediate_size must be positive".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_hidden_layers == 0 {
            return Err("num_hidden_layers is 0: there is no encoder to embed with".into());
        }
        Ok(())
    }

    /// The longest text, special tokens included, the model has positions for.
    pub fn max_tokens(&self) -> usize {
        match self.encoder.embeddings.positions {
            Positions::Learned { first, rows } => rows.saturating_sub(first),
            Positions::None => self.max_position_embeddings,
        }
    }

    /// The label set in id order; `None` for a model without a classification head's labels.
    pub fn labels(&self) -> Result<Option<LabelSet>, String> {
        let Some(id2label) = &self.id2label else {
            return Ok(None);
        };
        let mut by_id: Vec<(usize, String)> = Vec::with_capacity(id2label.len());
        for (id, name) in id2label {
            let id: usize = id
                .parse()
                .map_err(|_| format!("id2label key {id:?} is not a class id"))?;
            by_id.push((id, name.clone()));
        }
        by_id.sort();
        if by_id.iter().enumerate().any(|(i, (id, _))| i != *id) {
            return Err("id2label ids are not 0..n-1".into());
        }
        Ok(Some(LabelSet {
            names: by_id.into_iter().map(|(_, name)| name).collect(),
        }))
    }
}

/// BERT, RoBERTa, XLM-R and ELECTRA: BERT's layers under the family's backbone name,
/// with the family's positions and head.
fn bert_shaped(keys: &Keys, family: Family) -> Result<(Sizes, EncoderSpec), String> {
    let sizes = Sizes::read(keys, ("layer_norm_eps", 1e-12), 512)?;
    keys.one_of("position_embedding_type", "absolute", &["absolute"])?;
    let activation = keys.activation("hidden_act", "gelu")?;
    let rows = sizes.max_positions;
    let (names, first_position, width, head) = match family {
        Family::Roberta | Family::XlmRoberta => (
            backbone_names("roberta"),
            // Position ids count from the padding id + 1 (`create_position_ids_from_input_ids`).
            keys.usize_or("pad_token_id", 1)? + 1,
            sizes.hidden,
            classification_head(sizes.hidden, Activation::Tanh),
        ),
        // ELECTRA's head uses GELU whatever `hidden_act` says (`get_activation("gelu")`).
        Family::Electra => (
            backbone_names("electra"),
            0,
            keys.usize_or("embedding_size", 128)?,
            classification_head(sizes.hidden, Activation::GeluErf),
        ),
        _ => (
            BERT_NAMES,
            0,
            sizes.hidden,
            HeadSpec {
                pooling: Pooling::Cls,
                dense: "pooler.dense",
                dense_in_backbone: true,
                dense_bias: true,
                dense_width: sizes.hidden,
                activation: Activation::Tanh,
                norm: None,
                classifier: "classifier",
            },
        ),
    };
    if first_position >= rows {
        return Err(format!(
            "`max_position_embeddings` {rows} leaves no position after `pad_token_id` {}",
            first_position - 1
        ));
    }
    let encoder = EncoderSpec {
        family,
        embeddings: EmbeddingSpec {
            width,
            positions: Positions::Learned {
                first: first_position,
                rows,
            },
            token_types: keys.usize_or("type_vocab_size", 2)?,
        },
        layers: LayerSpec::PostNorm(names),
        activation,
        head,
    };
    Ok((sizes, encoder))
}

/// RoBERTa's and ELECTRA's `classifier.dense` → activation → `classifier.out_proj`.
fn classification_head(hidden: usize, activation: Activation) -> HeadSpec {
    HeadSpec {
        pooling: Pooling::Cls,
        dense: "classifier.dense",
        dense_in_backbone: false,
        dense_bias: true,
        dense_width: hidden,
        activation,
        norm: None,
        classifier: "classifier.out_proj",
    }
}

fn distilbert(keys: &Keys) -> Result<(Sizes, EncoderSpec), String> {
    let sizes = Sizes {
        hidden: keys.usize("dim")?,
        layers: keys.usize("n_layers")?,
        heads: keys.usize("n_heads")?,
        intermediate: keys.usize("hidden_dim")?,
        // DistilBERT's LayerNorms are built with eps 1e-12; the config has no key for it.
        eps: 1e-12,
        max_positions: keys.usize_or("max_position_embeddings", 512)?,
        vocab: keys.usize("vocab_size")?,
    };
    let encoder = EncoderSpec {
        family: Family::DistilBert,
        embeddings: EmbeddingSpec {
            width: sizes.hidden,
            // Sinusoidal or learned, the table is in the weights either way.
            positions: Positions::Learned {
                first: 0,
                rows: sizes.max_positions,
            },
            token_types: 0,
        },
        layers: LayerSpec::PostNorm(DISTILBERT_NAMES),
        activation: keys.activation("activation", "gelu")?,
        head: HeadSpec {
            pooling: Pooling::Cls,
            dense: "pre_classifier",
            dense_in_backbone: false,
            dense_bias: true,
            dense_width: sizes.hidden,
            activation: Activation::Relu,
            norm: None,
            classifier: "classifier",
        },
    };
    Ok((sizes, encoder))
}

fn deberta_v2(keys: &Keys) -> Result<(Sizes, EncoderSpec), String> {
    let sizes = Sizes::read(keys, ("layer_norm_eps", 1e-7), 512)?;
    let conv = keys.usize_or("conv_kernel_size", 0)?;
    if conv > 0 {
        return Err(format!(
            "`conv_kernel_size` {conv} is not supported (the convolution after the first \
             layer); supported: 0"
        ));
    }
    let pos_att_type: Vec<String> = match keys.get("pos_att_type") {
        None => Vec::new(),
        Some(Value::String(joined)) => joined
            .to_lowercase()
            .split('|')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`pos_att_type` has {item}; expected strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("`pos_att_type` is {other}; expected a list")),
    };
    if let Some(kind) = pos_att_type
        .iter()
        .find(|kind| !["c2p", "p2c"].contains(&kind.as_str()))
    {
        return Err(format!(
            "`pos_att_type` {kind:?} is not supported; supported: c2p, p2c"
        ));
    }
    let norm_rel_ebd = keys.one_of("norm_rel_ebd", "none", &["none", "layer_norm"])?;
    let position_biased_input = keys.bool_or("position_biased_input", true)?;
    let pooler_width = keys.usize_or("pooler_hidden_size", sizes.hidden)?;
    let encoder = EncoderSpec {
        family: Family::DebertaV2,
        embeddings: EmbeddingSpec {
            width: keys.usize_or("embedding_size", sizes.hidden)?,
            positions: if position_biased_input {
                Positions::Learned {
                    first: 0,
                    rows: sizes.max_positions,
                }
            } else {
                Positions::None
            },
            token_types: keys.usize_or("type_vocab_size", 0)?,
        },
        layers: LayerSpec::DebertaV2(DebertaSpec {
            relative_attention: keys.bool_or("relative_attention", false)?,
            max_relative_positions: keys.isize_or("max_relative_positions", -1)?,
            position_buckets: keys.isize_or("position_buckets", -1)?,
            pos_att_type,
            share_att_key: keys.bool_or("share_att_key", false)?,
            norm_relative_embeddings: norm_rel_ebd == "layer_norm",
            position_biased_input,
            attention_head_size: keys.optional_usize("attention_head_size")?,
            pad_token_id: keys.optional_usize("pad_token_id")?,
        }),
        activation: keys.activation("hidden_act", "gelu")?,
        head: HeadSpec {
            pooling: Pooling::Cls,
            dense: "pooler.dense",
            dense_in_backbone: false,
            dense_bias: true,
            dense_width: pooler_width,
            activation: keys.activation("pooler_hidden_act", "gelu")?,
            norm: None,
            classifier: "classifier",
        },
    };
    Ok((sizes, encoder))
}

/// ModernBERT as transformers v4 writes it (`global_rope_theta`, `local_rope_theta`,
/// `global_attn_every_n_layers`) and as v5 does (`rope_parameters`, `layer_types`).
fn modernbert(keys: &Keys) -> Result<(Sizes, EncoderSpec), String> {
    let sizes = Sizes::read(keys, ("norm_eps", 1e-5), 8192)?;
    let sliding: Vec<bool> = match keys.get("layer_types") {
        Some(Value::Array(types)) => {
            if types.len() != sizes.layers {
                return Err(format!(
                    "`layer_types` has {} entries for `num_hidden_layers` {}",
                    types.len(),
                    sizes.layers
                ));
            }
            types
                .iter()
                .map(|kind| match kind.as_str() {
                    Some("full_attention") => Ok(false),
                    Some("sliding_attention") => Ok(true),
                    _ => Err(format!(
                        "`layer_types` has {kind}; supported: full_attention, sliding_attention"
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(other) => return Err(format!("`layer_types` is {other}; expected a list")),
        None => {
            let every = keys.usize_or("global_attn_every_n_layers", 3)?.max(1);
            (0..sizes.layers).map(|layer| layer % every != 0).collect()
        }
    };
    let (global_rope_theta, local_rope_theta) = match keys.get("rope_parameters") {
        Some(parameters) => {
            let theta = |layer_type: &str, fallback: f64| -> Result<f64, String> {
                // Nested per layer type, or one set for every layer.
                let set = parameters.get(layer_type).unwrap_or(parameters);
                let rope_type = set
                    .get("rope_type")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                if rope_type != "default" {
                    return Err(format!(
                        "`rope_parameters.{layer_type}.rope_type` {rope_type:?} is not supported; \
                         supported: default"
                    ));
                }
                match set.get("rope_theta") {
                    None => Ok(fallback),
                    Some(v) => v.as_f64().ok_or_else(|| {
                        format!(
                            "`rope_parameters.{layer_type}.rope_theta` is {v}; expected a number"
                        )
                    }),
                }
            };
            let local_fallback = keys.f64_or("local_rope_theta", 10_000.0)?;
            (
                theta("full_attention", 160_000.0)?,
                if parameters.get("sliding_attention").is_some() {
                    theta("sliding_attention", local_fallback)?
                } else {
                    local_fallback
                },
            )
        }
        None => (
            keys.f64_or("global_rope_theta", 160_000.0)?,
            keys.f64_or("local_rope_theta", 10_000.0)?,
        ),
    };
    let norm_bias = keys.bool_or("norm_bias", false)?;
    let pooling = match keys.one_of("classifier_pooling", "cls", &["cls", "mean"])? {
        "mean" => Pooling::Mean,
        _ => Pooling::Cls,
    };
    let encoder = EncoderSpec {
        family: Family::ModernBert,
        embeddings: EmbeddingSpec {
            width: sizes.hidden,
            positions: Positions::None,
            token_types: 0,
        },
        layers: LayerSpec::ModernBert(ModernBertSpec {
            sliding,
            local_attention: keys.usize_or("local_attention", 128)?,
            global_rope_theta,
            local_rope_theta,
            norm_eps: sizes.eps,
            norm_bias,
            attention_bias: keys.bool_or("attention_bias", false)?,
            mlp_bias: keys.bool_or("mlp_bias", false)?,
        }),
        activation: keys.activation("hidden_activation", "gelu")?,
        head: HeadSpec {
            pooling,
            dense: "head.dense",
            dense_in_backbone: false,
            dense_bias: keys.bool_or("classifier_bias", false)?,
            dense_width: sizes.hidden,
            activation: keys.activation("classifier_activation", "gelu")?,
            norm: Some(("head.norm", norm_bias)),
            classifier: "classifier",
        },
    };
    Ok((sizes, encoder))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
        let path = dir.path().join("config.json");
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn fixture_config_parses_with_labels_in_id_order() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf-tiny-run/checkpoint-40/config.json");
        let config = ModelConfig::load(&path).unwrap();
        assert_eq!(config.hidden_size, 64);
        let labels = config.labels().unwrap().unwrap();
        assert_eq!(labels.names[0], "games");
        assert_eq!(labels.names[8], "database");
    }

    #[test]
    fn unsupported_model_type_names_the_supported_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, r#"{"model_type": "albert", "hidden_size": 8}"#);
        let message = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains(
            "model_type \"albert\" is not supported; supported: bert, distilbert, roberta, \
             xlm-roberta, electra, deberta-v2, modernbert"
        ));
        assert!(message.contains("config.json"));
    }

    fn sizes(model_type: &str) -> serde_json::Value {
        serde_json::json!({
            "model_type": model_type,
            "hidden_size": 8,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "vocab_size": 30,
            "pad_token_id": 1,
        })
    }

    #[test]
    fn roberta_positions_count_from_the_padding_id_and_leave_fewer_tokens() {
        let mut value = sizes("xlm-roberta");
        value["max_position_embeddings"] = 130.into();
        let config = ModelConfig::from_value(&value).unwrap();
        assert_eq!(
            config.encoder.embeddings.positions,
            Positions::Learned {
                first: 2,
                rows: 130
            }
        );
        assert_eq!(config.max_tokens(), 128);
        assert_eq!(config.encoder.backbone(), "roberta");
        assert_eq!(config.encoder.head.classifier, "classifier.out_proj");
    }

    #[test]
    fn distilbert_reads_its_own_key_names() {
        let value = serde_json::json!({
            "model_type": "distilbert", "dim": 8, "n_layers": 2, "n_heads": 2,
            "hidden_dim": 16, "vocab_size": 30, "activation": "relu",
        });
        let config = ModelConfig::from_value(&value).unwrap();
        assert_eq!(
            (
                config.hidden_size,
                config.num_hidden_layers,
                config.intermediate_size
            ),
            (8, 2, 16)
        );
        assert_eq!(config.encoder.activation, Activation::Relu);
        assert_eq!(config.encoder.embeddings.token_types, 0);
        assert_eq!(config.layer_norm_eps, 1e-12);
    }

    #[test]
    fn modernbert_reads_the_v4_and_the_v5_config_alike() {
        let mut v4 = sizes("modernbert");
        v4["global_attn_every_n_layers"] = 3.into();
        v4["global_rope_theta"] = 80_000.0.into();
        v4["local_rope_theta"] = 5_000.0.into();
        v4["local_attention"] = 8.into();
        let mut v5 = sizes("modernbert");
        v5["layer_types"] = serde_json::json!([
            "full_attention",
            "sliding_attention",
            "sliding_attention",
            "full_attention"
        ]);
        v5["rope_parameters"] = serde_json::json!({
            "full_attention": {"rope_theta": 80000.0, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 5000.0, "rope_type": "default"},
        });
        v5["local_attention"] = 8.into();
        let (v4, v5) = (
            ModelConfig::from_value(&v4).unwrap(),
            ModelConfig::from_value(&v5).unwrap(),
        );
        assert_eq!(v4.encoder, v5.encoder);
        let LayerSpec::ModernBert(spec) = &v4.encoder.layers else {
            panic!("not ModernBERT's layers");
        };
        assert_eq!(spec.sliding, vec![false, true, true, false]);
        assert_eq!(
            (spec.global_rope_theta, spec.local_rope_theta),
            (80_000.0, 5_000.0)
        );
        assert_eq!(v4.encoder.head.pooling, Pooling::Cls);
    }

    #[test]
    fn a_value_it_cannot_run_names_the_key_the_value_and_what_is_supported() {
        let mut value = sizes("modernbert");
        value["rope_parameters"] = serde_json::json!({
            "full_attention": {"rope_theta": 1.0, "rope_type": "yarn"},
        });
        assert_eq!(
            ModelConfig::from_value(&value).unwrap_err(),
            "`rope_parameters.full_attention.rope_type` \"yarn\" is not supported; supported: default"
        );
        let mut value = sizes("modernbert");
        value["layer_types"] = serde_json::json!(["full_attention"]);
        assert_eq!(
            ModelConfig::from_value(&value).unwrap_err(),
            "`layer_types` has 1 entries for `num_hidden_layers` 4"
        );
        let mut value = sizes("bert");
        value["hidden_act"] = "prelu".into();
        assert!(ModelConfig::from_value(&value)
            .unwrap_err()
            .starts_with("`hidden_act` \"prelu\" is not supported; supported: gelu, gelu_python"));
        let mut value = sizes("deberta-v2");
        value["pos_att_type"] = "p2c|c2p".into();
        let LayerSpec::DebertaV2(spec) = ModelConfig::from_value(&value).unwrap().encoder.layers
        else {
            panic!("not DeBERTa's layers");
        };
        assert_eq!(spec.pos_att_type, vec!["p2c", "c2p"]);
        let mut value = sizes("bert");
        value["hidden_size"] = "64".into();
        assert_eq!(
            ModelConfig::from_value(&value).unwrap_err(),
            "`hidden_size` is \"64\"; expected a non-negative integer"
        );
    }

    #[test]
    fn a_zero_size_is_refused_before_any_weight_is_read() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf-tiny-run/checkpoint-40/config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        config["intermediate_size"] = 0.into();
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, &config.to_string());
        let message = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("intermediate_size must be positive"),
            "{message}"
        );
    }

    #[test]
    fn missing_fields_and_bad_json_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, r#"{"model_type": "bert"}"#);
        let message = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("config.json") && message.contains("hidden_size"));
        let path = write_config(&dir, "{not json");
        assert!(ModelConfig::load(&path)
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
    }
}
