//! What changed between two advice sets, so that only news is announced.

use std::collections::BTreeMap;

use serde::Serialize;

use super::advice::Recommendation;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdviceDiff {
    /// Ids not in the previous advice, in current order.
    pub new: Vec<Recommendation>,
    /// Same id, but a different quadrant or priority, in current order.
    pub changed: Vec<ChangedRecommendation>,
    /// Ids no longer advised, in previous order.
    pub resolved: Vec<Recommendation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangedRecommendation {
    pub previous: Recommendation,
    pub current: Recommendation,
}

impl AdviceDiff {
    pub fn is_empty(&self) -> bool {
        self.new.is_empty() && self.changed.is_empty() && self.resolved.is_empty()
    }
}

/// Compares by id (`<action>:<class>`). Messages and evidence numbers move at
/// every checkpoint, so they alone never make a change: a class that still
/// needs data is not announced again because its F1 went from 0.31 to 0.33.
/// A class whose action changes shows as one resolved and one new id. Pass
/// `Advice::recommendations`; an empty `previous` makes everything new.
pub fn diff(previous: &[Recommendation], current: &[Recommendation]) -> AdviceDiff {
    let by_id = |list: &[Recommendation]| -> BTreeMap<String, Recommendation> {
        list.iter().map(|r| (r.id.clone(), r.clone())).collect()
    };
    let before = by_id(previous);
    let now = by_id(current);
    let mut diff = AdviceDiff {
        new: Vec::new(),
        changed: Vec::new(),
        resolved: Vec::new(),
    };
    for current in current {
        match before.get(&current.id) {
            None => diff.new.push(current.clone()),
            Some(previous)
                if previous.quadrant != current.quadrant
                    || previous.priority != current.priority =>
            {
                diff.changed.push(ChangedRecommendation {
                    previous: previous.clone(),
                    current: current.clone(),
                })
            }
            Some(_) => {}
        }
    }
    diff.resolved = previous
        .iter()
        .filter(|r| !now.contains_key(&r.id))
        .cloned()
        .collect();
    diff
}
