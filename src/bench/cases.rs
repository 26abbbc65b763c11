//! Preparing the benchmark cases under `--cases`: deterministic, regenerated only when
//! `case.json` says they came from another source or generator version, and written
//! into a temporary folder renamed into place, so a case folder is whole or absent.
//! Nothing is written inside the source model's folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::weights::{classifier_plan, random_bert_plan, write_planned, BertShape};
use super::{BenchConfig, BenchError, BenchProgress};
use crate::checkpoint::{
    load_tokenizer, CheckpointError, DictionarySearch, ModelConfig, WeightFiles,
};
use crate::probe::{load_probe, LabelledFile, RawLabel};

/// Bump when what a case holds changes, so that old cases are regenerated.
pub const GENERATOR_VERSION: u32 = 2;

/// Texts of the BERT-base case, each at least its max length in tokens (version 1 had
/// 64; 32 halve the minutes a pass takes on 2 cores and still fill every product).
const BERT_BASE_TEXTS: usize = 32;
/// Seed of the minilm case's classifier head (each run checkpoint uses its step).
const MINILM_HEAD_SEED: u64 = 0x6d69_6e69;
/// Seed of the BERT-base case's random weights.
const BERT_BASE_SEED: u64 = 0x6265_7274;
/// Steps between the whole-run case's checkpoints.
const SAVE_STEPS: u64 = 100;

/// The tokenizer files a checkpoint carries, copied when the source has them.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseName {
    /// all-MiniLM-L6-v2 with a random head, the probe at max length 64.
    Minilm,
    /// A random BERT-base, 32 texts of 512 tokens.
    BertBase,
}

impl CaseName {
    /// The case's folder under `--cases`, and its name in the baseline's JSON.
    pub fn dir_name(self) -> &'static str {
        match self {
            CaseName::Minilm => "minilm",
            CaseName::BertBase => "bert-base",
        }
    }

    pub fn max_len(self) -> usize {
        match self {
            CaseName::Minilm => 64,
            CaseName::BertBase => 512,
        }
    }
}

impl fmt::Display for CaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// `case.json`: what a case is and what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseManifest {
    pub name: String,
    pub max_len: usize,
    pub texts: usize,
    pub generator: u32,
    pub source: CaseSource,
    /// Checkpoints in the case's `run/` (the whole-run case); 0 for none.
    pub run_checkpoints: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSource {
    /// The model folder the weights or the tokenizer come from.
    pub model: PathBuf,
    pub probe: PathBuf,
    pub probe_sha256: String,
}

/// A case on disk, ready to measure.
#[derive(Debug, Clone)]
pub struct PreparedCase {
    pub name: CaseName,
    pub dir: PathBuf,
    pub manifest: CaseManifest,
}

impl PreparedCase {
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn probe_path(&self) -> PathBuf {
        self.dir.join("probe.jsonl")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// `cls` and `logits` of dwell's last pass, for the baseline's parity check.
    pub fn output_path(&self) -> PathBuf {
        self.dir.join("dwell-output.safetensors")
    }
}

pub(crate) fn prepare(
    config: &BenchConfig,
    name: CaseName,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<PreparedCase, BenchError> {
    let model = std::fs::canonicalize(&config.minilm).map_err(BenchError::io(&config.minilm))?;
    refuse_cases_inside(&config.cases_dir, &model)?;
    std::fs::create_dir_all(&config.cases_dir).map_err(BenchError::io(&config.cases_dir))?;
    let probe = load_probe(&config.probe)?;
    let manifest = CaseManifest {
        name: name.dir_name().into(),
        max_len: name.max_len(),
        texts: match name {
            CaseName::Minilm => probe.examples.len(),
            CaseName::BertBase => BERT_BASE_TEXTS,
        },
        generator: GENERATOR_VERSION,
        source: CaseSource {
            model: model.clone(),
            probe: std::fs::canonicalize(&config.probe).map_err(BenchError::io(&config.probe))?,
            probe_sha256: probe.sha256.clone(),
        },
        run_checkpoints: match name {
            CaseName::Minilm => config.checkpoints,
            CaseName::BertBase => 0,
        },
    };
    let dir = config.cases_dir.join(name.dir_name());
    let prepared = PreparedCase {
        name,
        dir: dir.clone(),
        manifest: manifest.clone(),
    };
    if existing_manifest(&dir)?.as_ref() == Some(&manifest) {
        progress(BenchProgress::Reused {
            case: name,
            dir: &dir,
        });
        return Ok(prepared);
    }
    progress(BenchProgress::Preparing {
        case: name,
        dir: &dir,
    });
    let temporary =
        config
            .cases_dir
            .join(format!(".{}.tmp-{}", name.dir_name(), std::process::id()));
    if temporary.exists() {
        std::fs::remove_dir_all(&temporary).map_err(BenchError::io(&temporary))?;
    }
    std::fs::create_dir_all(&temporary).map_err(BenchError::io(&temporary))?;
    let source = SourceModel::read(&model, &probe)?;
    match name {
        CaseName::Minilm => write_minilm(&temporary, &source, &probe, config.checkpoints)?,
        CaseName::BertBase => write_bert_base(&temporary, &source, &probe)?,
    }
    write_json(&temporary.join("case.json"), &manifest)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(BenchError::io(&dir))?;
    }
    std::fs::rename(&temporary, &dir).map_err(BenchError::io(&dir))?;
    Ok(prepared)
}

/// A case folder's `case.json`; `None` when there is no folder. A folder without one is
/// not a case (nor half of one: cases are renamed into place whole) and is left alone.
fn existing_manifest(dir: &Path) -> Result<Option<CaseManifest>, BenchError> {
    if !dir.exists() {
        return Ok(None);
    }
    let path = dir.join("case.json");
    let bytes = std::fs::read(&path).map_err(|source| BenchError::Invalid {
        path: dir.to_path_buf(),
        message: format!(
            "exists but is not a dwell bench case ({source} reading case.json); remove it or choose another --cases"
        ),
    })?;
    // A case.json of another shape is an older generator's: regenerate.
    Ok(serde_json::from_slice(&bytes).ok())
}

fn refuse_cases_inside(cases_dir: &Path, model: &Path) -> Result<(), BenchError> {
    let cases = std::fs::canonicalize(cases_dir)
        .or_else(|_| std::path::absolute(cases_dir))
        .map_err(BenchError::io(cases_dir))?;
    if cases.starts_with(model) {
        return Err(BenchError::Flag(format!(
            "--cases {} is inside the model folder {}, which the benchmark never writes to",
            cases_dir.display(),
            model.display()
        )));
    }
    Ok(())
}

/// What the cases take from the source model folder.
struct SourceModel {
    dir: PathBuf,
    config_path: PathBuf,
    /// `config.json` as written, to keep every field transformers reads.
    config_json: serde_json::Value,
    config: ModelConfig,
    labels: Vec<String>,
    weights_path: PathBuf,
}

impl SourceModel {
    fn read(dir: &Path, probe: &LabelledFile) -> Result<Self, BenchError> {
        let config_path = dir.join("config.json");
        let config = ModelConfig::load(&config_path)?;
        let config_json: serde_json::Value = read_json(&config_path)?;
        let labels = match config.labels() {
            Ok(Some(labels)) => labels.names,
            Ok(None) => probe_label_names(probe)?,
            Err(message) => {
                return Err(BenchError::Invalid {
                    path: config_path,
                    message,
                })
            }
        };
        let weights_path = match WeightFiles::find(dir)? {
            Some(WeightFiles::Safetensors(path)) => path,
            Some(_) => {
                return Err(BenchError::Invalid {
                    path: dir.to_path_buf(),
                    message: "the benchmark reads a single model.safetensors; this folder has sharded or pickled weights".into(),
                })
            }
            None => {
                return Err(CheckpointError::NoWeights {
                    path: dir.to_path_buf(),
                }
                .into())
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config_path,
            config_json,
            config,
            labels,
            weights_path,
        })
    }

    fn copy_tokenizer_files(&self, into: &Path) -> Result<(), BenchError> {
        for name in TOKENIZER_FILES {
            let from = self.dir.join(name);
            if from.is_file() {
                std::fs::copy(&from, into.join(name)).map_err(BenchError::io(&from))?;
            }
        }
        Ok(())
    }

    /// The source's config.json as a sequence classifier over `self.labels`.
    fn classifier_config(&self) -> Result<serde_json::Value, BenchError> {
        let mut config = self.config_json.clone();
        let object = config.as_object_mut().ok_or_else(|| BenchError::Invalid {
            path: self.config_path.clone(),
            message: "is not a JSON object".into(),
        })?;
        object.insert(
            "architectures".into(),
            serde_json::json!(["BertForSequenceClassification"]),
        );
        if !object.contains_key("id2label") {
            let (id2label, label2id) = label_maps(&self.labels);
            object.insert("id2label".into(), serde_json::json!(id2label));
            object.insert("label2id".into(), serde_json::json!(label2id));
        }
        Ok(config)
    }
}

/// The probe's label names in sorted order, the class ids of a new head.
fn probe_label_names(probe: &LabelledFile) -> Result<Vec<String>, BenchError> {
    let mut names = BTreeSet::new();
    for example in &probe.examples {
        match &example.label {
            RawLabel::Name(name) => {
                names.insert(name.clone());
            }
            RawLabel::Id(id) => {
                return Err(BenchError::Invalid {
                    path: probe.path.clone(),
                    message: format!(
                        "line {}: label {id} is a class id, but the model has no id2label to name it; use label names",
                        example.line
                    ),
                })
            }
        }
    }
    Ok(names.into_iter().collect())
}

fn label_maps(labels: &[String]) -> (BTreeMap<String, &String>, BTreeMap<&String, usize>) {
    let id2label = labels
        .iter()
        .enumerate()
        .map(|(id, label)| (id.to_string(), label))
        .collect();
    let label2id = labels
        .iter()
        .enumerate()
        .map(|(id, label)| (label, id))
        .collect();
    (id2label, label2id)
}

/// The source as a classifier in `checkpoint/`, the probe, and `run/` with `checkpoints`
/// Trainer-like checkpoints whose heads differ.
fn write_minilm(
    into: &Path,
    source: &SourceModel,
    probe: &LabelledFile,
    checkpoints: usize,
) -> Result<(), BenchError> {
    let config = source.classifier_config()?;
    let bytes =
        std::fs::read(&source.weights_path).map_err(BenchError::io(&source.weights_path))?;
    let tensors =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| BenchError::Invalid {
            path: source.weights_path.clone(),
            message: format!("cannot read safetensors: {e}"),
        })?;
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    let hidden = source.config.hidden_size;
    let num_labels = source.labels.len();
    let weights = Some((&tensors, source.weights_path.as_path()));

    // A checkpoint folder: config, tokenizer files, and the weights with a head seeded by
    // `seed` (a new one even where the source has a head, with `new_head`).
    let write_model = |dir: &Path, new_head: bool, seed: u64| {
        create_dir(dir)?;
        write_json(&dir.join("config.json"), &config)?;
        source.copy_tokenizer_files(dir)?;
        write_planned(
            &dir.join("model.safetensors"),
            classifier_plan(&names, hidden, num_labels, new_head, seed),
            weights,
        )
    };
    write_model(&into.join("checkpoint"), false, MINILM_HEAD_SEED)?;
    write_probe(
        &into.join("probe.jsonl"),
        probe
            .examples
            .iter()
            .map(|example| (example.text.as_str(), &example.label)),
    )?;

    let run = into.join("run");
    let max_steps = SAVE_STEPS * checkpoints as u64;
    for step in (1..=checkpoints as u64).map(|k| k * SAVE_STEPS) {
        let dir = run.join(format!("checkpoint-{step}"));
        write_model(&dir, true, step)?;
        // Last, as the Trainer does: dwell takes this file as the sign of a finished save.
        write_json(
            &dir.join("trainer_state.json"),
            &serde_json::json!({
                "global_step": step,
                "max_steps": max_steps,
                "save_steps": SAVE_STEPS,
                "log_history": [],
            }),
        )?;
    }
    Ok(())
}

/// A random BERT-base classifier with the source's tokenizer, and texts of at least
/// 512 tokens made by joining consecutive probe texts (each labelled as its first).
fn write_bert_base(
    into: &Path,
    source: &SourceModel,
    probe: &LabelledFile,
) -> Result<(), BenchError> {
    let max_len = CaseName::BertBase.max_len();
    let (tokenizer, tokenizer_source) = load_tokenizer(
        &source.dir,
        None,
        None,
        max_len,
        &DictionarySearch::default(),
    )?;
    let texts: Vec<String> = probe.examples.iter().map(|e| e.text.clone()).collect();
    // Truncated at max_len, a text reaches max_len tokens exactly when it has at least that many.
    let joined = join_consecutive(&texts, BERT_BASE_TEXTS, |text| {
        tokenizer
            .encode(text)
            .map(|encoded| encoded.ids.len() >= max_len)
            .map_err(|e| BenchError::Invalid {
                path: tokenizer_source.path().to_path_buf(),
                message: format!("cannot tokenise a joined probe text: {e}"),
            })
    })?
    .ok_or_else(|| BenchError::Invalid {
        path: probe.path.clone(),
        message: format!("all texts joined are shorter than {max_len} tokens"),
    })?;
    let shape = BertShape {
        vocab_size: source.config.vocab_size,
        max_position_embeddings: max_len,
        type_vocab_size: 2,
        hidden_size: 768,
        num_hidden_layers: 12,
        intermediate_size: 3072,
        num_labels: source.labels.len(),
    };
    let checkpoint = into.join("checkpoint");
    create_dir(&checkpoint)?;
    write_json(
        &checkpoint.join("config.json"),
        &bert_base_config(&shape, &source.labels),
    )?;
    source.copy_tokenizer_files(&checkpoint)?;
    write_planned(
        &checkpoint.join("model.safetensors"),
        random_bert_plan(&shape, BERT_BASE_SEED),
        None,
    )?;
    write_probe(
        &into.join("probe.jsonl"),
        joined
            .iter()
            .map(|(text, first)| (text.as_str(), &probe.examples[*first].label)),
    )
}

fn bert_base_config(shape: &BertShape, labels: &[String]) -> serde_json::Value {
    let (id2label, label2id) = label_maps(labels);
    serde_json::json!({
        "architectures": ["BertForSequenceClassification"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": null,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": shape.hidden_size,
        "id2label": id2label,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate_size,
        "label2id": label2id,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": shape.max_position_embeddings,
        "model_type": "bert",
        "num_attention_heads": 12,
        "num_hidden_layers": shape.num_hidden_layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": shape.type_vocab_size,
        "vocab_size": shape.vocab_size,
    })
}

/// Long texts made by joining consecutive texts (wrapping round to the first) until
/// `long_enough` accepts the joined text, each with the index of its first text; `None`
/// when all the texts joined are still not long enough.
pub(crate) fn join_consecutive<E>(
    texts: &[String],
    count: usize,
    mut long_enough: impl FnMut(&str) -> Result<bool, E>,
) -> Result<Option<Vec<(String, usize)>>, E> {
    if texts.is_empty() {
        return Ok(None);
    }
    let mut joined_texts = Vec::with_capacity(count);
    let mut next = 0;
    for _ in 0..count {
        let first = next % texts.len();
        let mut joined = String::new();
        let mut used = 0;
        loop {
            if used == texts.len() {
                return Ok(None);
            }
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(texts[next % texts.len()].trim());
            next += 1;
            used += 1;
            if long_enough(&joined)? {
                break;
            }
        }
        joined_texts.push((joined, first));
    }
    Ok(Some(joined_texts))
}

fn write_probe<'a>(
    path: &Path,
    examples: impl Iterator<Item = (&'a str, &'a RawLabel)>,
) -> Result<(), BenchError> {
    let mut lines = String::new();
    for (text, label) in examples {
        let label = match label {
            RawLabel::Name(name) => serde_json::json!(name),
            RawLabel::Id(id) => serde_json::json!(id),
        };
        lines.push_str(&serde_json::json!({ "text": text, "label": label }).to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).map_err(BenchError::io(path))
}

fn create_dir(path: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(path).map_err(BenchError::io(path))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), BenchError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| BenchError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(BenchError::io(path))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BenchError> {
    let bytes = std::fs::read(path).map_err(BenchError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| BenchError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_at_least(n: usize) -> impl FnMut(&str) -> Result<bool, ()> {
        move |text| Ok(text.split_whitespace().count() >= n)
    }

    #[test]
    fn joins_consecutive_texts_wrapping_round_and_names_each_first_text() {
        let texts = ["a b ", "c", "d e f"].map(String::from);
        let joined = join_consecutive(&texts, 3, words_at_least(3))
            .unwrap()
            .unwrap();
        assert_eq!(
            joined,
            [
                ("a b c".to_string(), 0),
                ("d e f".to_string(), 2),
                ("a b c".to_string(), 0)
            ]
        );
    }

    #[test]
    fn texts_too_short_even_all_together_give_none() {
        let texts = ["a b", "c"].map(String::from);
        assert_eq!(
            join_consecutive(&texts, 1, words_at_least(4)).unwrap(),
            None
        );
        assert_eq!(join_consecutive(&[], 1, words_at_least(1)).unwrap(), None);
    }

    #[test]
    fn a_folder_without_case_json_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing_manifest(&dir.path().join("absent")).unwrap(), None);
        let message = existing_manifest(dir.path()).unwrap_err().to_string();
        assert!(message.contains("not a dwell bench case"), "{message}");
    }

    #[test]
    fn label_maps_number_labels_in_the_given_order() {
        let labels = ["b", "a"].map(String::from);
        let (id2label, label2id) = label_maps(&labels);
        assert_eq!(
            serde_json::json!(id2label),
            serde_json::json!({"0": "b", "1": "a"})
        );
        assert_eq!(
            serde_json::json!(label2id),
            serde_json::json!({"a": 1, "b": 0})
        );
    }
}
