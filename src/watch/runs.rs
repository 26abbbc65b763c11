//! `dwell watch --runs ROOT`: every run folder under ROOT (a folder holding
//! `checkpoint-*`), present or appearing later, in one process with one embedding thread.
//! Each run has its own state directory (`ROOT-state/<run>/`), pipeline, intake,
//! advice, report and senders (so a message never mixes runs); one thread goes round
//! the runs, one checkpoint of one run at a time, and keeps `ROOT-state/index.html`
//! (and `index.json`) comparing them. A run whose folder stops changing is finished
//! after `idle`, as one that reaches `max_steps` is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkpoint::discover;
use crate::embed::EmbedWorker;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineError};
use crate::report::{escape_html, Report};
use crate::sinks::{SinkConfig, SinkHandle};
use crate::store::{write_atomically, SecuredCheckpoints, StateLock};

use super::{
    announce_changes, announce_finish, record_progress, report_after_pass, serve_metrics,
    still_being_written, AnnouncePolicy, Announced, EmbedderFactory, Intake, Metrics, SweepMetrics,
    WatchError, WatchExit,
};

/// How deep under ROOT run folders are looked for (ROOT/sweep/lr-1e-4/ is depth 2).
const MAX_DEPTH: usize = 3;

#[derive(Debug)]
pub struct RunsConfig {
    pub root: PathBuf,
    /// Every run's settings; each run's `run_dir` and `state_dir` replace these.
    pub pipeline: PipelineConfig,
    pub poll: Duration,
    /// A run whose folder has not changed for this long, with nothing left to embed,
    /// is finished.
    pub idle: Duration,
    /// Exit once every run found is finished.
    pub exit_on_finish: bool,
    pub sinks: Vec<SinkConfig>,
    pub flush_deadline: Duration,
    pub announce: AnnouncePolicy,
    /// Where `/metrics` and `/healthz` are served, if anywhere: each run's series
    /// labelled `run`, the count of runs by status without.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// `ROOT-state`, beside ROOT: never inside a run folder.
pub fn runs_state_dir(root: &Path) -> PathBuf {
    let name = root
        .file_name()
        .map_or_else(|| "runs".into(), |n| n.to_string_lossy().into_owned());
    root.with_file_name(format!("{name}-state"))
}

/// Run folders under `root`, by their path relative to it ("sweep/lr-3").
fn list_runs(root: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, root: &Path, depth: usize, runs: &mut BTreeMap<String, PathBuf>) {
        let holds_checkpoints = discover(dir).is_ok_and(|d| !d.checkpoints.is_empty());
        if holds_checkpoints && dir != root {
            let name = dir
                .strip_prefix(root)
                .unwrap_or(dir)
                .to_string_lossy()
                .into_owned();
            runs.insert(name, dir.to_path_buf());
            return;
        }
        if depth == MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let hidden = name.to_string_lossy().starts_with('.');
            if !hidden && entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), root, depth + 1, runs);
            }
        }
    }
    let mut runs = BTreeMap::new();
    walk(root, root, 0, &mut runs);
    runs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum RunStatus {
    /// No complete checkpoint with a config yet.
    Waiting,
    Watching,
    Finished,
    /// The run cannot be read (labels that disagree, a base model not found): the
    /// reason is logged and on the index page.
    Failed,
    /// A model dwell or the chosen backend does not run: the file and the reason are
    /// logged and on the index page; nothing of the run is embedded.
    Unsupported,
}

impl RunStatus {
    const ALL: [RunStatus; 5] = [
        RunStatus::Waiting,
        RunStatus::Watching,
        RunStatus::Finished,
        RunStatus::Failed,
        RunStatus::Unsupported,
    ];

    /// As in `index.json` and the `dwell_runs{status}` metric.
    fn name(self) -> &'static str {
        match self {
            RunStatus::Waiting => "waiting",
            RunStatus::Watching => "watching",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
            RunStatus::Unsupported => "unsupported",
        }
    }

    /// Nothing more is done for the run.
    fn is_done(self) -> bool {
        matches!(
            self,
            RunStatus::Finished | RunStatus::Failed | RunStatus::Unsupported
        )
    }
}

struct RunWatch {
    name: String,
    dir: PathBuf,
    state_dir: PathBuf,
    status: RunStatus,
    failure: Option<String>,
    pipeline: Option<Pipeline>,
    intake: Option<Intake>,
    announced: Announced,
    sinks: Vec<SinkHandle>,
    metrics: Metrics,
    latest_report: Option<Report>,
    /// The run folder's checkpoint steps when last looked at, and since when unchanged.
    steps: BTreeSet<u64>,
    changed_at: Instant,
}

impl RunWatch {
    fn new(name: String, dir: PathBuf, state_root: &Path, metrics: &SweepMetrics) -> Self {
        let state_dir = state_root.join(&name);
        Self {
            metrics: metrics.run(&name),
            name,
            dir,
            state_dir,
            status: RunStatus::Waiting,
            failure: None,
            pipeline: None,
            intake: None,
            announced: Announced::default(),
            sinks: Vec::new(),
            latest_report: None,
            steps: BTreeSet::new(),
            changed_at: Instant::now(),
        }
    }

    /// Opens the run's pipeline once it has a checkpoint to open; false while waiting.
    fn open(&mut self, config: &RunsConfig, worker: &Rc<EmbedWorker>) -> Result<bool, WatchError> {
        let pipeline_config = PipelineConfig {
            run_dir: self.dir.clone(),
            state_dir: Some(self.state_dir.clone()),
            ..config.pipeline.clone()
        };
        let pipeline = match Pipeline::open_on(pipeline_config, worker.clone()) {
            Ok(pipeline) => pipeline,
            Err(PipelineError::NoCheckpoint(_)) => return Ok(false),
            Err(PipelineError::Checkpoint(error)) if still_being_written(&error) => {
                return Ok(false)
            }
            Err(PipelineError::Unsupported { config, reason }) => {
                tracing::warn!(run = %self.name, file = %config.display(), %reason, "this run's model is not supported: it is not embedded; the other runs go on");
                self.failure = Some(format!("{}: {reason}", config.display()));
                self.status = RunStatus::Unsupported;
                return Ok(false);
            }
            Err(error) => {
                tracing::error!(run = %self.name, %error, "this run cannot be watched");
                self.failure = Some(error.to_string());
                self.status = RunStatus::Failed;
                return Ok(false);
            }
        };
        let state = pipeline.state().clone();
        let secured = SecuredCheckpoints::open(&state, config.pipeline.secure_copy_limit)?;
        secured.remove_partial()?;
        self.intake = Some(Intake::new(
            self.dir.clone(),
            state.clone(),
            secured,
            self.metrics.clone(),
        ));
        self.announced = Announced::load(&state)?;
        for sink in &config.sinks {
            let handle = SinkHandle::spawn(sink.clone(), &self.state_dir)?;
            self.metrics
                .watch_outbox(handle.name(), handle.outbox_counter());
            self.sinks.push(handle);
        }
        self.pipeline = Some(pipeline);
        self.status = RunStatus::Watching;
        tracing::info!(run = %self.name, state = %self.state_dir.display(), "watching a run");
        Ok(true)
    }

    /// One checkpoint of this run at most; true if its report changed.
    fn step(
        &mut self,
        config: &RunsConfig,
        worker: &Rc<EmbedWorker>,
        stop: &AtomicBool,
    ) -> Result<Step, WatchError> {
        if self.status.is_done() || (self.pipeline.is_none() && !self.open(config, worker)?) {
            return Ok(Step::default());
        }
        if let Some(intake) = &mut self.intake {
            if let Err(error) = intake.scan() {
                tracing::warn!(run = %self.name, %error, "could not scan the run; trying again");
            }
        }
        let steps: BTreeSet<u64> = discover(&self.dir)
            .map(|d| d.checkpoints.iter().map(|c| c.step).collect())
            .unwrap_or_default();
        if steps != self.steps {
            self.steps = steps;
            self.changed_at = Instant::now();
        }
        let pipeline = self.pipeline.as_mut().expect("opened above");
        let metrics = &self.metrics;
        let summary =
            pipeline.embed_pending(1, stop, &mut |event| record_progress(metrics, &event))?;
        metrics.backlog(summary.deferred);
        let mut step = Step {
            deferred: summary.deferred > 0,
            settling: summary.settling > 0,
            ..Step::default()
        };
        let state = pipeline.state().clone();
        let first = self.latest_report.is_none();
        if let Some(report) =
            report_after_pass(pipeline, &state, &summary, first, &mut self.announced)?
        {
            if !summary.embedded.is_empty() {
                self.changed_at = Instant::now();
            }
            self.latest_report = Some(report);
            step.report_changed = true;
        }
        let idle = self.changed_at.elapsed() >= config.idle;
        let finished = summary.all_done() && (pipeline.run_finished() || idle);
        let Some(report) = &self.latest_report else {
            return Ok(step);
        };
        if finished {
            if !self.announced.finished {
                announce_finish(&self.sinks, metrics, report, &mut self.announced, &state)?;
            }
            if idle && !pipeline.run_finished() {
                tracing::info!(run = %self.name, idle_seconds = config.idle.as_secs_f64(), "no change for --idle: the run is finished");
            }
            self.status = RunStatus::Finished;
            // Nothing more to embed: the run's pipeline and intake go; the report stays.
            self.pipeline = None;
            self.intake = None;
            step.report_changed = true;
        } else {
            announce_changes(
                &config.announce,
                &self.sinks,
                metrics,
                report,
                &mut self.announced,
                &state,
            )?;
        }
        Ok(step)
    }

    fn summary(&self) -> RunSummary {
        let report = self.latest_report.as_ref();
        RunSummary {
            name: self.name.clone(),
            directory: self.dir.clone(),
            status: self.status,
            failure: self.failure.clone(),
            report: report.map(|_| format!("{}/report.html", self.name)),
            model_type: report.map(|r| r.run.model_type.clone()),
            latest_step: report.and_then(|r| r.run.latest_step),
            macro_f1: report
                .map(|r| {
                    r.checkpoints
                        .iter()
                        .filter_map(|c| Some((c.step, c.macro_f1?)))
                        .collect()
                })
                .unwrap_or_default(),
            advice: report
                .map(|r| {
                    r.recommendations
                        .iter()
                        .map(|r| r.message.clone())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default)]
struct Step {
    report_changed: bool,
    deferred: bool,
    /// A checkpoint is complete but within `--settle`: look again before a whole poll.
    settling: bool,
}

/// One run on the index page and in `index.json`.
#[derive(Debug, Serialize)]
struct RunSummary {
    name: String,
    directory: PathBuf,
    status: RunStatus,
    failure: Option<String>,
    /// The run's report page, relative to the index.
    report: Option<String>,
    model_type: Option<String>,
    latest_step: Option<u64>,
    /// (step, macro F1) of every scored checkpoint.
    macro_f1: Vec<(u64, f64)>,
    advice: Vec<String>,
}

/// Runs until every run is finished (with `exit_on_finish`) or `shutdown` completes.
pub async fn watch_runs(
    config: RunsConfig,
    mut make_embedder: EmbedderFactory,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<WatchExit, WatchError> {
    let state_root = runs_state_dir(&config.root);
    let _lock = StateLock::acquire(&state_root)?;
    let metrics = SweepMetrics::new();
    if let Some(address) = config.metrics_addr {
        let exposed = metrics.clone();
        serve_metrics(address, move || exposed.encode()).await?;
    }
    let embedder = make_embedder()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flush_deadline = config.flush_deadline;
    let looping = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let worker = Rc::new(EmbedWorker::spawn(embedder));
            run_loop(&config, &state_root, &worker, &stop, &metrics)
        })
    };
    tokio::pin!(shutdown);
    tokio::pin!(looping);
    let outcome = tokio::select! {
        result = &mut looping => result,
        () = &mut shutdown => {
            tracing::info!("stopping: finishing the checkpoint in hand");
            stop.store(true, Ordering::Relaxed);
            looping.await
        }
    };
    let (exit, sinks) = outcome.map_err(|_| WatchError::ProcessingGone)??;
    for sink in sinks {
        let name = sink.name().to_string();
        let summary = sink.shutdown(flush_deadline).await?;
        if summary.undelivered > 0 {
            tracing::warn!(sink = %name, undelivered = summary.undelivered, "messages left queued in the state directory; they are sent at the next start");
        }
    }
    Ok(exit)
}

type LoopResult = Result<(WatchExit, Vec<SinkHandle>), WatchError>;

fn run_loop(
    config: &RunsConfig,
    state_root: &Path,
    worker: &Rc<EmbedWorker>,
    stop: &AtomicBool,
    metrics: &SweepMetrics,
) -> LoopResult {
    let mut runs: BTreeMap<String, RunWatch> = BTreeMap::new();
    let mut index_written = false;
    let exit = loop {
        for (name, dir) in list_runs(&config.root) {
            runs.entry(name.clone()).or_insert_with(|| {
                tracing::info!(run = %name, "found a run");
                RunWatch::new(name, dir, state_root, metrics)
            });
        }
        let mut changed = !index_written;
        let (mut busy, mut settling) = (false, false);
        for run in runs.values_mut() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let step = run.step(config, worker, stop)?;
            changed |= step.report_changed;
            busy |= step.deferred;
            settling |= step.settling;
        }
        let by_status = RunStatus::ALL.map(|status| {
            let count = runs.values().filter(|run| run.status == status).count();
            (status.name(), count)
        });
        metrics.runs(&by_status);
        if changed {
            write_index(state_root, &runs)?;
            index_written = true;
        }
        let all_finished = !runs.is_empty() && runs.values().all(|run| run.status.is_done());
        if config.exit_on_finish && all_finished {
            break WatchExit::Finished;
        }
        if stop.load(Ordering::Relaxed) {
            break WatchExit::Stopped;
        }
        if !busy {
            // As the single-run watch does: a settling checkpoint is looked at again
            // after half the settle interval, not a whole poll later.
            let poll = if settling {
                config.poll.min(config.pipeline.settle / 2)
            } else {
                config.poll
            };
            let until = Instant::now() + poll.max(Duration::from_millis(20));
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20).min(poll));
            }
        }
    };
    let sinks = runs.into_values().flat_map(|run| run.sinks).collect();
    Ok((exit, sinks))
}

/// `index.json` and `index.html` in `ROOT-state`.
fn write_index(state_root: &Path, runs: &BTreeMap<String, RunWatch>) -> Result<(), WatchError> {
    let summaries: Vec<RunSummary> = runs.values().map(RunWatch::summary).collect();
    let json = serde_json::to_vec_pretty(&summaries).expect("run summaries serialise");
    write_atomically(&state_root.join("index.json"), &json)?;
    write_atomically(
        &state_root.join("index.html"),
        index_html(&summaries).as_bytes(),
    )?;
    Ok(())
}

/// Macro F1 over steps as an SVG polyline, on one scale for every run (F1 0..1, steps
/// 0..the largest step of any run), so that the runs compare at a glance.
fn sparkline(points: &[(u64, f64)], max_step: u64) -> String {
    let (width, height) = (240.0, 48.0);
    let coordinates: Vec<String> = points
        .iter()
        .map(|&(step, f1)| {
            let x = step as f64 / max_step.max(1) as f64 * width;
            let y = height - f1.clamp(0.0, 1.0) * height;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"macro F1 over steps\"><rect width=\"{width}\" height=\"{height}\" fill=\"#f6f6f6\"/><polyline fill=\"none\" stroke=\"#2b6cb0\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        coordinates.join(" ")
    )
}

fn index_html(runs: &[RunSummary]) -> String {
    let max_step = runs
        .iter()
        .flat_map(|run| run.macro_f1.last().map(|p| p.0))
        .max()
        .unwrap_or(1);
    let mut rows = String::new();
    for run in runs {
        let name = match &run.report {
            Some(report) => format!(
                "<a href=\"{}\">{}</a>",
                escape_html(report),
                escape_html(&run.name)
            ),
            None => escape_html(&run.name),
        };
        let status = match &run.failure {
            Some(reason) => format!("{}: {}", run.status.name(), escape_html(reason)),
            None => run.status.name().to_string(),
        };
        let latest_f1 = run
            .macro_f1
            .last()
            .map_or("-".to_string(), |(_, f1)| format!("{f1:.3}"));
        let advice: String = run
            .advice
            .iter()
            .map(|line| format!("<li>{}</li>", escape_html(line)))
            .collect();
        rows.push_str(&format!(
            "<tr><td>{name}</td><td>{status}</td><td>{}</td><td>{latest_f1}</td><td>{}</td><td><ul>{advice}</ul></td></tr>\n",
            run.latest_step.map_or("-".into(), |s| s.to_string()),
            sparkline(&run.macro_f1, max_step),
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dwell: {} runs</title>\
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:6px 10px;vertical-align:top;text-align:left}}ul{{margin:0;padding-left:1.2em}}</style></head>\
<body><h1>dwell: {} runs</h1><p>Macro F1 over steps on one scale (F1 0&ndash;1, steps 0&ndash;{max_step}); each run's advice as in its report.</p>\
<table><thead><tr><th>run</th><th>status</th><th>latest step</th><th>macro F1</th><th>macro F1 over steps</th><th>advice</th></tr></thead><tbody>\n{rows}</tbody></table></body></html>\n",
        runs.len(),
        runs.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_folders_with_checkpoints_at_any_depth_up_to_three() {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "a/checkpoint-10",
            "sweep/lr-1/checkpoint-5",
            "sweep/lr-2/checkpoint-5",
            "sweep/notes",
            ".hidden/checkpoint-1",
            "a/nested/checkpoint-3",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let runs: Vec<String> = list_runs(root.path()).into_keys().collect();
        assert_eq!(runs, vec!["a", "sweep/lr-1", "sweep/lr-2"]);
    }

    #[test]
    fn the_state_is_beside_the_root() {
        assert_eq!(
            runs_state_dir(Path::new("/data/sweep")),
            PathBuf::from("/data/sweep-state")
        );
    }

    #[test]
    fn the_sparkline_puts_every_run_on_one_scale() {
        let line = sparkline(&[(0, 0.0), (50, 0.5), (100, 1.0)], 200);
        assert!(
            line.contains("points=\"0.0,48.0 60.0,24.0 120.0,0.0\""),
            "{line}"
        );
    }

    #[test]
    fn the_index_escapes_names_and_advice() {
        let html = index_html(&[RunSummary {
            name: "<b>".into(),
            directory: PathBuf::from("/x"),
            status: RunStatus::Watching,
            failure: None,
            report: None,
            model_type: None,
            latest_step: None,
            macro_f1: vec![],
            advice: vec!["add data to `a&b`".into()],
        }]);
        assert!(
            html.contains("&lt;b&gt;") && html.contains("a&amp;b"),
            "{html}"
        );
        assert!(!html.contains("<b>"));
    }
}
