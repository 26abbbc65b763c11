//! A sink's undelivered messages, one JSON file per sink in the state directory.
//!
//! The file holds rendered payloads keyed by a sequential id and never the webhook URL, so
//! it is safe to copy around with the rest of the state directory. It is rewritten
//! atomically on every change: a crash leaves the queue as it was before or after.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::SinkError;
use crate::store::write_atomically;

pub const OUTBOX_SCHEMA: &str = "dwell.outbox/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub id: u64,
    /// A line for logs, so that they can say which message without the whole payload.
    pub summary: String,
    pub payload: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct OutboxFile {
    schema: String,
    sink: String,
    /// Kept even when the queue is empty so that ids are never reused across restarts.
    next_id: u64,
    messages: Vec<OutboxMessage>,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    path: PathBuf,
    sink: String,
    next_id: u64,
    messages: VecDeque<OutboxMessage>,
}

impl Outbox {
    /// Reads the outbox at `path`, or starts an empty one. A file that cannot be understood
    /// is renamed aside (never deleted: it may hold messages someone wants) with a warning,
    /// and the sink starts empty rather than refusing to notify at all.
    pub fn open(path: PathBuf, sink: &str) -> Result<Self, SinkError> {
        let mut outbox = Self {
            path,
            sink: sink.to_string(),
            next_id: 1,
            messages: VecDeque::new(),
        };
        let bytes = match std::fs::read(&outbox.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(outbox),
            Err(error) => {
                return Err(SinkError::Io {
                    path: outbox.path,
                    error,
                })
            }
        };
        match parse(&bytes, sink) {
            Ok(file) => {
                let mut messages = file.messages;
                messages.sort_by_key(|m| m.id);
                let after_last = messages.last().map_or(1, |m| m.id + 1);
                outbox.next_id = file.next_id.max(after_last);
                outbox.messages = messages.into();
            }
            Err(problem) => outbox.set_aside(&problem)?,
        }
        Ok(outbox)
    }

    fn set_aside(&self, problem: &str) -> Result<(), SinkError> {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = PathBuf::from(format!("{}.corrupt-{seconds}", self.path.display()));
        std::fs::rename(&self.path, &aside).map_err(|error| SinkError::Io {
            path: self.path.clone(),
            error,
        })?;
        tracing::warn!(
            sink = %self.sink,
            outbox = %self.path.display(),
            moved_to = %aside.display(),
            %problem,
            "unreadable outbox set aside; its messages will not be sent, starting with an empty one"
        );
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn front(&self) -> Option<&OutboxMessage> {
        self.messages.front()
    }

    /// Queues a message and persists the queue. When persisting fails the message stays
    /// queued in memory (it can still be delivered by this process) and the error says so.
    pub fn push(&mut self, summary: String, payload: serde_json::Value) -> Result<u64, SinkError> {
        let id = self.next_id;
        self.next_id += 1;
        self.messages.push_back(OutboxMessage {
            id,
            summary,
            payload,
        });
        self.persist().map(|()| id)
    }

    /// Forgets a delivered or dropped message; the removal is persisted so that it is
    /// never sent again after a restart.
    pub fn remove(&mut self, id: u64) -> Result<(), SinkError> {
        self.messages.retain(|m| m.id != id);
        self.persist()
    }

    fn persist(&self) -> Result<(), SinkError> {
        let file = OutboxFile {
            schema: OUTBOX_SCHEMA.to_string(),
            sink: self.sink.clone(),
            next_id: self.next_id,
            messages: self.messages.iter().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| SinkError::Io {
            path: self.path.clone(),
            error: e.into(),
        })?;
        write_atomically(&self.path, &bytes)?;
        Ok(())
    }
}

fn parse(bytes: &[u8], sink: &str) -> Result<OutboxFile, String> {
    let file: OutboxFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.schema != OUTBOX_SCHEMA {
        return Err(format!(
            "schema is {:?}, expected {OUTBOX_SCHEMA:?}",
            file.schema
        ));
    }
    if file.sink != sink {
        return Err(format!("it belongs to sink {:?}, not {sink:?}", file.sink));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_survive_reopening_in_order_and_ids_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox-slack.json");
        let mut outbox = Outbox::open(path.clone(), "slack").unwrap();
        assert_eq!(outbox.push("a".into(), json!({"n": 1})).unwrap(), 1);
        assert_eq!(outbox.push("b".into(), json!({"n": 2})).unwrap(), 2);
        assert_eq!(outbox.push("c".into(), json!({"n": 3})).unwrap(), 3);
        outbox.remove(1).unwrap();

        let mut reopened = Outbox::open(path.clone(), "slack").unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.front().unwrap().summary, "b");
        reopened.remove(2).unwrap();
        reopened.remove(3).unwrap();

        let mut empty = Outbox::open(path, "slack").unwrap();
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.push("d".into(), json!(null)).unwrap(), 4);
    }

    #[test]
    fn a_corrupt_outbox_is_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox-slack.json");
        std::fs::write(&path, b"{\"schema\": \"dwell.outbox/1\", \"mess").unwrap();
        let mut outbox = Outbox::open(path.clone(), "slack").unwrap();
        assert_eq!(outbox.len(), 0);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("outbox-slack.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let kept = std::fs::read(dir.path().join(&aside[0])).unwrap();
        assert!(kept.ends_with(b"\"mess"));
        outbox.push("new".into(), json!(1)).unwrap();
        assert_eq!(Outbox::open(path, "slack").unwrap().len(), 1);
    }

    #[test]
    fn another_sinks_or_schemas_file_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox-slack.json");
        let mut other = Outbox::open(path.clone(), "ops").unwrap();
        other.push("theirs".into(), json!(1)).unwrap();
        assert_eq!(Outbox::open(path.clone(), "slack").unwrap().len(), 0);
        assert!(!path.exists());

        std::fs::write(
            &path,
            br#"{"schema": "dwell.outbox/9", "sink": "slack", "next_id": 1, "messages": []}"#,
        )
        .unwrap();
        assert_eq!(Outbox::open(path.clone(), "slack").unwrap().len(), 0);
        assert!(!path.exists());
    }
}
