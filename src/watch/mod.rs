//! `dwell watch`: the daemon beside a training job. File-system events (and a periodic
//! rescan, since events can be lost) wake a processing thread that owns the pipeline;
//! the pipeline's embedding thread runs the model; the senders deliver on their own
//! tasks. None of them waits on another's work.

mod announce;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;

use crate::embed::{EmbedError, Embedder};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineError, Progress};
use crate::report::{write_html, write_json, HtmlError, Report};
use crate::sinks::{SinkConfig, SinkError, SinkHandle};
use crate::store::{StateLock, StoreError};

pub use announce::{notification_for, Announced};

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
    let mut sinks = Vec::new();
    for sink in config.sinks {
        tracing::info!(sink = %sink.name, url = %sink.url, "sending notifications");
        sinks.push(SinkHandle::spawn(sink, &state_dir)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (wake, woken) = channel::<()>();
    // Kept alive for the whole watch: dropping it stops the events.
    let _watcher = watch_run_dir(&config.pipeline.run_dir, &state_dir, wake.clone());
    let (done, finished) = tokio::sync::oneshot::channel();
    let processing = Processing {
        pipeline_config: config.pipeline,
        poll: config.poll,
        exit_on_finish: config.exit_on_finish,
        stop: stop.clone(),
        woken,
        sinks,
        make_embedder,
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
    stop: Arc<AtomicBool>,
    woken: Receiver<()>,
    sinks: Vec<SinkHandle>,
    make_embedder: EmbedderFactory,
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
            let summary = pipeline.embed_pending(1, &self.stop, &mut log_progress)?;
            if latest_report.is_none() || !summary.embedded.is_empty() || summary.skipped > 0 {
                let report = pipeline.build_report()?;
                write_json(&state, &report)?;
                write_html(&state, &report).map_err(Box::new)?;
                self.announce_changes(&report, &mut announced, &state)?;
                latest_report = Some(report);
            }
            let all_done = summary.settling == 0
                && summary.incomplete == 0
                && summary.deferred == 0
                && !summary.interrupted;
            if pipeline.run_finished() && all_done {
                if let (false, Some(report)) = (announced.finished, &latest_report) {
                    self.send_all(notification_for(
                        report,
                        crate::sinks::NotificationKind::RunFinished,
                        Vec::new(),
                        &state,
                    ));
                    announced.finished = true;
                    announced.save(&state)?;
                    tracing::info!(step = report.run.latest_step, "the run has finished");
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
            let wait = if summary.settling > 0 {
                self.poll.min(self.pipeline_config.settle / 2)
            } else {
                self.poll
            };
            self.sleep(wait.max(Duration::from_millis(20)));
        }
    }

    /// Waits for the first checkpoint with a config: a daemon may start before training does.
    fn open_pipeline(&mut self) -> Result<Option<Pipeline>, WatchError> {
        let mut told = false;
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

    fn announce_changes(
        &self,
        report: &Report,
        announced: &mut Announced,
        state: &crate::store::StateDir,
    ) -> Result<(), WatchError> {
        let changes = announced.changes(report);
        if changes.is_empty() {
            return Ok(());
        }
        tracing::info!(changes = changes.len(), "advice changed");
        self.send_all(notification_for(
            report,
            crate::sinks::NotificationKind::AdviceChanged,
            changes,
            state,
        ));
        // Recorded after the senders queued it on disk: a crash in between repeats a
        // message rather than losing one.
        announced.recommendations = report.recommendations.clone();
        announced.save(state)?;
        Ok(())
    }

    fn send_all(&self, notification: crate::sinks::Notification) {
        for sink in &self.sinks {
            if let Err(error) = sink.send(notification.clone()) {
                tracing::error!(sink = sink.name(), %error, "could not queue a notification");
            }
        }
    }
}

fn log_progress(event: Progress) {
    match event {
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
