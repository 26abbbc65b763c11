//! A LoRA adapter merged into its base model's tensors, as peft's `merge_and_unload`
//! computes it: for every adapted Linear `W += (B · A) · scaling` (nn.Linear ignores
//! `fan_in_fan_out`, as peft does), `b += lora_B.bias · scaling` with `lora_bias`, for
//! an adapted Embedding `E += (B · A)ᵀ · scaling`; every other adapter tensor
//! (`modules_to_save`, the new head) replaces or adds the base's. Adapter keys are
//! `base_model.model.<name in the model>`; a base saved as a bare encoder
//! (`embeddings.*`) is read under the classifier's names (`bert.embeddings.*`).

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;

use super::EmbedError;
use crate::checkpoint::AdapterConfig;

const PEFT_PREFIX: &str = "base_model.model.";

/// The base model's tensors under the classifier's names: `backbone.` is put before
/// every name when the base was saved as a bare encoder (its `word_embeddings` name
/// has no prefix).
pub(crate) fn in_classifier_names(
    base: HashMap<String, Tensor>,
    backbone: &str,
    word_embeddings: &str,
) -> HashMap<String, Tensor> {
    let wrapped = format!("{backbone}.{word_embeddings}.weight");
    if base.contains_key(&wrapped) || !base.contains_key(&format!("{word_embeddings}.weight")) {
        return base;
    }
    base.into_iter()
        .map(|(name, tensor)| (format!("{backbone}.{name}"), tensor))
        .collect()
}

#[derive(Default)]
struct Low {
    a: Option<Tensor>,
    b: Option<Tensor>,
    bias: Option<Tensor>,
    /// An Embedding's factors (`lora_embedding_A/B`), whose product is transposed.
    embedding: bool,
}

/// `base` with `adapter` (its tensors by their names on disk) merged in; `source`
/// names the adapter file in errors.
pub(crate) fn merge(
    base: &HashMap<String, Tensor>,
    adapter: HashMap<String, Tensor>,
    config: &AdapterConfig,
    backbone: &str,
    source: &str,
) -> Result<HashMap<String, Tensor>, EmbedError> {
    let error = |message: String| EmbedError::Weights {
        path: source.to_string(),
        message,
    };
    let mut merged = base.clone();
    // The name a key of the model takes in `merged`: as written, or inside the backbone.
    let resolve = |merged: &HashMap<String, Tensor>, name: &str| -> Option<String> {
        [name.to_string(), format!("{backbone}.{name}")]
            .into_iter()
            .find(|candidate| merged.contains_key(candidate))
    };
    let mut adapted: BTreeMap<String, Low> = BTreeMap::new();
    let mut replacements = Vec::new();
    for (key, tensor) in adapter {
        let Some(name) = key.strip_prefix(PEFT_PREFIX) else {
            return Err(error(format!(
                "adapter key {key} does not start with {PEFT_PREFIX} (not a peft adapter?)"
            )));
        };
        let part = |suffix: &str| name.strip_suffix(suffix).map(str::to_string);
        if let Some(module) = part(".lora_A.weight") {
            adapted.entry(module).or_default().a = Some(tensor);
        } else if let Some(module) = part(".lora_B.weight") {
            adapted.entry(module).or_default().b = Some(tensor);
        } else if let Some(module) = part(".lora_B.bias") {
            adapted.entry(module).or_default().bias = Some(tensor);
        } else if let Some(module) = part(".lora_embedding_A") {
            let low = adapted.entry(module).or_default();
            (low.a, low.embedding) = (Some(tensor), true);
        } else if let Some(module) = part(".lora_embedding_B") {
            let low = adapted.entry(module).or_default();
            (low.b, low.embedding) = (Some(tensor), true);
        } else if name.contains(".lora_") {
            return Err(error(format!(
                "adapter key {key} is not a LoRA tensor dwell knows (lora_A, lora_B, \
                 lora_embedding_A/B)"
            )));
        } else {
            replacements.push((name.to_string(), tensor));
        }
    }
    for (name, tensor) in replacements {
        let target = resolve(&merged, &name).unwrap_or(name);
        if let Some(old) = merged.get(&target) {
            if old.dims() != tensor.dims() {
                return Err(error(format!(
                    "adapter tensor {PEFT_PREFIX}{target} has shape {:?}, the base's {target} \
                     has {:?}",
                    tensor.dims(),
                    old.dims()
                )));
            }
        }
        merged.insert(target, tensor);
    }
    for (module, low) in adapted {
        let suffix = if low.embedding {
            "lora_embedding_"
        } else {
            "lora_"
        };
        let (Some(a), Some(b)) = (low.a, low.b) else {
            return Err(error(format!(
                "adapter module {PEFT_PREFIX}{module} lacks its {suffix}A or {suffix}B tensor"
            )));
        };
        let weight_name = resolve(&merged, &format!("{module}.weight")).ok_or_else(|| {
            error(format!(
                "adapter key {PEFT_PREFIX}{module}.{suffix}A matches no tensor of the base \
                 model (looked for {module}.weight and {backbone}.{module}.weight)"
            ))
        })?;
        let weight = &merged[&weight_name];
        let model_name = weight_name.trim_end_matches(".weight");
        let (rank, scaling) = config.rank_and_scaling(model_name);
        let (a_dims, b_dims, w_dims) = (a.dims().to_vec(), b.dims().to_vec(), weight.dims());
        // A [r, in] and B [out, r] for a Linear W [out, in]; for an Embedding W [rows,
        // dim], A is [r, rows] and B [dim, r].
        let (out_dim, in_dim) = if low.embedding {
            (w_dims[1], w_dims[0])
        } else {
            (w_dims[0], w_dims[1])
        };
        if a_dims != [rank, in_dim] || b_dims != [out_dim, rank] || w_dims.len() != 2 {
            return Err(error(format!(
                "adapter module {PEFT_PREFIX}{module}: {suffix}A has shape {a_dims:?} and \
                 {suffix}B {b_dims:?}, but the base's {weight_name} has {w_dims:?} and the \
                 rank is {rank}"
            )));
        }
        let candle = |e: candle_core::Error| error(format!("merging {module}: {e}"));
        let mut delta = (b.matmul(&a).map_err(candle)? * scaling).map_err(candle)?;
        if low.embedding {
            delta = delta.t().map_err(candle)?;
        }
        let updated = (weight + delta).map_err(candle)?;
        merged.insert(weight_name.clone(), updated);
        if let Some(bias) = low.bias {
            let bias_name = format!("{model_name}.bias");
            let base_bias = merged.get(&bias_name).ok_or_else(|| {
                error(format!(
                    "adapter module {PEFT_PREFIX}{module} has lora_B.bias but the base's \
                     {model_name} has no bias"
                ))
            })?;
            let updated = (base_bias + (bias * scaling).map_err(candle)?).map_err(candle)?;
            merged.insert(bias_name, updated);
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu).unwrap()
    }

    fn values(tensor: &Tensor) -> Vec<f32> {
        tensor.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn lora(r: usize, alpha: f64, rslora: bool) -> AdapterConfig {
        AdapterConfig {
            base_model: None,
            revision: None,
            r,
            lora_alpha: alpha,
            use_rslora: rslora,
            rank_pattern: Vec::new(),
            alpha_pattern: Vec::new(),
        }
    }

    #[test]
    fn a_linear_gets_b_times_a_scaled_and_a_saved_module_replaces_or_adds() {
        // A bare encoder's W = [[1, 2], [3, 4]], b = [0.5, -0.5].
        let base = in_classifier_names(
            HashMap::from([
                (
                    "embeddings.word_embeddings.weight".into(),
                    tensor(&[0.0; 6], &[3, 2]),
                ),
                (
                    "encoder.q.weight".into(),
                    tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2]),
                ),
                ("encoder.q.bias".into(), tensor(&[0.5, -0.5], &[2])),
            ]),
            "bert",
            "embeddings.word_embeddings",
        );
        assert!(base.contains_key("bert.encoder.q.weight"));
        // r = 1: A = [[1, -1]], B = [[2], [1]]; B·A = [[2, -2], [1, -1]].
        let adapter = HashMap::from([
            (
                "base_model.model.bert.encoder.q.lora_A.weight".into(),
                tensor(&[1.0, -1.0], &[1, 2]),
            ),
            (
                "base_model.model.bert.encoder.q.lora_B.weight".into(),
                tensor(&[2.0, 1.0], &[2, 1]),
            ),
            (
                "base_model.model.bert.encoder.q.lora_B.bias".into(),
                tensor(&[1.0, 2.0], &[2]),
            ),
            (
                "base_model.model.classifier.weight".into(),
                tensor(&[7.0, 8.0], &[1, 2]),
            ),
        ]);
        // alpha 2, r 1: scaling 2.
        let merged = merge(&base, adapter.clone(), &lora(1, 2.0, false), "bert", "a").unwrap();
        assert_eq!(
            values(&merged["bert.encoder.q.weight"]),
            [5.0, -2.0, 5.0, 2.0]
        );
        assert_eq!(values(&merged["bert.encoder.q.bias"]), [2.5, 3.5]);
        assert_eq!(values(&merged["classifier.weight"]), [7.0, 8.0]);
        // rsLoRA with r 1 scales by alpha / √1 as well; alpha 4 doubles it.
        let merged = merge(&base, adapter, &lora(1, 4.0, true), "bert", "a").unwrap();
        assert_eq!(
            values(&merged["bert.encoder.q.weight"]),
            [9.0, -6.0, 7.0, 0.0]
        );
    }

    #[test]
    fn an_embedding_gets_the_transposed_product() {
        let base = HashMap::from([("bert.emb.weight".to_string(), tensor(&[0.0; 6], &[3, 2]))]);
        // rows 3, dim 2, r 1: A [1, 3] = [[1, 2, 3]], B [2, 1] = [[1], [10]].
        let adapter = HashMap::from([
            (
                "base_model.model.bert.emb.lora_embedding_A".into(),
                tensor(&[1.0, 2.0, 3.0], &[1, 3]),
            ),
            (
                "base_model.model.bert.emb.lora_embedding_B".into(),
                tensor(&[1.0, 10.0], &[2, 1]),
            ),
        ]);
        let merged = merge(&base, adapter, &lora(1, 1.0, false), "bert", "a").unwrap();
        assert_eq!(
            values(&merged["bert.emb.weight"]),
            [1.0, 10.0, 2.0, 20.0, 3.0, 30.0]
        );
    }

    #[test]
    fn unknown_targets_and_wrong_shapes_are_named() {
        let base = HashMap::from([("bert.q.weight".to_string(), tensor(&[0.0; 4], &[2, 2]))]);
        let missing = HashMap::from([
            (
                "base_model.model.bert.k.lora_A.weight".into(),
                tensor(&[0.0; 2], &[1, 2]),
            ),
            (
                "base_model.model.bert.k.lora_B.weight".into(),
                tensor(&[0.0; 2], &[2, 1]),
            ),
        ]);
        let message = merge(
            &base,
            missing,
            &lora(1, 1.0, false),
            "bert",
            "adapter.safetensors",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            message.contains("adapter.safetensors")
                && message.contains("base_model.model.bert.k.lora_A matches no tensor"),
            "{message}"
        );
        let misshapen = HashMap::from([
            (
                "base_model.model.bert.q.lora_A.weight".into(),
                tensor(&[0.0; 3], &[1, 3]),
            ),
            (
                "base_model.model.bert.q.lora_B.weight".into(),
                tensor(&[0.0; 2], &[2, 1]),
            ),
        ]);
        let message = merge(&base, misshapen, &lora(1, 1.0, false), "bert", "a")
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("lora_A has shape [1, 3]") && message.contains("has [2, 2]"),
            "{message}"
        );
    }
}
