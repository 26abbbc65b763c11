//! Which (class, action) changes have held long enough to announce, so that only news
//! is announced: priorities, messages and evidence numbers move at every checkpoint and
//! alone never make a change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::advice::{Action, Recommendation};

/// What happened to one class's advised action, as announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum ActionChange {
    /// The class now has an action where it had none.
    New { action: Action },
    /// The class's action is no longer advised.
    Resolved { action: Action },
    /// Another action replaces the announced one.
    Changed { from: Action, to: Action },
}

/// A class whose announced action differs from the current one, and for how many
/// consecutive checkpoints the current one has held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streak {
    pub action: Option<Action>,
    pub checkpoints: usize,
}

/// Per class: the streak of a not yet announced action. Kept between checkpoints (and
/// across restarts, by the caller) so that a change is announced only once it holds.
pub type Streaks = BTreeMap<String, Streak>;

fn actions(recommendations: &[Recommendation]) -> BTreeMap<&str, Action> {
    recommendations
        .iter()
        .map(|r| (r.class.as_str(), r.action))
        .collect()
}

/// Counts one more checkpoint of `current` advice into `streaks`: a class whose action
/// (or absence of one) differs from what was `announced` extends its streak, or starts
/// one when its action moved again; a class back at its announced action has none.
/// Priorities, messages and evidence play no part: only (class, action) is material.
pub fn extend_streaks(
    streaks: &mut Streaks,
    announced: &[Recommendation],
    current: &[Recommendation],
) {
    let before = actions(announced);
    let now = actions(current);
    let classes: std::collections::BTreeSet<&str> =
        before.keys().chain(now.keys()).copied().collect();
    streaks.retain(|class, _| classes.contains(class.as_str()));
    for class in classes {
        let (was, is) = (before.get(class).copied(), now.get(class).copied());
        if was == is {
            streaks.remove(class);
            continue;
        }
        let streak = streaks.entry(class.to_string()).or_insert(Streak {
            action: is,
            checkpoints: 0,
        });
        if streak.action != is {
            *streak = Streak {
                action: is,
                checkpoints: 0,
            };
        }
        streak.checkpoints += 1;
    }
}

/// The changes that have held for at least `hold` consecutive checkpoints (all of them
/// with `hold` 0, as at the end of a run), by class.
pub fn material_changes(
    streaks: &Streaks,
    announced: &[Recommendation],
    hold: usize,
) -> Vec<(String, ActionChange)> {
    let before = actions(announced);
    streaks
        .iter()
        .filter(|(_, streak)| streak.checkpoints >= hold)
        .filter_map(|(class, streak)| {
            let change = match (before.get(class.as_str()).copied(), streak.action) {
                (None, Some(action)) => ActionChange::New { action },
                (Some(action), None) => ActionChange::Resolved { action },
                (Some(from), Some(to)) if from != to => ActionChange::Changed { from, to },
                _ => return None,
            };
            Some((class.clone(), change))
        })
        .collect()
}

/// The announced advice after announcing `changes`: those classes take their current
/// recommendation (or lose theirs), every other class keeps what was announced.
pub fn announce(
    announced: &[Recommendation],
    current: &[Recommendation],
    changes: &[(String, ActionChange)],
) -> Vec<Recommendation> {
    let changed: std::collections::BTreeSet<&str> =
        changes.iter().map(|(class, _)| class.as_str()).collect();
    let kept = announced
        .iter()
        .filter(|r| !changed.contains(r.class.as_str()));
    let taken = current
        .iter()
        .filter(|r| changed.contains(r.class.as_str()));
    kept.chain(taken).cloned().collect()
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
    fn recommendations_survive_a_json_round_trip() {
        let before = advice_with_f1(&[("a", 0.1), ("b", 0.9)]);
        let json = serde_json::to_string(&before).unwrap();
        let reloaded: Vec<Recommendation> = serde_json::from_str(&json).unwrap();
        assert_eq!(reloaded, before);
    }

    fn actions_of(advice: &[Recommendation]) -> Vec<(String, Action)> {
        advice.iter().map(|r| (r.class.clone(), r.action)).collect()
    }

    #[test]
    fn a_change_is_material_only_once_it_has_held() {
        // a and b need data (low F1 everywhere, no dwell): the first advice.
        let first = advice_with_f1(&[("a", 0.1), ("b", 0.3)]);
        let mut streaks = Streaks::new();
        extend_streaks(&mut streaks, &[], &first);
        assert!(
            material_changes(&streaks, &[], 2).is_empty(),
            "one checkpoint"
        );
        // Reordered priorities on the next checkpoint: the same (class, action) pairs.
        let reordered = advice_with_f1(&[("a", 0.4), ("b", 0.3)]);
        extend_streaks(&mut streaks, &[], &reordered);
        let changes = material_changes(&streaks, &[], 2);
        assert_eq!(
            changes,
            [
                (
                    "a".to_string(),
                    ActionChange::New {
                        action: Action::AddData
                    }
                ),
                (
                    "b".to_string(),
                    ActionChange::New {
                        action: Action::AddData
                    }
                ),
            ]
        );
        let announced = announce(&[], &reordered, &changes);
        assert_eq!(actions_of(&announced), actions_of(&reordered));
        streaks.clear();
        // Priorities and F1 move again: nothing to say.
        extend_streaks(&mut streaks, &announced, &first);
        assert!(streaks.is_empty());
    }

    #[test]
    fn a_flicker_shorter_than_the_hold_is_never_announced_and_resolution_is() {
        let announced = advice_with_f1(&[("a", 0.1), ("b", 0.3)]);
        // b reaches F1 0.9 for one checkpoint (no action: healthy or wait), then drops.
        let b_fine = advice_with_f1(&[("a", 0.1), ("b", 0.9)]);
        let mut streaks = Streaks::new();
        extend_streaks(&mut streaks, &announced, &b_fine);
        extend_streaks(&mut streaks, &announced, &announced);
        assert!(streaks.is_empty(), "back where it was announced");
        for _ in 0..2 {
            extend_streaks(&mut streaks, &announced, &b_fine);
        }
        let changes = material_changes(&streaks, &announced, 2);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, "b");
        assert!(matches!(
            changes[0].1,
            ActionChange::Resolved {
                action: Action::AddData
            } | ActionChange::Changed {
                from: Action::AddData,
                ..
            }
        ));
        let now = announce(&announced, &b_fine, &changes);
        assert_eq!(actions_of(&now), actions_of(&b_fine));
    }
}
