//! Embedding the probe set with one checkpoint: tokenising, length-bucketed batching,
//! and the model behind a small synchronous trait that runs on its own thread.

mod candle;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod cpu;
mod exported;
mod lora;
mod tensors;
mod worker;

pub use candle::CandleEncoder;
pub use exported::{exported_classes, list_exported, read_exported, ExportedError, ExportedStep};
pub use tensors::NamedTensors;
pub use worker::{EmbedJob, EmbedWorker, JobOutcome};

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

use crate::checkpoint::{
    AdapterConfig, AdapterFiles, CheckpointError, Family, LayerSpec, ModelConfig, TextTokenizer,
    WeightFiles,
};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: cannot read weights: {message}")]
    Weights { path: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: tokenising probe example {index}: {message}")]
    Tokenize {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("--max-len {max_len} exceeds the model's max_position_embeddings {max_positions}")]
    TooLong {
        max_len: usize,
        max_positions: usize,
    },
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Token ids of every probe text, in probe order, with special tokens, truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedProbe {
    pub ids: Vec<Vec<u32>>,
}

impl TokenizedProbe {
    pub fn new(
        tokenizer: &TextTokenizer,
        texts: &[String],
        tokenizer_path: &std::path::Path,
    ) -> Result<Self, EmbedError> {
        let mut ids = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let encoded =
                tokenizer
                    .encode(text.as_str())
                    .map_err(|message| EmbedError::Tokenize {
                        path: tokenizer_path.to_path_buf(),
                        index,
                        message,
                    })?;
            ids.push(encoded.ids);
        }
        Ok(Self { ids })
    }

    pub fn longest(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0)
    }

    pub fn token_count(&self) -> usize {
        self.ids.iter().map(Vec::len).sum()
    }

    /// Every token id the probe uses, once each, ascending.
    pub fn vocabulary(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.ids.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A padded batch of probe examples of similar length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Row-major [rows, padded_length] token ids, padding filled with `pad_id`.
    pub ids: Vec<u32>,
    pub lengths: Vec<usize>,
    pub padded_length: usize,
    /// Probe index of each row.
    pub rows: Vec<usize>,
}

pub struct BatchOutput {
    pub cls: Tensor,
    pub logits: Option<Tensor>,
}

/// Groups examples by token length so that a batch pads little: examples are sorted
/// by length (longest first, ties in probe order) and cut into batches of `batch_size`.
pub fn plan_batches(probe: &TokenizedProbe, batch_size: usize, pad_id: u32) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..probe.ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(probe.ids[i].len()));
    order
        .chunks(batch_size.max(1))
        .map(|rows| {
            let lengths: Vec<usize> = rows.iter().map(|&i| probe.ids[i].len()).collect();
            let padded_length = lengths.iter().copied().max().unwrap_or(0);
            let mut ids = vec![pad_id; rows.len() * padded_length];
            for (row, &index) in rows.iter().enumerate() {
                let tokens = &probe.ids[index];
                ids[row * padded_length..row * padded_length + tokens.len()]
                    .copy_from_slice(tokens);
            }
            Batch {
                ids,
                lengths,
                padded_length,
                rows: rows.to_vec(),
            }
        })
        .collect()
}

/// What one checkpoint computes for the probe set, rows in probe order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// Row-major [P, hidden].
    pub cls: Vec<f32>,
    pub hidden: usize,
    /// Row-major [P, num_labels], when the model has a classification head.
    pub logits: Option<Vec<f32>>,
    pub num_labels: usize,
}

impl Embeddings {
    pub fn rows(&self) -> usize {
        self.cls.len() / self.hidden.max(1)
    }
}

/// A model folder to embed with: a checkpoint, or the base model at step 0.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub dir: PathBuf,
    /// The encoder; for an adapter checkpoint, its base model's.
    pub config: ModelConfig,
    pub weights: WeightFiles,
    /// The base model an adapter checkpoint (`WeightFiles::Adapter`) is merged into.
    pub base: Option<BaseModel>,
}

/// A base model folder and its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseModel {
    pub dir: PathBuf,
    pub weights: WeightFiles,
}

/// A base model read once and kept, under the classifier's tensor names, for every
/// adapter checkpoint of the run: each one costs its merge, not a reload.
struct KeptBase {
    base: BaseModel,
    backend: Backend,
    tensors: HashMap<String, Tensor>,
}

/// The model side of the pipeline: synchronous, owned by one worker thread.
pub trait Embedder: Send {
    fn embed(
        &mut self,
        model: &ModelSource,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError>;

    /// Whether this embedder can run `family`'s models: asked for every family when
    /// its thread starts (`EmbedWorker::spawn`); each run is checked against the
    /// answers before any of its checkpoints is read.
    fn accepts(&self, family: Family) -> Result<(), EmbedError>;
}

/// An instruction set the `cpu` backend has a micro-kernel for (`src/embed/cpu/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86-64 with AVX-512F, AVX-512DQ and FMA.
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// aarch64 with NEON.
    Neon,
}

impl Isa {
    /// Fastest first: the order [`Isa::best`] tries them in.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
        }
    }

    /// Whether this build and CPU can run this instruction set's kernel.
    pub fn supported(self) -> bool {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        return cpu::supported(self);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        return false;
    }

    /// This instruction set's tile product in GFLOP/s on one thread with its operands in
    /// L1 cache, measured for about `seconds`: the kernel's ceiling on this CPU (for
    /// `dwell bench`); `None` where it cannot run.
    pub fn tile_rate_in_l1(self, seconds: f64) -> Option<f64> {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        return cpu::tile_rate_in_l1(self, seconds);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        return None;
    }

    /// The fastest instruction set this CPU has a kernel for.
    pub fn best() -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.supported())
    }

    /// Every instruction set this CPU can run, fastest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.supported()).collect()
    }

    /// Why this instruction set cannot run here, for an error message.
    fn missing(self) -> String {
        let needs = match self {
            Isa::Avx512 => "an x86-64 CPU with AVX-512F, AVX-512DQ and FMA",
            Isa::Avx2 => "an x86-64 CPU with AVX2 and FMA",
            Isa::Neon => "an aarch64 CPU with NEON",
        };
        format!(
            "the cpu backend's {} kernel needs {needs}; this CPU {}",
            self.name(),
            match Isa::best() {
                Some(best) => format!("runs --backend cpu-{} (or auto)", best.name()),
                None => "has none of its kernels: use --backend candle (or auto)".into(),
            }
        )
    }
}

/// Which kernels compute the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Our kernels for BERT's post-norm layers (BERT, DistilBERT, RoBERTa, XLM-R,
    /// ELECTRA) with the given instruction set's micro-kernel: unpadded token packing,
    /// weights packed once per checkpoint.
    Cpu(Isa),
    /// candle's kernels, for every family: any CPU, or an NVIDIA GPU when built with
    /// `--features cuda`.
    Candle,
}

impl Backend {
    /// The fastest backend this build and CPU can run for BERT's layers.
    pub fn best_available() -> Self {
        match Isa::best() {
            Some(isa) if !cfg!(feature = "cuda") => Backend::Cpu(isa),
            _ => Backend::Candle,
        }
    }

    /// Every backend this build and CPU can run: candle's, and the cpu backend on each
    /// instruction set the CPU has (an AVX-512 CPU runs the AVX2 kernel too).
    pub fn available() -> Vec<Backend> {
        let mut backends = vec![Backend::Candle];
        backends.extend(Isa::available().into_iter().map(Backend::Cpu));
        backends
    }

    /// As `dwell analyze` reports it: `cpu (avx2)`, `candle-cpu`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu(Isa::Avx512) => "cpu (avx512)",
            Backend::Cpu(Isa::Avx2) => "cpu (avx2)",
            Backend::Cpu(Isa::Neon) => "cpu (neon)",
            Backend::Candle if cfg!(feature = "cuda") => "candle-cuda",
            Backend::Candle => "candle-cpu",
        }
    }

    /// The `--backend` value that forces this backend: `cpu-avx2`, `candle`.
    pub fn flag(self) -> &'static str {
        match self {
            Backend::Cpu(Isa::Avx512) => "cpu-avx512",
            Backend::Cpu(Isa::Avx2) => "cpu-avx2",
            Backend::Cpu(Isa::Neon) => "cpu-neon",
            Backend::Candle => "candle",
        }
    }

    /// Whether this backend can run `family`'s layers.
    pub fn serves(self, family: Family) -> bool {
        match self {
            Backend::Candle => true,
            Backend::Cpu(_) => !matches!(family, Family::DebertaV2 | Family::ModernBert),
        }
    }
}

/// Which backend embeds each model: the fastest that serves its family, or the one
/// the user named (an error for a family it does not serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Only(Backend),
}

impl BackendChoice {
    /// `--backend cpu`: the cpu backend on the fastest instruction set this CPU has.
    pub fn fastest_cpu() -> Result<Self, EmbedError> {
        Isa::best()
            .map(|isa| BackendChoice::Only(Backend::Cpu(isa)))
            .ok_or_else(|| {
                EmbedError::Unsupported(
                    "the cpu backend needs an x86-64 CPU with AVX-512 or AVX2 and FMA, or an \
                     aarch64 CPU with NEON: use --backend candle (or auto)"
                        .into(),
                )
            })
    }

    /// The `--backend` value that makes this choice.
    pub fn flag(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Only(backend) => backend.flag(),
        }
    }

    /// The backend that embeds `family`'s models.
    pub fn backend_for(self, family: Family) -> Result<Backend, EmbedError> {
        match self {
            BackendChoice::Auto => Ok(match Backend::best_available() {
                fast if fast.serves(family) => fast,
                _ => Backend::Candle,
            }),
            BackendChoice::Only(backend) if backend.serves(family) => Ok(backend),
            BackendChoice::Only(backend) => Err(EmbedError::Unsupported(format!(
                "the {} backend does not run {} models (it runs {}); use --backend candle or auto",
                backend.name(),
                family.model_type(),
                Family::ALL
                    .iter()
                    .filter(|f| backend.serves(**f))
                    .map(|f| f.model_type())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// A checkpoint loaded for one backend.
pub enum LoadedModel {
    Candle(Box<CandleEncoder>),
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    Cpu(Box<dyn cpu::CpuEncoder>),
}

impl LoadedModel {
    pub fn hidden_size(&self) -> usize {
        match self {
            LoadedModel::Candle(model) => model.hidden_size(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            LoadedModel::Cpu(model) => model.hidden_size(),
        }
    }

    pub fn num_labels(&self) -> Option<usize> {
        match self {
            LoadedModel::Candle(model) => model.num_labels(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            LoadedModel::Cpu(model) => model.num_labels(),
        }
    }

    pub fn max_positions(&self) -> usize {
        match self {
            LoadedModel::Candle(model) => model.max_positions(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            LoadedModel::Cpu(model) => model.max_positions(),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            LoadedModel::Candle(_) => Backend::Candle,
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            LoadedModel::Cpu(model) => Backend::Cpu(model.isa()),
        }
    }
}

/// Embeds checkpoints with the backend [`BackendChoice`] picks for each model's family:
/// our kernels for BERT's layers on CPUs with one of their instruction sets, candle's
/// kernels for every other family, on other CPUs and on the GPU (`--features cuda`).
pub struct ModelEmbedder {
    device: Device,
    batch_size: usize,
    choice: BackendChoice,
    kept_base: std::sync::Mutex<Option<KeptBase>>,
}

impl ModelEmbedder {
    /// An embedder that picks the fastest backend for each model.
    pub fn new(batch_size: usize) -> Result<Self, EmbedError> {
        Self::choosing(batch_size, BackendChoice::Auto)
    }

    /// An embedder on the given backend only; an error if this build or CPU cannot run it.
    pub fn with_backend(batch_size: usize, backend: Backend) -> Result<Self, EmbedError> {
        Self::choosing(batch_size, BackendChoice::Only(backend))
    }

    pub fn choosing(batch_size: usize, choice: BackendChoice) -> Result<Self, EmbedError> {
        if let BackendChoice::Only(Backend::Cpu(isa)) = choice {
            if !isa.supported() {
                return Err(EmbedError::Unsupported(isa.missing()));
            }
        }
        Ok(Self {
            device: default_device()?,
            batch_size,
            choice,
            kept_base: std::sync::Mutex::new(None),
        })
    }

    /// Reads a checkpoint for embedding `probe`: the cpu backend reads only the
    /// word-embedding rows of the tokens the probe uses (a small model's vocabulary is
    /// half its weights).
    pub fn load_model(
        &self,
        model: &ModelSource,
        probe: &TokenizedProbe,
    ) -> Result<LoadedModel, EmbedError> {
        let backend = self.choice.backend_for(model.config.family())?;
        let device = match backend {
            Backend::Cpu(_) => Device::Cpu,
            Backend::Candle => self.device.clone(),
        };
        let tensors = match &model.weights {
            WeightFiles::Adapter(adapter) => self.merged(model, adapter, backend, &device)?,
            weights => NamedTensors::open(weights, &device)?,
        };
        match (backend, &model.config.encoder.layers) {
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            (Backend::Cpu(isa), LayerSpec::PostNorm(names)) => Ok(LoadedModel::Cpu(cpu::load(
                isa,
                &model.config,
                names,
                &tensors,
                &probe.vocabulary(),
            )?)),
            _ => Ok(LoadedModel::Candle(Box::new(CandleEncoder::load(
                &model.config,
                &tensors,
            )?))),
        }
    }

    /// The base model with `adapter` merged: the base is read on the first adapter
    /// checkpoint and kept for the next ones.
    fn merged(
        &self,
        model: &ModelSource,
        adapter: &AdapterFiles,
        backend: Backend,
        device: &Device,
    ) -> Result<NamedTensors, EmbedError> {
        let base = model.base.as_ref().ok_or_else(|| {
            EmbedError::Unsupported(format!(
                "{}: an adapter checkpoint needs its base model",
                model.dir.display()
            ))
        })?;
        let spec = &model.config.encoder;
        let mut kept = self
            .kept_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !kept
            .as_ref()
            .is_some_and(|kept| kept.base == *base && kept.backend == backend)
        {
            // Dropped before the next base is read: never two bases in memory.
            *kept = None;
            let tensors = NamedTensors::open(&base.weights, device)?.into_tensors()?;
            *kept = Some(KeptBase {
                base: base.clone(),
                backend,
                tensors: lora::in_classifier_names(
                    tensors,
                    spec.backbone(),
                    spec.word_embeddings(),
                ),
            });
        }
        let kept = kept.as_ref().expect("kept above");
        let config = AdapterConfig::load(&adapter.config)?;
        let source = adapter.tensors.display().to_string();
        let adapter_tensors = NamedTensors::open(&model.weights, device)?.into_tensors()?;
        let merged = lora::merge(
            &kept.tensors,
            adapter_tensors,
            &config,
            spec.backbone(),
            &source,
        )?;
        Ok(NamedTensors::new(merged, source, device))
    }

    /// Token positions the encoder computes for `probe`, padding included: candle pads
    /// each length-sorted batch to its longest text; the cpu backend packs tokens
    /// with no padding.
    pub fn computed_positions(&self, backend: Backend, probe: &TokenizedProbe) -> usize {
        match backend {
            Backend::Cpu(_) => probe.token_count(),
            Backend::Candle => plan_batches(probe, self.batch_size, 0)
                .iter()
                .map(|batch| batch.rows.len() * batch.padded_length)
                .sum(),
        }
    }

    /// Embeds `probe` with a model already loaded by [`ModelEmbedder::load_model`].
    pub fn embed_loaded(
        &self,
        model: &LoadedModel,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError> {
        if probe.longest() > model.max_positions() {
            return Err(EmbedError::TooLong {
                max_len: probe.longest(),
                max_positions: model.max_positions(),
            });
        }
        match model {
            LoadedModel::Candle(encoder) => self.embed_with_candle(encoder, probe),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            LoadedModel::Cpu(encoder) => encoder.embed(probe),
        }
    }

    fn embed_with_candle(
        &self,
        encoder: &CandleEncoder,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError> {
        let hidden = encoder.hidden_size();
        let num_labels = encoder.num_labels().unwrap_or(0);
        let examples = probe.ids.len();
        let mut cls = vec![0f32; examples * hidden];
        let mut logits = encoder.num_labels().map(|c| vec![0f32; examples * c]);
        for batch in plan_batches(probe, self.batch_size, 0) {
            let output = encoder.forward(&batch)?;
            scatter_rows(&mut cls, hidden, &batch.rows, &output.cls)?;
            if let (Some(all), Some(batch_logits)) = (logits.as_mut(), output.logits.as_ref()) {
                scatter_rows(all, num_labels, &batch.rows, batch_logits)?;
            }
        }
        Ok(Embeddings {
            cls,
            hidden,
            logits,
            num_labels,
        })
    }
}

#[cfg(feature = "cuda")]
fn default_device() -> Result<Device, EmbedError> {
    Ok(Device::new_cuda(0)?)
}

#[cfg(not(feature = "cuda"))]
fn default_device() -> Result<Device, EmbedError> {
    Ok(Device::Cpu)
}

impl Embedder for ModelEmbedder {
    fn embed(
        &mut self,
        model: &ModelSource,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError> {
        let loaded = self.load_model(model, probe)?;
        self.embed_loaded(&loaded, probe)
    }

    fn accepts(&self, family: Family) -> Result<(), EmbedError> {
        self.choice.backend_for(family).map(|_| ())
    }
}

fn scatter_rows(
    target: &mut [f32],
    width: usize,
    rows: &[usize],
    values: &Tensor,
) -> Result<(), EmbedError> {
    let values = values.flatten_all()?.to_vec1::<f32>()?;
    for (row, &index) in rows.iter().enumerate() {
        target[index * width..(index + 1) * width]
            .copy_from_slice(&values[row * width..(row + 1) * width]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_group_similar_lengths_and_keep_probe_indices() {
        let probe = TokenizedProbe {
            ids: vec![
                vec![2, 5, 3],
                vec![2, 3],
                vec![2, 7, 8, 9, 3],
                vec![2, 6, 6, 3],
            ],
        };
        let batches = plan_batches(&probe, 2, 0);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].rows, vec![2, 3]);
        assert_eq!(batches[0].padded_length, 5);
        assert_eq!(batches[0].ids, vec![2, 7, 8, 9, 3, 2, 6, 6, 3, 0]);
        assert_eq!(batches[1].rows, vec![0, 1]);
        assert_eq!(batches[1].lengths, vec![3, 2]);
        assert_eq!(batches[1].ids, vec![2, 5, 3, 2, 3, 0]);
    }
}
