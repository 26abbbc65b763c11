//! Embeddings and logits equal PyTorch's on every fixture checkpoint and weight layout.

mod common;

use common::*;
use dwell::analyze::classification::{macro_f1, predictions, ConfusionMatrix};
use dwell::embed::Backend;
use dwell::pipeline::Pipeline;
use dwell::store::StateDir;

const TOLERANCE: f32 = 1e-4;

fn run_pipeline(run_dir: &std::path::Path, state: &std::path::Path, backend: Backend) -> Pipeline {
    embed_run_on(run_dir, &probe_path(), state, None, backend)
}

fn assert_matches_reference(
    state: &StateDir,
    pipeline: &Pipeline,
    backend: Backend,
    step: u64,
    reference_step: u64,
) {
    let reference = reference();
    let stored = state.read_embeddings(step).unwrap();
    let (cls, cls_shape) = &reference[&format!("step-{reference_step}.cls")];
    let (logits, logits_shape) = &reference[&format!("step-{reference_step}.logits")];
    assert_eq!(cls_shape, &vec![405, 64]);
    assert_eq!(stored.hidden, 64);
    let cls_error = max_abs_difference(&stored.cls, cls);
    let logits_error = max_abs_difference(stored.logits.as_ref().unwrap(), logits);
    let backend = backend.name();
    eprintln!("{backend} step {step}: max |cls - torch| = {cls_error:.2e}, max |logits - torch| = {logits_error:.2e}");
    assert!(
        cls_error <= TOLERANCE,
        "{backend} step {step}: cls differs by {cls_error}"
    );
    assert!(
        logits_error <= TOLERANCE,
        "{backend} step {step}: logits differ by {logits_error}"
    );

    let classes = logits_shape[1];
    let truth = pipeline.probe_labels();
    let f1 = |logits: &[f32]| {
        let matrix = ConfusionMatrix::new(truth, &predictions(logits, classes), classes);
        let scores = matrix.scores();
        (
            scores.iter().map(|s| s.f1).collect::<Vec<_>>(),
            macro_f1(&scores),
        )
    };
    assert_eq!(
        f1(stored.logits.as_ref().unwrap()),
        f1(logits),
        "{backend} step {step}: F1"
    );
}

#[test]
fn every_tiny_run_checkpoint_matches_pytorch_on_every_backend() {
    for backend in available_backends() {
        every_tiny_run_checkpoint_matches_pytorch(backend);
    }
}

fn every_tiny_run_checkpoint_matches_pytorch(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let steps: Vec<u64> = (1..=12).map(|i| i * 40).collect();
    let run = tiny_run_with(&steps, dir.path());
    let mut pipeline = run_pipeline(&run, &dir.path().join("state"), backend);
    let state = pipeline.state().clone();
    assert_eq!(
        state
            .stored_steps()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        steps
    );
    for step in steps {
        assert_matches_reference(&state, &pipeline, backend, step, step);
    }
    // The report's F1 is the Trainer's own evaluation on the same texts.
    let report = pipeline.build_report().unwrap();
    let last = report.checkpoints.last().unwrap();
    let trainer_macro = 0.41820778854160123;
    assert!((last.macro_f1.unwrap() - trainer_macro).abs() < 1e-9);
}

/// A run directory whose one checkpoint holds `model_dir`'s files.
fn run_of_model(model_dir: &str, into: &std::path::Path) -> std::path::PathBuf {
    let run = into.join("run");
    let checkpoint = run.join("checkpoint-480");
    copy_dir(&fixtures().join(model_dir), &checkpoint);
    std::fs::copy(
        fixtures().join("hf-tiny-run/checkpoint-480/trainer_state.json"),
        checkpoint.join("trainer_state.json"),
    )
    .unwrap();
    run
}

#[test]
fn legacy_pickle_weights_with_vocab_txt_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_of_model("legacy-model", dir.path());
    for backend in available_backends() {
        let state = dir.path().join(format!("state-{}", backend.name()));
        let pipeline = run_pipeline(&run, &state, backend);
        assert_matches_reference(&pipeline.state().clone(), &pipeline, backend, 480, 480);
    }
}

#[test]
fn sharded_safetensors_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_of_model("sharded-model", dir.path());
    for backend in available_backends() {
        let state = dir.path().join(format!("state-{}", backend.name()));
        let pipeline = run_pipeline(&run, &state, backend);
        assert_matches_reference(&pipeline.state().clone(), &pipeline, backend, 480, 480);
    }
}
