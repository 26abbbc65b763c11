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
        let state = dir.path().join(format!("state-{}", backend.flag()));
        let pipeline = run_pipeline(&run, &state, backend);
        assert_matches_reference(&pipeline.state().clone(), &pipeline, backend, 480, 480);
    }
}

#[test]
fn sharded_safetensors_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_of_model("sharded-model", dir.path());
    for backend in available_backends() {
        let state = dir.path().join(format!("state-{}", backend.flag()));
        let pipeline = run_pipeline(&run, &state, backend);
        assert_matches_reference(&pipeline.state().clone(), &pipeline, backend, 480, 480);
    }
}

/// The cpu backend reads only the word-embedding rows of the probe's tokens: the
/// model embeds that probe exactly, and refuses a probe with tokens it did not read, or
/// tokens beyond the vocabulary, with an error instead of a wrong row.
#[test]
fn a_model_is_loaded_for_the_tokens_of_its_probe() {
    for backend in available_backends() {
        if let Backend::Cpu(_) = backend {
            a_model_is_loaded_for_the_tokens_of_its_probe_on(backend);
        }
    }
}

fn a_model_is_loaded_for_the_tokens_of_its_probe_on(backend: Backend) {
    use dwell::checkpoint::{ModelConfig, WeightFiles};
    use dwell::embed::{ModelEmbedder, ModelSource, TokenizedProbe};
    let dir = fixtures().join("hf-tiny-run/checkpoint-480");
    let source = ModelSource {
        base: None,
        config: ModelConfig::load(&dir.join("config.json")).unwrap(),
        weights: WeightFiles::find(&dir).unwrap().unwrap(),
        dir: dir.clone(),
    };
    let embedder = ModelEmbedder::with_backend(32, backend).unwrap();
    let vocab_size = source.config.vocab_size as u32;
    let probe = TokenizedProbe {
        ids: vec![vec![2, 7, 3], vec![2, 5, 5, 3]],
    };
    let model = embedder.load_model(&source, &probe).unwrap();
    let full = embedder
        .load_model(
            &source,
            &TokenizedProbe {
                ids: vec![(0..vocab_size).collect()],
            },
        )
        .unwrap();
    assert_eq!(
        embedder.embed_loaded(&model, &probe).unwrap().cls,
        embedder.embed_loaded(&full, &probe).unwrap().cls,
        "the rows read alone embed as the whole table does"
    );

    let other = TokenizedProbe {
        ids: vec![vec![2, 7, 3], vec![2, 9, 3]],
    };
    let refused = embedder
        .embed_loaded(&model, &other)
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused
            .contains("probe example 1 has token id 9, not among the ids the model was loaded for"),
        "{refused}"
    );
    let beyond = TokenizedProbe {
        ids: vec![vec![2, vocab_size, 3]],
    };
    let refused = embedder
        .load_model(&source, &beyond)
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains(&format!(
            "token id {vocab_size}, beyond the model's vocab_size {vocab_size}"
        )),
        "{refused}"
    );
}
