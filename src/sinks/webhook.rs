//! The generic JSON webhook: the notification's advice as data, for any receiver.

use serde_json::{json, Value};

use super::Notification;

pub const NOTIFICATION_SCHEMA: &str = "dwell.notification/1";

pub(super) fn payload(notification: &Notification) -> Value {
    json!({
        "schema": NOTIFICATION_SCHEMA,
        "kind": notification.kind,
        "run": notification.run,
        "step": notification.step,
        "max_steps": notification.max_steps,
        "run_advice": notification.run_advice,
        "recommendations": notification.recommendations,
        "changes": notification.changes,
        "report_path": notification.report_path,
    })
}
