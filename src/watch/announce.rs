//! What has been announced, so that a restart announces nothing twice, and the
//! notification built from a report.

use serde::{Deserialize, Serialize};

use crate::advise::{diff, Recommendation};
use crate::report::{serde_name, Report};
use crate::sinks::{
    Change, ChangeLine, ClassLine, Notification, NotificationKind, RecommendationLine,
};
use crate::store::{StateDir, StoreError};

const ANNOUNCED_FILE: &str = "announced.json";

/// The advice last handed to the senders, and whether the end of the run was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Announced {
    pub recommendations: Vec<Recommendation>,
    pub finished: bool,
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

    /// What changed since the last announcement: new, changed and resolved ids.
    pub fn changes(&self, report: &Report) -> Vec<ChangeLine> {
        let difference = diff(&self.recommendations, &report.recommendations);
        let line = |id: &str, change| ChangeLine {
            id: id.to_string(),
            change,
        };
        difference
            .new
            .iter()
            .map(|r| line(&r.id, Change::New))
            .chain(
                difference
                    .changed
                    .iter()
                    .map(|c| line(&c.current.id, Change::Changed)),
            )
            .chain(
                difference
                    .resolved
                    .iter()
                    .map(|r| line(&r.id, Change::Resolved)),
            )
            .collect()
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
