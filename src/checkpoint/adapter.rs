//! peft adapter checkpoints: `adapter_config.json` beside `adapter_model.safetensors`
//! (or `.bin`), and no full weights. Only LoRA is read; every other `peft_type`, and
//! DoRA, is refused by name.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_json, CheckpointError};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// The keys of `adapter_config.json` that change the merged weights.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// A folder or a hub id; `None` when the file does not say.
    pub base_model: Option<String>,
    pub revision: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// Module-name patterns (peft's regular expressions) to their own rank or alpha.
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
}

#[derive(Deserialize)]
struct RawAdapterConfig {
    peft_type: Option<String>,
    base_model_name_or_path: Option<String>,
    revision: Option<String>,
    r: Option<usize>,
    lora_alpha: Option<f64>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    rank_pattern: InFileOrder,
    #[serde(default)]
    alpha_pattern: InFileOrder,
}

impl AdapterConfig {
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let raw: RawAdapterConfig = read_json(path)?;
        let invalid = |message: String| CheckpointError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        match raw.peft_type.as_deref() {
            Some("LORA") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "peft_type {other:?} is not supported; supported: LORA"
                )))
            }
            None => return Err(invalid("missing field `peft_type`".into())),
        }
        if raw.use_dora {
            return Err(invalid(
                "use_dora is true: DoRA's magnitude normalisation is not supported; merge the \
                 adapter with peft's merge_and_unload() and save full checkpoints, or train \
                 plain LoRA"
                    .into(),
            ));
        }
        let r = raw.r.ok_or_else(|| invalid("missing field `r`".into()))?;
        let lora_alpha = raw
            .lora_alpha
            .ok_or_else(|| invalid("missing field `lora_alpha`".into()))?;
        let pattern =
            |name: &str, map: InFileOrder| -> Result<Vec<(String, f64)>, CheckpointError> {
                map.0
                    .into_iter()
                    .map(|(key, value)| {
                        let number = value.as_f64().ok_or_else(|| {
                            invalid(format!("`{name}.{key}` is {value}; expected a number"))
                        })?;
                        regex::Regex::new(&format!("^(.*\\.)?({key})$")).map_err(|e| {
                            invalid(format!(
                                "`{name}` key {key:?} is not a regular expression: {e}"
                            ))
                        })?;
                        Ok((key, number))
                    })
                    .collect()
            };
        let rank_pattern = pattern("rank_pattern", raw.rank_pattern)?
            .into_iter()
            .map(|(key, rank)| (key, rank as usize))
            .collect();
        Ok(Self {
            base_model: raw.base_model_name_or_path,
            revision: raw.revision,
            r,
            lora_alpha,
            use_rslora: raw.use_rslora,
            rank_pattern,
            alpha_pattern: pattern("alpha_pattern", raw.alpha_pattern)?,
        })
    }

    /// The rank and the scaling of the module named `module` (its name in the model,
    /// e.g. `bert.encoder.layer.0.attention.self.query`), as peft decides them: the
    /// first pattern that matches the end of the name, else `r` and `lora_alpha`.
    pub fn rank_and_scaling(&self, module: &str) -> (usize, f64) {
        let matches = |key: &str| {
            regex::Regex::new(&format!("^(.*\\.)?({key})$"))
                .map(|pattern| pattern.is_match(module))
                .unwrap_or(false)
        };
        let rank = self
            .rank_pattern
            .iter()
            .find(|(key, _)| matches(key))
            .map_or(self.r, |&(_, rank)| rank);
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(key, _)| matches(key))
            .map_or(self.lora_alpha, |&(_, alpha)| alpha);
        let scaling = if self.use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        };
        (rank, scaling)
    }
}

/// The files of an adapter checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterFiles {
    pub config: PathBuf,
    /// `adapter_model.safetensors`, or the `torch.save` pickle `adapter_model.bin`
    /// (read as data by candle's pickle reader).
    pub tensors: PathBuf,
}

impl AdapterFiles {
    /// The adapter in `dir`, if `adapter_config.json` is there; `None` otherwise.
    pub fn find(dir: &Path) -> Result<Option<Self>, CheckpointError> {
        let config = dir.join(ADAPTER_CONFIG);
        if !config.is_file() {
            return Ok(None);
        }
        for name in ["adapter_model.safetensors", "adapter_model.bin"] {
            let tensors = dir.join(name);
            if tensors.is_file() {
                return Ok(Some(Self { config, tensors }));
            }
        }
        Err(CheckpointError::Invalid {
            path: config,
            message: "no adapter_model.safetensors or adapter_model.bin beside it".into(),
        })
    }
}

/// A JSON object's entries in file order: peft takes the first pattern that matches,
/// in the order of its dict, which is the file's.
#[derive(Debug, Default)]
struct InFileOrder(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for InFileOrder {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = InFileOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> Result<InFileOrder, E> {
                Ok(InFileOrder::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InFileOrder, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(InFileOrder(entries))
            }
        }
        deserializer.deserialize_any(Entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(body: serde_json::Value) -> Result<AdapterConfig, CheckpointError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADAPTER_CONFIG);
        std::fs::write(&path, body.to_string()).unwrap();
        AdapterConfig::load(&path)
    }

    #[test]
    fn scaling_is_alpha_over_r_or_over_its_root_with_patterns_per_module() {
        let plain = config(serde_json::json!({
            "peft_type": "LORA", "r": 4, "lora_alpha": 8,
            "rank_pattern": {"layer\\.1\\.attention\\.self\\.query": 2},
            "alpha_pattern": {"value": 16},
        }))
        .unwrap();
        let query0 = "bert.encoder.layer.0.attention.self.query";
        let query1 = "bert.encoder.layer.1.attention.self.query";
        let value0 = "bert.encoder.layer.0.attention.self.value";
        assert_eq!(plain.rank_and_scaling(query0), (4, 2.0));
        assert_eq!(plain.rank_and_scaling(query1), (2, 4.0));
        assert_eq!(plain.rank_and_scaling(value0), (4, 4.0));
        // A pattern matches whole trailing name parts only, as peft's `(.*\.)?(key)$`.
        assert_eq!(
            plain.rank_and_scaling("bert.encoder.layer.0.attention.self.xvalue"),
            (4, 2.0)
        );
        let rs = config(serde_json::json!({
            "peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": true,
        }))
        .unwrap();
        assert_eq!(rs.rank_and_scaling(query0), (4, 4.0));
    }

    #[test]
    fn other_peft_types_and_dora_are_refused_by_name() {
        let message = config(serde_json::json!({"peft_type": "IA3"}))
            .unwrap_err()
            .to_string();
        assert!(message.contains("peft_type \"IA3\" is not supported; supported: LORA"));
        assert!(message.contains(ADAPTER_CONFIG));
        let message = config(serde_json::json!({
            "peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true,
        }))
        .unwrap_err()
        .to_string();
        assert!(message.contains("use_dora is true: DoRA"), "{message}");
    }
}
