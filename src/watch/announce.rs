//! What has been announced, so that a restart announces nothing twice; when a change is
//! material enough to announce (it has held, and the last message is old enough); and
//! the notification built from a report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::advise::{
    announce, extend_streaks, material_changes, Action, ActionChange, Recommendation, Streaks,
};
use crate::report::{serde_name, Report};
use crate::sinks::{
    Change, ChangeLine, ClassLine, Notification, NotificationKind, RecommendationLine,
};
use crate::store::{StateDir, StoreError};

const ANNOUNCED_FILE: &str = "announced.json";

/// When a change is worth a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnouncePolicy {
    /// Consecutive checkpoints a (class, action) change must hold before it is announced.
    pub hold_checkpoints: usize,
    /// The least time between two advice messages; changes in between wait and go out
    /// together. The run's summary is not held back.
    pub min_interval: Duration,
}

impl Default for AnnouncePolicy {
    fn default() -> Self {
        Self {
            hold_checkpoints: 2,
            min_interval: Duration::from_secs(300),
        }
    }
}

/// The advice last handed to the senders, whether the end of the run was, the changes
/// not yet announced with how long they have held, and when the last message went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Announced {
    pub recommendations: Vec<Recommendation>,
    pub finished: bool,
    #[serde(default)]
    pub streaks: Streaks,
    /// Unix seconds of the last advice message.
    #[serde(default)]
    pub last_message_at: Option<u64>,
}

impl Announced {
    pub fn load(state: &StateDir) -> Result<Self, StoreError> {
        match state.read_file(ANNOUNCED_FILE)? {
            None => Ok(Self::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: state.root().join(ANNOUNCED_FILE),
                message: e.to_string(),
            }),
        }
    }

    pub fn save(&self, state: &StateDir) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(self).expect("announced advice serialises");
        state.write_file(ANNOUNCED_FILE, &json).map(|_| ())
    }

    /// Counts the report of one more checkpoint into the streaks.
    /// Whether the streaks moved (and so are worth saving).
    pub fn checkpoint(&mut self, report: &Report) -> bool {
        let before = self.streaks.clone();
        extend_streaks(
            &mut self.streaks,
            &self.recommendations,
            &report.recommendations,
        );
        self.streaks != before
    }

    /// How long until a message may go; zero when one may go now.
    pub fn wait_before_message(&self, policy: &AnnouncePolicy, now: SystemTime) -> Duration {
        let Some(last) = self.last_message_at else {
            return Duration::ZERO;
        };
        let since = now
            .duration_since(UNIX_EPOCH + Duration::from_secs(last))
            .unwrap_or(Duration::ZERO);
        policy.min_interval.saturating_sub(since)
    }

    /// The material changes due now, as change lines, and the announced state recorded
    /// as if they were sent. `hold` 0 takes every pending change (the run's end).
    pub fn take_changes(
        &mut self,
        report: &Report,
        hold: usize,
        now: SystemTime,
    ) -> Vec<ChangeLine> {
        let changes = material_changes(&self.streaks, &self.recommendations, hold);
        if changes.is_empty() {
            return Vec::new();
        }
        let lines = changes
            .iter()
            .map(|(class, change)| change_line(class, *change, &self.recommendations, report))
            .collect();
        self.recommendations = announce(&self.recommendations, &report.recommendations, &changes);
        for (class, _) in &changes {
            self.streaks.remove(class);
        }
        self.last_message_at = now.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
        lines
    }
}

fn change_line(
    class: &str,
    change: ActionChange,
    announced: &[Recommendation],
    report: &Report,
) -> ChangeLine {
    let id_in = |list: &[Recommendation]| {
        list.iter()
            .find(|r| r.class == class)
            .map(|r| r.id.clone())
            .unwrap_or_else(|| class.to_string())
    };
    let (kind, id, description) = match change {
        ActionChange::New { action } => (
            Change::New,
            id_in(&report.recommendations),
            to_do(action, class),
        ),
        ActionChange::Resolved { action } => {
            (Change::Resolved, id_in(announced), to_do(action, class))
        }
        ActionChange::Changed { from, to } => (
            Change::Changed,
            id_in(&report.recommendations),
            format!("{} (was: {})", to_do(to, class), to_do(from, class)),
        ),
    };
    ChangeLine {
        id,
        change: kind,
        description,
    }
}

/// "add data to `mail`", as a person would say the action.
fn to_do(action: Action, class: &str) -> String {
    match action {
        Action::AddData => format!("add data to `{class}`"),
        Action::TargetedData => format!("add targeted data to `{class}`"),
        Action::RedefineClass => format!("redefine `{class}`"),
        Action::None => format!("nothing to do for `{class}`"),
        Action::Wait => format!("wait on `{class}`"),
        Action::RunLevel => format!("`{class}` is covered by the run's advice"),
    }
}

/// The senders' view of a report.
pub fn notification_for(
    report: &Report,
    kind: NotificationKind,
    changes: Vec<ChangeLine>,
    state: &StateDir,
) -> Notification {
    let detector = report.advice.as_ref().map(|a| a.detector);
    Notification {
        kind,
        run: report.run.directory.display().to_string(),
        step: report.run.latest_step.unwrap_or(0),
        max_steps: report.run.max_steps,
        classes: report
            .classes
            .iter()
            .map(|class| ClassLine {
                label: class.label.clone(),
                quadrant: serde_name(&class.quadrant),
                action: serde_name(&class.action),
                f1: class.f1,
                onset: detector.and_then(|d| class.dwell_under(d).0),
            })
            .collect(),
        run_advice: report.run_advice.as_ref().map(|run| run.message.clone()),
        recommendations: report
            .recommendations
            .iter()
            .map(|r| RecommendationLine {
                id: r.id.clone(),
                class: r.class.clone(),
                action: serde_name(&r.action),
                priority: r.priority.map(|p| p as u32),
                message: r.message.clone(),
                evidence: serde_json::to_value(&r.evidence).unwrap_or_default(),
            })
            .collect(),
        changes,
        report_path: state.root().join("report.json").display().to_string(),
    }
}
