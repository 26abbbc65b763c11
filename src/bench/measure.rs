//! One case measured in this process, through the same embedder `dwell analyze` uses:
//! model loads, tokenising, embedding passes, and the peak RSS around them.

use std::path::Path;
use std::time::Instant;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::cases::{CaseName, PreparedCase};
use super::{median, memory, BenchError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checkpoint::{
    load_tokenizer, AdapterFiles, CheckpointError, DictionarySearch, LayerSpec, ModelConfig,
    WeightFiles, ADAPTER_CONFIG,
};
use crate::embed::{
    Backend, BackendChoice, BaseModel, Embeddings, ModelEmbedder, ModelSource, TokenizedProbe,
};
use crate::probe::load_probe;

#[derive(Debug, Clone, PartialEq)]
pub struct CaseMeasurement {
    pub case: CaseName,
    /// The backend (and instruction set) that embedded the case.
    pub backend: Backend,
    pub texts: usize,
    pub max_len: usize,
    /// Each `load_model`: weights read and the model built.
    pub load_seconds: Vec<f64>,
    /// Each `load_model` of a LoRA checkpoint over the same model (r 8 on every layer's
    /// query and value, a new head): the first reads the base, the others reuse the
    /// base the embedder kept and pay the merge. Empty for a model without BERT's layers.
    pub lora_load_seconds: Vec<f64>,
    /// Tokenizer built and every probe text tokenised, once.
    pub tokenize_seconds: f64,
    /// Each timed pass over the whole probe (the warm-up pass is not among them).
    pub pass_seconds: Vec<f64>,
    /// Tokens of the probe texts, special tokens included, after truncation.
    pub tokens: usize,
    /// Tokens computed: each batch's rows × its padded length, summed.
    pub padded_tokens: usize,
    pub weights_bytes: u64,
    pub memory: PeakMemory,
    /// Floating-point operations in one pass of the cpu backend ([`cpu_pass_flops`]);
    /// `None` on candle's, which pads and computes every token in the last layer.
    pub pass_flops: Option<f64>,
}

/// Resident memory over a case, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum PeakMemory {
    Measured {
        /// RSS when the case started (what earlier work left behind).
        at_start: u64,
        /// Peak from the start through the loads and tokenising.
        loading_peak: u64,
        /// Peak during the embedding passes alone, with one model loaded.
        embedding_peak: u64,
    },
    /// Why the peak could not be measured (a polluted peak is not reported).
    Unavailable(String),
}

impl CaseMeasurement {
    pub fn pass_median(&self) -> f64 {
        median(&self.pass_seconds)
    }

    /// The pass's rate in GFLOP/s per thread, on the cpu backend.
    pub fn gflops_per_thread(&self, threads: usize) -> Option<f64> {
        self.pass_flops
            .map(|flops| flops / self.pass_median() / threads.max(1) as f64 / 1e9)
    }

    pub fn texts_per_second(&self) -> f64 {
        per_second(self.texts, self.pass_median())
    }

    pub fn tokens_per_second(&self) -> f64 {
        per_second(self.tokens, self.pass_median())
    }

    pub fn padding_share(&self) -> f64 {
        padding_share(self.tokens, self.padded_tokens)
    }
}

pub(crate) fn per_second(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// What the cpu backend computes in one pass of a BERT-shaped encoder over texts of
/// `lengths` tokens, counting a multiply-add as two operations: every layer but the last
/// over every real token (QKV, attention within each text, attention output,
/// feed-forward), then the last layer's keys and values for every token and the rest
/// for `[CLS]` only, then the head (`dense`, then `labels` outputs). LayerNorm, GELU and
/// softmax, linear in the tokens, are left out.
pub fn cpu_pass_flops(
    hidden: usize,
    intermediate: usize,
    layers: usize,
    labels: usize,
    lengths: &[usize],
) -> f64 {
    let (h, i) = (hidden as f64, intermediate as f64);
    let tokens: f64 = lengths.iter().map(|&l| l as f64).sum();
    let texts = lengths.len() as f64;
    let squares: f64 = lengths.iter().map(|&l| (l * l) as f64).sum();
    let feed_forward = h * h + 2.0 * h * i;
    let full_layer = tokens * (3.0 * h * h + feed_forward) + 2.0 * squares * h;
    let last_layer = tokens * 2.0 * h * h + texts * (h * h + feed_forward) + 2.0 * tokens * h;
    let head = texts * (h * h + h * labels as f64);
    2.0 * ((layers.saturating_sub(1)) as f64 * full_layer + last_layer + head)
}

/// The share of the computed tokens that are padding.
pub(crate) fn padding_share(tokens: usize, padded_tokens: usize) -> f64 {
    if padded_tokens == 0 {
        0.0
    } else {
        1.0 - tokens as f64 / padded_tokens as f64
    }
}

pub(crate) fn measure_case(
    case: &PreparedCase,
    backend: BackendChoice,
    batch_size: usize,
    loads: usize,
    passes: usize,
) -> Result<CaseMeasurement, BenchError> {
    let dir = case.checkpoint_dir();
    let texts: Vec<String> = load_probe(&case.probe_path())?
        .examples
        .into_iter()
        .map(|example| example.text)
        .collect();
    let weights =
        WeightFiles::find(&dir)?.ok_or_else(|| CheckpointError::NoWeights { path: dir.clone() })?;
    let source = ModelSource {
        base: None,
        config: ModelConfig::load(&dir.join("config.json"))?,
        dir: dir.clone(),
        weights,
    };
    let weights_bytes = source.weights.size()?;
    let embedder = ModelEmbedder::choosing(batch_size, backend)?;

    let start = memory::reset_peak_rss().and_then(|()| memory::rss_now_and_peak());
    // Tokenised first: a model is loaded for the probe it embeds.
    let started = Instant::now();
    let (tokenizer, tokenizer_source) = load_tokenizer(
        &dir,
        None,
        None,
        case.manifest.max_len,
        &DictionarySearch::default(),
    )?;
    let tokenized = TokenizedProbe::new(&tokenizer, &texts, tokenizer_source.path())?;
    let tokenize_seconds = started.elapsed().as_secs_f64();
    let mut load_seconds = Vec::with_capacity(loads);
    let mut model = None;
    for _ in 0..loads {
        // The previous copy goes first, so that the peak holds one model, as in a pipeline.
        drop(model.take());
        let started = Instant::now();
        model = Some(embedder.load_model(&source, &tokenized)?);
        load_seconds.push(started.elapsed().as_secs_f64());
    }
    let loading = memory::rss_now_and_peak();
    let lora_load_seconds = {
        let last = model.take();
        drop(last);
        // An embedder of their own: the base it keeps for them (the whole model, read
        // once) is dropped with it, before the passes, whose peak it would add to.
        let lora_embedder = ModelEmbedder::choosing(batch_size, backend)?;
        let seconds = lora_loads(case, &source, &lora_embedder, &tokenized, loads)?;
        drop(lora_embedder);
        model = Some(embedder.load_model(&source, &tokenized)?);
        seconds
    };

    let Some(model) = model else {
        return Err(BenchError::Flag("--loads must be at least 1".into()));
    };
    let embedding_start = memory::reset_peak_rss();
    let mut embeddings = embedder.embed_loaded(&model, &tokenized)?;
    let mut pass_seconds = Vec::with_capacity(passes);
    for _ in 0..passes {
        let started = Instant::now();
        embeddings = embedder.embed_loaded(&model, &tokenized)?;
        pass_seconds.push(started.elapsed().as_secs_f64());
    }
    let embedding = embedding_start.and_then(|()| memory::rss_now_and_peak());
    let memory = match (start, loading, embedding) {
        (Ok((at_start, _)), Ok((_, loading_peak)), Ok((_, embedding_peak))) => {
            PeakMemory::Measured {
                at_start,
                loading_peak,
                embedding_peak,
            }
        }
        (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => PeakMemory::Unavailable(why),
    };
    write_output(&case.output_path(), &embeddings)?;
    let padded_tokens = embedder.computed_positions(model.backend(), &tokenized);
    let pass_flops = matches!(model.backend(), Backend::Cpu(_)).then(|| {
        let lengths: Vec<usize> = tokenized.ids.iter().map(Vec::len).collect();
        cpu_pass_flops(
            source.config.hidden_size,
            source.config.intermediate_size,
            source.config.num_hidden_layers,
            embeddings.num_labels,
            &lengths,
        )
    });
    Ok(CaseMeasurement {
        case: case.name,
        backend: model.backend(),
        texts: texts.len(),
        max_len: case.manifest.max_len,
        load_seconds,
        lora_load_seconds,
        tokenize_seconds,
        pass_seconds,
        tokens: tokenized.token_count(),
        padded_tokens,
        weights_bytes,
        memory,
        pass_flops,
    })
}

/// Times `loads` loads of a LoRA adapter over `source`, written beside the case.
fn lora_loads(
    case: &PreparedCase,
    source: &ModelSource,
    embedder: &ModelEmbedder,
    probe: &TokenizedProbe,
    loads: usize,
) -> Result<Vec<f64>, BenchError> {
    const RANK: usize = 8;
    let config = &source.config;
    let LayerSpec::PostNorm(names) = &config.encoder.layers else {
        return Ok(Vec::new());
    };
    let dir = case.checkpoint_dir().with_file_name("lora-checkpoint");
    std::fs::create_dir_all(&dir).map_err(BenchError::io(&dir))?;
    let adapter = AdapterFiles {
        config: dir.join(ADAPTER_CONFIG),
        tensors: dir.join("adapter_model.safetensors"),
    };
    let adapter_config = serde_json::json!({
        "peft_type": "LORA",
        "r": RANK,
        "lora_alpha": 16,
        "base_model_name_or_path": source.dir,
        "target_modules": ["query", "value"],
        "modules_to_save": ["classifier"],
    });
    crate::store::write_atomically(&adapter.config, adapter_config.to_string().as_bytes())?;
    let hidden = config.hidden_size;
    let labels = config.id2label.as_ref().map_or(2, |labels| labels.len());
    let mut rng = StdRng::seed_from_u64(8);
    let mut random = |count: usize| -> Vec<u8> {
        (0..count)
            .flat_map(|_| rng.random_range(-0.02f32..0.02).to_le_bytes())
            .collect()
    };
    let prefix = format!("base_model.model.{}.{}", names.backbone, names.layers);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for layer in 0..config.num_hidden_layers {
        for module in [names.query, names.value] {
            let name = format!("{prefix}.{layer}.{module}");
            tensors.push((
                format!("{name}.lora_A.weight"),
                vec![RANK, hidden],
                random(RANK * hidden),
            ));
            tensors.push((
                format!("{name}.lora_B.weight"),
                vec![hidden, RANK],
                random(hidden * RANK),
            ));
        }
    }
    let head = config.encoder.head.classifier;
    tensors.push((
        format!("base_model.model.{head}.weight"),
        vec![labels, hidden],
        random(labels * hidden),
    ));
    tensors.push((
        format!("base_model.model.{head}.bias"),
        vec![labels],
        random(labels),
    ));
    let invalid = |e: safetensors::SafeTensorError| BenchError::Invalid {
        path: adapter.tensors.clone(),
        message: format!("cannot write safetensors: {e}"),
    };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(invalid)?,
            ))
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let serialized = safetensors::serialize(views, None).map_err(invalid)?;
    crate::store::write_atomically(&adapter.tensors, &serialized)?;
    let lora = ModelSource {
        dir: dir.clone(),
        config: config.clone(),
        weights: WeightFiles::Adapter(adapter),
        base: Some(BaseModel {
            dir: source.dir.clone(),
            weights: source.weights.clone(),
        }),
    };
    let mut seconds = Vec::with_capacity(loads);
    let mut model = None;
    for _ in 0..loads {
        drop(model.take());
        let started = Instant::now();
        model = Some(embedder.load_model(&lora, probe)?);
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok(seconds)
}

/// `cls` [P, H] and `logits` [P, C], little-endian f32, for the baseline's parity check.
fn write_output(path: &Path, embeddings: &Embeddings) -> Result<(), BenchError> {
    let rows = embeddings.rows();
    let bytes =
        |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let cls = bytes(&embeddings.cls);
    let logits = embeddings.logits.as_deref().map(bytes);
    let invalid = |e: safetensors::SafeTensorError| BenchError::Invalid {
        path: path.to_path_buf(),
        message: format!("cannot write safetensors: {e}"),
    };
    let mut views = vec![(
        "cls",
        TensorView::new(Dtype::F32, vec![rows, embeddings.hidden], &cls).map_err(invalid)?,
    )];
    if let Some(logits) = &logits {
        views.push((
            "logits",
            TensorView::new(Dtype::F32, vec![rows, embeddings.num_labels], logits)
                .map_err(invalid)?,
        ));
    }
    let serialized = safetensors::serialize(views, None).map_err(invalid)?;
    crate::store::write_atomically(path, &serialized)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_flops_count_what_the_cpu_backend_computes() {
        // h 2, i 4, 2 layers, 3 labels, texts of 1 and 2 tokens: the first layer
        // 3 tokens × (3·4 + 4 + 16) + 2·(1 + 4)·2 = 116 multiply-adds; the last
        // 3 × 2·4 (keys, values) + 2 texts × (4 + 20) + 2·3·2 (attention) = 84; the head
        // 2 × (4 + 6) = 20; twice 220 operations.
        assert_eq!(cpu_pass_flops(2, 4, 2, 3, &[1, 2]), 440.0);
    }

    #[test]
    fn padding_share_is_the_padded_part_of_what_is_computed() {
        // Two batches: [5, 4] padded to 5 and [3, 2] padded to 3: 14 real of 16 computed.
        assert_eq!(padding_share(14, 16), 0.125);
        assert_eq!(padding_share(10, 10), 0.0);
        assert_eq!(padding_share(0, 0), 0.0);
    }

    #[test]
    fn rates_per_second_of_the_median_pass() {
        assert_eq!(per_second(405, 0.5), 810.0);
        assert_eq!(per_second(405, 0.0), 0.0);
    }
}
