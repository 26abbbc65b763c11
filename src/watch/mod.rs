//! `dwell watch`: the daemon beside a training job. File-system events (and a periodic
//! rescan, since events can be lost) wake a processing thread that owns the pipeline;
//! the pipeline's embedding thread runs the model; the senders deliver on their own
//! tasks. None of them waits on another's work.

mod announce;
mod intake;
mod metrics;
mod runs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;

use crate::checkpoint::{CheckpointError, Mirror, RemoteRun};
use crate::embed::{EmbedError, Embedder};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineError, Progress};
use crate::report::{write_html, write_json, HtmlError, Report};
use crate::sinks::{SinkConfig, SinkError, SinkHandle};
use crate::store::{SecuredCheckpoints, StateDir, StateLock, StoreError};

pub use announce::{notification_for, AnnouncePolicy, Announced};
pub use intake::{Intake, IntakeError, Scan};
pub use metrics::{Metrics, SweepMetrics};
pub use runs::{runs_state_dir, watch_runs, RunsConfig};

/// How often the intake looks again while a checkpoint is being written: soon enough to
/// secure it before a fast rotation removes it, whatever `--poll` says.
const WRITING_RESCAN: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct WatchConfig {
    pub pipeline: PipelineConfig,
    /// Rescan interval: the safety net for lost events, and the only trigger on file
    /// systems where inotify sees nothing (network mounts).
    pub poll: Duration,
    pub exit_on_finish: bool,
    pub sinks: Vec<SinkConfig>,
    /// How long the senders may keep delivering after a stop; the rest stays queued on disk.
    pub flush_deadline: Duration,
    /// When advice changes are announced.
    pub announce: AnnouncePolicy,
    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A run on object storage, mirrored into `pipeline.run_dir` (inside the state
    /// directory) by polling every `poll`.
    pub remote: Option<RemoteSource>,
}

#[derive(Debug)]
pub struct RemoteSource {
    pub run: RemoteRun,
    /// How long a checkpoint's listing must hold before it is fetched.
    pub settle: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Html(#[from] Box<HtmlError>),
    #[error("{path}: cannot watch: {message}")]
    Watch { path: PathBuf, message: String },
    #[error("--metrics-addr {address}: {error}")]
    Metrics {
        address: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("the processing thread stopped unexpectedly")]
    ProcessingGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchExit {
    /// The run reached `max_steps` and `--exit-on-finish` was given.
    Finished,
    /// Stopped by a signal.
    Stopped,
}

/// Runs until the run finishes (with `exit_on_finish`) or `shutdown` completes.
pub async fn watch(
    config: WatchConfig,
    make_embedder: EmbedderFactory,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<WatchExit, WatchError> {
    let state_dir = config.pipeline.state_dir();
    let _lock = StateLock::acquire(&state_dir)?;
    let metrics = Metrics::new();
    if let Some(address) = config.metrics_addr {
        let exposed = metrics.clone();
        serve_metrics(address, move || exposed.encode()).await?;
    }
    let mut sinks = Vec::new();
    for sink in config.sinks {
        tracing::info!(sink = %sink.name, url = %sink.url, "sending notifications");
        let handle = SinkHandle::spawn(sink, &state_dir)?;
        metrics.watch_outbox(handle.name(), handle.outbox_counter());
        sinks.push(handle);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let intake_state = StateDir::open_for_intake(&state_dir)?;
    let intake = {
        let secured = SecuredCheckpoints::open(&intake_state, config.pipeline.secure_copy_limit)?;
        secured.remove_partial()?;
        Intake::new(
            config.pipeline.run_dir.clone(),
            intake_state.clone(),
            secured,
            metrics.clone(),
        )
    };
    let (events, listened) = channel::<()>();
    let (wake, woken) = channel::<()>();
    if let Some(remote) = config.remote {
        let mirror = Mirror::new(remote.run, config.pipeline.run_dir.clone(), remote.settle);
        tokio::spawn(mirror_remote(
            mirror,
            intake_state,
            config.poll,
            remote.settle,
            events.clone(),
            stop.clone(),
        ));
    }
    // Kept alive for the whole watch: dropping it stops the events.
    let _watcher = watch_run_dir(&config.pipeline.run_dir, &state_dir, events.clone());
    let intake_thread = {
        let (stop, wake, poll) = (stop.clone(), wake.clone(), config.poll);
        std::thread::Builder::new()
            .name("dwell-intake".into())
            .spawn(move || run_intake(intake, &listened, &wake, poll, &stop))
            .map_err(|_| WatchError::ProcessingGone)?
    };
    let (done, finished) = tokio::sync::oneshot::channel();
    let processing = Processing {
        pipeline_config: config.pipeline,
        poll: config.poll,
        exit_on_finish: config.exit_on_finish,
        announce: config.announce,
        stop: stop.clone(),
        woken,
        sinks,
        make_embedder,
        metrics,
    };
    std::thread::Builder::new()
        .name("dwell-process".into())
        .spawn(move || {
            let result = processing.run();
            let _ = done.send(result);
        })
        .map_err(|_| WatchError::ProcessingGone)?;
    tokio::pin!(shutdown);
    tokio::pin!(finished);
    let outcome = tokio::select! {
        result = &mut finished => result,
        () = &mut shutdown => {
            tracing::info!("stopping: finishing the checkpoint in hand and flushing the report");
            stop.store(true, Ordering::Relaxed);
            let _ = wake.send(());
            finished.await
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = events.send(());
    let _ = tokio::task::spawn_blocking(move || intake_thread.join()).await;
    let (exit, sinks) = outcome.map_err(|_| WatchError::ProcessingGone)??;
    for sink in sinks {
        let name = sink.name().to_string();
        let summary = sink.shutdown(config.flush_deadline).await?;
        if summary.undelivered > 0 {
            tracing::warn!(sink = %name, undelivered = summary.undelivered, "messages left queued in the state directory; they are sent at the next start");
        }
    }
    Ok(exit)
}

/// Serves `/metrics` and `/healthz` on `address` for the rest of the watch.
async fn serve_metrics(
    address: std::net::SocketAddr,
    encode: impl Fn() -> String + Send + Sync + 'static,
) -> Result<(), WatchError> {
    let bound = metrics::serve(address, encode)
        .await
        .map_err(|error| WatchError::Metrics { address, error })?;
    tracing::info!(address = %bound, "serving /metrics and /healthz");
    Ok(())
}

/// Polls a remote run into its mirror; each fetch wakes the intake as a file event would.
async fn mirror_remote(
    mut mirror: Mirror,
    state: StateDir,
    poll: Duration,
    settle: Duration,
    events: Sender<()>,
    stop: Arc<AtomicBool>,
) {
    let mut last_error = None;
    while !stop.load(Ordering::Relaxed) {
        let synced = match state.stored_steps() {
            Ok(stored) => mirror.sync(&stored).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let wait = match synced {
            Ok(scan) => {
                last_error = None;
                if !scan.fetched.is_empty() {
                    let _ = events.send(());
                }
                if scan.being_written > 0 {
                    poll.min(settle / 2)
                } else {
                    poll
                }
            }
            Err(error) => {
                if last_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "could not list or fetch the remote run; trying again");
                    last_error = Some(error);
                }
                poll
            }
        };
        tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
    }
}

/// The intake's loop: a scan on every event burst and every `poll`, closely while a
/// checkpoint is being written; each scan wakes the processing thread.
fn run_intake(
    mut intake: Intake,
    events: &Receiver<()>,
    wake: &Sender<()>,
    poll: Duration,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let scan = intake.scan().unwrap_or_else(|error| {
            tracing::warn!(%error, "could not scan the run directory; trying again");
            Scan::default()
        });
        let _ = wake.send(());
        let wait = if scan.being_written > 0 {
            WRITING_RESCAN.min(poll)
        } else {
            poll
        };
        match events.recv_timeout(wait.max(Duration::from_millis(20))) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
        while events.try_recv().is_ok() {}
    }
}

/// Wakes the processing thread on changes under `checkpoint-*`; our own writes in the
/// state directory are ignored so that writing a report does not trigger a rescan.
fn watch_run_dir(
    run_dir: &Path,
    state_dir: &Path,
    wake: Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let state_dir = state_dir.to_path_buf();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            // Overflow and other errors: wake anyway; the rescan finds what changed.
            let _ = wake.send(());
            return;
        };
        // Opening a file is an event too: without this, our own reads (and the Trainer's)
        // would wake the scans that make them, over and over.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|path| {
            !path.starts_with(&state_dir)
                && path.components().any(|c| {
                    c.as_os_str()
                        .to_str()
                        .is_some_and(|name| name.starts_with("checkpoint-"))
                })
        });
        if relevant {
            let _ = wake.send(());
        }
    };
    let started = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(run_dir, notify::RecursiveMode::Recursive)?;
        Ok(watcher)
    });
    match started {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(run = %run_dir.display(), %error, "file-system events unavailable; relying on the periodic rescan (--poll)");
            None
        }
    }
}

/// Makes the model side for the pipeline once the run has a checkpoint to open.
pub type EmbedderFactory = Box<dyn FnMut() -> Result<Box<dyn Embedder>, EmbedError> + Send>;

type ProcessingResult = Result<(WatchExit, Vec<SinkHandle>), WatchError>;

struct Processing {
    pipeline_config: PipelineConfig,
    poll: Duration,
    exit_on_finish: bool,
    announce: AnnouncePolicy,
    stop: Arc<AtomicBool>,
    woken: Receiver<()>,
    sinks: Vec<SinkHandle>,
    make_embedder: EmbedderFactory,
    metrics: Metrics,
}

impl Processing {
    fn run(mut self) -> ProcessingResult {
        let Some(mut pipeline) = self.open_pipeline()? else {
            return Ok((WatchExit::Stopped, self.sinks));
        };
        let state = pipeline.state().clone();
        let mut announced = Announced::load(&state)?;
        let mut latest_report: Option<Report> = None;
        loop {
            // One checkpoint per pass: the report and the advice follow every checkpoint.
            let summary = pipeline.embed_pending(1, &self.stop, &mut |event| {
                record_progress(&self.metrics, &event)
            })?;
            self.metrics.backlog(summary.deferred);
            let first = latest_report.is_none();
            if let Some(report) =
                report_after_pass(&mut pipeline, &state, &summary, first, &mut announced)?
            {
                latest_report = Some(report);
            }
            let finished = pipeline.run_finished() && summary.all_done();
            let mut wait_for_message = None;
            if let (false, Some(report)) = (finished, &latest_report) {
                wait_for_message = announce_changes(
                    &self.announce,
                    &self.sinks,
                    &self.metrics,
                    report,
                    &mut announced,
                    &state,
                )?;
            }
            if finished {
                if let (false, Some(report)) = (announced.finished, &latest_report) {
                    announce_finish(&self.sinks, &self.metrics, report, &mut announced, &state)?;
                }
                if self.exit_on_finish {
                    return Ok((WatchExit::Finished, self.sinks));
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                return Ok((WatchExit::Stopped, self.sinks));
            }
            if summary.deferred > 0 {
                tracing::info!(
                    backlog = summary.deferred,
                    "checkpoints waiting to be embedded"
                );
                continue;
            }
            let mut wait = if summary.settling > 0 {
                self.poll.min(self.pipeline_config.settle / 2)
            } else {
                self.poll
            };
            if let Some(due_in) = wait_for_message {
                wait = wait.min(due_in);
            }
            self.sleep(wait.max(Duration::from_millis(20)));
        }
    }

    /// Waits for the first checkpoint with a config: a daemon may start before training does.
    fn open_pipeline(&mut self) -> Result<Option<Pipeline>, WatchError> {
        let mut told = false;
        let mut last_reason = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let embedder = (self.make_embedder)()?;
            match Pipeline::open(self.pipeline_config.clone(), embedder) {
                Ok(pipeline) => return Ok(Some(pipeline)),
                Err(PipelineError::NoCheckpoint(run)) => {
                    if !told {
                        tracing::info!(run = %run.display(), "waiting for the first checkpoint");
                        told = true;
                    }
                    self.sleep(self.poll);
                }
                Err(PipelineError::Checkpoint(error)) if still_being_written(&error) => {
                    // The Trainer writes nothing atomically: a file that does not parse
                    // (or went away) now is looked at again, as it is after start-up.
                    let reason = error.to_string();
                    if last_reason.as_ref() != Some(&reason) {
                        tracing::info!(%reason, "waiting for the first checkpoint to be written");
                        last_reason = Some(reason);
                    }
                    self.sleep(self.poll.min(WRITING_RESCAN * 5));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Sleeps until woken by an event or a stop, or the timeout; coalesces bursts of events.
    fn sleep(&self, timeout: Duration) {
        match self.woken.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
        }
        while self.woken.try_recv().is_ok() {}
    }
}

/// Sends the changes that have held long enough, unless the last message is too
/// recent; then says how long until one may go.
fn announce_changes(
    policy: &AnnouncePolicy,
    sinks: &[SinkHandle],
    metrics: &Metrics,
    report: &Report,
    announced: &mut Announced,
    state: &StateDir,
) -> Result<Option<Duration>, WatchError> {
    let hold = policy.hold_checkpoints;
    let due = crate::advise::material_changes(&announced.streaks, &announced.recommendations, hold);
    if due.is_empty() {
        return Ok(None);
    }
    let now = std::time::SystemTime::now();
    let wait = announced.wait_before_message(policy, now);
    if !wait.is_zero() {
        tracing::debug!(
            pending = due.len(),
            seconds = wait.as_secs_f64(),
            "advice changes held back by the minimum interval"
        );
        return Ok(Some(wait));
    }
    let changes = announced.take_changes(report, hold, now);
    tracing::info!(run = %report.run.directory.display(), changes = changes.len(), "advice changed");
    let kind = crate::sinks::NotificationKind::AdviceChanged;
    send_changes(sinks, metrics, report, kind, changes, announced, state)?;
    Ok(None)
}

/// `changes` sent to every sink as a `kind` message, then `announced` saved: recorded
/// after the senders queued it on disk, so that a crash in between repeats a message
/// rather than losing one.
fn send_changes(
    sinks: &[SinkHandle],
    metrics: &Metrics,
    report: &Report,
    kind: crate::sinks::NotificationKind,
    changes: Vec<crate::sinks::ChangeLine>,
    announced: &mut Announced,
    state: &StateDir,
) -> Result<(), WatchError> {
    metrics.advice_changes(changes.len());
    send_all(sinks, notification_for(report, kind, changes, state));
    announced.save(state)?;
    Ok(())
}

/// After a pass: the report rebuilt and written (`report.json`, `report.html`) when
/// there is none yet (`first`) or the pass embedded or skipped a checkpoint, and the
/// advice streaks extended by an embedded one (saved when they moved); `None` when
/// the pass changed nothing.
fn report_after_pass(
    pipeline: &mut Pipeline,
    state: &StateDir,
    summary: &crate::pipeline::PassSummary,
    first: bool,
    announced: &mut Announced,
) -> Result<Option<Report>, WatchError> {
    if !first && summary.embedded.is_empty() && summary.skipped == 0 {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let report = pipeline.build_report()?;
    write_json(state, &report)?;
    let figures = pipeline.figures(&report)?;
    write_html(state, &figures).map_err(Box::new)?;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        checkpoints = report.checkpoints.len(),
        "report written"
    );
    if !summary.embedded.is_empty() && announced.checkpoint(&report) {
        announced.save(state)?;
    }
    Ok(Some(report))
}

/// The run's end: every change still pending goes with the summary.
fn announce_finish(
    sinks: &[SinkHandle],
    metrics: &Metrics,
    report: &Report,
    announced: &mut Announced,
    state: &StateDir,
) -> Result<(), WatchError> {
    let changes = announced.take_changes(report, 0, std::time::SystemTime::now());
    announced.finished = true;
    let kind = crate::sinks::NotificationKind::RunFinished;
    send_changes(sinks, metrics, report, kind, changes, announced, state)?;
    tracing::info!(run = %report.run.directory.display(), step = report.run.latest_step, "the run has finished");
    Ok(())
}

fn send_all(sinks: &[SinkHandle], notification: crate::sinks::Notification) {
    for sink in sinks {
        if let Err(error) = sink.send(notification.clone()) {
            tracing::error!(sink = sink.name(), %error, "could not queue a notification");
        }
    }
}

/// An error a checkpoint being written can cause, as opposed to one the user must fix
/// (an unsupported model, labels that disagree, a missing base model).
fn still_being_written(error: &CheckpointError) -> bool {
    matches!(
        error,
        CheckpointError::Json { .. }
            | CheckpointError::Io { .. }
            | CheckpointError::Vanished { .. }
            | CheckpointError::NoWeights { .. }
    )
}

/// Logs a pass's progress and counts it in `metrics`.
fn record_progress(metrics: &Metrics, event: &Progress) {
    match *event {
        Progress::Embedded { elapsed, .. } => metrics.embedded(elapsed.as_secs_f64()),
        Progress::Skipped(_) => metrics.skipped(),
        _ => {}
    }
    match *event {
        Progress::Planned { checkpoints } if checkpoints > 0 => {
            tracing::info!(checkpoints, "embedding")
        }
        Progress::Planned { .. } => {}
        Progress::Embedded { step, elapsed } => {
            tracing::info!(step, seconds = elapsed.as_secs_f64(), "embedded")
        }
        Progress::Incomplete { step, reason } => {
            tracing::debug!(step, %reason, "not complete yet")
        }
        Progress::Skipped(skipped) => {
            tracing::warn!(step = skipped.step, file = %skipped.file.display(), reason = %skipped.reason, "skipped")
        }
    }
}
