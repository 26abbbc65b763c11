//! The sinks against a real HTTP/1.1 server on 127.0.0.1 that answers like Slack's
//! incoming webhooks: `ok` with 200, 429 with `Retry-After`, 500, and 404 `no_service`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dwell::sinks::{
    Change, ChangeLine, ClassLine, Notification, NotificationKind, RecommendationLine, RetryPolicy,
    SinkConfig, SinkHandle, SinkKind, WebhookUrl,
};
mod common;

use common::slack_like::{Received, Reply, SlackLike};
use serde_json::json;
use tokio::time::Instant;

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, at every level and from every thread.
fn captured_logs() -> String {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    let buffer = LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    });
    String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned()
}

fn fast_policy(min_interval_ms: u64) -> RetryPolicy {
    RetryPolicy {
        min_interval: Duration::from_millis(min_interval_ms),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        max_attempts: 50,
        ..RetryPolicy::default()
    }
}

fn secret_url(address: SocketAddr, token: &str) -> (String, WebhookUrl) {
    let text = format!("http://{address}/services/T0DWELL/B0SINKS/{token}");
    let url = WebhookUrl::parse(&text, "the test").unwrap();
    (text, url)
}

fn assert_secret_kept(text: &str, token: &str) {
    let logs = captured_logs();
    assert!(!logs.contains(text), "the URL is in the logs:\n{logs}");
    assert!(
        !logs.contains(token),
        "the URL's token is in the logs:\n{logs}"
    );
}

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn notification(step: u64) -> Notification {
    Notification {
        kind: NotificationKind::AdviceChanged,
        run: "bert-agnews-r3".into(),
        step,
        max_steps: Some(3000),
        run_advice: Some(
            "too early to judge what each class needs: 2 of 2 classes have not settled by \
             step 1200 of 3000 (mean F1 0.40); train longer before collecting data for them"
                .into(),
        ),
        classes: vec![
            ClassLine {
                label: "mail".into(),
                quadrant: "data_shortage".into(),
                action: "add_data".into(),
                f1: Some(0.412),
                onset: None,
            },
            ClassLine {
                label: "utils".into(),
                quadrant: "intrinsically_hard".into(),
                action: "redefine".into(),
                f1: Some(0.38),
                onset: Some(200),
            },
            ClassLine {
                label: "news".into(),
                quadrant: "healthy".into(),
                action: "none".into(),
                f1: Some(0.934),
                onset: Some(150),
            },
            ClassLine {
                label: "sports".into(),
                quadrant: "learned_not_generalised".into(),
                action: "targeted_data".into(),
                f1: None,
                onset: Some(900),
            },
        ],
        recommendations: vec![
            RecommendationLine {
                id: "utils/redefine".into(),
                class: "utils".into(),
                action: "redefine the label".into(),
                priority: None,
                message: "Class `utils` settles early yet stays inaccurate: its examples may not share one meaning. Split or redefine it.".into(),
                evidence: json!({"onset": 200, "dwell_fraction": 0.71, "f1": 0.38, "f1_trend": -0.004, "confused_with": "mail"}),
            },
            RecommendationLine {
                id: "mail/add_data".into(),
                class: "mail".into(),
                action: "add data".into(),
                priority: Some(1),
                message: "Class `mail` has not settled and is inaccurate: add labelled examples.".into(),
                evidence: json!({"onset": null, "dwell_fraction": 0.2, "f1": 0.412, "f1_trend": 0.011, "training_count": 84, "confused_with": "utils"}),
            },
        ],
        changes: vec![
            ChangeLine {
                id: "mail/add_data".into(),
                change: Change::New,
                description: "add data to `mail`".into(),
            },
            ChangeLine {
                id: "utils/redefine".into(),
                change: Change::Changed,
                description: "`utils`: add_data → redefine_class".into(),
            },
            ChangeLine {
                id: "news/add_data".into(),
                change: Change::Resolved,
                description: "add data to `news`".into(),
            },
        ],
        report_path: "/runs/bert-agnews-r3/.dwell/report.json".into(),
    }
}

fn step_of(received: &Received) -> u64 {
    let text = received.body["text"].as_str().unwrap();
    let at = text.find("step ").unwrap() + 5;
    text[at..].split(' ').next().unwrap().parse().unwrap()
}

fn outbox_text(state: &Path, sink: &str) -> String {
    std::fs::read_to_string(state.join(format!("outbox-{sink}.json"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_once_in_order_through_failures_rate_limits_and_rejections() {
    captured_logs();
    let token = "tokenORDER0123456789";
    let server = SlackLike::start_on(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            Reply::ServerError,
            Reply::RateLimited,
            Reply::Ok,
            Reply::NoService,
            Reply::Ok,
        ],
    )
    .await;
    let (text, url) = secret_url(server.address, token);
    let state = tempfile::tempdir().unwrap();
    let mut config = SinkConfig::new("slack", SinkKind::Slack, url);
    config.policy = fast_policy(150);
    let started = Instant::now();
    let sink = SinkHandle::spawn(config, state.path()).unwrap();
    for step in [100, 200, 300] {
        sink.send(notification(step)).unwrap();
    }
    let summary = sink.shutdown(Duration::from_secs(10)).await.unwrap();
    let elapsed = started.elapsed();

    let received = server.received();
    let seen: Vec<(u64, Reply)> = received.iter().map(|r| (step_of(r), r.reply)).collect();
    assert_eq!(
        seen,
        [
            (100, Reply::ServerError),
            (100, Reply::RateLimited),
            (100, Reply::Ok),
            (200, Reply::NoService),
            (300, Reply::Ok),
        ]
    );
    assert!(received
        .iter()
        .all(|r| r.path == "/services/T0DWELL/B0SINKS/tokenORDER0123456789"));
    assert_eq!(
        (summary.delivered, summary.dropped, summary.undelivered),
        (2, 1, 0)
    );
    assert!(
        received[2].at - received[1].at >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    for pair in received.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(150),
            "requests closer than the pacing interval"
        );
    }
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(outbox_text(state.path(), "slack").contains("\"messages\": []"));

    let logs = captured_logs();
    assert!(
        logs.contains("no_service"),
        "the rejection is not logged:\n{logs}"
    );
    assert!(logs.contains("status=404"), "{logs}");
    assert!(logs.contains("rate limited (429)"), "{logs}");
    assert_secret_kept(&text, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_survive_a_restart_and_are_sent_exactly_once() {
    captured_logs();
    let token = "tokenRESTART98765";
    let address = free_address();
    let (text, url) = secret_url(address, token);
    let state = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = SinkConfig::new("slack", SinkKind::Slack, url.clone());
        config.policy = fast_policy(20);
        config
    };

    // Nothing listens yet: every attempt is a refused connection.
    let first = SinkHandle::spawn(config(), state.path()).unwrap();
    first.send(notification(100)).unwrap();
    first.send(notification(200)).unwrap();
    let summary = first.shutdown(Duration::from_millis(300)).await.unwrap();
    assert_eq!((summary.delivered, summary.undelivered), (0, 2));
    let outbox = outbox_text(state.path(), "slack");
    assert!(
        outbox.contains("advice changed: bert-agnews-r3 at step 200"),
        "{outbox}"
    );
    assert!(
        !outbox.contains(token) && !outbox.contains(&address.to_string()),
        "{outbox}"
    );

    let server = SlackLike::start_on(address, vec![]).await;
    let second = SinkHandle::spawn(config(), state.path()).unwrap();
    second.send(notification(300)).unwrap();
    let summary = second.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!((summary.delivered, summary.undelivered), (3, 0));

    let third = SinkHandle::spawn(config(), state.path()).unwrap();
    let summary = third.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!((summary.delivered, summary.undelivered), (0, 0));

    let steps: Vec<u64> = server.received().iter().map(step_of).collect();
    assert_eq!(steps, [100, 200, 300]);
    let logs = captured_logs();
    assert!(logs.contains("delivery failed; retrying"), "{logs}");
    assert!(logs.contains("resuming undelivered messages"), "{logs}");
    assert_secret_kept(&text, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_webhook_receives_the_recommendations_as_json() {
    captured_logs();
    let token = "tokenGENERIC24680";
    let server = SlackLike::start_on("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let (text, url) = secret_url(server.address, token);
    let state = tempfile::tempdir().unwrap();
    let mut config = SinkConfig::new("ops-webhook", SinkKind::Webhook, url);
    config.policy = fast_policy(20);
    let sink = SinkHandle::spawn(config, state.path()).unwrap();
    let mut finished = notification(3000);
    finished.kind = NotificationKind::RunFinished;
    sink.send(finished.clone()).unwrap();
    let summary = sink.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(summary.delivered, 1);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, SinkKind::Webhook.payload(&finished));
    assert_eq!(received[0].body["kind"], "run_finished");
    assert_secret_kept(&text, token);
}

#[test]
fn slack_payload_snapshot() {
    insta::assert_json_snapshot!(SinkKind::Slack.payload(&notification(1200)));
}

#[test]
fn webhook_payload_snapshot() {
    insta::assert_json_snapshot!(SinkKind::Webhook.payload(&notification(1200)));
}
