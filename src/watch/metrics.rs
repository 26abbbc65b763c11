//! Health of a running `dwell watch`: Prometheus text format on `/metrics` and a plain
//! `/healthz`, served with hyper (already built for reqwest) on the watcher's runtime.
//! The exposition format is `prometheus-client`'s, not ours.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

/// The watcher's counters and gauges; every thread updates them through `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    embedded: Counter,
    skipped: Counter,
    gaps: Counter,
    secured: Counter,
    advice_changes: Counter,
    embed_seconds: Histogram,
    backlog: Gauge,
    outbox_depth: Family<SinkLabel, Gauge>,
    since_last_checkpoint: Gauge<f64, AtomicU64>,
    last_checkpoint_seen: Mutex<Option<Instant>>,
    /// Each sink's outbox length, read at every scrape.
    outboxes: Mutex<Vec<(String, Arc<AtomicUsize>)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dwell");
        let embedded = Counter::default();
        let skipped = Counter::default();
        let gaps = Counter::default();
        let secured = Counter::default();
        let advice_changes = Counter::default();
        // 0.05 s … 410 s: a tiny model on a GPU to a large one on a busy CPU.
        let embed_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let backlog = Gauge::default();
        let outbox_depth = Family::<SinkLabel, Gauge>::default();
        let since_last_checkpoint = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "checkpoints_embedded",
            "Checkpoints embedded and stored by this process",
            embedded.clone(),
        );
        registry.register(
            "checkpoints_skipped",
            "Checkpoints that could not be read (see report.json skipped)",
            skipped.clone(),
        );
        registry.register(
            "checkpoint_gaps",
            "Checkpoints removed by the run before they could be secured or read",
            gaps.clone(),
        );
        registry.register(
            "checkpoints_secured",
            "Checkpoints hard-linked or copied into the state directory at first sight",
            secured.clone(),
        );
        registry.register(
            "advice_changes",
            "Material advice changes announced (new, changed or resolved class actions)",
            advice_changes.clone(),
        );
        registry.register_with_unit(
            "embed",
            "Time to embed the probe set with one checkpoint",
            Unit::Seconds,
            embed_seconds.clone(),
        );
        registry.register(
            "backlog",
            "Complete checkpoints waiting to be embedded",
            backlog.clone(),
        );
        registry.register(
            "outbox_depth",
            "Notifications queued on disk and not yet delivered, per sink",
            outbox_depth.clone(),
        );
        registry.register_with_unit(
            "since_last_checkpoint",
            "Time since a new checkpoint folder was last seen in the run directory",
            Unit::Seconds,
            since_last_checkpoint.clone(),
        );
        Self {
            registry,
            embedded,
            skipped,
            gaps,
            secured,
            advice_changes,
            embed_seconds,
            backlog,
            outbox_depth,
            since_last_checkpoint,
            last_checkpoint_seen: Mutex::new(None),
            outboxes: Mutex::new(Vec::new()),
        }
    }

    pub fn embedded(&self, seconds: f64) {
        self.embedded.inc();
        self.embed_seconds.observe(seconds);
    }

    pub fn skipped(&self) {
        self.skipped.inc();
    }

    pub fn gap(&self) {
        self.gaps.inc();
    }

    pub fn secured(&self) {
        self.secured.inc();
    }

    pub fn advice_changes(&self, changes: usize) {
        self.advice_changes.inc_by(changes as u64);
    }

    pub fn backlog(&self, checkpoints: usize) {
        self.backlog.set(checkpoints as i64);
    }

    /// Reports `sink`'s outbox length, as the sink keeps it, at every scrape.
    pub fn watch_outbox(&self, sink: &str, depth: Arc<AtomicUsize>) {
        self.outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((sink.to_string(), depth));
    }

    pub fn checkpoint_seen(&self) {
        *self
            .last_checkpoint_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// The text exposition format, with the age of the last checkpoint as of now
    /// (NaN before any was seen).
    pub fn encode(&self) -> String {
        let seen = *self
            .last_checkpoint_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.since_last_checkpoint
            .set(seen.map_or(f64::NAN, |at| at.elapsed().as_secs_f64()));
        for (sink, depth) in self
            .outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            self.outbox_depth
                .get_or_create(&SinkLabel { sink: sink.clone() })
                .set(depth.load(Ordering::Relaxed) as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Serves `/metrics` and `/healthz` on `address` until the runtime stops. Binding is
/// done before this returns, so a taken port is the caller's error, not a log line.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr, std::io::Error> {
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
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(answer(&request, &metrics)) }
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

fn answer(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
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
}
