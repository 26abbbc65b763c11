//! The advice and the clustering on real MiniLM fine-tuning trajectories
//! (tests/fixtures/minilm-dev: every fourth of 48 checkpoints, embedded by PyTorch;
//! training counts 400 / 100 / 10 per class, net, science and fonts having 10).
//! The stored trajectories feed the analysis and the advice directly.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use dwell::advise::{Action, Advice, Rules};
use dwell::analyze::params::AnalysisParams;
use dwell::checkpoint::TrainerState;
use dwell::pipeline::{advise_stored, score_stored, StoredEvidence};
use dwell::probe::{load_training_labels, LabelSet};
use dwell::store::{analyze_stored, PositionCache};
use dwell::store::{class_counts, StateDir};

fn fixture() -> PathBuf {
    common::fixtures().join("minilm-dev")
}

/// The advice `dwell analyze` would give on this run, with or without `--train`.
fn advice(with_train_counts: bool) -> Advice {
    let (state, manifest) = StateDir::open_existing(&fixture().join("state")).unwrap();
    let steps: Vec<u64> = state.stored_steps().unwrap().into_iter().collect();
    let names = &manifest.labels;
    let scored: Vec<_> = steps
        .iter()
        .map(|&step| {
            let stored = state.read_embeddings(step).unwrap();
            score_stored(&stored, &manifest.example_classes, names, false)
        })
        .collect();
    let checkpoints: Vec<_> = scored.iter().map(|s| s.summary.clone()).collect();
    let analysis = analyze_stored(
        &state,
        &mut PositionCache::default(),
        &steps,
        &manifest.example_classes,
        names.len(),
        &AnalysisParams::default(),
    )
    .unwrap();
    let train_counts = with_train_counts.then(|| {
        let labels = LabelSet {
            names: names.clone(),
        };
        let train = load_training_labels(&fixture().join("train.jsonl")).unwrap();
        class_counts(&labels.resolve(&train).unwrap(), names)
    });
    let trainer_state = TrainerState::load(&fixture().join("trainer_state.json")).unwrap();
    advise_stored(
        &analysis,
        &StoredEvidence {
            names,
            checkpoints: &checkpoints,
            latest_confusion: scored.last().and_then(|s| s.confusion.as_ref()),
            probe_counts: &class_counts(&manifest.example_classes, names),
            train_counts: train_counts.as_ref(),
            max_steps: trainer_state.max_steps,
        },
        &Rules::default(),
    )
}

fn decisions(advice: &Advice) -> BTreeMap<String, (String, Action)> {
    advice
        .classes
        .iter()
        .map(|c| {
            let quadrant = serde_json::to_value(c.quadrant).unwrap();
            (
                c.class.clone(),
                (quadrant.as_str().unwrap().to_string(), c.action),
            )
        })
        .collect()
}

#[test]
fn ten_example_classes_are_not_told_to_redefine_without_training_counts() {
    // Under the straightness detector (the default before) net and science settled
    // early with low F1 and were told to redefine; the distance detector sees them
    // still moving (late) and asks for data.
    let actions = decisions(&advice(false));
    for small in ["net", "science", "fonts"] {
        let (_, action) = &actions[small];
        assert!(
            matches!(action, Action::AddData | Action::TargetedData),
            "{small}: {:?}",
            actions[small]
        );
    }
    // What is not about data keeps its own advice: utils (400 examples, F1 0.55,
    // settled early) is the one vague label.
    assert_eq!(
        actions["utils"],
        ("early_low".into(), Action::RedefineClass)
    );
    assert_eq!(decisions(&advice(true)), actions);
}
