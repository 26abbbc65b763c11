//! The demo's training writes checkpoints that dwell reads like a real Trainer's.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use dwell::checkpoint::{
    discover, load_tokenizer, Completeness, ModelConfig, TokenizerSource, WeightFiles,
};
use dwell::demo::{train, DemoConfig, TrainSummary};
use dwell::embed::{Embedder, ModelEmbedder, ModelSource, TokenizedProbe};

/// A few steps only: three save points two steps apart.
fn short_run(out: &Path) -> TrainSummary {
    let mut config = DemoConfig::new(out);
    config.max_steps = Some(6);
    config.save_steps = 2;
    let mut saved = Vec::new();
    let summary = train(&config, &mut |progress| {
        if let dwell::demo::TrainProgress::Saved { step, .. } = progress {
            saved.push(step);
        }
    })
    .unwrap();
    assert_eq!(saved, vec![2, 4, 6]);
    summary
}

/// Name → (dtype, shape) of every tensor, and the metadata.
fn tensor_layout(path: &Path) -> (BTreeMap<String, String>, Option<BTreeMap<String, String>>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let layout = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, format!("{:?} {:?}", view.dtype(), view.shape())))
        .collect();
    let info = metadata
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    (layout, info)
}

#[test]
fn demo_checkpoints_load_like_the_trainer_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let summary = short_run(dir.path());
    let fixture = fixtures().join("hf-tiny-run/checkpoint-40");

    let discovery = discover(&summary.run_dir).unwrap();
    let steps: Vec<u64> = discovery.checkpoints.iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![2, 4, 6]);
    let checkpoint = discovery.checkpoints.last().unwrap();
    let (weights, state) = match checkpoint.completeness().unwrap() {
        Completeness::Complete { weights, state } => (weights, state),
        Completeness::Incomplete { reason } => panic!("incomplete: {reason}"),
    };
    assert_eq!(
        weights,
        WeightFiles::Safetensors(checkpoint.path.join("model.safetensors"))
    );
    assert_eq!(
        (state.global_step, state.max_steps, state.save_steps),
        (6, Some(6), Some(2))
    );
    assert!(state.is_finished());
    let evaluations = state.evaluations();
    assert_eq!(
        evaluations.iter().map(|e| e.step).collect::<Vec<_>>(),
        vec![2, 4, 6]
    );
    for key in [
        "eval_loss",
        "eval_accuracy",
        "eval_macro_f1",
        "eval_f1_mail",
        "eval_f1_games",
    ] {
        assert!(evaluations[2].metrics.contains_key(key), "no {key}");
    }

    // The same architecture and labels as the Trainer's checkpoint, and the same tensors.
    let config = ModelConfig::load(&checkpoint.path.join("config.json")).unwrap();
    let expected = ModelConfig::load(&fixture.join("config.json")).unwrap();
    assert_eq!(config.labels().unwrap(), expected.labels().unwrap());
    assert_eq!(
        (
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads
        ),
        (
            expected.hidden_size,
            expected.num_hidden_layers,
            expected.num_attention_heads
        )
    );
    assert_eq!(
        (
            config.intermediate_size,
            config.max_position_embeddings,
            config.vocab_size
        ),
        (
            expected.intermediate_size,
            expected.max_position_embeddings,
            expected.vocab_size
        )
    );
    let (layout, metadata) = tensor_layout(&checkpoint.path.join("model.safetensors"));
    let (expected_layout, expected_metadata) = tensor_layout(&fixture.join("model.safetensors"));
    assert_eq!(layout, expected_layout);
    assert_eq!(metadata, expected_metadata);

    // The Trainer's write order: trainer_state.json last.
    let modified = |name: &str| {
        std::fs::metadata(checkpoint.path.join(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(modified(name) <= modified("trainer_state.json"), "{name}");
    }
    assert!(!checkpoint.path.join("training_args.bin").exists());

    // dwell's own tokenizer resolution and embedder agree with the logged evaluation.
    let (tokenizer, source) = load_tokenizer(
        &checkpoint.path,
        Some(&summary.run_dir),
        None,
        64,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        source,
        TokenizerSource::TokenizerJson(checkpoint.path.join("tokenizer.json"))
    );
    let probe = dwell::probe::load_probe(&summary.probe).unwrap();
    let texts: Vec<String> = probe.examples.iter().map(|e| e.text.clone()).collect();
    let tokenized = TokenizedProbe::new(&tokenizer, &texts, source.path()).unwrap();
    let mut embedder = ModelEmbedder::new(32).unwrap();
    let model = ModelSource {
        base: None,
        dir: checkpoint.path.clone(),
        config,
        weights,
    };
    let embeddings = embedder.embed(&model, &tokenized).unwrap();
    assert_eq!(
        (embeddings.rows(), embeddings.hidden, embeddings.num_labels),
        (405, 64, 9)
    );
    let classes = summary.labels.len();
    let predicted =
        dwell::analyze::classification::predictions(embeddings.logits.as_ref().unwrap(), classes);
    let truth = expected.labels().unwrap().unwrap().resolve(&probe).unwrap();
    let correct = predicted.iter().zip(&truth).filter(|(p, t)| p == t).count();
    let logged = evaluations[2].metrics["eval_accuracy"];
    assert!((correct as f64 / 405.0 - logged).abs() < 1e-9);
}

#[test]
fn short_demo_run_through_the_pipeline_to_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let summary = short_run(&dir.path().join("demo"));
    let state = dir.path().join("state");
    let mut pipeline = embed_run(
        &summary.run_dir,
        &summary.probe,
        &state,
        Some(summary.train.clone()),
    );
    let stored: Vec<u64> = pipeline
        .state()
        .stored_steps()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stored, vec![2, 4, 6]);
    let report = pipeline.build_report().unwrap();
    let steps: Vec<u64> = report.checkpoints.iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![2, 4, 6]);
    for (checkpoint, (step, eval)) in report.checkpoints.iter().zip(&summary.evaluations) {
        assert_eq!(checkpoint.step, *step);
        let per_class = checkpoint.per_class_f1.as_ref().unwrap();
        assert_eq!(per_class.len(), 9);
        for (label, f1) in &eval.f1 {
            assert!((per_class[label] - f1).abs() < 1e-9, "{label} at {step}");
        }
        assert!((checkpoint.macro_f1.unwrap() - eval.macro_f1).abs() < 1e-9);
    }
    assert_eq!(report.classes.len(), 9);
}
