//! The benchmark checkpoints' `model.safetensors`: a real BERT's tensors renamed into a
//! `BertForSequenceClassification` with a seeded classifier head, or a whole BERT of
//! seeded random values. Random tensors are drawn while the file is written, one at a
//! time, so generating BERT-base holds one tensor in memory, not the model.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{SafeTensors, View};
use safetensors::Dtype;

use super::BenchError;

/// Standard deviation of random matrices and embeddings (BERT's `initializer_range`).
pub(crate) const INITIALIZER_RANGE: f32 = 0.02;

/// How a generated tensor is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fill {
    Zeros,
    Ones,
    /// Normal(0, std²) from a generator seeded with `seed`.
    Normal {
        std: f32,
        seed: u64,
    },
}

/// Where one tensor of the output comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Planned {
    /// The source file's tensor of this name, bytes unchanged.
    Copy {
        from: String,
    },
    Generate {
        shape: Vec<usize>,
        fill: Fill,
    },
}

/// The shape of a BERT encoder and its classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BertShape {
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub num_labels: usize,
}

/// A source model's tensor names mapped to a `BertForSequenceClassification`'s:
/// `bert.` in front of the encoder's names (a name that has it already keeps it), no
/// `position_ids` buffer (not a weight), and a classifier head: the source's own, or a
/// new one drawn from `seed` when `new_head` is set or the source has none. A source
/// without a pooler gets a random one too, since the head reads the pooled `[CLS]`.
pub(crate) fn classifier_plan(
    source_names: &[String],
    hidden: usize,
    num_labels: usize,
    new_head: bool,
    seed: u64,
) -> Vec<(String, Planned)> {
    let replace_head = new_head || !source_names.iter().any(|n| n == "classifier.weight");
    let mut plan: Vec<(String, Planned)> = source_names
        .iter()
        .filter(|name| !name.ends_with("position_ids"))
        .filter(|name| !(replace_head && name.starts_with("classifier.")))
        .map(|name| {
            let target = if name.starts_with("bert.") || name.starts_with("classifier.") {
                name.clone()
            } else {
                format!("bert.{name}")
            };
            (target, Planned::Copy { from: name.clone() })
        })
        .collect();
    let random = |prefix: &str| Fill::Normal {
        std: INITIALIZER_RANGE,
        seed: seed ^ name_hash(prefix),
    };
    if !plan
        .iter()
        .any(|(name, _)| name == "bert.pooler.dense.weight")
    {
        plan.extend(linear(
            "bert.pooler.dense",
            hidden,
            hidden,
            random("bert.pooler.dense"),
        ));
    }
    if replace_head {
        plan.extend(linear(
            "classifier",
            num_labels,
            hidden,
            random("classifier"),
        ));
    }
    plan
}

/// Every tensor of a `BertForSequenceClassification` of `shape`, random as at
/// initialisation: normal(0, 0.02) matrices and embeddings, LayerNorm weight 1 and bias 0,
/// other biases 0. Each tensor has its own seed derived from `seed` and its name.
pub(crate) fn random_bert_plan(shape: &BertShape, seed: u64) -> Vec<(String, Planned)> {
    let hidden = shape.hidden_size;
    let normal = |name: &str| Fill::Normal {
        std: INITIALIZER_RANGE,
        seed: seed ^ name_hash(name),
    };
    let embedding = |name: &str, rows: usize| {
        (
            name.to_string(),
            Planned::Generate {
                shape: vec![rows, hidden],
                fill: normal(name),
            },
        )
    };
    let mut plan = vec![
        embedding("bert.embeddings.word_embeddings.weight", shape.vocab_size),
        embedding(
            "bert.embeddings.position_embeddings.weight",
            shape.max_position_embeddings,
        ),
        embedding(
            "bert.embeddings.token_type_embeddings.weight",
            shape.type_vocab_size,
        ),
    ];
    plan.extend(layer_norm("bert.embeddings.LayerNorm", hidden));
    for layer in 0..shape.num_hidden_layers {
        let prefix = format!("bert.encoder.layer.{layer}");
        let dense = |name: String, out_dim: usize, in_dim: usize| {
            let fill = normal(&name);
            linear(&name, out_dim, in_dim, fill)
        };
        for part in ["query", "key", "value"] {
            plan.extend(dense(
                format!("{prefix}.attention.self.{part}"),
                hidden,
                hidden,
            ));
        }
        plan.extend(dense(
            format!("{prefix}.attention.output.dense"),
            hidden,
            hidden,
        ));
        plan.extend(layer_norm(
            &format!("{prefix}.attention.output.LayerNorm"),
            hidden,
        ));
        plan.extend(dense(
            format!("{prefix}.intermediate.dense"),
            shape.intermediate_size,
            hidden,
        ));
        plan.extend(dense(
            format!("{prefix}.output.dense"),
            hidden,
            shape.intermediate_size,
        ));
        plan.extend(layer_norm(&format!("{prefix}.output.LayerNorm"), hidden));
    }
    plan.extend(linear(
        "bert.pooler.dense",
        hidden,
        hidden,
        normal("bert.pooler.dense"),
    ));
    plan.extend(linear(
        "classifier",
        shape.num_labels,
        hidden,
        normal("classifier"),
    ));
    plan
}

fn linear(prefix: &str, out_dim: usize, in_dim: usize, fill: Fill) -> [(String, Planned); 2] {
    [
        (
            format!("{prefix}.weight"),
            Planned::Generate {
                shape: vec![out_dim, in_dim],
                fill,
            },
        ),
        (
            format!("{prefix}.bias"),
            Planned::Generate {
                shape: vec![out_dim],
                fill: Fill::Zeros,
            },
        ),
    ]
}

fn layer_norm(prefix: &str, dim: usize) -> [(String, Planned); 2] {
    [
        (
            format!("{prefix}.weight"),
            Planned::Generate {
                shape: vec![dim],
                fill: Fill::Ones,
            },
        ),
        (
            format!("{prefix}.bias"),
            Planned::Generate {
                shape: vec![dim],
                fill: Fill::Zeros,
            },
        ),
    ]
}

/// FNV-1a: a stable per-tensor seed offset, independent of the order tensors are written in.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Little-endian f32 values of a generated tensor.
pub(crate) fn generate(shape: &[usize], fill: Fill) -> Vec<u8> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = match fill {
        Fill::Zeros => vec![0.0; count],
        Fill::Ones => vec![1.0; count],
        Fill::Normal { std, seed } => normal_values(count, std, seed),
    };
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Box–Muller: each pair of uniform draws gives two independent standard normals.
fn normal_values(count: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(count + 1);
    while values.len() < count {
        // 1 - [0, 1) is (0, 1]: the logarithm stays finite.
        let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
        let angle = std::f64::consts::TAU * rng.random::<f64>();
        values.push((radius * angle.cos()) as f32 * std);
        values.push((radius * angle.sin()) as f32 * std);
    }
    values.truncate(count);
    values
}

/// One tensor as the safetensors writer sees it; generated bytes are made on demand.
enum Output<'a> {
    Borrowed {
        dtype: Dtype,
        shape: Vec<usize>,
        data: &'a [u8],
    },
    Generated {
        shape: Vec<usize>,
        fill: Fill,
    },
}

impl View for Output<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Output::Borrowed { dtype, .. } => *dtype,
            Output::Generated { .. } => Dtype::F32,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Output::Borrowed { shape, .. } | Output::Generated { shape, .. } => shape,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Output::Borrowed { data, .. } => Cow::Borrowed(data),
            Output::Generated { shape, fill } => Cow::Owned(generate(shape, *fill)),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Output::Borrowed { data, .. } => data.len(),
            Output::Generated { shape, .. } => shape.iter().product::<usize>() * 4,
        }
    }
}

/// Writes `plan` to `path` as `save_pretrained` does (`{"format": "pt"}` metadata);
/// `Copy` entries are taken from `source` (whose file is `source_path`, for errors).
pub(crate) fn write_planned(
    path: &Path,
    plan: Vec<(String, Planned)>,
    source: Option<(&SafeTensors, &Path)>,
) -> Result<(), BenchError> {
    let mut outputs = Vec::with_capacity(plan.len());
    for (name, planned) in plan {
        let output = match planned {
            Planned::Generate { shape, fill } => Output::Generated { shape, fill },
            Planned::Copy { from } => {
                let (tensors, source_path) = source.ok_or_else(|| BenchError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("tensor {from} is to be copied but there is no source"),
                })?;
                let view = tensors.tensor(&from).map_err(|e| BenchError::Invalid {
                    path: source_path.to_path_buf(),
                    message: format!("tensor {from}: {e}"),
                })?;
                Output::Borrowed {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data: view.data(),
                }
            }
        };
        outputs.push((name, output));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(outputs, Some(metadata), path).map_err(|e| BenchError::Invalid {
        path: path.to_path_buf(),
        message: format!("cannot write safetensors: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(plan: &[(String, Planned)]) -> Vec<&str> {
        plan.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[test]
    fn a_bare_bert_gets_the_prefix_and_a_seeded_head_without_position_ids() {
        let source: Vec<String> = [
            "embeddings.position_ids",
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.output.dense.bias",
            "pooler.dense.weight",
            "pooler.dense.bias",
        ]
        .map(String::from)
        .to_vec();
        let plan = classifier_plan(&source, 4, 3, true, 200);
        assert_eq!(
            names(&plan),
            [
                "bert.embeddings.word_embeddings.weight",
                "bert.encoder.layer.0.output.dense.bias",
                "bert.pooler.dense.weight",
                "bert.pooler.dense.bias",
                "classifier.weight",
                "classifier.bias",
            ]
        );
        assert_eq!(
            plan[0].1,
            Planned::Copy {
                from: "embeddings.word_embeddings.weight".into()
            }
        );
        assert_eq!(
            plan[4].1,
            Planned::Generate {
                shape: vec![3, 4],
                fill: Fill::Normal {
                    std: 0.02,
                    seed: 200 ^ name_hash("classifier")
                }
            }
        );
        assert_eq!(
            plan[5].1,
            Planned::Generate {
                shape: vec![3],
                fill: Fill::Zeros
            }
        );
    }

    #[test]
    fn a_classifier_keeps_its_names_and_head_unless_a_new_head_is_asked_for() {
        let source: Vec<String> = [
            "bert.embeddings.position_ids",
            "bert.embeddings.word_embeddings.weight",
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias",
        ]
        .map(String::from)
        .to_vec();
        let kept = classifier_plan(&source, 4, 3, false, 7);
        assert_eq!(
            names(&kept),
            [
                "bert.embeddings.word_embeddings.weight",
                "bert.pooler.dense.weight",
                "bert.pooler.dense.bias",
                "classifier.weight",
                "classifier.bias",
            ]
        );
        assert!(kept.iter().all(|(_, p)| matches!(p, Planned::Copy { .. })));
        let replaced = classifier_plan(&source, 4, 3, true, 40);
        assert_eq!(names(&replaced), names(&kept));
        let seed_of = |plan: &[(String, Planned)]| match plan[3].1 {
            Planned::Generate {
                fill: Fill::Normal { seed, .. },
                ..
            } => seed,
            _ => panic!("classifier.weight is not generated"),
        };
        assert_eq!(seed_of(&replaced), 40 ^ name_hash("classifier"));
        assert_ne!(
            seed_of(&replaced),
            seed_of(&classifier_plan(&source, 4, 3, true, 80))
        );
    }

    #[test]
    fn a_source_without_pooler_gets_a_random_one() {
        let source = vec!["embeddings.word_embeddings.weight".to_string()];
        let plan = classifier_plan(&source, 2, 1, false, 9);
        assert_eq!(
            names(&plan),
            [
                "bert.embeddings.word_embeddings.weight",
                "bert.pooler.dense.weight",
                "bert.pooler.dense.bias",
                "classifier.weight",
                "classifier.bias",
            ]
        );
        assert!(matches!(plan[3].1, Planned::Generate { .. }));
    }

    #[test]
    fn random_bert_base_has_bert_base_parameter_count() {
        let shape = BertShape {
            vocab_size: 30522,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            hidden_size: 768,
            num_hidden_layers: 12,
            intermediate_size: 3072,
            num_labels: 9,
        };
        let plan = random_bert_plan(&shape, 1);
        // 5 embedding tensors, 16 per layer, pooler and classifier 2 each.
        assert_eq!(plan.len(), 5 + 16 * 12 + 2 + 2);
        let parameters: usize = plan
            .iter()
            .map(|(_, p)| match p {
                Planned::Generate { shape, .. } => shape.iter().product(),
                Planned::Copy { .. } => 0,
            })
            .sum();
        // BertModel base is 109,482,240 parameters; the head adds 768 × 9 + 9.
        assert_eq!(parameters, 109_489_161);
        let fill_of = |name: &str| match &plan.iter().find(|(n, _)| n == name).unwrap().1 {
            Planned::Generate { fill, .. } => *fill,
            Planned::Copy { .. } => unreachable!("all generated"),
        };
        assert_eq!(
            fill_of("bert.encoder.layer.3.output.LayerNorm.weight"),
            Fill::Ones
        );
        assert_eq!(
            fill_of("bert.encoder.layer.3.intermediate.dense.bias"),
            Fill::Zeros
        );
        assert!(matches!(
            fill_of("bert.encoder.layer.3.intermediate.dense.weight"),
            Fill::Normal { std: 0.02, .. }
        ));
        assert_ne!(
            fill_of("bert.encoder.layer.3.attention.self.query.weight"),
            fill_of("bert.encoder.layer.3.attention.self.key.weight")
        );
    }

    #[test]
    fn normal_values_are_seeded_and_have_the_asked_spread() {
        let first = generate(&[100_000], Fill::Normal { std: 0.02, seed: 5 });
        assert_eq!(
            first,
            generate(&[100_000], Fill::Normal { std: 0.02, seed: 5 })
        );
        assert_ne!(
            first,
            generate(&[100_000], Fill::Normal { std: 0.02, seed: 6 })
        );
        let values = crate::store::f32_from_le_bytes(&first);
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32;
        assert!(mean.abs() < 0.0005, "mean {mean}");
        assert!(
            (variance.sqrt() - 0.02).abs() < 0.0005,
            "std {}",
            variance.sqrt()
        );
        assert_eq!(
            generate(&[2, 3], Fill::Ones),
            [1f32; 6]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn written_file_holds_copied_and_generated_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let source_bytes = {
            let data: Vec<u8> = [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &data).unwrap();
            safetensors::serialize([("embeddings.x", view)], None).unwrap()
        };
        let source = SafeTensors::deserialize(&source_bytes).unwrap();
        let plan = classifier_plan(&["embeddings.x".to_string()], 2, 1, false, 4);
        let path = dir.path().join("model.safetensors");
        write_planned(&path, plan, Some((&source, Path::new("source")))).unwrap();
        let written = std::fs::read(&path).unwrap();
        let tensors = SafeTensors::deserialize(&written).unwrap();
        assert_eq!(tensors.len(), 5);
        assert_eq!(
            crate::store::f32_from_le_bytes(tensors.tensor("bert.embeddings.x").unwrap().data()),
            [1.0, 2.0]
        );
        assert_eq!(tensors.tensor("classifier.weight").unwrap().shape(), [1, 2]);
    }
}
