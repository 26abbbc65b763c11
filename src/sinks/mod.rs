//! Notification senders (SPEC §6): a Slack incoming webhook and a generic JSON webhook.
//!
//! Each sink is one tokio task fed through [`SinkHandle`]. A notification is rendered and
//! written to the sink's outbox in the state directory before any request is made, so a
//! crash or a stop loses nothing; delivery is in order, one message at a time, at most one
//! request per `min_interval`. See `docs/SINKS.md` for payloads, retries and the outbox.
//!
//! The webhook URL is a credential (anyone holding it can post to the channel), so it lives
//! only in [`WebhookUrl`], whose `Debug` and `Display` show the host alone, and it is kept
//! out of logs, errors and the outbox file.

mod delivery;
mod outbox;
mod slack;
mod webhook;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use delivery::{ShutdownSummary, SinkHandle};
pub use outbox::OUTBOX_SCHEMA;
pub use webhook::NOTIFICATION_SCHEMA;

/// The environment variable the Slack webhook URL can come from.
pub const SLACK_WEBHOOK_ENV: &str = "DWELL_SLACK_WEBHOOK";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink name {0:?} must be 1-64 characters of a-z, 0-9, '-' or '_' (it names the outbox file)")]
    InvalidName(String),
    /// Names where the URL came from, never the URL: it is a secret.
    #[error("the webhook URL from {source_name} is not usable: {reason}")]
    InvalidUrl {
        source_name: &'static str,
        reason: String,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("a sink needs a running tokio runtime to start its sender task")]
    NoRuntime,
    #[error("the sender task of sink {0:?} has stopped; the notification was not queued")]
    Stopped(String),
}

/// A webhook URL: a secret. Displays as `scheme://host/…` so logs can say which service
/// is meant without revealing the token in the path.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(reqwest::Url);

impl WebhookUrl {
    /// `source_name` says where the text came from (a flag, the environment, the config
    /// file), so that an error can point there without repeating the secret.
    pub fn parse(text: &str, source_name: &'static str) -> Result<Self, SinkError> {
        let invalid = |reason: String| SinkError::InvalidUrl {
            source_name,
            reason,
        };
        let url = reqwest::Url::parse(text.trim()).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "the scheme must be https (or http), not {:?}",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host".to_string()));
        }
        Ok(Self(url))
    }

    /// The first URL given, in precedence order: the command-line flag, then
    /// [`SLACK_WEBHOOK_ENV`], then the config file. Empty values count as absent so that
    /// `DWELL_SLACK_WEBHOOK=` disables nothing by accident and enables nothing either.
    pub fn from_sources(
        flag: Option<&str>,
        environment: Option<&str>,
        config_file: Option<&str>,
    ) -> Result<Option<Self>, SinkError> {
        let sources = [
            ("the --slack-webhook flag", flag),
            (SLACK_WEBHOOK_ENV, environment),
            ("the config file", config_file),
        ];
        sources
            .into_iter()
            .find_map(|(name, value)| {
                value
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| Self::parse(v, name))
            })
            .transpose()
    }

    pub(crate) fn expose(&self) -> &reqwest::Url {
        &self.0
    }

    fn redacted(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{}://{host}:{port}/…", self.0.scheme()),
            None => format!("{}://{host}/…", self.0.scheme()),
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// For the config file. There is deliberately no `Serialize`: a URL must not end up in a
/// report or a state file by way of a derived impl.
impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text, "the config file").map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Slack incoming webhook: Block Kit message.
    Slack,
    /// Any HTTP endpoint taking the generic JSON payload.
    Webhook,
}

impl SinkKind {
    /// The request body this kind of sink posts for `notification`.
    pub fn payload(self, notification: &Notification) -> serde_json::Value {
        match self {
            SinkKind::Slack => slack::payload(notification),
            SinkKind::Webhook => webhook::payload(notification),
        }
    }
}

/// How a sender paces itself and when it stops retrying. The defaults suit Slack, which
/// allows about one message per second per webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Least time from one answer of the webhook to the next request, retries included.
    pub min_interval: Duration,
    /// First backoff after a 5xx or network error; doubles per failure, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Requests failing with 5xx or a network error before a message is set aside until the
    /// next notification or restart (it stays in the outbox).
    pub max_attempts: u32,
    /// 429 answers tolerated for one message; they do not count as failed attempts.
    pub max_rate_limited: u32,
    /// Upper bound on one `Retry-After` wait, against a misbehaving server.
    pub max_retry_after: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(1),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            max_attempts: 8,
            max_rate_limited: 10,
            max_retry_after: Duration::from_secs(300),
            request_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Names the outbox file (`outbox-<name>.json`) and appears in logs in place of the URL.
    pub name: String,
    pub kind: SinkKind,
    pub url: WebhookUrl,
    pub policy: RetryPolicy,
}

impl SinkConfig {
    pub fn new(name: &str, kind: SinkKind, url: WebhookUrl) -> Self {
        Self {
            name: name.to_string(),
            kind,
            url,
            policy: RetryPolicy::default(),
        }
    }

    fn outbox_path(&self, state_dir: &Path) -> Result<PathBuf, SinkError> {
        let valid = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(SinkError::InvalidName(self.name.clone()));
        }
        Ok(state_dir.join(format!("outbox-{}.json", self.name)))
    }
}

/// What a sink is told; plain data so the sinks do not depend on how advice is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub kind: NotificationKind,
    /// The run directory's display name.
    pub run: String,
    pub step: u64,
    pub max_steps: Option<u64>,
    pub classes: Vec<ClassLine>,
    /// Advice about the whole run, said once before the per-class advice.
    #[serde(default)]
    pub run_advice: Option<String>,
    pub recommendations: Vec<RecommendationLine>,
    pub changes: Vec<ChangeLine>,
    pub report_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    AdviceChanged,
    RunFinished,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassLine {
    pub label: String,
    pub quadrant: String,
    pub action: String,
    pub f1: Option<f64>,
    /// Class dwell onset step; `None` while fewer than half of its examples dwell.
    pub onset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationLine {
    /// Stable across checkpoints, so the same advice is recognised.
    pub id: String,
    pub class: String,
    pub action: String,
    /// 1 is the most urgent; `None` for advice that asks for no data.
    pub priority: Option<u32>,
    pub message: String,
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLine {
    /// A [`RecommendationLine::id`] (for a resolved change, the id it had).
    pub id: String,
    pub change: Change,
    /// What changed, for a person: "add data to `mail`", "`net`: add_data → redefine_class".
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    New,
    Changed,
    Resolved,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "https://hooks.slack.com/services/T0001/B0002/s3cr3tT0k3n";

    #[test]
    fn url_debug_and_display_show_the_host_only() {
        let url = WebhookUrl::parse(SECRET, "test").unwrap();
        let config = SinkConfig::new("slack", SinkKind::Slack, url.clone());
        for shown in [format!("{url}"), format!("{url:?}"), format!("{config:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
        }
    }

    #[test]
    fn invalid_urls_name_their_source_not_their_text() {
        for text in [
            "hooks.slack.com/services/s3cr3t",
            "ftp://h/s3cr3t",
            "file:///s3cr3t",
        ] {
            let error = WebhookUrl::parse(text, SLACK_WEBHOOK_ENV).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(SLACK_WEBHOOK_ENV), "{message}");
            assert!(!message.contains("s3cr3t"), "{message}");
        }
    }

    #[test]
    fn the_flag_wins_over_the_environment_over_the_config_file() {
        let pick = |flag, env, file| {
            WebhookUrl::from_sources(flag, env, file)
                .unwrap()
                .map(|u| u.expose().host_str().unwrap().to_string())
        };
        let (a, b, c) = (
            Some("https://a/x"),
            Some("https://b/x"),
            Some("https://c/x"),
        );
        assert_eq!(pick(a, b, c).as_deref(), Some("a"));
        assert_eq!(pick(None, b, c).as_deref(), Some("b"));
        assert_eq!(pick(Some(" "), Some(""), c).as_deref(), Some("c"));
        assert_eq!(pick(None, None, None), None);
        let error = WebhookUrl::from_sources(None, Some("nonsense"), c).unwrap_err();
        assert!(error.to_string().contains(SLACK_WEBHOOK_ENV));
    }

    #[test]
    fn a_url_deserializes_and_a_bad_one_is_not_echoed() {
        let url: WebhookUrl = serde_json::from_str(&format!("{SECRET:?}")).unwrap();
        assert_eq!(url.expose().as_str(), SECRET);
        let error = serde_json::from_str::<WebhookUrl>("\"not a url s3cr3t\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("the config file"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
    }

    #[test]
    fn sink_names_are_file_name_safe() {
        let url = WebhookUrl::parse("https://h/x", "test").unwrap();
        let dir = Path::new("/state");
        for bad in ["", "../x", "Slack", "a b", &"x".repeat(65)] {
            let config = SinkConfig::new(bad, SinkKind::Webhook, url.clone());
            assert!(matches!(
                config.outbox_path(dir),
                Err(SinkError::InvalidName(_))
            ));
        }
        let config = SinkConfig::new("slack-ops_2", SinkKind::Slack, url);
        assert_eq!(
            config.outbox_path(dir).unwrap(),
            dir.join("outbox-slack-ops_2.json")
        );
    }
}
