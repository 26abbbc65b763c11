//! The training half of `dwell demo`: trains a tiny BERT sequence classifier from
//! scratch on the bundled Debian-sections corpus and leaves a real Hugging Face Trainer
//! `output_dir` behind, one `checkpoint-<step>` every `save_steps`, for dwell to watch.
//! See `docs/DEMO.md` for what is trained and why it is set up this way.

mod checkpoint_writer;
mod model;
mod wordpiece;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::analyze::classification::{macro_f1, predictions, ConfusionMatrix};
use crate::checkpoint::ModelConfig;
use crate::embed::{plan_batches, CandleEncoder, EmbedError, TokenizedProbe};
use checkpoint_writer::{model_config, write_checkpoint, CheckpointFiles};
use model::{pad_batch, Architecture, TrainableBert};
use wordpiece::{tokenizer_config, train_tokenizer, PAD_ID, SPECIAL_TOKENS};

const TRAIN_JSONL: &str = include_str!("../../data/debian-sections/train.jsonl");
const TEST_JSONL: &str = include_str!("../../data/debian-sections/test.jsonl");

/// The fixture run's model (`hf_finetune.py --tiny`), with the trained vocabulary's size.
fn tiny_bert(vocab_size: usize, num_labels: usize) -> Architecture {
    Architecture {
        vocab_size,
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 128,
        max_position_embeddings: 128,
        type_vocab_size: 2,
        num_labels,
    }
}

/// Evaluation batches are inference only; larger ones are cheaper per example.
const EVAL_BATCH_SIZE: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Checkpoints go to `out_dir/run`, the corpus to `out_dir/data`.
    pub out_dir: PathBuf,
    pub epochs: u64,
    /// Stops after this many optimizer steps instead (as the Trainer's `max_steps`).
    pub max_steps: Option<u64>,
    /// A checkpoint (with a log and an evaluation) every this many steps, and at the end.
    pub save_steps: u64,
    /// Constant: no warm-up, no decay.
    pub learning_rate: f64,
    /// AdamW's decoupled decay, not applied to biases and LayerNorm weights (as the Trainer).
    pub weight_decay: f64,
    /// The gradient's global L2 norm is clipped to this (the Trainer's `max_grad_norm`).
    pub max_grad_norm: f64,
    pub batch_size: usize,
    /// Tokens per text, `[CLS]` and `[SEP]` included, in training and evaluation.
    pub max_len: usize,
    pub vocab_size: usize,
    /// Seeds the initial weights and the batch order.
    pub seed: u64,
}

impl DemoConfig {
    /// The fixture run's settings: 10 epochs of 48 steps, a checkpoint every 40 steps.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            epochs: 10,
            max_steps: None,
            save_steps: 40,
            learning_rate: 2e-3,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            batch_size: 32,
            max_len: 64,
            vocab_size: 800,
            seed: 42,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.out_dir.join("run")
    }

    /// The corpus as written for the watcher: `train.jsonl` and `test.jsonl` (the probe set).
    pub fn data_dir(&self) -> PathBuf {
        self.out_dir.join("data")
    }

    fn validate(&self) -> Result<(), DemoError> {
        let problem = if self.batch_size == 0 {
            Some("batch_size must be at least 1".to_string())
        } else if self.save_steps == 0 {
            Some("save_steps must be at least 1".into())
        } else if self.max_steps == Some(0) || (self.max_steps.is_none() && self.epochs == 0) {
            Some("nothing to train: epochs and max_steps are 0".into())
        } else if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            Some(format!(
                "learning_rate {} is not positive",
                self.learning_rate
            ))
        } else if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            Some(format!(
                "max_grad_norm {} is not positive",
                self.max_grad_norm
            ))
        } else if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            Some(format!("weight_decay {} is negative", self.weight_decay))
        } else if self.max_len < 3 || self.max_len > tiny_bert(0, 0).max_position_embeddings {
            Some(format!(
                "max_len {} is outside 3..={}",
                self.max_len,
                tiny_bert(0, 0).max_position_embeddings
            ))
        } else if self.vocab_size <= SPECIAL_TOKENS.len() {
            Some(format!(
                "vocab_size {} leaves no room for words",
                self.vocab_size
            ))
        } else {
            None
        };
        match problem {
            Some(message) => Err(DemoError::InvalidConfig(message)),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("bundled corpus {file}, line {line}: {message}")]
    Corpus {
        file: &'static str,
        line: usize,
        message: String,
    },
    #[error("WordPiece tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: cannot write weights: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{0} already holds checkpoints or other files; choose an empty output directory")]
    NotEmpty(PathBuf),
    #[error("invalid demo setting: {0}")]
    InvalidConfig(String),
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("evaluation: {0}")]
    Eval(#[from] EmbedError),
}

impl DemoError {
    fn io(path: &Path, error: std::io::Error) -> Self {
        DemoError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// Scores on the test set at one checkpoint, as logged in `trainer_state.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// (label, F1) in class-id order.
    pub f1: Vec<(String, f64)>,
}

/// What the caller is told as training goes on.
#[derive(Debug)]
pub enum TrainProgress<'a> {
    Started {
        run_dir: &'a Path,
        vocab_size: usize,
        steps_per_epoch: u64,
        max_steps: u64,
    },
    /// After every optimizer step, with that batch's loss.
    Step {
        step: u64,
        max_steps: u64,
        epoch: f64,
        loss: f32,
    },
    /// After `checkpoint` was written completely (its `trainer_state.json` included).
    Saved {
        step: u64,
        checkpoint: &'a Path,
        eval: &'a EvalMetrics,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    /// `data/test.jsonl`: the probe set for watching the run.
    pub probe: PathBuf,
    /// `data/train.jsonl`: for per-class training counts.
    pub train: PathBuf,
    pub labels: Vec<String>,
    /// Every checkpoint's step and evaluation, ascending; the last is the final step's.
    pub evaluations: Vec<(u64, EvalMetrics)>,
}

#[derive(Deserialize)]
struct Line {
    text: String,
    label: String,
}

struct Split {
    texts: Vec<String>,
    labels: Vec<String>,
}

fn parse_corpus(file: &'static str, jsonl: &str) -> Result<Split, DemoError> {
    let mut split = Split {
        texts: Vec::new(),
        labels: Vec::new(),
    };
    for (index, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(line).map_err(|e| DemoError::Corpus {
            file,
            line: index + 1,
            message: e.to_string(),
        })?;
        split.texts.push(parsed.text);
        split.labels.push(parsed.label);
    }
    Ok(split)
}

/// Labels in order of first appearance in the test set, then the training set: the
/// fixture run's `id2label` (games, net, utils, sound, fonts, science, mail, editors, database).
fn label_order(test: &Split, train: &Split) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for label in test.labels.iter().chain(&train.labels) {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    labels
}

/// Every label is in `labels`: `label_order` collected them from both splits.
fn class_ids(split: &Split, labels: &[String]) -> Vec<usize> {
    split
        .labels
        .iter()
        .map(|label| labels.iter().position(|l| l == label).unwrap_or(0))
        .collect()
}

fn encode_all(tokenizer: &Tokenizer, texts: &[String]) -> Result<Vec<Vec<u32>>, DemoError> {
    texts
        .iter()
        .map(|text| {
            tokenizer
                .encode(text.as_str(), true)
                .map(|encoding| encoding.get_ids().to_vec())
                .map_err(|e| DemoError::Tokenizer(e.to_string()))
        })
        .collect()
}

/// Refuses an output directory that already has a run: a watcher would mix the two.
fn prepare_out_dir(config: &DemoConfig) -> Result<(), DemoError> {
    let run_dir = config.run_dir();
    if let Ok(mut entries) = std::fs::read_dir(&run_dir) {
        if entries.next().is_some() {
            return Err(DemoError::NotEmpty(run_dir));
        }
    }
    std::fs::create_dir_all(&run_dir).map_err(|e| DemoError::io(&run_dir, e))?;
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|e| DemoError::io(&data_dir, e))?;
    for (name, text) in [("train.jsonl", TRAIN_JSONL), ("test.jsonl", TEST_JSONL)] {
        let path = data_dir.join(name);
        std::fs::write(&path, text).map_err(|e| DemoError::io(&path, e))?;
    }
    Ok(())
}

/// Parameters the Trainer exempts from weight decay: biases and LayerNorm weights.
fn is_decayed(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

/// Trains and writes `out_dir/run/checkpoint-<step>` as the Trainer does; see `docs/DEMO.md`.
pub fn train(
    config: &DemoConfig,
    on_progress: &mut dyn FnMut(TrainProgress),
) -> Result<TrainSummary, DemoError> {
    config.validate()?;
    let train_split = parse_corpus("train.jsonl", TRAIN_JSONL)?;
    let test_split = parse_corpus("test.jsonl", TEST_JSONL)?;
    let labels = label_order(&test_split, &train_split);
    prepare_out_dir(config)?;
    let run_dir = config.run_dir();
    let device = Device::Cpu;

    let tokenizer = train_tokenizer(&train_split.texts, config.vocab_size)?;
    let tokenizer_json = tokenizer
        .to_string(true)
        .map_err(|e| DemoError::Tokenizer(e.to_string()))?;
    let mut truncating = tokenizer.clone();
    truncating
        .with_truncation(Some(TruncationParams {
            max_length: config.max_len,
            ..Default::default()
        }))
        .map_err(|e| DemoError::Tokenizer(e.to_string()))?;
    let train_ids = encode_all(&truncating, &train_split.texts)?;
    let train_classes: Vec<u32> = class_ids(&train_split, &labels)
        .into_iter()
        .map(|c| c as u32)
        .collect();
    let test_probe = TokenizedProbe {
        ids: encode_all(&truncating, &test_split.texts)?,
    };
    let test_classes = class_ids(&test_split, &labels);

    let architecture = tiny_bert(tokenizer.get_vocab_size(true), labels.len());
    let config_json = model_config(&architecture, &labels);
    // The inference model reads the very config.json the checkpoints get.
    let model_config = ModelConfig::from_value(&config_json).map_err(DemoError::InvalidConfig)?;
    let tokenizer_config_json = tokenizer_config(architecture.max_position_embeddings);

    let mut rng = StdRng::seed_from_u64(config.seed);
    let model = TrainableBert::new(architecture, PAD_ID as usize, &mut rng, &device)?;
    let group = |decayed: bool| -> Vec<Var> {
        model
            .vars()
            .filter(|(name, _)| is_decayed(name) == decayed)
            .map(|(_, var)| var.clone())
            .collect()
    };
    let params = |weight_decay| ParamsAdamW {
        lr: config.learning_rate,
        weight_decay,
        ..Default::default()
    };
    let mut optimizers = [
        AdamW::new(group(true), params(config.weight_decay))?,
        AdamW::new(group(false), params(0.0))?,
    ];
    let all_vars: Vec<Var> = model.vars().map(|(_, var)| var.clone()).collect();
    let non_embedding_parameters: usize = model
        .vars()
        .filter(|(name, _)| !name.ends_with("_embeddings.weight"))
        .map(|(_, var)| var.elem_count())
        .sum();

    let examples = train_ids.len();
    let steps_per_epoch = examples.div_ceil(config.batch_size) as u64;
    let max_steps = config.max_steps.unwrap_or(config.epochs * steps_per_epoch);
    let num_train_epochs = max_steps.div_ceil(steps_per_epoch);
    on_progress(TrainProgress::Started {
        run_dir: &run_dir,
        vocab_size: architecture.vocab_size,
        steps_per_epoch,
        max_steps,
    });

    let mut state = TrainerState {
        log_history: Vec::new(),
        total_flos: 0.0,
    };
    let mut step = 0u64;
    let mut interval_loss = 0f64;
    let mut interval_steps = 0u64;
    let mut evaluations = Vec::new();
    let mut order: Vec<usize> = (0..examples).collect();
    'epochs: loop {
        order.shuffle(&mut rng);
        for rows in order.chunks(config.batch_size) {
            let sequences: Vec<&[u32]> = rows.iter().map(|&i| train_ids[i].as_slice()).collect();
            let (ids, lengths) = pad_batch(&sequences, PAD_ID, &device)?;
            let targets: Vec<u32> = rows.iter().map(|&i| train_classes[i]).collect();
            let targets = Tensor::new(targets.as_slice(), &device)?;
            let logits = model.forward(&ids, &lengths)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
            let mut grads = loss.backward()?;
            let grad_norm = clip_grad_norm(&mut grads, &all_vars, config.max_grad_norm)?;
            for optimizer in &mut optimizers {
                optimizer.step(&grads)?;
            }
            step += 1;
            state.total_flos += 6.0 * non_embedding_parameters as f64 * ids.elem_count() as f64;
            let loss = loss.to_scalar::<f32>()?;
            interval_loss += f64::from(loss);
            interval_steps += 1;
            let epoch = step as f64 / steps_per_epoch as f64;
            on_progress(TrainProgress::Step {
                step,
                max_steps,
                epoch,
                loss,
            });
            if step.is_multiple_of(config.save_steps) || step == max_steps {
                state.log_history.push(serde_json::json!({
                    "epoch": epoch,
                    "grad_norm": grad_norm,
                    "learning_rate": config.learning_rate,
                    "loss": interval_loss / interval_steps as f64,
                    "step": step,
                }));
                (interval_loss, interval_steps) = (0.0, 0);
                let started = Instant::now();
                let classifier = CandleEncoder::load(&model_config, &model.named_tensors(&device))?;
                let eval = evaluate(&classifier, &test_probe, &test_classes, &labels)?;
                state.log_history.push(eval_entry(
                    &eval,
                    started.elapsed().as_secs_f64(),
                    test_probe.ids.len(),
                    epoch,
                    step,
                ));
                let files = CheckpointFiles {
                    config: &config_json,
                    weights: &model.snapshot(),
                    tokenizer_json: &tokenizer_json,
                    tokenizer_config: &tokenizer_config_json,
                };
                let trainer_state = state.to_json(config, step, max_steps, num_train_epochs, epoch);
                let checkpoint = write_checkpoint(&run_dir, step, &files, &trainer_state)?;
                on_progress(TrainProgress::Saved {
                    step,
                    checkpoint: &checkpoint,
                    eval: &eval,
                });
                evaluations.push((step, eval));
            }
            if step == max_steps {
                break 'epochs;
            }
        }
    }
    let data_dir = config.data_dir();
    Ok(TrainSummary {
        run_dir,
        probe: data_dir.join("test.jsonl"),
        train: data_dir.join("train.jsonl"),
        labels,
        evaluations,
    })
}

/// Scales the gradients so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does; returns the norm before clipping.
fn clip_grad_norm(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[Var],
    max_norm: f64,
) -> candle_core::Result<f64> {
    let mut squares = 0f64;
    for var in vars {
        if let Some(grad) = grads.get(var.as_tensor()) {
            squares += f64::from(grad.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = squares.sqrt();
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        for var in vars {
            if let Some(grad) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (grad * coefficient)?);
            }
        }
    }
    Ok(norm)
}

/// Logits for the whole test set with the inference model dwell itself runs, then the
/// Trainer's metrics: mean cross-entropy, accuracy, per-class and macro F1.
fn evaluate(
    classifier: &CandleEncoder,
    probe: &TokenizedProbe,
    truth: &[usize],
    labels: &[String],
) -> Result<EvalMetrics, DemoError> {
    let classes = labels.len();
    let mut logits = vec![0f32; probe.ids.len() * classes];
    for batch in plan_batches(probe, EVAL_BATCH_SIZE, PAD_ID) {
        let batch_logits = classifier.forward(&batch)?.logits.ok_or_else(|| {
            EmbedError::Unsupported("the model in training has no classification head".into())
        })?;
        let values = batch_logits.flatten_all()?.to_vec1::<f32>()?;
        for (row, &index) in batch.rows.iter().enumerate() {
            logits[index * classes..(index + 1) * classes]
                .copy_from_slice(&values[row * classes..(row + 1) * classes]);
        }
    }
    let loss = logits
        .chunks(classes)
        .zip(truth)
        .map(|(row, &class)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
            sum.ln() - f64::from(row[class] - max)
        })
        .sum::<f64>()
        / truth.len().max(1) as f64;
    let predicted = predictions(&logits, classes);
    let matrix = ConfusionMatrix::new(truth, &predicted, classes);
    let correct: usize = (0..classes).map(|c| matrix.counts[c][c]).sum();
    let scores = matrix.scores();
    Ok(EvalMetrics {
        loss,
        accuracy: correct as f64 / truth.len().max(1) as f64,
        macro_f1: macro_f1(&scores),
        f1: labels
            .iter()
            .zip(&scores)
            .map(|(label, score)| (label.clone(), score.f1))
            .collect(),
    })
}

/// An evaluation's `log_history` entry, keyed as `hf_finetune.py`'s `compute_metrics` logs.
fn eval_entry(
    eval: &EvalMetrics,
    runtime: f64,
    samples: usize,
    epoch: f64,
    step: u64,
) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "epoch": epoch,
        "eval_accuracy": eval.accuracy,
        "eval_loss": eval.loss,
        "eval_macro_f1": eval.macro_f1,
        "eval_runtime": runtime,
        "eval_samples_per_second": samples as f64 / runtime.max(1e-9),
        "eval_steps_per_second": samples.div_ceil(EVAL_BATCH_SIZE) as f64 / runtime.max(1e-9),
        "step": step,
    });
    if let Some(map) = entry.as_object_mut() {
        for (label, f1) in &eval.f1 {
            map.insert(format!("eval_f1_{label}"), serde_json::json!(f1));
        }
    }
    entry
}

/// What `trainer_state.json` accumulates over the run.
struct TrainerState {
    log_history: Vec<serde_json::Value>,
    total_flos: f64,
}

impl TrainerState {
    /// The Trainer's `TrainerState` at a save, with logging and evaluation every `save_steps`.
    fn to_json(
        &self,
        config: &DemoConfig,
        step: u64,
        max_steps: u64,
        num_train_epochs: u64,
        epoch: f64,
    ) -> serde_json::Value {
        serde_json::json!({
            "best_global_step": null,
            "best_metric": null,
            "best_model_checkpoint": null,
            "epoch": epoch,
            "eval_steps": config.save_steps,
            "global_step": step,
            "is_hyper_param_search": false,
            "is_local_process_zero": true,
            "is_world_process_zero": true,
            "log_history": self.log_history,
            "logging_steps": config.save_steps,
            "max_steps": max_steps,
            "num_input_tokens_seen": 0,
            "num_train_epochs": num_train_epochs,
            "save_steps": config.save_steps,
            "stateful_callbacks": {
                "TrainerControl": {
                    "args": {
                        "should_epoch_stop": false,
                        "should_evaluate": false,
                        "should_log": false,
                        "should_save": true,
                        "should_training_stop": step == max_steps,
                    },
                    "attributes": {},
                },
            },
            "total_flos": self.total_flos,
            "train_batch_size": config.batch_size,
            "trial_name": null,
            "trial_params": null,
        })
    }
}
