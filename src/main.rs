use std::io::Write;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use std::path::Path;

use dwell::advise::Rules;
use dwell::analyze::detectors::DetectorKind;
use dwell::analyze::params::{AnalysisParams, Space};
use dwell::analyze::sweep::SweepRow;
use dwell::analyze::trajectory::TrajectoryAnalysis;
use dwell::bench::{BenchConfig, BenchProgress, CaseName};
use dwell::checkpoint::{
    is_remote, load_tokenizer, mirror_dir, prune_mirror, DictionarySearch, Family, Mirror,
    RemoteRun,
};
use dwell::config::DwellConfig;
use dwell::demo::{DemoConfig, TrainProgress};
use dwell::embed::{Backend, BackendChoice as Choice, Embedder, Isa, ModelEmbedder};
use dwell::pipeline::{Pipeline, PipelineConfig, Progress, DEFAULT_BATCH_SIZE};
use dwell::report::{
    detector_kind, rewrite_html, serde_name, write_html, write_json, ClusteringReport, Report,
};
use dwell::sinks::{SinkConfig, SinkKind, WebhookUrl};
use dwell::store::{
    analyze_stored, cluster_stored, Manifest, PositionCache, StateDir, DEFAULT_COPY_LIMIT_BYTES,
};
use dwell::watch::{AnnouncePolicy, EmbedderFactory, RemoteSource, RunsConfig, WatchConfig};

/// Follows a fixed probe set's embeddings across a fine-tuning run's checkpoints and
/// tells you which classes need data, which need redefining, and which are fine.
#[derive(Parser)]
#[command(name = "dwell", version)]
struct Cli {
    /// Threads for the model's CPU kernels, in every command [default: all cores].
    #[arg(long, global = true, env = "DWELL_THREADS")]
    threads: Option<NonZeroUsize>,
    /// Which kernels embed: the fastest this CPU and build can run; our cpu kernels
    /// on the fastest instruction set the CPU has, or on one named (cpu-avx512,
    /// cpu-avx2, cpu-neon; `avx512` is the old name of cpu-avx512); or candle's (any
    /// CPU; the GPU with --features cuda).
    #[arg(long, global = true, env = "DWELL_BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendChoice {
    Auto,
    Cpu,
    #[value(alias = "avx512")]
    CpuAvx512,
    CpuAvx2,
    CpuNeon,
    Candle,
}

impl BackendChoice {
    fn resolve(self) -> Result<Choice, dwell::embed::EmbedError> {
        Ok(match self {
            BackendChoice::Auto => Choice::Auto,
            BackendChoice::Cpu => Choice::fastest_cpu()?,
            BackendChoice::CpuAvx512 => Choice::Only(Backend::Cpu(Isa::Avx512)),
            BackendChoice::CpuAvx2 => Choice::Only(Backend::Cpu(Isa::Avx2)),
            BackendChoice::CpuNeon => Choice::Only(Backend::Cpu(Isa::Neon)),
            BackendChoice::Candle => Choice::Only(Backend::Candle),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Embed every complete checkpoint of a Trainer output_dir once, then write report.json.
    Analyze(AnalyzeCommand),
    /// Count trajectories with a stay point for a list of thresholds (the paper's Tables 1 and 2).
    Sweep(SweepArgs),
    /// Cluster the probe examples by final embedding, whole trajectory and trajectory
    /// up to the dwell onset; print each clustering's adjusted Rand index (Fig. 8).
    Cluster(ClusterArgs),
    /// Attach to a running training job: embed each new checkpoint, keep the report
    /// current, and notify Slack or a webhook when the advice changes.
    Watch(WatchArgs),
    /// Redraw report.html from a state directory's report.json and stored embeddings.
    Report(ReportArgs),
    /// Train a small BERT on the shipped Debian-sections corpus and watch it live:
    /// the whole product on a real run, no downloads.
    Demo(DemoArgs),
    /// Measure embedding throughput, load time and peak memory on fixed cases, and
    /// compare with PyTorch (docs/BENCH.md).
    Bench(BenchArgs),
    /// Print what the embedder sees for each probe text: one JSON object a line,
    /// {"row", "ids", "tokens"}, with the checkpoint's tokenizer.
    Tokenize(TokenizeArgs),
}

#[derive(Args)]
struct TokenizeArgs {
    /// A checkpoint (or model) folder.
    checkpoint: PathBuf,
    /// Labelled probe set, as for `dwell analyze`.
    #[arg(long, env = "DWELL_PROBE")]
    probe: PathBuf,
    /// Truncate probe texts to this many tokens, special tokens included.
    #[arg(long, env = "DWELL_MAX_LEN", default_value_t = 128)]
    max_len: usize,
    /// A tokenizer.json, vocab.txt or model folder, used when the checkpoint has none.
    #[arg(long, env = "DWELL_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// The MeCab dictionary folder (the one with sys.dic) for Japanese BERTs
    /// [default: the dictionary's Python package for the python3 on PATH].
    #[arg(long, env = "DWELL_MECAB_DICDIR")]
    mecab_dicdir: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// The all-MiniLM-L6-v2 model folder (config.json, model.safetensors, tokenizer
    /// files; see docs/BENCH.md). Only read.
    #[arg(long, env = "DWELL_BENCH_MINILM")]
    minilm: PathBuf,
    /// The probe set the cases are made from.
    #[arg(
        long,
        env = "DWELL_BENCH_PROBE",
        default_value = "data/debian-sections/test.jsonl"
    )]
    probe: PathBuf,
    /// Where the prepared cases and the results go; a case is regenerated only when its
    /// source or the generator changes.
    #[arg(long, env = "DWELL_BENCH_CASES", default_value = "target/bench-cases")]
    cases: PathBuf,
    /// Timed embedding passes per case, after one untimed warm-up pass.
    #[arg(long, env = "DWELL_BENCH_PASSES", default_value_t = 3)]
    passes: usize,
    /// Timed model loads per case.
    #[arg(long, env = "DWELL_BENCH_LOADS", default_value_t = 5)]
    loads: usize,
    /// Checkpoints in the whole-run case (`dwell analyze` as a whole process).
    #[arg(long, env = "DWELL_BENCH_CHECKPOINTS", default_value_t = 12)]
    checkpoints: usize,
    /// Whole runs of `dwell analyze`; with --python each is followed by PyTorch's, and
    /// the speed-up is the median of the rounds' ratios.
    #[arg(long, env = "DWELL_BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Run one case only [default: both].
    #[arg(long, env = "DWELL_BENCH_ONLY", value_enum)]
    only: Option<BenchCase>,
    /// A Python with torch and transformers (and onnxruntime, onnx, onnxscript): runs
    /// bench/torch_baseline.py on the same cases with the same threads, PyTorch and
    /// ONNX Runtime on the model exported by torch.onnx, and prints them beside dwell.
    #[arg(long, env = "DWELL_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// With --python: leave ONNX Runtime out (PyTorch's column only).
    #[arg(long, env = "DWELL_BENCH_NO_ORT")]
    no_ort: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchCase {
    /// all-MiniLM-L6-v2 with a random head: the probe set at max length 64.
    Minilm,
    /// A random BERT-base: 32 texts of 512 tokens.
    BertBase,
}

#[derive(Args)]
struct DemoArgs {
    /// Where the run, the corpus and the state go [default: ./dwell-demo-<unix time>].
    #[arg(long, env = "DWELL_DEMO_OUT")]
    out: Option<PathBuf>,
    /// Slack incoming-webhook URL for the demo's notifications (a secret: never logged).
    #[arg(long, env = "DWELL_SLACK_WEBHOOK", hide_env_values = true)]
    slack_webhook: Option<String>,
    /// Training epochs (48 steps each).
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// A checkpoint every this many steps.
    #[arg(long, default_value_t = 40)]
    save_steps: u64,
}

#[derive(Args)]
struct ReportArgs {
    /// The state directory of an earlier `dwell analyze` (nothing is embedded).
    #[arg(long, env = "DWELL_STATE")]
    state: PathBuf,
}

#[derive(Args)]
struct SweepArgs {
    /// The state directory of an earlier `dwell analyze` (nothing is re-embedded).
    #[arg(long, env = "DWELL_STATE")]
    state: PathBuf,
    /// Which dwell detector to sweep.
    #[arg(long, value_enum)]
    detector: SweepDetector,
    /// Comma-separated thresholds: D for distance, ε for straightness, β for relative.
    #[arg(long, value_delimiter = ',', required = true)]
    thresholds: Vec<f64>,
    /// T: consecutive slow intervals that make a stay (distance, relative).
    #[arg(long = "T")]
    min_run: Option<usize>,
    /// k: the straightness window in checkpoints.
    #[arg(long = "k")]
    window: Option<usize>,
    /// W: early intervals whose median speed is the example's own reference (relative).
    #[arg(long = "W")]
    early_window: Option<usize>,
    /// The space trajectories are measured in.
    #[arg(long, value_enum)]
    space: Option<SweepSpace>,
    /// A dwell.toml whose [analysis] section gives the other parameters.
    #[arg(long, env = "DWELL_CONFIG")]
    config: Option<PathBuf>,
    /// The training set (JSONL, CSV or TSV; only labels are read): each row then shows
    /// Spearman's ρ between the classes' training counts and their dwell fraction and onset.
    #[arg(long, env = "DWELL_TRAIN")]
    train: Option<PathBuf>,
    /// Print JSON: {"rows": [{threshold, trajectories, share, per_class, training_order}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ClusterArgs {
    /// The state directory of an earlier `dwell analyze` (nothing is re-embedded).
    #[arg(long, env = "DWELL_STATE")]
    state: PathBuf,
    /// The detector whose onsets trim the trajectories [default: the advice rules'].
    #[arg(long, value_enum)]
    detector: Option<SweepDetector>,
    /// Advice rules replacing the built-in rules/default.toml (for their detector).
    #[arg(long, env = "DWELL_RULES")]
    rules: Option<PathBuf>,
    /// A dwell.toml whose [analysis] section gives the detector parameters.
    #[arg(long, env = "DWELL_CONFIG")]
    config: Option<PathBuf>,
    /// Print the report's `clustering` section as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SweepDetector {
    Distance,
    Straightness,
    Relative,
}

impl SweepDetector {
    fn kind(self) -> DetectorKind {
        match self {
            SweepDetector::Distance => DetectorKind::Distance,
            SweepDetector::Straightness => DetectorKind::Straightness,
            SweepDetector::Relative => DetectorKind::Relative,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SweepSpace {
    Full,
    Pca2,
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    pipeline: AnalyzeArgs,
    /// Watch every run folder (a folder holding checkpoint-*) under ROOT, present or
    /// appearing later, in place of RUN_DIR: one model thread for all, each run's state
    /// in ROOT-state/<run>/, an index page ROOT-state/index.html comparing them.
    #[arg(long, env = "DWELL_RUNS", value_name = "ROOT")]
    runs: Option<PathBuf>,
    /// With --runs: seconds without a new checkpoint, with nothing left to embed, after
    /// which a run is finished (final report and message) [default: 1800].
    #[arg(long, env = "DWELL_IDLE", requires = "runs")]
    idle: Option<f64>,
    /// Slack incoming-webhook URL (a secret: never logged).
    #[arg(long, env = "DWELL_SLACK_WEBHOOK", hide_env_values = true)]
    slack_webhook: Option<String>,
    /// A URL that receives the recommendations as JSON (a secret: never logged).
    #[arg(long, env = "DWELL_WEBHOOK", hide_env_values = true)]
    webhook: Option<String>,
    /// Seconds between rescans of RUN_DIR (events trigger sooner) [default: 10].
    #[arg(long, env = "DWELL_POLL")]
    poll: Option<f64>,
    /// Seconds a checkpoint's files must stay unchanged before it is read [default: 2].
    #[arg(long, env = "DWELL_SETTLE")]
    settle: Option<f64>,
    /// Exit 0 once the run reaches max_steps and every checkpoint is embedded.
    #[arg(long, env = "DWELL_EXIT_ON_FINISH")]
    exit_on_finish: bool,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "DWELL_LOG_JSON")]
    log_json: bool,
    /// Serve Prometheus metrics on /metrics and a health check on /healthz at this
    /// address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "DWELL_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Consecutive checkpoints a class's new action must hold before it is announced
    /// [default: 2].
    #[arg(long, env = "DWELL_HOLD_CHECKPOINTS")]
    hold_checkpoints: Option<usize>,
    /// Least seconds between two advice messages; changes in between go out together
    /// [default: 300].
    #[arg(long, env = "DWELL_MIN_INTERVAL")]
    min_interval: Option<f64>,
    /// MiB that copies of checkpoints may take in the state directory when it is on
    /// another file system than the run (no hard links) [default: 4096].
    #[arg(long, env = "DWELL_SECURE_COPY_LIMIT")]
    secure_copy_limit: Option<u64>,
}

#[derive(Args)]
struct AnalyzeCommand {
    #[command(flatten)]
    pipeline: AnalyzeArgs,
    /// Analyse embeddings computed elsewhere instead of a run: a folder of
    /// step-<N>.safetensors (cls [P,H], optional logits [P,C]) or step-<N>.npy (+
    /// step-<N>.logits.npy), rows in probe order (docs/EMBEDDINGS.md). The state
    /// defaults to DIR/.dwell.
    #[arg(long, env = "DWELL_EMBEDDINGS", value_name = "DIR")]
    embeddings: Option<PathBuf>,
    /// The planned length of the run the embeddings come from (trainer_state.json's
    /// max_steps for a Trainer run), for the advice's early cutoff; with --embeddings.
    #[arg(long, env = "DWELL_MAX_STEPS", requires = "embeddings")]
    max_steps: Option<u64>,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// The Hugging Face Trainer output_dir (finished or still running).
    run_dir: Option<PathBuf>,
    /// Labelled probe set: JSON Lines, CSV or TSV with `text` and `label` (and optionally `id`).
    #[arg(long, env = "DWELL_PROBE")]
    probe: PathBuf,
    /// Where embeddings and reports are kept [default: RUN_DIR/.dwell].
    #[arg(long, env = "DWELL_STATE")]
    state: Option<PathBuf>,
    /// Truncate probe texts to this many tokens, special tokens included.
    #[arg(long, env = "DWELL_MAX_LEN", default_value_t = 128)]
    max_len: usize,
    /// The pretrained model the run started from, embedded as step 0, and the base of
    /// adapter (LoRA) checkpoints: a folder, or a hub id found offline in the local
    /// Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, env = "DWELL_BASE_MODEL")]
    base_model: Option<PathBuf>,
    /// Class names in class-id order, for adapter checkpoints (they have no
    /// config.json): NAME,NAME,... or a file of one name a line.
    #[arg(long, env = "DWELL_LABELS")]
    labels: Option<String>,
    /// The MeCab dictionary folder (the one with sys.dic) for Japanese BERTs
    /// [default: the dictionary's Python package for the python3 on PATH].
    #[arg(long, env = "DWELL_MECAB_DICDIR")]
    mecab_dicdir: Option<PathBuf>,
    /// A tokenizer.json, vocab.txt or model folder, used when no checkpoint has a tokenizer.
    #[arg(long, env = "DWELL_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// Probe examples per forward pass.
    #[arg(long, env = "DWELL_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// The training set (JSONL, CSV or TSV; only labels are read) for per-class training counts.
    #[arg(long, env = "DWELL_TRAIN")]
    train: Option<PathBuf>,
    /// Advice rules replacing the built-in rules/default.toml.
    #[arg(long, env = "DWELL_RULES")]
    rules: Option<PathBuf>,
    /// A dwell.toml with an [analysis] section (detector parameters, space).
    #[arg(long, env = "DWELL_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match apply_threads(cli.threads) {
        Ok(threads) => threads,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let default_level = match &cli.command {
        // The demo shows the watcher at work.
        Command::Demo(_) => "warn,dwell::watch=info",
        // A healthy daemon says what it does: embedded steps, backlog, gaps, messages.
        Command::Watch(_) => "warn,dwell=info",
        _ => "warn",
    };
    init_tracing(
        matches!(&cli.command, Command::Watch(args) if args.log_json),
        default_level,
    );
    match run(cli, threads) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DWELL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Sizes the thread pools before anything starts threads (main is synchronous; the
/// async runtimes come later). Returns the thread count.
fn apply_threads(threads: Option<NonZeroUsize>) -> anyhow::Result<usize> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    // candle's CPU kernels size their own pool from this variable.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("sizing the thread pool")?;
    Ok(threads)
}

fn run(cli: Cli, threads: usize) -> anyhow::Result<()> {
    // Resolved only by the commands that embed: `DWELL_BACKEND=cpu` on a CPU without
    // its kernels does not stop `dwell sweep`.
    let backend = || cli.backend.resolve();
    match cli.command {
        Command::Bench(args) => bench(args, threads, backend()?),
        Command::Tokenize(args) => tokenize(args),
        Command::Analyze(args) => analyze(args, backend()?),
        Command::Sweep(args) => sweep(args),
        Command::Cluster(args) => cluster(args),
        Command::Watch(args) => watch(args, backend()?),
        Command::Demo(args) => demo(args, backend()?),
        Command::Report(args) => {
            let (state, _) = StateDir::open_existing(&args.state)?;
            println!("report: {}", rewrite_html(&state)?.display());
            Ok(())
        }
    }
}

/// The run a command reads: RUN_DIR, or the folder another flag names in its place.
fn run_source(
    run_dir: Option<PathBuf>,
    instead: Option<PathBuf>,
    flag: &str,
) -> anyhow::Result<PathBuf> {
    match (run_dir, instead) {
        (Some(run_dir), None) => Ok(run_dir),
        (None, Some(dir)) => Ok(dir),
        (Some(run_dir), Some(dir)) => anyhow::bail!(
            "give RUN_DIR ({}) or {flag} ({}), not both",
            run_dir.display(),
            dir.display()
        ),
        (None, None) => anyhow::bail!("give RUN_DIR (the Trainer's output_dir) or {flag}"),
    }
}

fn pipeline_config(
    args: AnalyzeArgs,
    run_dir: PathBuf,
    config: &DwellConfig,
    settle: Duration,
    secure_copy_limit: u64,
) -> anyhow::Result<PipelineConfig> {
    Ok(PipelineConfig {
        run_dir,
        shown_as: None,
        probe: args.probe,
        state_dir: args.state,
        max_len: args.max_len,
        base_model: args.base_model,
        labels: args.labels,
        dictionaries: DictionarySearch {
            dicdir: args.mecab_dicdir,
        },
        tokenizer: args.tokenizer,
        batch_size: args.batch_size,
        analysis: config.analysis.clone(),
        rules: load_rules(args.rules.as_deref())?,
        train: args.train,
        settle,
        secure_copy_limit,
    })
}

fn watch(mut args: WatchArgs, backend: Choice) -> anyhow::Result<()> {
    let config = load_config(args.pipeline.config.as_deref())?;
    let file = &config.watch;
    let seconds = |flag: Option<f64>, file: Option<f64>, default: f64, name: &str| {
        let value = flag.or(file).unwrap_or(default);
        anyhow::ensure!(
            value.is_finite() && value >= 0.0,
            "--{name} must be a number of seconds >= 0"
        );
        Ok(Duration::from_secs_f64(value))
    };
    let poll = seconds(args.poll, file.poll_seconds, 10.0, "poll")?;
    let settle = seconds(args.settle, file.settle_seconds, 2.0, "settle")?;
    let mut sinks = Vec::new();
    let slack = match args.slack_webhook.as_deref() {
        Some(text) => WebhookUrl::from_sources(Some(text), None, None)?,
        None => file.slack_webhook.clone(),
    };
    if let Some(url) = slack {
        sinks.push(SinkConfig::new("slack", SinkKind::Slack, url));
    }
    let generic = match args.webhook.as_deref() {
        Some(text) if !text.trim().is_empty() => {
            Some(WebhookUrl::parse(text, "the --webhook flag")?)
        }
        _ => file.webhook.clone(),
    };
    if let Some(url) = generic {
        sinks.push(SinkConfig::new("webhook", SinkKind::Webhook, url));
    }
    let batch_size = args.pipeline.batch_size;
    let defaults = AnnouncePolicy::default();
    let announce = AnnouncePolicy {
        hold_checkpoints: args
            .hold_checkpoints
            .or(file.hold_checkpoints)
            .unwrap_or(defaults.hold_checkpoints),
        min_interval: seconds(
            args.min_interval,
            file.min_interval_seconds,
            defaults.min_interval.as_secs_f64(),
            "min-interval",
        )?,
    };
    let copy_limit_mib = args
        .secure_copy_limit
        .or(file.secure_copy_limit_mib)
        .unwrap_or(DEFAULT_COPY_LIMIT_BYTES >> 20);
    let many_runs = args.runs.is_some();
    let run_dir = run_source(
        args.pipeline.run_dir.take(),
        args.runs.take(),
        "--runs ROOT",
    )?;
    if many_runs {
        let root = run_dir;
        anyhow::ensure!(
            args.pipeline.state.is_none(),
            "--runs keeps each run's state in ROOT-state/<run>/: --state does not apply"
        );
        // A bucket is not a folder: listed as one, it would hold no runs and be waited
        // on for ever, with its state under a local `s3:` folder.
        if let Some(url) = root.to_str().filter(|root| is_remote(root)) {
            anyhow::bail!(
                "--runs {url}: --runs watches a local folder of runs (ROOT); runs on object \
                 storage are watched one per process: `dwell watch s3://bucket/prefix/<run>/ \
                 --state DIR` for each run"
            );
        }
        let idle = seconds(args.idle, None, 1800.0, "idle")?;
        let runs = RunsConfig {
            exit_on_finish: args.exit_on_finish || file.exit_on_finish.unwrap_or(false),
            pipeline: pipeline_config(
                args.pipeline,
                root.clone(),
                &config,
                settle,
                copy_limit_mib << 20,
            )?,
            root,
            poll,
            idle,
            sinks,
            flush_deadline: Duration::from_secs(5),
            announce,
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
        };
        let runtime = watch_runtime()?;
        let exit = runtime.block_on(dwell::watch::watch_runs(
            runs,
            model_embedders(batch_size, backend),
            stop_signal(),
        ))?;
        tracing::info!(?exit, "dwell watch exits");
        return Ok(());
    }
    let remote = match run_dir.to_str().filter(|run| is_remote(run)) {
        Some(url) => Some(RemoteRun::from_url(url)?),
        None => None,
    };
    let run_dir = match &remote {
        Some(run) => mirror_dir(args.pipeline.state.as_deref().with_context(|| {
            format!(
                "{} is on object storage: give --state DIR, a local folder for the state",
                run.url()
            )
        })?),
        None => run_dir,
    };
    let watch_config = WatchConfig {
        exit_on_finish: args.exit_on_finish || file.exit_on_finish.unwrap_or(false),
        pipeline: PipelineConfig {
            shown_as: remote.as_ref().map(|run| PathBuf::from(run.url())),
            ..pipeline_config(
                args.pipeline,
                run_dir,
                &config,
                // The mirror applies the settle rule to the listing and renames each
                // checkpoint into place whole: its local copy is settled when it appears.
                if remote.is_some() {
                    Duration::ZERO
                } else {
                    settle
                },
                copy_limit_mib << 20,
            )?
        },
        remote: remote.map(|run| RemoteSource { run, settle }),
        poll,
        sinks,
        flush_deadline: Duration::from_secs(5),
        announce,
        metrics_addr: args.metrics_addr.or(file.metrics_addr),
    };
    let runtime = watch_runtime()?;
    let exit = runtime.block_on(async move {
        dwell::watch::watch(
            watch_config,
            model_embedders(batch_size, backend),
            stop_signal(),
        )
        .await
    })?;
    tracing::info!(?exit, "dwell watch exits");
    Ok(())
}

/// The runtime a watch runs on: its timers, file events, HTTP sends and `/metrics`
/// need little, as the embedding runs on a thread of its own.
fn watch_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn demo(args: DemoArgs, backend: Choice) -> anyhow::Result<()> {
    let out = match args.out {
        Some(out) => out,
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("dwell-demo-{now}"))
        }
    };
    let mut demo_config = DemoConfig::new(&out);
    demo_config.epochs = args.epochs;
    demo_config.save_steps = args.save_steps;
    let state = out.join("state");
    let sinks = match WebhookUrl::from_sources(args.slack_webhook.as_deref(), None, None)? {
        Some(url) => vec![SinkConfig::new("slack", SinkKind::Slack, url)],
        None => Vec::new(),
    };
    let pipeline = PipelineConfig {
        run_dir: demo_config.run_dir(),
        shown_as: None,
        probe: demo_config.data_dir().join("test.jsonl"),
        state_dir: Some(state.clone()),
        max_len: demo_config.max_len,
        base_model: None,
        labels: None,
        dictionaries: DictionarySearch::default(),
        tokenizer: None,
        batch_size: DEFAULT_BATCH_SIZE,
        analysis: Default::default(),
        rules: Rules::default(),
        train: Some(demo_config.data_dir().join("train.jsonl")),
        settle: Duration::from_millis(500),
        secure_copy_limit: DEFAULT_COPY_LIMIT_BYTES,
    };
    let watch_config = WatchConfig {
        pipeline,
        poll: Duration::from_secs(1),
        exit_on_finish: true,
        sinks,
        flush_deadline: Duration::from_secs(5),
        announce: AnnouncePolicy::default(),
        metrics_addr: None,
        remote: None,
    };
    println!(
        "dwell demo: training a 2-layer BERT in {} and watching it",
        out.display()
    );
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let trainer = std::thread::Builder::new()
        .name("dwell-demo-train".into())
        .spawn(move || {
            let mut started = Some(started_tx);
            dwell::demo::train(&demo_config, &mut |event| match event {
                TrainProgress::Started { max_steps, vocab_size, .. } => {
                    eprintln!("[train] WordPiece vocabulary of {vocab_size} trained; {max_steps} steps to go");
                    if let Some(started) = started.take() {
                        let _ = started.send(());
                    }
                }
                TrainProgress::Step { .. } => {}
                TrainProgress::Saved { step, eval, .. } => eprintln!(
                    "[train] step {step}: checkpoint written, eval macro F1 {:.3}",
                    eval.macro_f1
                ),
            })
        })
        .context("starting the training thread")?;
    // The watcher starts once the corpus (its probe set) is on disk.
    if started_rx.recv().is_err() {
        return match trainer.join() {
            Ok(Err(error)) => Err(error.into()),
            _ => Err(anyhow::anyhow!(
                "the training thread stopped before it started"
            )),
        };
    }
    let runtime = watch_runtime()?;
    runtime.block_on(async move {
        dwell::watch::watch(
            watch_config,
            model_embedders(DEFAULT_BATCH_SIZE, backend),
            stop_signal(),
        )
        .await
    })?;
    match trainer.join() {
        Ok(result) => {
            result?;
        }
        Err(_) => anyhow::bail!("the training thread panicked"),
    }
    let (state_dir, _) = StateDir::open_existing(&state)?;
    let report = dwell::report::read_json(&state_dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    print_f1_table(&mut out, &report)
        .and_then(|()| print_advice(&mut out, &report))
        .and_then(|()| {
            writeln!(
                out,
                "report: {}",
                state.join(dwell::report::HTML_FILE).display()
            )
        })
        .or_else(ignore_broken_pipe)?;
    Ok(())
}

fn bench(args: BenchArgs, threads: usize, backend: Choice) -> anyhow::Result<()> {
    let cases = match args.only {
        Some(BenchCase::Minilm) => vec![CaseName::Minilm],
        Some(BenchCase::BertBase) => vec![CaseName::BertBase],
        None => vec![CaseName::Minilm, CaseName::BertBase],
    };
    let config = BenchConfig {
        minilm: args.minilm,
        probe: args.probe,
        cases_dir: args.cases,
        cases,
        passes: args.passes,
        loads: args.loads,
        checkpoints: args.checkpoints,
        rounds: args.rounds,
        threads,
        backend,
        batch_size: DEFAULT_BATCH_SIZE,
        dwell_exe: std::env::current_exe().context("finding the dwell binary")?,
        python: args.python,
        ort: !args.no_ort,
    };
    let report = dwell::bench::run(&config, &mut |event| match event {
        BenchProgress::Preparing { case, dir } => {
            eprintln!("preparing case {case} in {}", dir.display())
        }
        BenchProgress::Reused { case, dir } => {
            eprintln!("case {case}: {} is up to date", dir.display())
        }
        BenchProgress::WholeRun {
            round,
            rounds,
            checkpoints,
            command,
        } => eprintln!("whole run {round} of {rounds}, over {checkpoints} checkpoints: {command}"),
        BenchProgress::Measuring { case } => eprintln!(
            "measuring {case}: {} loads, tokenising, a warm-up and {} timed passes",
            config.loads, config.passes
        ),
        BenchProgress::Baseline { command } => eprintln!("PyTorch baseline: {command}"),
    })?;
    write!(
        std::io::stdout().lock(),
        "{}",
        dwell::bench::render(&report)
    )
    .or_else(ignore_broken_pipe)?;
    Ok(())
}

fn model_embedders(batch_size: usize, backend: Choice) -> EmbedderFactory {
    Box::new(move || {
        ModelEmbedder::choosing(batch_size, backend)
            .map(|embedder| Box::new(embedder) as Box<dyn Embedder>)
    })
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops dwell");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<DwellConfig> {
    let Some(path) = path else {
        return Ok(DwellConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(DwellConfig::from_toml_str(
        &text,
        &path.display().to_string(),
    )?)
}

fn load_rules(path: Option<&Path>) -> anyhow::Result<Rules> {
    let Some(path) = path else {
        return Ok(Rules::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Rules::from_toml_str(&text, &path.display().to_string())?)
}

fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    let mut params = load_config(args.config.as_deref())?.analysis;
    if let Some(space) = args.space {
        params.space = match space {
            SweepSpace::Full => Space::Full,
            SweepSpace::Pca2 => Space::Pca2,
        };
    }
    if let Some(min_run) = args.min_run {
        params.distance.min_run = min_run;
        params.relative.min_run = min_run;
    }
    if let Some(window) = args.window {
        params.straightness.window = window;
    }
    if let Some(early_window) = args.early_window {
        params.relative.early_window = early_window;
    }
    let (_, manifest, analysis, _) = analyze_state_dir(&args.state, &params)?;
    let detector = args.detector.kind();
    let train_counts = args
        .train
        .as_deref()
        .map(|path| training_counts(path, &manifest.labels))
        .transpose()?;
    let rows = dwell::analyze::sweep::sweep(
        &analysis,
        detector,
        &args.thresholds,
        train_counts.as_deref(),
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({ "rows": rows });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?).or_else(ignore_broken_pipe)?;
        return Ok(());
    }
    print_sweep(
        &mut out,
        &rows,
        &manifest.labels,
        analysis.steps.len(),
        detector,
    )
    .or_else(ignore_broken_pipe)?;
    Ok(())
}

/// The trajectory analysis of everything stored in the state directory at `root`, with
/// the positions it read still cached for a second pass over them.
fn analyze_state_dir(
    root: &Path,
    params: &AnalysisParams,
) -> anyhow::Result<(StateDir, Manifest, TrajectoryAnalysis, PositionCache)> {
    let (state, manifest) = StateDir::open_existing(root)?;
    let steps: Vec<u64> = state.stored_steps()?.into_iter().collect();
    let mut positions = PositionCache::default();
    let analysis = analyze_stored(
        &state,
        &mut positions,
        &steps,
        &manifest.example_classes,
        manifest.labels.len(),
        params,
    )?;
    Ok((state, manifest, analysis, positions))
}

fn print_sweep(
    out: &mut impl Write,
    rows: &[SweepRow],
    labels: &[String],
    checkpoints: usize,
    detector: DetectorKind,
) -> std::io::Result<()> {
    let symbol = match detector {
        DetectorKind::Distance => "D",
        DetectorKind::Straightness => "eps",
        DetectorKind::Relative => "beta",
    };
    let total = rows
        .first()
        .map_or(0, |r| r.per_class.iter().map(|c| c.examples).sum());
    writeln!(out, "{total} trajectories over {checkpoints} checkpoints")?;
    writeln!(out, "{symbol:>9} {:>12} {:>7}", "with stay", "share")?;
    for row in rows {
        writeln!(
            out,
            "{:>9} {:>12} {:>7}",
            row.threshold,
            row.trajectories,
            percent(row.share)
        )?;
    }
    writeln!(out)?;
    let width = labels
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .clamp(5, 10);
    let mut header = format!("{symbol:>9}");
    for label in labels {
        header.push_str(&format!(" {:>width$}", truncate(label, width)));
    }
    writeln!(
        out,
        "{header}   (share of each class's trajectories with a stay point)"
    )?;
    for row in rows {
        let mut line = format!("{:>9}", row.threshold);
        for class in &row.per_class {
            line.push_str(&format!(" {:>width$}", percent(class.share)));
        }
        writeln!(out, "{line}")?;
    }
    if rows.iter().any(|row| row.training_order.is_some()) {
        writeln!(out)?;
        writeln!(
            out,
            "{symbol:>9} {:>14} {:>10}   (Spearman's rho against the training counts; \
             more data should dwell more, rho -> +1, and earlier, rho -> -1)",
            "dwell fraction", "onset"
        )?;
        for row in rows {
            let Some(order) = row.training_order else {
                continue;
            };
            writeln!(
                out,
                "{:>9} {:>14} {:>10}",
                row.threshold,
                rho(order.dwell_fraction_rho),
                rho(order.onset_rho)
            )?;
        }
    }
    Ok(())
}

/// "-" where ρ is undefined: one side is constant, so nothing is ordered.
fn rho(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:+.3}"))
}

/// Per class index, the number of training examples with that label.
fn training_counts(path: &Path, labels: &[String]) -> anyhow::Result<Vec<Option<usize>>> {
    let names = dwell::probe::LabelSet {
        names: labels.to_vec(),
    };
    let train = dwell::probe::load_training_labels(path)?;
    let mut counts = vec![0; labels.len()];
    for class in names.resolve(&train)? {
        counts[class] += 1;
    }
    Ok(counts.into_iter().map(Some).collect())
}

fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let params = load_config(args.config.as_deref())?.analysis;
    let detector = match args.detector {
        Some(detector) => detector.kind(),
        None => detector_kind(load_rules(args.rules.as_deref())?.dwell.detector),
    };
    let (state, manifest, analysis, mut positions) = analyze_state_dir(&args.state, &params)?;
    let clustering = cluster_stored(&state, &mut positions, &analysis, detector)?;
    // The probe ids are in the report of the analysis that made the state, when it is there.
    let ids: Vec<Option<String>> = dwell::report::read_json(&state)
        .map(|report| report.examples.into_iter().map(|e| e.id).collect())
        .unwrap_or_default();
    let report = ClusteringReport::new(&clustering, &manifest.labels, &ids);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?).or_else(ignore_broken_pipe)?;
        return Ok(());
    }
    print_clustering(&mut out, &report, manifest.example_classes.len())
        .or_else(ignore_broken_pipe)?;
    Ok(())
}

fn print_clustering(
    out: &mut impl Write,
    clustering: &ClusteringReport,
    examples: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{examples} probe examples in {} clusters (Ward linkage); trajectories over {} \
         checkpoints, trimmed at the {} detector's onset",
        clustering.clusters,
        clustering.steps.len(),
        serde_name(&clustering.trimmed_by)
    )?;
    writeln!(
        out,
        "{:<12} {:>14} {:>12}  clusters (majority class, share)",
        "method", "ARI vs classes", "ARI vs final"
    )?;
    let methods = &clustering.methods;
    for (name, method) in [
        ("final", &methods.final_embeddings),
        ("trajectory", &methods.trajectory),
        ("trimmed", &methods.trimmed),
    ] {
        let clusters: Vec<String> = method
            .clusters
            .iter()
            .map(|c| format!("{} {}:{:.0}%", c.size, c.majority, c.majority_share * 100.0))
            .collect();
        writeln!(
            out,
            "{name:<12} {:>14.3} {:>12.3}  {}",
            method.ari_vs_classes,
            method.ari_vs_final,
            clusters.join(", ")
        )?;
    }
    writeln!(
        out,
        "\n{} examples travel with another cluster than the one they settle in \
         (clusters are numbered per method: the trimmed cluster's best-matching final \
         cluster is not the example's final one; each is named by its majority class, \
         which two clusters can share):",
        clustering.moved.len()
    )?;
    if clustering.moved.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{:>6} {:<12} {:<10} {:<12} {:<12}",
        "index", "id", "label", "travels with", "settles with"
    )?;
    for moved in &clustering.moved {
        writeln!(
            out,
            "{:>6} {:<12} {:<10} {:<12} {:<12}",
            moved.index,
            moved.id.as_deref().unwrap_or("-"),
            truncate(&moved.label, 10),
            format!(
                "#{} {}",
                moved.trimmed_cluster,
                truncate(&moved.travels_with, 9)
            ),
            format!(
                "#{} {}",
                moved.final_cluster,
                truncate(&moved.settles_with, 9)
            )
        )?;
    }
    Ok(())
}

fn percent(share: Option<f64>) -> String {
    share.map_or("-".into(), |s| format!("{:.1}%", s * 100.0))
}

fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let probe = dwell::probe::load_probe(&args.probe)?;
    let dictionaries = DictionarySearch {
        dicdir: args.mecab_dicdir,
    };
    let (tokenizer, source) = load_tokenizer(
        &args.checkpoint,
        None,
        args.tokenizer.as_deref(),
        args.max_len,
        &dictionaries,
    )?;
    tracing::info!(tokenizer = %source.path().display(), "tokenizing");
    let mut out = std::io::stdout().lock();
    for (row, example) in probe.examples.iter().enumerate() {
        let encoded = tokenizer.encode(&example.text).map_err(|message| {
            anyhow::anyhow!("{}: row {row}: {message}", source.path().display())
        })?;
        let line = serde_json::json!({"row": row, "ids": encoded.ids, "tokens": encoded.tokens});
        writeln!(out, "{line}").or_else(ignore_broken_pipe)?;
    }
    Ok(())
}

fn analyze(command: AnalyzeCommand, backend: Choice) -> anyhow::Result<()> {
    let mut args = command.pipeline;
    let file_config = load_config(args.config.as_deref())?;
    let exported = command.embeddings.is_some();
    let run_dir = run_source(args.run_dir.take(), command.embeddings, "--embeddings DIR")?;
    let remote = match run_dir.to_str().filter(|run| is_remote(run)) {
        Some(url) => {
            let state = args.state.clone().with_context(|| {
                format!(
                    "{url} is on object storage: give --state DIR, a local folder for the state"
                )
            })?;
            Some(Mirror::new(
                RemoteRun::from_url(url)?,
                mirror_dir(&state),
                Duration::ZERO,
            ))
        }
        None => None,
    };
    let remote_url = remote.as_ref().map(|_| run_dir.display().to_string());
    let run_dir = remote
        .as_ref()
        .map_or(run_dir, |mirror| mirror.root().to_path_buf());
    let config = PipelineConfig {
        shown_as: remote_url.as_ref().map(PathBuf::from),
        ..pipeline_config(
            args,
            run_dir,
            &file_config,
            Duration::ZERO,
            DEFAULT_COPY_LIMIT_BYTES,
        )?
    };
    if let Some(mut mirror) = remote {
        let stored = StateDir::open_for_intake(&config.state_dir())?.stored_steps()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let started = std::time::Instant::now();
        let scan = runtime.block_on(mirror.sync(&stored))?;
        eprintln!(
            "fetched {} checkpoint(s), {:.1} MiB in {:.1} s into {}",
            scan.fetched.len(),
            scan.bytes as f64 / (1 << 20) as f64,
            started.elapsed().as_secs_f64(),
            mirror.root().display()
        );
    }
    let mut pipeline = if exported {
        Pipeline::open_exported(config, command.max_steps)?
    } else {
        let embedder = ModelEmbedder::choosing(config.batch_size, backend)
            .context("starting the model runtime")?;
        Pipeline::open(config, Box::new(embedder))?
    };
    let started = std::time::Instant::now();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} checkpoints {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("embedding");
    let never = AtomicBool::new(false);
    let summary = pipeline.embed_pending(usize::MAX, &never, &mut |event| match event {
        Progress::Planned { checkpoints } => bar.set_length(checkpoints as u64),
        Progress::Embedded { step, elapsed } => {
            bar.inc(1);
            tracing::info!(step, seconds = elapsed.as_secs_f64(), "embedded");
        }
        Progress::Skipped(skipped) => {
            bar.suspend(|| eprintln!("skipped step {}: {}", skipped.step, skipped.reason))
        }
        Progress::Incomplete { step, reason } => {
            bar.suspend(|| eprintln!("not complete, left for a later run: step {step}: {reason}"))
        }
    })?;
    bar.finish_and_clear();
    let embedding_seconds = started.elapsed().as_secs_f64();
    if let Some(url) = &remote_url {
        prune_mirror(
            &pipeline.config().run_dir,
            &pipeline.state().stored_steps()?,
        )?;
        tracing::info!(run = %url, "embedded from object storage");
    }
    let report = pipeline.build_report()?;
    let path = write_json(pipeline.state(), &report)?;
    let figures = pipeline.figures(&report)?;
    let html = write_html(pipeline.state(), &figures)?;
    eprintln!(
        "embedded {} checkpoint(s), {} already stored, {} skipped, {} incomplete, {} vanished \
         ({embedding_seconds:.1} s, {} model, {} backend, {} threads)",
        summary.embedded.len(),
        summary.already_stored,
        summary.skipped,
        summary.incomplete,
        summary.vanished,
        report.run.model_type,
        Family::from_model_type(&report.run.model_type)
            .and_then(|family| backend.backend_for(family).ok())
            .map_or("no", Backend::name),
        rayon::current_num_threads(),
    );
    let mut out = std::io::stdout().lock();
    print_f1_table(&mut out, &report)
        .and_then(|()| print_advice(&mut out, &report))
        .and_then(|()| writeln!(out, "report: {}", path.display()))
        .and_then(|()| writeln!(out, "report: {}", html.display()))
        .or_else(ignore_broken_pipe)?;
    Ok(())
}

/// `dwell analyze | head` closing the pipe early is not an error.
fn ignore_broken_pipe(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error)
    }
}

fn print_f1_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let labels = &report.run.labels;
    let width = labels
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(4)
        .clamp(5, 10);
    let mut header = format!("{:>8} {:>8}", "step", "macro F1");
    for label in labels {
        header.push_str(&format!(" {:>width$}", truncate(label, width)));
    }
    writeln!(out, "{header}")?;
    for checkpoint in &report.checkpoints {
        let mut line = format!(
            "{:>8} {:>8}",
            checkpoint.step,
            checkpoint
                .macro_f1
                .map_or("-".to_string(), |f| format!("{f:.3}"))
        );
        for label in labels {
            let f1 = checkpoint
                .per_class_f1
                .as_ref()
                .and_then(|scores| scores.get(label));
            line.push_str(&format!(
                " {:>width$}",
                f1.map_or("-".to_string(), |f| format!("{f:.3}"))
            ));
        }
        writeln!(out, "{line}")?;
    }
    for skipped in &report.skipped {
        writeln!(
            out,
            "skipped step {}: {} ({})",
            skipped.step,
            skipped.reason,
            skipped.file.display()
        )?;
    }
    Ok(())
}

fn print_advice(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let Some(advice) = &report.advice else {
        return Ok(());
    };
    writeln!(out)?;
    if !advice.evidence_sufficient {
        writeln!(
            out,
            "advice: not enough evidence yet (see rules [evidence]); every class waits"
        )?;
    }
    writeln!(
        out,
        "{:<10} {:<12} {:<15} {:>8} {:>6} {:>8} {:>9}  most confused with",
        "class", "quadrant", "action", "priority", "F1", "onset", "dwelling"
    )?;
    for class in &report.classes {
        let recommendation = report
            .recommendations
            .iter()
            .find(|r| r.class == class.label);
        let (onset, fraction) = class.dwell_under(advice.detector);
        let confused = recommendation
            .and_then(|r| r.evidence.most_confused_with.as_ref())
            .map_or(String::new(), |c| {
                format!("{} ({:.0}%)", c.label, c.share * 100.0)
            });
        writeln!(
            out,
            "{:<10} {:<12} {:<15} {:>8} {:>6} {:>8} {:>9}  {}",
            truncate(&class.label, 10),
            serde_name(&class.quadrant),
            serde_name(&class.action),
            recommendation
                .and_then(|r| r.priority)
                .map_or("-".into(), |p| p.to_string()),
            class.f1.map_or("-".into(), |f| format!("{f:.2}")),
            onset.map_or("none yet".into(), |s| s.to_string()),
            percent(fraction),
            confused
        )?;
    }
    if let Some(run_advice) = &report.run_advice {
        writeln!(out, "- run: {}", run_advice.message)?;
    }
    for recommendation in &report.recommendations {
        writeln!(out, "- {}", recommendation.message)?;
    }
    Ok(())
}

fn truncate(label: &str, width: usize) -> String {
    label.chars().take(width).collect()
}
