//! The sender task: takes notifications from a [`SinkHandle`], queues them in the outbox,
//! and posts them one at a time, in order, with pacing and retries.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::outbox::{Outbox, OutboxMessage};
use super::{
    Notification, NotificationKind, RetryPolicy, SinkConfig, SinkError, SinkKind, WebhookUrl,
};

/// Slack's error bodies are short codes (`no_service`, `invalid_payload`); anything longer
/// is cut so that an HTML error page does not flood the log.
const BODY_EXCERPT_CHARS: usize = 200;
/// When a server sends a `Retry-After` we cannot read, wait this long, as Slack suggests.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Time allowed past the caller's deadline for the task to write the outbox and stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The daemon's side of one sink. Cheap to use from any task; dropping it without
/// [`SinkHandle::shutdown`] stops the sender at once, leaving undelivered messages in the
/// outbox for the next start.
#[derive(Debug)]
pub struct SinkHandle {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<ShutdownSummary>,
    depth: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSummary {
    /// Messages delivered since this handle was spawned.
    pub delivered: usize,
    /// Messages rejected by the webhook (4xx other than 429) and dropped.
    pub dropped: usize,
    /// Messages still in the outbox; they are sent first on the next start.
    pub undelivered: usize,
}

#[derive(Debug)]
enum Command {
    Enqueue(Box<Notification>),
    Shutdown { deadline: Instant },
}

impl SinkHandle {
    /// Opens the sink's outbox in `state_dir` and starts its sender task on the current
    /// tokio runtime. Messages left in the outbox by an earlier run are sent first.
    pub fn spawn(config: SinkConfig, state_dir: &Path) -> Result<Self, SinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SinkError::NoRuntime)?;
        let outbox = Outbox::open(config.outbox_path(state_dir)?, &config.name)?;
        if outbox.len() > 0 {
            tracing::info!(
                sink = %config.name,
                pending = outbox.len(),
                outbox = %outbox.path().display(),
                "resuming undelivered messages"
            );
        }
        let client = reqwest::Client::builder()
            .timeout(config.policy.request_timeout)
            // A redirect would carry the payload somewhere the operator did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SinkError::Client(describe_error(e.without_url(), &config.url)))?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let depth = Arc::new(AtomicUsize::new(outbox.len()));
        let worker = Worker {
            queue: Queue {
                depth: depth.clone(),
                sink: config.name.clone(),
                kind: config.kind,
                outbox,
                set_aside: false,
                delivered: 0,
                dropped: 0,
            },
            transport: Transport {
                sink: config.name.clone(),
                url: config.url,
                client,
                policy: config.policy,
                next_request_at: Instant::now(),
            },
        };
        let task = runtime.spawn(worker.run(receiver));
        Ok(Self {
            name: config.name,
            commands,
            task,
            depth,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outbox's length as the sender keeps it: messages queued and not yet
    /// delivered or dropped.
    pub fn outbox_counter(&self) -> Arc<AtomicUsize> {
        self.depth.clone()
    }

    /// Queues `notification` without waiting. The sender writes it to the outbox before
    /// it makes any request.
    pub fn send(&self, notification: Notification) -> Result<(), SinkError> {
        self.commands
            .send(Command::Enqueue(Box::new(notification)))
            .map_err(|_| SinkError::Stopped(self.name.clone()))
    }

    /// Delivers what can be delivered within `deadline`, then stops. A request still in
    /// flight at the deadline is abandoned and its message kept for the next start.
    pub async fn shutdown(self, deadline: Duration) -> Result<ShutdownSummary, SinkError> {
        let stopped = || SinkError::Stopped(self.name.clone());
        // A send error means the task has already ended; joining it still gives its summary.
        let _ = self.commands.send(Command::Shutdown {
            deadline: Instant::now() + deadline,
        });
        drop(self.commands);
        let mut task = self.task;
        match tokio::time::timeout(deadline + SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(_)) => Err(stopped()),
            Err(_) => {
                task.abort();
                Err(stopped())
            }
        }
    }
}

struct Worker {
    queue: Queue,
    transport: Transport,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) -> ShutdownSummary {
        let mut deadline: Option<Instant> = None;
        let mut handle_gone = false;
        loop {
            let Some(message) = self.queue.next_deliverable() else {
                if deadline.is_some() || handle_gone {
                    break;
                }
                match commands.recv().await {
                    Some(command) => self.queue.accept(command, &mut deadline),
                    None => handle_gone = true,
                }
                continue;
            };
            let attempt = self.transport.deliver(&message);
            tokio::pin!(attempt);
            // Keep taking notifications while a message waits on retries, so that each is
            // in the outbox as soon as possible rather than after the current one settles.
            let outcome = loop {
                tokio::select! {
                    biased;
                    outcome = &mut attempt => break Some(outcome),
                    () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() || handle_gone => break None,
                    command = commands.recv(), if !handle_gone => match command {
                        Some(command) => self.queue.accept(command, &mut deadline),
                        None => handle_gone = true,
                    },
                }
            };
            match outcome {
                Some(outcome) => self.queue.settle(&message, outcome),
                None => break,
            }
        }
        // Notifications sent just before the stop are still owed a place in the outbox.
        while let Ok(command) = commands.try_recv() {
            self.queue.accept(command, &mut deadline);
        }
        self.queue.summary()
    }
}

/// The outbox and what the sender has decided about it.
struct Queue {
    sink: String,
    kind: SinkKind,
    outbox: Outbox,
    /// Set when the head message exhausted its retries: sending pauses until the next
    /// notification, a shutdown or a restart, so that an outage is not hammered and later
    /// messages do not overtake the head.
    set_aside: bool,
    delivered: usize,
    dropped: usize,
    /// The outbox's length, for the handle (the health metrics).
    depth: Arc<AtomicUsize>,
}

impl Queue {
    fn next_deliverable(&self) -> Option<OutboxMessage> {
        if self.set_aside {
            return None;
        }
        self.outbox.front().cloned()
    }

    fn accept(&mut self, command: Command, deadline: &mut Option<Instant>) {
        self.set_aside = false;
        match command {
            Command::Enqueue(notification) => {
                let summary = summarise(&notification);
                let payload = self.kind.payload(&notification);
                let pushed = self.outbox.push(summary.clone(), payload);
                self.depth.store(self.outbox.len(), Ordering::Relaxed);
                match pushed {
                    Ok(id) => tracing::debug!(sink = %self.sink, id, %summary, "queued"),
                    Err(error) => tracing::error!(
                        sink = %self.sink,
                        %summary,
                        %error,
                        "could not write the outbox; the message is queued in memory only and is lost if the process stops first"
                    ),
                }
            }
            Command::Shutdown { deadline: at } => *deadline = Some(at),
        }
    }

    fn settle(&mut self, message: &OutboxMessage, outcome: Outcome) {
        let (id, summary) = (message.id, &message.summary);
        match outcome {
            Outcome::Delivered => {
                self.delivered += 1;
                tracing::info!(sink = %self.sink, id, %summary, "message sent");
            }
            Outcome::Rejected { status, body } => {
                self.dropped += 1;
                tracing::error!(
                    sink = %self.sink,
                    id,
                    %summary,
                    status = status.as_u16(),
                    %body,
                    "the webhook rejected the message; dropped, it will not be retried"
                );
            }
            Outcome::SetAside { reason } => {
                self.set_aside = true;
                tracing::error!(
                    sink = %self.sink,
                    id,
                    %summary,
                    %reason,
                    pending = self.outbox.len(),
                    "giving up for now; the message stays in the outbox and is retried with the next notification or after a restart"
                );
                return;
            }
        }
        let removed = self.outbox.remove(id);
        self.depth.store(self.outbox.len(), Ordering::Relaxed);
        if let Err(error) = removed {
            tracing::error!(
                sink = %self.sink,
                id,
                %error,
                "could not record the message as settled; it would be sent again after a restart"
            );
        }
    }

    fn summary(&self) -> ShutdownSummary {
        ShutdownSummary {
            delivered: self.delivered,
            dropped: self.dropped,
            undelivered: self.outbox.len(),
        }
    }
}

fn summarise(notification: &Notification) -> String {
    let kind = match notification.kind {
        NotificationKind::AdviceChanged => "advice changed",
        NotificationKind::RunFinished => "run finished",
    };
    format!("{kind}: {} at step {}", notification.run, notification.step)
}

#[derive(Debug)]
enum Outcome {
    Delivered,
    Rejected { status: StatusCode, body: String },
    SetAside { reason: String },
}

/// How one request went.
#[derive(Debug, PartialEq)]
enum Answer {
    Success,
    RateLimited(Duration),
    Retryable(String),
    Rejected { status: StatusCode, body: String },
}

struct Transport {
    sink: String,
    url: WebhookUrl,
    client: reqwest::Client,
    policy: RetryPolicy,
    next_request_at: Instant,
}

impl Transport {
    /// Posts `message` until it is delivered, rejected, or out of retries.
    async fn deliver(&mut self, message: &OutboxMessage) -> Outcome {
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        loop {
            sleep_until(self.next_request_at).await;
            let answer = self.post(&message.payload).await;
            // Counted from the answer rather than the request, so that the server sees the
            // interval between arrivals whatever the connection latency.
            self.next_request_at = Instant::now() + self.policy.min_interval;
            let wait = match answer {
                Answer::Success => return Outcome::Delivered,
                Answer::Rejected { status, body } => return Outcome::Rejected { status, body },
                Answer::RateLimited(asked) => {
                    rate_limited += 1;
                    if rate_limited > self.policy.max_rate_limited {
                        return Outcome::SetAside {
                            reason: format!("rate limited {rate_limited} times in a row"),
                        };
                    }
                    let wait = asked.min(self.policy.max_retry_after);
                    tracing::warn!(
                        sink = %self.sink,
                        id = message.id,
                        wait_s = wait.as_secs_f64(),
                        "rate limited (429); waiting as asked"
                    );
                    wait
                }
                Answer::Retryable(reason) => {
                    failures += 1;
                    if failures >= self.policy.max_attempts {
                        return Outcome::SetAside {
                            reason: format!("{failures} failed attempts, the last: {reason}"),
                        };
                    }
                    let wait = backoff(&self.policy, failures);
                    tracing::warn!(
                        sink = %self.sink,
                        id = message.id,
                        attempt = failures,
                        %reason,
                        retry_in_s = wait.as_secs_f64(),
                        "delivery failed; retrying"
                    );
                    wait
                }
            };
            self.next_request_at = self.next_request_at.max(Instant::now() + wait);
        }
    }

    async fn post(&self, payload: &serde_json::Value) -> Answer {
        let response = match self
            .client
            .post(self.url.expose().clone())
            .json(payload)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Answer::Retryable(describe_error(error, &self.url)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
        // The body only explains a failure; the status alone decides delivery.
        let body = response.text().await.unwrap_or_default();
        classify(status, retry_after, excerpt(&body, &self.url))
    }
}

fn classify(status: StatusCode, retry_after: Duration, body: String) -> Answer {
    if status.is_success() {
        Answer::Success
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Answer::RateLimited(retry_after)
    } else if status.is_server_error() {
        Answer::Retryable(
            format!("HTTP {} {body}", status.as_u16())
                .trim_end()
                .to_string(),
        )
    } else {
        Answer::Rejected { status, body }
    }
}

/// Exponential backoff with equal jitter: half of the delay is fixed so that waits grow,
/// half is random so that daemons hit by the same outage do not retry in lockstep.
fn backoff(policy: &RetryPolicy, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    let delay = policy
        .backoff_base
        .saturating_mul(factor)
        .min(policy.backoff_max);
    let half = delay / 2;
    let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::rng().random_range(0..=jitter_nanos))
}

/// reqwest's errors name the URL; this keeps the cause chain and drops the URL, then
/// removes any copy of it that a lower layer might have put in a message.
fn describe_error(error: reqwest::Error, url: &WebhookUrl) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    redact(&text, url)
}

fn excerpt(body: &str, url: &WebhookUrl) -> String {
    let trimmed = body.trim();
    let mut cut: String = trimmed.chars().take(BODY_EXCERPT_CHARS).collect();
    if cut.len() < trimmed.len() {
        cut.push('…');
    }
    redact(&cut, url)
}

fn redact(text: &str, url: &WebhookUrl) -> String {
    let url = url.expose();
    let mut text = text.replace(url.as_str(), "<webhook>");
    // The path is the secret part; a server echoing it back must not get it into the log.
    if url.path().len() > 1 {
        text = text.replace(url.path(), "/<redacted>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> WebhookUrl {
        WebhookUrl::parse("https://hooks.slack.com/services/T1/B2/s3cr3t", "test").unwrap()
    }

    #[test]
    fn statuses_decide_the_answer() {
        let second = Duration::from_secs(1);
        assert_eq!(
            classify(StatusCode::OK, second, "ok".into()),
            Answer::Success
        );
        assert_eq!(
            classify(StatusCode::NO_CONTENT, second, String::new()),
            Answer::Success
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Duration::from_secs(7),
                String::new()
            ),
            Answer::RateLimited(Duration::from_secs(7))
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, second, "upstream".into()),
            Answer::Retryable("HTTP 502 upstream".into())
        );
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST,
            StatusCode::MOVED_PERMANENTLY,
        ] {
            assert_eq!(
                classify(status, second, "no_service".into()),
                Answer::Rejected {
                    status,
                    body: "no_service".into()
                }
            );
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            for (failures, full) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (40, 1000),
            ] {
                let wait = backoff(&policy, failures);
                let full = Duration::from_millis(full);
                assert!(wait >= full / 2 && wait <= full, "{failures}: {wait:?}");
            }
        }
    }

    #[test]
    fn bodies_are_cut_and_never_echo_the_url() {
        let url = url();
        let echoed = format!(
            "invalid token for {} (path /services/T1/B2/s3cr3t)",
            url.expose()
        );
        let shown = excerpt(&echoed, &url);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let long = excerpt(&"x".repeat(1000), &url);
        assert_eq!(long.chars().count(), BODY_EXCERPT_CHARS + 1);
    }
}
