//! The one pipeline that `analyze`, `watch` and `demo` drive: validate the probe set,
//! embed every complete checkpoint not yet stored on the embedding thread, store the
//! results, and derive the report from what is stored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::advise::{advise, Advice, ClassEvidenceInput, DwellInput, Rules, RunInput};
use crate::analyze::classification::{macro_f1, predictions, ConfusionMatrix};
use crate::analyze::detectors::DetectorKind;
use crate::analyze::params::AnalysisParams;
use crate::analyze::trajectory::TrajectoryAnalysis;
use crate::checkpoint::{
    build_tokenizer, discover, locate_model, resolve_tokenizer, AdapterConfig, AdapterFiles,
    CheckpointDir, CheckpointError, Completeness, DictionarySearch, Family, ModelConfig,
    TrainerState, WeightFiles,
};
use crate::embed::{
    exported_classes, list_exported, read_exported, BaseModel, EmbedJob, EmbedWorker, Embedder,
    ExportedError, ModelSource, NamedTensors, TokenizedProbe,
};
use crate::probe::{
    hex_digest, load_probe, load_training_labels, LabelSet, LabelledFile, ProbeError, RawLabel,
};
use crate::report::{
    detector_kind, AdviceInfo, AnalysisInfo, CheckpointSummary, ClassReport, ClusteringReport,
    DetectorEvidence, ExampleReport, FigureAnalyses, Figures, ProbeInfo, Report, RunInfo,
    SkippedCheckpoint, REPORT_SCHEMA,
};
use crate::store::{
    analyze_stored, class_counts, cluster_stored, secured_steps, Gap, Manifest, PositionCache,
    SecuredCheckpoints, StateDir, StoreError, StoredAnalysisError, StoredEmbeddings,
};

/// Probe examples per forward pass unless `--batch-size` says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// A daemon re-clusters once the time since the last clustering is this many times what
/// that clustering took (see `Pipeline::clustering`).
const CLUSTERING_TIME_SHARE: u32 = 10;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub run_dir: PathBuf,
    /// The run as the user named it where `run_dir` is a local mirror of it (an
    /// `s3://` URL): what the report, and every message built from it, calls the run.
    pub shown_as: Option<PathBuf>,
    pub probe: PathBuf,
    /// Defaults to `RUN_DIR/.dwell`.
    pub state_dir: Option<PathBuf>,
    pub max_len: usize,
    /// The pretrained model the run started from (a folder, or a hub id in the local
    /// Hugging Face cache): embedded as step 0, and the base of adapter checkpoints.
    pub base_model: Option<PathBuf>,
    /// Class names in class-id order, for adapter checkpoints (which have no
    /// `config.json`): inline, comma-separated, or a file of one name a line.
    pub labels: Option<String>,
    /// Where MeCab dictionaries are looked for (Japanese BERTs).
    pub dictionaries: DictionarySearch,
    /// Used when neither the checkpoint nor the run directory has a tokenizer.
    pub tokenizer: Option<PathBuf>,
    pub batch_size: usize,
    pub analysis: AnalysisParams,
    pub rules: Rules,
    /// How long a complete checkpoint's files must stay unchanged before it is read
    /// (zero for a finished run).
    pub settle: Duration,
    /// The training set (same formats as the probe set; only labels are read), for
    /// per-class training counts in the advice.
    pub train: Option<PathBuf>,
    /// Bytes that secured copies may hold where hard links are impossible (see
    /// `store::SecuredCheckpoints`).
    pub secure_copy_limit: u64,
}

impl PipelineConfig {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| self.run_dir.join(".dwell"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}: no complete checkpoint-<step> folder with a readable config.json (nothing to embed yet)")]
    NoCheckpoint(PathBuf),
    #[error(
        "{path}: config.json has no id2label: dwell needs the class names of a sequence classifier"
    )]
    NoLabels { path: PathBuf },
    #[error(transparent)]
    Exported(#[from] ExportedError),
    #[error("{0}: no step-<N>.safetensors or step-<N>.npy file (see docs/EMBEDDINGS.md)")]
    NoExported(PathBuf),
    #[error("the embedding thread stopped unexpectedly")]
    WorkerGone,
    #[error("{path}: {message}")]
    Labels { path: PathBuf, message: String },
    /// A model dwell cannot run: `config` refused by key and value, or naming a family
    /// the chosen backend does not run. The run's problem, not one checkpoint's.
    #[error("{config}: {reason}")]
    Unsupported { config: PathBuf, reason: String },
    #[error(transparent)]
    Analysis(Box<StoredAnalysisError>),
}

impl PipelineError {
    /// A `config.json` that does not load: refused (`Invalid`) it is an unsupported model.
    fn from_model_config(error: CheckpointError) -> Self {
        match error {
            CheckpointError::Invalid { path, message } => PipelineError::Unsupported {
                config: path,
                reason: message,
            },
            error => PipelineError::Checkpoint(error),
        }
    }
}

impl From<StoredAnalysisError> for PipelineError {
    fn from(error: StoredAnalysisError) -> Self {
        PipelineError::Analysis(Box::new(error))
    }
}

/// What the caller is told as embedding goes on.
pub enum Progress<'a> {
    Planned {
        checkpoints: usize,
    },
    Embedded {
        step: u64,
        elapsed: Duration,
    },
    /// Not complete (yet): left for a later pass, with what is missing.
    Incomplete {
        step: u64,
        reason: &'a str,
    },
    Skipped(&'a SkippedCheckpoint),
}

/// What one pass over the run directory did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassSummary {
    pub embedded: Vec<u64>,
    pub already_stored: usize,
    pub skipped: usize,
    pub incomplete: usize,
    pub vanished: usize,
    /// Complete but still within the settle interval: look again soon.
    pub settling: usize,
    /// `stop` was raised before every ready checkpoint was embedded.
    pub interrupted: bool,
    /// Ready checkpoints left for the next pass because of the pass's limit.
    pub deferred: usize,
    /// Skipped in an earlier pass and not retried: none of their files changed since.
    pub unchanged_failures: usize,
}

impl PassSummary {
    /// Nothing left for another pass now: nothing settling, incomplete, deferred or
    /// interrupted.
    pub fn all_done(&self) -> bool {
        self.settling == 0 && self.incomplete == 0 && self.deferred == 0 && !self.interrupted
    }
}

/// Each file of a checkpoint folder: name, size, mtime.
type FolderFingerprint = Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)>;

fn folder_fingerprint(dir: &Path) -> Option<FolderFingerprint> {
    let mut files = std::fs::read_dir(dir)
        .ok()?
        .map(|entry| {
            let entry = entry.ok()?;
            let metadata = entry.metadata().ok()?;
            Some((entry.file_name(), metadata.len(), metadata.modified().ok()))
        })
        .collect::<Option<FolderFingerprint>>()?;
    files.sort();
    Some(files)
}

/// Where the pipeline's embeddings come from.
enum Source {
    /// Checkpoints, embedded on the embedding thread (shared by the runs of one
    /// `watch --runs`: one model thread for them all, one job at a time).
    Model(Rc<EmbedWorker>),
    /// Files written by another framework, in the run directory's place.
    Exported { max_steps: Option<u64> },
}

/// `report.json`'s `run.model_type` for embeddings read from files.
pub const EXPORTED_MODEL_TYPE: &str = "exported";

pub struct Pipeline {
    config: PipelineConfig,
    probe: LabelledFile,
    texts: Vec<String>,
    labels: LabelSet,
    probe_labels: Vec<usize>,
    model_type: String,
    /// `--base-model`, found.
    base_dir: Option<PathBuf>,
    state: StateDir,
    source: Source,
    /// Tokenised probe sets by tokenizer content hash: the probe is tokenised once per tokenizer.
    tokenized: HashMap<String, Arc<TokenizedProbe>>,
    skipped: BTreeMap<u64, SkippedCheckpoint>,
    /// The skipped checkpoints' folders as they were when they failed: a checkpoint is
    /// retried only once something in it changes, not read again on every pass.
    failed_as: HashMap<u64, FolderFingerprint>,
    latest_trainer_state: Option<TrainerState>,
    train_counts: Option<BTreeMap<String, usize>>,
    /// Weight-file fingerprints (size, mtime) by step, and since when they are unchanged.
    settling: HashMap<u64, (Vec<(u64, std::time::SystemTime)>, Instant)>,
    scored: BTreeMap<u64, ScoredCheckpoint>,
    positions: PositionCache,
    /// Checkpoints secured at first sight (by `watch`'s intake), read from there.
    secured: SecuredCheckpoints,
    /// The analysis behind the latest report, handed to its figures.
    latest_analysis: Option<TrajectoryAnalysis>,
    clusterings: LatestClustering,
}

/// The latest clustering, when it was made and how long it took: a daemon re-clusters
/// only when the time since is at least `CLUSTERING_TIME_SHARE` times that. Kept apart
/// from the rest of the pipeline so that a report can borrow the other fields while it
/// updates this one.
#[derive(Default)]
struct LatestClustering(Option<(ClusteringReport, Instant, Duration)>);

impl Pipeline {
    /// Validates the probe set against the model's labels before any model is loaded.
    pub fn open(
        config: PipelineConfig,
        embedder: Box<dyn Embedder>,
    ) -> Result<Self, PipelineError> {
        Self::open_on(config, Rc::new(EmbedWorker::spawn(embedder)))
    }

    /// A pipeline whose checkpoints are embedded on `worker`, an embedding thread other
    /// pipelines may share (used from one thread at a time: a job's outcome is read
    /// right after it is submitted).
    pub fn open_on(config: PipelineConfig, worker: Rc<EmbedWorker>) -> Result<Self, PipelineError> {
        let run = RunModel::read(&config)?;
        // A backend that cannot run this family is the run's problem, not each checkpoint's.
        if let Some(reason) = worker.refuses(run.family) {
            return Err(PipelineError::Unsupported {
                config: run.family_config,
                reason: reason.to_string(),
            });
        }
        run.assemble(config, worker)
    }

    /// A pipeline over embeddings computed elsewhere: `config.run_dir` is a folder of
    /// `step-<N>` files (see `embed::list_exported`), stored as they are read, in place
    /// of checkpoints embedded here. The labels are `--labels` (the logits' column
    /// order), or integer class ids in the probe; `max_steps` is the run's planned
    /// length, which the advice's early cutoff needs.
    pub fn open_exported(
        config: PipelineConfig,
        max_steps: Option<u64>,
    ) -> Result<Self, PipelineError> {
        let probe = load_probe(&config.probe)?;
        let steps = list_exported(&config.run_dir)?;
        let Some(first) = steps.values().next() else {
            return Err(PipelineError::NoExported(config.run_dir.clone()));
        };
        let classes = exported_classes(first)?;
        let labels = exported_labels(&config, &probe, classes, first.path())?;
        Self::assemble(
            config,
            probe,
            labels,
            EXPORTED_MODEL_TYPE.to_string(),
            None,
            Source::Exported { max_steps },
        )
    }

    fn assemble(
        config: PipelineConfig,
        probe: LabelledFile,
        labels: LabelSet,
        model_type: String,
        base_dir: Option<PathBuf>,
        source: Source,
    ) -> Result<Self, PipelineError> {
        let probe_labels = labels.resolve(&probe)?;
        let train_counts = match &config.train {
            Some(path) => {
                let train = load_training_labels(path)?;
                Some(class_counts(&labels.resolve(&train)?, &labels.names))
            }
            None => None,
        };
        let manifest = Manifest {
            schema: Manifest::SCHEMA.into(),
            probe_path: config.probe.display().to_string(),
            probe_sha256: probe.sha256.clone(),
            probe_examples: probe.examples.len(),
            max_len: config.max_len,
            labels: labels.names.clone(),
            example_classes: probe_labels.clone(),
        };
        let state = StateDir::open(&config.state_dir(), &manifest)?;
        let texts = probe.examples.iter().map(|e| e.text.clone()).collect();
        let secured = SecuredCheckpoints::open(&state, config.secure_copy_limit)?;
        Ok(Self {
            config,
            probe,
            texts,
            labels,
            probe_labels,
            model_type,
            base_dir,
            state,
            source,
            tokenized: HashMap::new(),
            skipped: BTreeMap::new(),
            failed_as: HashMap::new(),
            latest_trainer_state: None,
            train_counts,
            settling: HashMap::new(),
            scored: BTreeMap::new(),
            positions: PositionCache::default(),
            secured,
            latest_analysis: None,
            clusterings: LatestClustering::default(),
        })
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    pub fn probe_labels(&self) -> &[usize] {
        &self.probe_labels
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The newest `trainer_state.json` seen says the run reached its planned steps.
    pub fn run_finished(&self) -> bool {
        self.latest_trainer_state
            .as_ref()
            .is_some_and(TrainerState::is_finished)
    }

    /// Embeds the complete checkpoints (and the base model) not yet stored, in step
    /// order, one at a time, at most `limit` of them; `stop` is checked between checkpoints.
    pub fn embed_pending(
        &mut self,
        limit: usize,
        stop: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<PassSummary, PipelineError> {
        let worker = match &self.source {
            Source::Exported { .. } => return self.store_exported(limit, stop, on_progress),
            Source::Model(worker) => Rc::clone(worker),
        };
        let stored = self.state.stored_steps()?;
        // One clock reading for the whole scan: read per checkpoint, a slow scan (a busy
        // machine) could find a later checkpoint settled and an earlier one, first seen
        // in the same scan, not yet, and embed them out of step order.
        let scanned_at = Instant::now();
        let mut summary = PassSummary::default();
        let mut ready: Vec<(CheckpointDir, Option<WeightFiles>)> = Vec::new();
        if let Some(base) = self.base_dir.clone() {
            if stored.contains(&0) {
                summary.already_stored += 1;
            } else if self.unchanged_since_failure(0, &base) {
                summary.unchanged_failures += 1;
            } else {
                ready.push((
                    CheckpointDir {
                        step: 0,
                        path: base,
                    },
                    None,
                ));
            }
        }
        let (candidates, in_run) = self.candidates(&stored)?;
        let mut present = std::collections::BTreeSet::new();
        for checkpoint in candidates {
            if checkpoint.step == 0 && self.config.base_model.is_some() {
                continue;
            }
            present.insert(checkpoint.step);
            if self.unchanged_since_failure(checkpoint.step, &checkpoint.path) {
                summary.unchanged_failures += 1;
                continue;
            }
            let completeness = match checkpoint.completeness() {
                Ok(completeness) => completeness,
                Err(error) => {
                    self.skip(&checkpoint, error, &mut summary, on_progress);
                    continue;
                }
            };
            let weights = match completeness {
                Completeness::Incomplete { reason } => {
                    on_progress(Progress::Incomplete {
                        step: checkpoint.step,
                        reason: &reason,
                    });
                    summary.incomplete += 1;
                    continue;
                }
                Completeness::Complete { weights, state } => {
                    if self
                        .latest_trainer_state
                        .as_ref()
                        .is_none_or(|latest| latest.global_step <= state.global_step)
                    {
                        self.latest_trainer_state = Some(state);
                    }
                    weights
                }
            };
            if stored.contains(&checkpoint.step) {
                summary.already_stored += 1;
                continue;
            }
            if !self.has_settled(&checkpoint, &weights, scanned_at) {
                summary.settling += 1;
                continue;
            }
            ready.push((checkpoint, Some(weights)));
        }
        self.settling.retain(|step, _| present.contains(step));
        // A checkpoint rotated away after a failed read is a gap now, not a skip.
        let rotated: Vec<u64> = self
            .skipped
            .keys()
            .copied()
            .filter(|step| *step != 0 && !in_run.contains(step))
            .collect();
        for step in rotated {
            self.secured.release(step)?;
            let skipped = self.skipped.remove(&step).expect("listed above");
            self.failed_as.remove(&step);
            self.record_gap(
                step,
                format!("removed after a failed read: {}", skipped.reason),
            );
        }
        on_progress(Progress::Planned {
            checkpoints: ready.len(),
        });
        let ready_count = ready.len();
        for (index, (checkpoint, weights)) in ready.into_iter().enumerate() {
            if pass_ends_before(index, ready_count, limit, stop, &mut summary) {
                break;
            }
            let job = match self.prepare_job(&checkpoint, weights) {
                Ok(job) => job,
                Err(error) => {
                    self.skip(&checkpoint, error, &mut summary, on_progress);
                    continue;
                }
            };
            if !worker.submit(job) {
                return Err(PipelineError::WorkerGone);
            }
            let outcome = worker
                .next_outcome(Duration::MAX)
                .ok_or(PipelineError::WorkerGone)?;
            let checkpoint = CheckpointDir {
                step: outcome.step,
                path: outcome.model.dir.clone(),
            };
            match outcome.result {
                Ok(embeddings) => {
                    let source = source_name(&checkpoint);
                    self.state
                        .write_embeddings(outcome.step, &embeddings, &source)?;
                    self.secured.release(outcome.step)?;
                    self.skipped.remove(&outcome.step);
                    self.failed_as.remove(&outcome.step);
                    summary.embedded.push(outcome.step);
                    on_progress(Progress::Embedded {
                        step: outcome.step,
                        elapsed: outcome.elapsed,
                    });
                }
                Err(crate::embed::EmbedError::Checkpoint(error)) => {
                    self.skip(&checkpoint, error, &mut summary, on_progress)
                }
                Err(_) if is_being_removed(&checkpoint.path) => {
                    // Removed while its weights were read: rotation, not corruption.
                    let error = CheckpointError::Vanished {
                        path: checkpoint.path.clone(),
                    };
                    self.skip(&checkpoint, error, &mut summary, on_progress)
                }
                Err(error) => {
                    let file = outcome
                        .model
                        .weights
                        .files()
                        .first()
                        .map(|p| p.to_path_buf())
                        .unwrap_or_else(|| checkpoint.path.clone());
                    self.record_skip(
                        &checkpoint,
                        file,
                        error.to_string(),
                        &mut summary,
                        on_progress,
                    );
                }
            }
        }
        Ok(summary)
    }

    /// Stores each exported step not stored yet, in step order, at most `limit` of them.
    /// A file that does not fit the probe set is an error naming it: the files are the
    /// user's finished output, not a run in progress whose next checkpoint may do better.
    fn store_exported(
        &mut self,
        limit: usize,
        stop: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<PassSummary, PipelineError> {
        let stored = self.state.stored_steps()?;
        let mut summary = PassSummary::default();
        let mut ready = Vec::new();
        for (step, files) in list_exported(&self.config.run_dir)? {
            if stored.contains(&step) {
                summary.already_stored += 1;
            } else {
                ready.push((step, files));
            }
        }
        on_progress(Progress::Planned {
            checkpoints: ready.len(),
        });
        let ready_count = ready.len();
        for (index, (step, files)) in ready.into_iter().enumerate() {
            if pass_ends_before(index, ready_count, limit, stop, &mut summary) {
                break;
            }
            let started = Instant::now();
            let embeddings =
                read_exported(&files, self.probe.examples.len(), self.labels.names.len())?;
            let source = files.path().file_name().map_or_else(
                || format!("step-{step}"),
                |n| n.to_string_lossy().into_owned(),
            );
            self.state.write_embeddings(step, &embeddings, &source)?;
            summary.embedded.push(step);
            on_progress(Progress::Embedded {
                step,
                elapsed: started.elapsed(),
            });
        }
        Ok(summary)
    }

    /// The checkpoints to look at, in step order: the run directory's, each read from its
    /// secured copy where there is one (see `store::SecuredCheckpoints`), and secured copies
    /// whose original the rotation has removed since. Also the steps still in the run
    /// directory. A secured copy of a step already stored is released.
    fn candidates(
        &self,
        stored: &std::collections::BTreeSet<u64>,
    ) -> Result<(Vec<CheckpointDir>, std::collections::BTreeSet<u64>), PipelineError> {
        let mut by_step: BTreeMap<u64, CheckpointDir> = discover(&self.config.run_dir)?
            .checkpoints
            .into_iter()
            .map(|checkpoint| (checkpoint.step, checkpoint))
            .collect();
        let in_run = by_step.keys().copied().collect();
        for step in secured_steps(&SecuredCheckpoints::root_of(&self.state))? {
            if stored.contains(&step) {
                // Stored by an earlier pass or process that stopped before releasing it.
                self.secured.release(step)?;
                continue;
            }
            by_step.insert(
                step,
                CheckpointDir {
                    step,
                    path: self.secured.path(step),
                },
            );
        }
        Ok((by_step.into_values().collect(), in_run))
    }

    /// Where a checkpoint read from its secured copy is in the run directory: what the
    /// user is told about.
    fn original(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(SecuredCheckpoints::root_of(&self.state)) {
            Ok(inside) => self.config.run_dir.join(inside),
            Err(_) => path.to_path_buf(),
        }
    }

    fn record_gap(&self, step: u64, reason: String) {
        let checkpoint = self.config.run_dir.join(format!("checkpoint-{step}"));
        tracing::warn!(step, checkpoint = %checkpoint.display(), %reason, "a gap in the trajectory");
        let gap = Gap {
            step,
            checkpoint,
            reason,
        };
        if let Err(error) = self.state.record_gap(gap) {
            tracing::error!(step, %error, "could not record the gap");
        }
    }

    /// True if `step` was skipped and its folder still holds the same files, sizes and
    /// mtimes as when it failed.
    fn unchanged_since_failure(&self, step: u64, dir: &Path) -> bool {
        self.failed_as
            .get(&step)
            .is_some_and(|failed| folder_fingerprint(dir).as_ref() == Some(failed))
    }

    /// True once the checkpoint's files have kept their sizes and mtimes for the settle
    /// interval: the Trainer writes nothing atomically, so a file can still be growing.
    fn has_settled(
        &mut self,
        checkpoint: &CheckpointDir,
        weights: &WeightFiles,
        now: Instant,
    ) -> bool {
        if self.config.settle.is_zero() {
            return true;
        }
        let state_file = checkpoint.path.join("trainer_state.json");
        let fingerprint: Option<Vec<(u64, std::time::SystemTime)>> = weights
            .files()
            .into_iter()
            .chain(std::iter::once(state_file.as_path()))
            .map(|path| {
                let metadata = std::fs::metadata(path).ok()?;
                Some((metadata.len(), metadata.modified().ok()?))
            })
            .collect();
        let Some(fingerprint) = fingerprint else {
            return false;
        };
        match self.settling.get(&checkpoint.step) {
            Some((seen, since)) if *seen == fingerprint => {
                now.duration_since(*since) >= self.config.settle
            }
            _ => {
                self.settling.insert(checkpoint.step, (fingerprint, now));
                false
            }
        }
    }

    fn prepare_job(
        &mut self,
        checkpoint: &CheckpointDir,
        weights: Option<WeightFiles>,
    ) -> Result<EmbedJob, CheckpointError> {
        if let Some(WeightFiles::Adapter(adapter)) = &weights {
            let base = adapter_base(adapter, self.base_dir.as_deref(), &self.config.run_dir)?;
            let config_path = base.dir.join("config.json");
            let model_config = ModelConfig::load(&config_path)?;
            let classes = adapter_classes(adapter, &base, &model_config)?;
            if classes != Some(self.labels.names.len()) {
                return Err(CheckpointError::Invalid {
                    path: adapter.tensors.clone(),
                    message: format!(
                        "the head has {} classes, the run {} ({})",
                        classes.map_or("no".to_string(), |n| n.to_string()),
                        self.labels.names.len(),
                        self.labels.names.join(", ")
                    ),
                });
            }
            let base_dir = base.dir.clone();
            let probe = self.tokenize_for(&checkpoint.path, || Some(base_dir))?;
            return Ok(EmbedJob {
                step: checkpoint.step,
                model: ModelSource {
                    dir: checkpoint.path.clone(),
                    config: model_config,
                    weights: WeightFiles::Adapter(adapter.clone()),
                    base: Some(base),
                },
                probe,
            });
        }
        let config_path = checkpoint.path.join("config.json");
        let model_config = ModelConfig::load(&config_path)?;
        let is_base_model = weights.is_none();
        if !is_base_model {
            let labels = model_config
                .labels()
                .map_err(|message| CheckpointError::Invalid {
                    path: config_path.clone(),
                    message,
                })?;
            if labels.as_ref() != Some(&self.labels) {
                return Err(CheckpointError::Invalid {
                    path: config_path,
                    message: format!(
                        "id2label differs from the run's labels ({})",
                        self.labels.names.join(", ")
                    ),
                });
            }
        }
        let weights = match weights {
            Some(weights) => weights,
            None => {
                WeightFiles::find(&checkpoint.path)?.ok_or_else(|| CheckpointError::NoWeights {
                    path: checkpoint.path.clone(),
                })?
            }
        };
        let name_or_path = model_config.name_or_path.clone();
        let probe = self.tokenize_for(&checkpoint.path, || {
            locate_model(&name_or_path?, None, &[], &config_path).ok()
        })?;
        Ok(EmbedJob {
            step: checkpoint.step,
            model: ModelSource {
                dir: checkpoint.path.clone(),
                config: model_config,
                weights,
                base: None,
            },
            probe,
        })
    }

    /// The probe tokenized for `model_dir`, reused across checkpoints whose tokenizer
    /// files hold the same bytes: hashing them is far cheaper than building the tokenizer.
    /// A checkpoint without tokenizer files (nor the run directory) takes the one of
    /// `pretrained`, the model it was fine-tuned from, which is looked for only then.
    fn tokenize_for(
        &mut self,
        model_dir: &Path,
        pretrained: impl FnOnce() -> Option<PathBuf>,
    ) -> Result<Arc<TokenizedProbe>, CheckpointError> {
        let run_dir = self.config.run_dir.as_path();
        let source = match resolve_tokenizer(model_dir, &[run_dir], None) {
            Err(CheckpointError::NoTokenizer { .. }) => {
                let pretrained = pretrained();
                let folders: Vec<&Path> = std::iter::once(run_dir)
                    .chain(pretrained.as_deref())
                    .collect();
                resolve_tokenizer(model_dir, &folders, self.config.tokenizer.as_deref())?
            }
            found => found?,
        };
        let mut bytes = Vec::new();
        for file in source.files() {
            let content = std::fs::read(&file).map_err(|e| CheckpointError::io(&file, e))?;
            bytes.extend_from_slice(&(content.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&content);
        }
        let key = hex_digest(&bytes);
        if let Some(tokenized) = self.tokenized.get(&key) {
            return Ok(tokenized.clone());
        }
        let tokenizer = build_tokenizer(&source, self.config.max_len, &self.config.dictionaries)?;
        let tokenized =
            TokenizedProbe::new(&tokenizer, &self.texts, source.path()).map_err(|error| {
                CheckpointError::Tokenizer {
                    path: source.path().to_path_buf(),
                    message: error.to_string(),
                }
            })?;
        let tokenized = Arc::new(tokenized);
        self.tokenized.insert(key, tokenized.clone());
        Ok(tokenized)
    }

    fn skip(
        &mut self,
        checkpoint: &CheckpointDir,
        error: CheckpointError,
        summary: &mut PassSummary,
        on_progress: &mut dyn FnMut(Progress),
    ) {
        if error.is_vanished() || is_being_removed(&checkpoint.path) {
            // The Trainer's rotation removed it: a gap in the trajectory, not a fault.
            self.record_gap(
                checkpoint.step,
                "removed by the run (save_total_limit rotation?) while it was read".into(),
            );
            summary.vanished += 1;
            return;
        }
        let file = error.path().to_path_buf();
        self.record_skip(checkpoint, file, error.to_string(), summary, on_progress);
    }

    fn record_skip(
        &mut self,
        checkpoint: &CheckpointDir,
        file: PathBuf,
        reason: String,
        summary: &mut PassSummary,
        on_progress: &mut dyn FnMut(Progress),
    ) {
        let secured = checkpoint.path.display().to_string();
        let original = self.original(&checkpoint.path);
        let reason = reason.replace(&secured, &original.display().to_string());
        tracing::warn!(step = checkpoint.step, checkpoint = %original.display(), %reason, "skipping checkpoint");
        let skipped = SkippedCheckpoint {
            step: checkpoint.step,
            checkpoint: original,
            file: self.original(&file),
            reason,
        };
        on_progress(Progress::Skipped(&skipped));
        self.skipped.insert(checkpoint.step, skipped);
        match folder_fingerprint(&checkpoint.path) {
            Some(fingerprint) => self.failed_as.insert(checkpoint.step, fingerprint),
            None => self.failed_as.remove(&checkpoint.step),
        };
        summary.skipped += 1;
    }

    /// The report from everything stored: per-checkpoint F1 from the stored logits.
    pub fn build_report(&mut self) -> Result<Report, PipelineError> {
        let stored_steps = self.state.stored_steps()?;
        // Stored embeddings never change, so each checkpoint is scored once per process.
        for &step in &stored_steps {
            if !self.scored.contains_key(&step) {
                let scored = self.score(step)?;
                self.scored.insert(step, scored);
            }
        }
        let names = &self.labels.names;
        let scored: Vec<&ScoredCheckpoint> = stored_steps.iter().map(|s| &self.scored[s]).collect();
        let checkpoints: Vec<CheckpointSummary> =
            scored.iter().map(|s| s.summary.clone()).collect();
        let latest_confusion = scored.iter().rev().find_map(|s| s.confusion.as_ref());
        let steps: Vec<u64> = checkpoints.iter().map(|c| c.step).collect();
        let analysis = if steps.is_empty() {
            None
        } else {
            Some(analyze_stored(
                &self.state,
                &mut self.positions,
                &steps,
                &self.probe_labels,
                names.len(),
                &self.config.analysis,
            )?)
        };
        let latest_f1 = checkpoints
            .iter()
            .rev()
            .find_map(|c| c.per_class_f1.as_ref());
        let counts = class_counts(&self.probe_labels, names);
        let trainer_state = self.latest_trainer_state.as_ref();
        let (max_steps, finished) = match self.source {
            Source::Exported { max_steps } => (
                max_steps,
                max_steps
                    .zip(checkpoints.last())
                    .is_some_and(|(max, latest)| latest.step >= max),
            ),
            Source::Model(_) => (
                trainer_state.and_then(|s| s.max_steps),
                trainer_state.is_some_and(TrainerState::is_finished),
            ),
        };
        let advice = analysis.as_ref().map(|analysis| {
            self.advise(analysis, &checkpoints, latest_confusion, &counts, max_steps)
        });
        let clustering = match &analysis {
            Some(analysis) => Some(self.clusterings.of(
                &self.state,
                &mut self.positions,
                analysis,
                detector_kind(self.config.rules.dwell.detector),
                names,
                &self.probe,
                finished,
            )?),
            None => None,
        };
        let detector_evidence =
            analysis
                .as_ref()
                .zip(self.train_counts.as_ref())
                .map(|(analysis, counts)| {
                    let per_class: Vec<Option<usize>> =
                        names.iter().map(|n| counts.get(n).copied()).collect();
                    DetectorEvidence::new(analysis, &per_class)
                });
        let classes = analysis
            .as_ref()
            .zip(advice.as_ref())
            .map(|(analysis, advice)| {
                analysis
                    .classes
                    .iter()
                    .zip(&advice.classes)
                    .map(|(class, assessment)| {
                        let label = names[class.class].clone();
                        ClassReport {
                            probe_count: counts[&label],
                            f1: latest_f1.and_then(|f1| f1.get(&label).copied()),
                            f1_smoothed: assessment.evidence.f1,
                            quadrant: assessment.quadrant,
                            action: assessment.action,
                            speed: class.speed.clone(),
                            straightness: class.straightness.clone(),
                            dwell: class.dwell,
                            label,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let examples = analysis
            .as_ref()
            .map(|analysis| {
                analysis
                    .examples
                    .iter()
                    .zip(&self.probe.examples)
                    .enumerate()
                    .map(|(index, (onsets, example))| ExampleReport {
                        index,
                        id: example.id.clone(),
                        label: names[onsets.class].clone(),
                        onset_step: onsets.onset_step,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let report = Report {
            schema: REPORT_SCHEMA.into(),
            generated_by: format!("dwell {}", env!("CARGO_PKG_VERSION")),
            run: RunInfo {
                directory: self
                    .config
                    .shown_as
                    .clone()
                    .unwrap_or_else(|| self.config.run_dir.clone()),
                model_type: self.model_type.clone(),
                labels: names.clone(),
                latest_step: checkpoints.last().map(|c| c.step),
                max_steps,
                finished,
                base_model: self.config.base_model.clone(),
            },
            probe: ProbeInfo {
                path: self.probe.path.clone(),
                sha256: self.probe.sha256.clone(),
                examples: self.probe.examples.len(),
                per_class: counts,
                max_len: self.config.max_len,
            },
            checkpoints,
            skipped: self.skipped.values().cloned().collect(),
            gaps: self
                .state
                .gaps()?
                .into_iter()
                .filter(|gap| !stored_steps.contains(&gap.step))
                .collect(),
            analysis: analysis.as_ref().map(|analysis| AnalysisInfo {
                space: analysis.space,
                reference_interval: analysis.reference_interval,
                distance: analysis.rules.distance,
                straightness: analysis.rules.straightness,
                relative: analysis.rules.relative,
            }),
            classes,
            run_advice: advice.as_ref().and_then(|advice| advice.run_advice.clone()),
            recommendations: advice
                .as_ref()
                .map(|advice| advice.recommendations.clone())
                .unwrap_or_default(),
            advice: advice.map(|advice| AdviceInfo {
                detector: advice.detector,
                evidence_sufficient: advice.evidence_sufficient,
                early_cutoff: advice.early_cutoff,
                f1_high_threshold: self.config.rules.f1.high_threshold,
            }),
            examples,
            clustering,
            detector_evidence,
        };
        self.latest_analysis = analysis;
        Ok(report)
    }

    /// The figures of `report`, the latest report built: its analysis is reused, and the
    /// stored positions come from memory while the run fits the cache.
    pub fn figures(&mut self, report: &Report) -> Result<Figures, PipelineError> {
        let analyses = FigureAnalyses::compute(
            &self.state,
            &mut self.positions,
            report,
            &self.probe_labels,
            self.latest_analysis.take(),
        )?;
        Ok(Figures::build(report, analyses))
    }

    /// Per-class F1 of one stored checkpoint from its logits (none for a base model).
    fn score(&self, step: u64) -> Result<ScoredCheckpoint, PipelineError> {
        let stored = self.state.read_embeddings(step)?;
        let is_base = step == 0 && self.config.base_model.is_some();
        let mut scored = score_stored(&stored, &self.probe_labels, &self.labels.names, is_base);
        if matches!(self.source, Source::Exported { .. }) && !is_base {
            scored.summary.source = format!("step-{step}");
        }
        Ok(scored)
    }

    /// The strategy matrix over the stored evidence (SPEC §5).
    fn advise(
        &self,
        analysis: &TrajectoryAnalysis,
        checkpoints: &[CheckpointSummary],
        latest_confusion: Option<&ConfusionMatrix>,
        counts: &BTreeMap<String, usize>,
        max_steps: Option<u64>,
    ) -> Advice {
        advise_stored(
            analysis,
            &StoredEvidence {
                names: &self.labels.names,
                checkpoints,
                latest_confusion,
                probe_counts: counts,
                train_counts: self.train_counts.as_ref(),
                max_steps,
            },
            &self.config.rules,
        )
    }
}

impl LatestClustering {
    /// The clustering of `analysis`, or the latest one while it is recent: clustering
    /// whole trajectories costs seconds per report (about 7 s for 405 texts over 48
    /// checkpoints on 2 cores) and changes slowly, so a daemon spends at most about
    /// 1 / `CLUSTERING_TIME_SHARE` of its time on it. A finished run, and a one-shot
    /// `analyze`, are always clustered at their latest checkpoint.
    #[allow(clippy::too_many_arguments)]
    fn of(
        &mut self,
        state: &StateDir,
        positions: &mut PositionCache,
        analysis: &TrajectoryAnalysis,
        detector: DetectorKind,
        names: &[String],
        probe: &LabelledFile,
        finished: bool,
    ) -> Result<ClusteringReport, PipelineError> {
        if let Some((report, at, took)) = &self.0 {
            if !finished && at.elapsed() < *took * CLUSTERING_TIME_SHARE {
                return Ok(report.clone());
            }
        }
        let started = Instant::now();
        let ids: Vec<Option<String>> = probe.examples.iter().map(|e| e.id.clone()).collect();
        let clustering = cluster_stored(state, positions, analysis, detector)?;
        let report = ClusteringReport::new(&clustering, names, &ids);
        self.0 = Some((report.clone(), started, started.elapsed()));
        Ok(report)
    }
}

/// What a run's checkpoints say before any is embedded: the probe validated against
/// their labels, the family, the base model found.
struct RunModel {
    probe: LabelledFile,
    labels: LabelSet,
    family: Family,
    /// The `config.json` that names the family (the base's, for an adapter run).
    family_config: PathBuf,
    base_dir: Option<PathBuf>,
}

impl RunModel {
    fn read(config: &PipelineConfig) -> Result<Self, PipelineError> {
        let probe = load_probe(&config.probe)?;
        let base_dir = match &config.base_model {
            Some(base) => Some(locate_model(
                &base.to_string_lossy(),
                None,
                &[],
                Path::new("--base-model"),
            )?),
            None => None,
        };
        let (labels, family, family_config) = run_labels(config, &probe, base_dir.as_deref())?;
        Ok(Self {
            probe,
            labels,
            family,
            family_config,
            base_dir,
        })
    }

    fn assemble(
        self,
        config: PipelineConfig,
        worker: Rc<EmbedWorker>,
    ) -> Result<Pipeline, PipelineError> {
        Pipeline::assemble(
            config,
            self.probe,
            self.labels,
            self.family.model_type().to_string(),
            self.base_dir,
            Source::Model(worker),
        )
    }
}

/// A stored checkpoint's scores: per-class F1 and accuracy from its logits, and the
/// confusion matrix (none for a model without a classification head).
pub fn score_stored(
    stored: &StoredEmbeddings,
    probe_labels: &[usize],
    names: &[String],
    is_base: bool,
) -> ScoredCheckpoint {
    let step = stored.step;
    let confusion = stored.logits.as_ref().map(|logits| {
        let predicted = predictions(logits, stored.num_labels);
        ConfusionMatrix::new(probe_labels, &predicted, names.len())
    });
    let scores = confusion.as_ref().map(|matrix| {
        let correct = (0..names.len()).map(|c| matrix.counts[c][c]).sum::<usize>();
        let accuracy = correct as f64 / probe_labels.len().max(1) as f64;
        (matrix.scores(), accuracy)
    });
    let summary = CheckpointSummary {
        step,
        source: if is_base {
            "base model".into()
        } else {
            format!("checkpoint-{step}")
        },
        macro_f1: scores.as_ref().map(|(s, _)| macro_f1(s)),
        accuracy: scores.as_ref().map(|(_, accuracy)| *accuracy),
        per_class_f1: scores.as_ref().map(|(s, _)| {
            names
                .iter()
                .zip(s)
                .map(|(name, score)| (name.clone(), score.f1))
                .collect()
        }),
    };
    ScoredCheckpoint { summary, confusion }
}

/// What the advice reads besides the trajectory analysis.
pub struct StoredEvidence<'a> {
    /// Class names in class-id order.
    pub names: &'a [String],
    /// Every stored checkpoint's scores, in step order.
    pub checkpoints: &'a [CheckpointSummary],
    /// The latest checkpoint's confusion matrix, if it has logits.
    pub latest_confusion: Option<&'a ConfusionMatrix>,
    pub probe_counts: &'a BTreeMap<String, usize>,
    pub train_counts: Option<&'a BTreeMap<String, usize>>,
    pub max_steps: Option<u64>,
}

/// The strategy matrix (SPEC §5) over a run's stored evidence.
pub fn advise_stored(
    analysis: &TrajectoryAnalysis,
    evidence: &StoredEvidence<'_>,
    rules: &Rules,
) -> Advice {
    let names = evidence.names;
    let scored: Vec<&CheckpointSummary> = evidence
        .checkpoints
        .iter()
        .filter(|c| c.per_class_f1.is_some())
        .collect();
    let classes: Vec<ClassEvidenceInput> = analysis
        .classes
        .iter()
        .map(|class| {
            let label = &names[class.class];
            let dwell_input = |onset_step, fraction: Option<f64>| DwellInput {
                onset_step,
                dwell_fraction: fraction.unwrap_or(0.0),
            };
            let dwell = &class.dwell;
            ClassEvidenceInput {
                label: label.clone(),
                probe_count: evidence.probe_counts[label],
                dwell: BTreeMap::from([
                    (
                        "distance".to_string(),
                        dwell_input(dwell.distance.onset_step, dwell.distance.dwell_fraction),
                    ),
                    (
                        "straightness".to_string(),
                        dwell_input(
                            dwell.straightness.onset_step,
                            dwell.straightness.dwell_fraction,
                        ),
                    ),
                    (
                        "relative".to_string(),
                        dwell_input(dwell.relative.onset_step, dwell.relative.dwell_fraction),
                    ),
                ]),
                f1_series: scored
                    .iter()
                    .filter_map(|c| c.per_class_f1.as_ref()?.get(label).copied())
                    .collect(),
                latest_speed: class.speed.last().and_then(|s| s.value),
                most_confused_with: evidence
                    .latest_confusion
                    .and_then(|m| m.most_confused_with(class.class))
                    .map(|(other, share)| (names[other].clone(), share)),
                train_count: evidence
                    .train_counts
                    .and_then(|counts| counts.get(label).copied()),
            }
        })
        .collect();
    let run = RunInput {
        steps: scored.iter().map(|c| c.step).collect(),
        max_steps: evidence.max_steps,
    };
    advise(rules, &run, &classes)
}

/// One stored checkpoint as scored.
pub struct ScoredCheckpoint {
    pub summary: CheckpointSummary,
    /// `None` for a model without a classification head.
    pub confusion: Option<ConfusionMatrix>,
}

/// Whether a pass stops before the `index`th of its `ready_count` checkpoints: on a stop
/// request (interrupted), or at `limit` (the rest deferred to the next pass).
fn pass_ends_before(
    index: usize,
    ready_count: usize,
    limit: usize,
    stop: &AtomicBool,
    summary: &mut PassSummary,
) -> bool {
    if stop.load(Ordering::Relaxed) {
        summary.interrupted = true;
        return true;
    }
    if index == limit {
        summary.deferred = ready_count - limit;
        return true;
    }
    false
}

/// The Trainer's rotation removes a checkpoint file by file, so a read can fail on a
/// checkpoint that is half gone; it is gone a moment later.
fn is_being_removed(path: &Path) -> bool {
    std::thread::sleep(Duration::from_millis(150));
    !path.exists()
}

fn source_name(checkpoint: &CheckpointDir) -> String {
    checkpoint
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| checkpoint.name())
}

/// The run's labels, from the newest checkpoint that says: its `config.json`'s
/// `id2label`, or for an adapter checkpoint (no `config.json`) `--labels`, the base's
/// `id2label` of the head's class count, or integer class ids in the probe; with the
/// family and the `config.json` it was read from.
fn run_labels(
    config: &PipelineConfig,
    probe: &LabelledFile,
    base_dir: Option<&Path>,
) -> Result<(LabelSet, Family, PathBuf), PipelineError> {
    let given = match &config.labels {
        Some(labels) => Some(parse_labels(labels)?),
        None => None,
    };
    let discovery = discover(&config.run_dir)?;
    let mut last_error = None;
    for checkpoint in discovery.checkpoints.iter().rev() {
        let config_path = checkpoint.path.join("config.json");
        // The Trainer writes trainer_state.json last: before it, a config.json may be
        // half-written (a daemon started before training sees it so).
        match checkpoint.completeness() {
            Ok(Completeness::Incomplete { .. }) => continue,
            Err(error) if error.is_vanished() => continue,
            Ok(Completeness::Complete {
                weights: WeightFiles::Adapter(adapter),
                ..
            }) => return adapter_labels(&adapter, given, probe, base_dir, &config.run_dir),
            // Complete, or not readable for its weights: config.json still names the labels.
            _ => {}
        }
        match ModelConfig::load(&config_path) {
            Ok(model) => {
                let labels = model
                    .labels()
                    .map_err(|message| CheckpointError::Invalid {
                        path: config_path.clone(),
                        message,
                    })?
                    .ok_or(PipelineError::NoLabels {
                        path: config_path.clone(),
                    })?;
                if let Some(given) = given.filter(|given| *given != labels) {
                    return Err(PipelineError::Labels {
                        path: config_path,
                        message: format!(
                            "--labels ({}) differs from id2label ({})",
                            given.names.join(", "),
                            labels.names.join(", ")
                        ),
                    });
                }
                return Ok((labels, model.family(), config_path));
            }
            Err(error) if error.is_vanished() => continue,
            // An unsupported architecture is the run's problem, not one checkpoint's.
            Err(error @ CheckpointError::Invalid { .. }) => {
                return Err(PipelineError::from_model_config(error))
            }
            Err(error) => last_error = Some(error),
        }
    }
    match last_error {
        Some(error) => Err(error.into()),
        None => Err(PipelineError::NoCheckpoint(config.run_dir.to_path_buf())),
    }
}

/// The labels of exported embeddings: `--labels`, or the probe's integer class ids
/// (`0..classes`, where `classes` is the logits' column count, else the largest id + 1).
/// Names in the probe alone do not say which logit column is which class.
fn exported_labels(
    config: &PipelineConfig,
    probe: &LabelledFile,
    classes: Option<usize>,
    first: &Path,
) -> Result<LabelSet, PipelineError> {
    if let Some(labels) = &config.labels {
        let labels = parse_labels(labels)?;
        if let Some(classes) = classes.filter(|&c| c != labels.names.len()) {
            return Err(PipelineError::Labels {
                path: first.to_path_buf(),
                message: format!(
                    "the logits have {classes} columns, --labels names {}",
                    labels.names.len()
                ),
            });
        }
        return Ok(labels);
    }
    let ids: Option<Vec<usize>> = probe
        .examples
        .iter()
        .map(|example| match &example.label {
            RawLabel::Id(id) => usize::try_from(*id).ok(),
            RawLabel::Name(name) => name.parse().ok(),
        })
        .collect();
    let count = match (ids, classes) {
        (Some(ids), Some(classes)) if ids.iter().all(|&id| id < classes) => classes,
        (Some(ids), None) => ids.iter().max().map_or(0, |max| max + 1),
        _ => {
            return Err(PipelineError::Labels {
                path: config.probe.clone(),
                message: "exported embeddings do not name their classes: give --labels \
                          NAME,NAME,... (the logits' column order) or --labels FILE (one \
                          name a line), or label the probe with integer class ids"
                    .into(),
            })
        }
    };
    Ok(LabelSet {
        names: (0..count).map(|id| id.to_string()).collect(),
    })
}

/// `--labels`: a file of one name a line, or names separated by commas.
fn parse_labels(labels: &str) -> Result<LabelSet, PipelineError> {
    let path = Path::new(labels);
    let names: Vec<String> = if path.is_file() {
        std::fs::read_to_string(path)
            .map_err(|error| CheckpointError::io(path, error))?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        labels
            .split(',')
            .map(|name| name.trim().to_string())
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    if let Some(bad) = names
        .iter()
        .find(|name| name.is_empty() || !seen.insert(name.as_str()))
    {
        return Err(PipelineError::Labels {
            path: path.to_path_buf(),
            message: format!("--labels has an empty or repeated name {bad:?}"),
        });
    }
    Ok(LabelSet { names })
}

/// The labels of an adapter run (see [`run_labels`]); never guessed from an order.
fn adapter_labels(
    adapter: &AdapterFiles,
    given: Option<LabelSet>,
    probe: &LabelledFile,
    base_dir: Option<&Path>,
    run_dir: &Path,
) -> Result<(LabelSet, Family, PathBuf), PipelineError> {
    let base = adapter_base(adapter, base_dir, run_dir)?;
    let base_config_path = base.dir.join("config.json");
    let base_config =
        ModelConfig::load(&base_config_path).map_err(PipelineError::from_model_config)?;
    let family = base_config.family();
    let refuse = |message: String| PipelineError::Labels {
        path: adapter.tensors.clone(),
        message,
    };
    let Some(classes) = adapter_classes(adapter, &base, &base_config)? else {
        return Err(refuse(format!(
            "neither the adapter nor its base ({}) has a classification head ({}.weight)",
            base.dir.display(),
            base_config.encoder.head.classifier
        )));
    };
    let how = "give --labels NAME,NAME,... (class-id order) or --labels FILE (one name a \
               line), or label the probe with integer class ids";
    if let Some(given) = given {
        if given.names.len() != classes {
            return Err(refuse(format!(
                "the head has {classes} classes, --labels names {}",
                given.names.len()
            )));
        }
        return Ok((given, family, base_config_path));
    }
    let from_base = base_config.labels().ok().flatten();
    if let Some(labels) = from_base.filter(|labels| labels.names.len() == classes) {
        return Ok((labels, family, base_config_path));
    }
    let integers = LabelSet {
        names: (0..classes).map(|id| id.to_string()).collect(),
    };
    let all_ids = probe.examples.iter().all(|example| match &example.label {
        RawLabel::Id(id) => usize::try_from(*id).is_ok_and(|id| id < classes),
        RawLabel::Name(name) => name.parse::<usize>().is_ok_and(|id| id < classes),
    });
    if all_ids {
        return Ok((integers, family, base_config_path));
    }
    Err(refuse(format!(
        "a peft adapter has no config.json and so no id2label; its head has {classes} \
         classes, its base ({}) names none of that count, and the probe's labels are names: \
         {how}",
        base_config_path.display()
    )))
}

/// The base model of an adapter checkpoint: `--base-model` when given (found already),
/// else the adapter's `base_model_name_or_path` (a folder, or a hub id in the cache).
fn adapter_base(
    adapter: &AdapterFiles,
    base_dir: Option<&Path>,
    run_dir: &Path,
) -> Result<BaseModel, CheckpointError> {
    let dir = match base_dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let config = AdapterConfig::load(&adapter.config)?;
            let name = config.base_model.ok_or_else(|| CheckpointError::Invalid {
                path: adapter.config.clone(),
                message: "no base_model_name_or_path: give --base-model".into(),
            })?;
            locate_model(
                &name,
                config.revision.as_deref(),
                &[run_dir],
                &adapter.config,
            )?
        }
    };
    let weights = match WeightFiles::find(&dir)? {
        Some(WeightFiles::Adapter(_)) | None => {
            return Err(CheckpointError::NoWeights { path: dir });
        }
        Some(weights) => weights,
    };
    Ok(BaseModel { dir, weights })
}

/// The class count of the adapter's head (`modules_to_save`), else of its base's (a
/// base that is a classifier already); `None` when neither has one.
fn adapter_classes(
    adapter: &AdapterFiles,
    base: &BaseModel,
    base_config: &ModelConfig,
) -> Result<Option<usize>, CheckpointError> {
    let classifier = format!("{}.weight", base_config.encoder.head.classifier);
    let headers = |weights: &WeightFiles, path: &Path| {
        NamedTensors::open(weights, &candle_core::Device::Cpu).map_err(|error| {
            CheckpointError::Invalid {
                path: path.to_path_buf(),
                message: error.to_string(),
            }
        })
    };
    let in_adapter = headers(&WeightFiles::Adapter(adapter.clone()), &adapter.tensors)?
        .rows_of(&format!("base_model.model.{classifier}"));
    match in_adapter {
        Some(classes) => Ok(Some(classes)),
        None => Ok(headers(&base.weights, &base.dir)?.rows_of(&classifier)),
    }
}
