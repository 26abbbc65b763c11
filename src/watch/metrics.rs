//! Health of a running `dwell watch`: Prometheus text format on `/metrics` and a plain
//! `/healthz`, served with hyper (already built for reqwest) on the watcher's runtime.
//! The exposition format is `prometheus-client`'s, not ours.
//!
//! Every series is a family keyed by the run it counts: a single-run watch has one
//! unlabelled member of each (so its names and lines are those of a plain counter),
//! `watch --runs` one member per run, labelled `run="<name under ROOT>"`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The run a series belongs to; none in a single-run watch, where it adds no label.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RunLabel(Option<String>);

impl EncodeLabelSet for RunLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Some(run) => [("run", run.as_str())].encode(encoder),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SinkLabels {
    run: RunLabel,
    sink: String,
}

impl EncodeLabelSet for SinkLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.run.encode(encoder)?;
        [("sink", self.sink.as_str())].encode(encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// A thread that panicked while holding one of these left plain numbers behind, still
/// worth reporting.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn embed_histogram() -> Histogram {
    // 0.05 s … 410 s: a tiny model on a GPU to a large one on a busy CPU.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// Every series of the process, shared by all its [`Metrics`] handles.
#[derive(Debug)]
struct Series {
    registry: Registry,
    embedded: Family<RunLabel, Counter>,
    skipped: Family<RunLabel, Counter>,
    gaps: Family<RunLabel, Counter>,
    secured: Family<RunLabel, Counter>,
    advice_changes: Family<RunLabel, Counter>,
    embed_seconds: Family<RunLabel, Histogram, fn() -> Histogram>,
    backlog: Family<RunLabel, Gauge>,
    outbox_depth: Family<SinkLabels, Gauge>,
    since_last_checkpoint: Family<RunLabel, Gauge<f64, AtomicU64>>,
    /// Runs of a `watch --runs` by status; not registered for a single run.
    runs: Family<StatusLabel, Gauge>,
    /// When each run last showed a new checkpoint folder (none yet: NaN).
    last_checkpoint_seen: Mutex<HashMap<RunLabel, Option<Instant>>>,
    /// Each sink's outbox length, read at every scrape.
    outboxes: Mutex<Vec<(SinkLabels, Arc<AtomicUsize>)>>,
}

impl Series {
    fn new(with_runs: bool) -> Self {
        let mut series = Self {
            registry: Registry::with_prefix("dwell"),
            embedded: Family::default(),
            skipped: Family::default(),
            gaps: Family::default(),
            secured: Family::default(),
            advice_changes: Family::default(),
            embed_seconds: Family::new_with_constructor(embed_histogram),
            backlog: Family::default(),
            outbox_depth: Family::default(),
            since_last_checkpoint: Family::default(),
            runs: Family::default(),
            last_checkpoint_seen: Mutex::new(HashMap::new()),
            outboxes: Mutex::new(Vec::new()),
        };
        series.registry.register(
            "checkpoints_embedded",
            "Checkpoints embedded and stored by this process",
            series.embedded.clone(),
        );
        series.registry.register(
            "checkpoints_skipped",
            "Checkpoints that could not be read (see report.json skipped)",
            series.skipped.clone(),
        );
        series.registry.register(
            "checkpoint_gaps",
            "Checkpoints removed by the run before they could be secured or read",
            series.gaps.clone(),
        );
        series.registry.register(
            "checkpoints_secured",
            "Checkpoints hard-linked or copied into the state directory at first sight",
            series.secured.clone(),
        );
        series.registry.register(
            "advice_changes",
            "Material advice changes announced (new, changed or resolved class actions)",
            series.advice_changes.clone(),
        );
        series.registry.register_with_unit(
            "embed",
            "Time to embed the probe set with one checkpoint",
            Unit::Seconds,
            series.embed_seconds.clone(),
        );
        series.registry.register(
            "backlog",
            "Complete checkpoints waiting to be embedded",
            series.backlog.clone(),
        );
        series.registry.register(
            "outbox_depth",
            "Notifications queued on disk and not yet delivered, per sink",
            series.outbox_depth.clone(),
        );
        series.registry.register_with_unit(
            "since_last_checkpoint",
            "Time since a new checkpoint folder was last seen in the run directory",
            Unit::Seconds,
            series.since_last_checkpoint.clone(),
        );
        if with_runs {
            series.registry.register(
                "runs",
                "Runs found under ROOT, by status (waiting, watching, finished, failed, unsupported)",
                series.runs.clone(),
            );
        }
        series
    }

    /// Makes `run`'s series, so that a scrape shows them (at zero) from the start.
    fn add_run(&self, run: &RunLabel) {
        for family in [
            &self.embedded,
            &self.skipped,
            &self.gaps,
            &self.secured,
            &self.advice_changes,
        ] {
            family.get_or_create_owned(run);
        }
        self.embed_seconds.get_or_create_owned(run);
        self.backlog.get_or_create_owned(run);
        lock(&self.last_checkpoint_seen)
            .entry(run.clone())
            .or_insert(None);
    }

    /// The text exposition format, with the age of each run's last checkpoint as of
    /// now (NaN before any was seen).
    fn encode(&self) -> String {
        for (run, seen) in lock(&self.last_checkpoint_seen).iter() {
            self.since_last_checkpoint
                .get_or_create(run)
                .set(seen.map_or(f64::NAN, |at| at.elapsed().as_secs_f64()));
        }
        for (labels, depth) in lock(&self.outboxes).iter() {
            self.outbox_depth
                .get_or_create(labels)
                .set(depth.load(Ordering::Relaxed) as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// One run's counters and gauges; every thread updates them through `&self`, and
/// clones share them.
#[derive(Debug, Clone)]
pub struct Metrics {
    series: Arc<Series>,
    run: RunLabel,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics of a single-run watch: no `run` label.
    pub fn new() -> Self {
        let metrics = Self {
            series: Arc::new(Series::new(false)),
            run: RunLabel(None),
        };
        metrics.series.add_run(&metrics.run);
        metrics
    }

    pub fn embedded(&self, seconds: f64) {
        self.series.embedded.get_or_create(&self.run).inc();
        self.series
            .embed_seconds
            .get_or_create(&self.run)
            .observe(seconds);
    }

    pub fn skipped(&self) {
        self.series.skipped.get_or_create(&self.run).inc();
    }

    pub fn gap(&self) {
        self.series.gaps.get_or_create(&self.run).inc();
    }

    pub fn secured(&self) {
        self.series.secured.get_or_create(&self.run).inc();
    }

    pub fn advice_changes(&self, changes: usize) {
        self.series
            .advice_changes
            .get_or_create(&self.run)
            .inc_by(changes as u64);
    }

    pub fn backlog(&self, checkpoints: usize) {
        self.series
            .backlog
            .get_or_create(&self.run)
            .set(checkpoints as i64);
    }

    /// Reports `sink`'s outbox length, as the sink keeps it, at every scrape.
    pub fn watch_outbox(&self, sink: &str, depth: Arc<AtomicUsize>) {
        let labels = SinkLabels {
            run: self.run.clone(),
            sink: sink.to_string(),
        };
        lock(&self.series.outboxes).push((labels, depth));
    }

    pub fn checkpoint_seen(&self) {
        lock(&self.series.last_checkpoint_seen).insert(self.run.clone(), Some(Instant::now()));
    }

    /// The whole process's exposition, every run's series included.
    pub fn encode(&self) -> String {
        self.series.encode()
    }
}

/// The metrics of a `watch --runs`: the process-wide series, and a [`Metrics`] handle
/// per run whose series carry its `run` label.
#[derive(Debug, Clone)]
pub struct SweepMetrics {
    series: Arc<Series>,
}

impl Default for SweepMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SweepMetrics {
    pub fn new() -> Self {
        Self {
            series: Arc::new(Series::new(true)),
        }
    }

    /// The handle for the run named `name` (its path under ROOT).
    pub fn run(&self, name: &str) -> Metrics {
        let run = RunLabel(Some(name.to_string()));
        self.series.add_run(&run);
        Metrics {
            series: self.series.clone(),
            run,
        }
    }

    /// How many runs have each status; a status no run has is set to 0, not left stale.
    pub fn runs(&self, by_status: &[(&str, usize)]) {
        for &(status, count) in by_status {
            self.series
                .runs
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .set(count as i64);
        }
    }

    pub fn encode(&self) -> String {
        self.series.encode()
    }
}

/// Serves `/metrics` and `/healthz` on `address` until the runtime stops. Binding is
/// done before this returns, so a taken port is the caller's error, not a log line.
pub async fn serve(
    address: SocketAddr,
    encode: impl Fn() -> String + Send + Sync + 'static,
) -> Result<SocketAddr, std::io::Error> {
    let encode = Arc::new(encode);
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics: could not accept a connection");
                    continue;
                }
            };
            let encode = encode.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let encode = encode.clone();
                    async move { Ok::<_, Infallible>(answer(&request, &*encode)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(%error, "metrics: connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}

fn answer(request: &Request<Incoming>, encode: &dyn Fn() -> String) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics or /healthz\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response of a status, one header and a body is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_the_histogram_are_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.embedded(0.3);
        metrics.embedded(1.2);
        metrics.gap();
        metrics.watch_outbox("slack", Arc::new(AtomicUsize::new(2)));
        let text = metrics.encode();
        for line in [
            "dwell_checkpoints_embedded_total 2",
            "dwell_checkpoint_gaps_total 1",
            "dwell_embed_seconds_count 2",
            "dwell_embed_seconds_sum 1.5",
            "dwell_embed_seconds_bucket{le=\"0.4\"} 1",
            "dwell_outbox_depth{sink=\"slack\"} 2",
            "dwell_since_last_checkpoint_seconds NaN",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("run="), "{text}");
        assert!(!text.contains("dwell_runs"), "{text}");
        metrics.checkpoint_seen();
        let age: f64 = metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("dwell_since_last_checkpoint_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..5.0).contains(&age), "{age}");
    }

    #[test]
    fn a_sweep_labels_each_run_and_counts_the_runs_without_one() {
        let sweep = SweepMetrics::new();
        let a = sweep.run("sweep/lr-3");
        let b = sweep.run("lr-4");
        a.embedded(0.3);
        a.embedded(1.2);
        b.gap();
        b.checkpoint_seen();
        a.watch_outbox("slack", Arc::new(AtomicUsize::new(1)));
        sweep.runs(&[("watching", 2), ("finished", 0)]);
        let text = sweep.encode();
        for line in [
            "dwell_checkpoints_embedded_total{run=\"sweep/lr-3\"} 2",
            "dwell_checkpoints_embedded_total{run=\"lr-4\"} 0",
            "dwell_checkpoint_gaps_total{run=\"lr-4\"} 1",
            "dwell_embed_seconds_count{run=\"sweep/lr-3\"} 2",
            "dwell_embed_seconds_bucket{le=\"0.4\",run=\"sweep/lr-3\"} 1",
            "dwell_outbox_depth{run=\"sweep/lr-3\",sink=\"slack\"} 1",
            "dwell_since_last_checkpoint_seconds{run=\"sweep/lr-3\"} NaN",
            "dwell_runs{status=\"watching\"} 2",
            "dwell_runs{status=\"finished\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // Every per-run series names its run: nothing is counted without one.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("dwell_checkpoint") && !l.contains("run=")),
            "{text}"
        );
    }
}
