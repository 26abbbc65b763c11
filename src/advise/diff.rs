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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{advise, ClassEvidenceInput, DwellInput, Rules, RunInput};
    use super::*;

    fn advice_with_f1(f1_by_class: &[(&str, f64)]) -> Vec<Recommendation> {
        let classes: Vec<ClassEvidenceInput> = f1_by_class
            .iter()
            .map(|&(label, f1)| ClassEvidenceInput {
                label: label.to_owned(),
                probe_count: 10,
                dwell: BTreeMap::from([(
                    Rules::default().dwell.detector.name().to_owned(),
                    DwellInput {
                        onset_step: None,
                        dwell_fraction: 0.1,
                    },
                )]),
                f1_series: vec![f1; 4],
                latest_speed: None,
                most_confused_with: None,
                train_count: None,
            })
            .collect();
        let run = RunInput {
            steps: vec![100, 200, 300, 400],
            max_steps: None,
        };
        advise(&Rules::default(), &run, &classes).recommendations
    }

    #[test]
    fn everything_is_new_against_nothing() {
        let current = advice_with_f1(&[("a", 0.1), ("b", 0.9)]);
        let change = diff(&[], &current);
        assert_eq!(change.new, current);
        assert!(change.changed.is_empty() && change.resolved.is_empty());
    }

    #[test]
    fn a_new_priority_is_a_change_but_new_numbers_are_not() {
        let before = advice_with_f1(&[("a", 0.1), ("b", 0.3)]);
        let same_order = advice_with_f1(&[("a", 0.15), ("b", 0.35)]);
        assert!(diff(&before, &same_order).is_empty());

        // In current order: b now comes first.
        let swapped = advice_with_f1(&[("a", 0.4), ("b", 0.3)]);
        let change = diff(&before, &swapped);
        let ids: Vec<_> = change
            .changed
            .iter()
            .map(|c| {
                (
                    c.current.id.as_str(),
                    c.previous.priority,
                    c.current.priority,
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("add_data:b", Some(2), Some(1)),
                ("add_data:a", Some(1), Some(2))
            ]
        );
        assert!(change.new.is_empty() && change.resolved.is_empty());
    }

    #[test]
    fn advice_that_disappears_is_resolved() {
        let before = advice_with_f1(&[("a", 0.1), ("b", 0.3)]);
        let change = diff(&before, &advice_with_f1(&[("a", 0.1)]));
        let resolved: Vec<_> = change.resolved.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(resolved, ["add_data:b"]);
    }

    #[test]
    fn recommendations_survive_a_json_round_trip() {
        let before = advice_with_f1(&[("a", 0.1), ("b", 0.9)]);
        let json = serde_json::to_string(&before).unwrap();
        let reloaded: Vec<Recommendation> = serde_json::from_str(&json).unwrap();
        assert!(diff(&reloaded, &before).is_empty());
    }
}
