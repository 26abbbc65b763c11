//! Every encoder family at PyTorch parity: each fixture run (a real Trainer run per
//! family, and variants that exercise the activations, biases, pooling, position
//! schemes and config formats) embedded through the pipeline on every backend that
//! serves the family on this machine, against what transformers computed.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dwell::checkpoint::Family;
use dwell::embed::Backend;

const TOLERANCE: f32 = 1e-4;

struct Case {
    run: &'static str,
    reference: &'static str,
    family: Family,
    steps: &'static [u64],
    hidden: usize,
}

const DEBIAN_STEPS: &[u64] = &[30, 60, 90];
const VARIANT_STEPS: &[u64] = &[1, 2];

const fn run(
    run: &'static str,
    reference: &'static str,
    family: Family,
    steps: &'static [u64],
    hidden: usize,
) -> Case {
    Case {
        run,
        reference,
        family,
        steps,
        hidden,
    }
}

const FAMILY_RUNS: &[Case] = &[
    run(
        "arch/distilbert-run",
        "arch/distilbert-reference.safetensors",
        Family::DistilBert,
        DEBIAN_STEPS,
        64,
    ),
    run(
        "arch/roberta-run",
        "arch/roberta-reference.safetensors",
        Family::Roberta,
        DEBIAN_STEPS,
        48,
    ),
    run(
        "arch/xlm-roberta-run",
        "arch/xlm-roberta-reference.safetensors",
        Family::XlmRoberta,
        DEBIAN_STEPS,
        64,
    ),
    run(
        "arch/deberta-v2-run",
        "arch/deberta-v2-reference.safetensors",
        Family::DebertaV2,
        DEBIAN_STEPS,
        64,
    ),
    run(
        "arch/modernbert-run",
        "arch/modernbert-reference.safetensors",
        Family::ModernBert,
        DEBIAN_STEPS,
        64,
    ),
    run(
        "arch/electra-run",
        "arch/electra-reference.safetensors",
        Family::Electra,
        DEBIAN_STEPS,
        64,
    ),
];

const VARIANT_RUNS: &[Case] = &[
    run(
        "variants/modernbert-cls-bias-run",
        "variants/modernbert-cls-bias-reference.safetensors",
        Family::ModernBert,
        VARIANT_STEPS,
        32,
    ),
    run(
        "variants/modernbert-v4-config-run",
        "variants/modernbert-cls-bias-reference.safetensors",
        Family::ModernBert,
        VARIANT_STEPS,
        32,
    ),
    run(
        "variants/bert-gelu-new-run",
        "variants/bert-gelu-new-reference.safetensors",
        Family::Bert,
        VARIANT_STEPS,
        32,
    ),
    run(
        "variants/electra-silu-run",
        "variants/electra-silu-reference.safetensors",
        Family::Electra,
        VARIANT_STEPS,
        32,
    ),
    run(
        "variants/distilbert-relu-run",
        "variants/distilbert-relu-reference.safetensors",
        Family::DistilBert,
        VARIANT_STEPS,
        32,
    ),
    run(
        "variants/deberta-v2-abs-c2p-run",
        "variants/deberta-v2-abs-c2p-reference.safetensors",
        Family::DebertaV2,
        VARIANT_STEPS,
        32,
    ),
    run(
        "variants/roberta-quick-gelu-run",
        "variants/roberta-quick-gelu-reference.safetensors",
        Family::Roberta,
        VARIANT_STEPS,
        32,
    ),
];

fn backends_for(family: Family) -> Vec<Backend> {
    available_backends()
        .into_iter()
        .filter(|backend| backend.serves(family))
        .collect()
}

/// Embeds `case` on `backend` and returns the largest differences from the reference.
fn measure(case: &Case, backend: Backend, scratch: &Path) -> (f32, f32) {
    let state = scratch.join(format!(
        "state-{}-{}",
        case.run.replace('/', "-"),
        backend.flag()
    ));
    let pipeline = embed_run_on(
        &fixtures().join(case.run),
        &probe_path(),
        &state,
        None,
        backend,
    );
    let stored_state = pipeline.state().clone();
    assert_eq!(
        stored_state
            .stored_steps()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        case.steps,
        "{}: every checkpoint embedded",
        case.run
    );
    let stored = stored_state.read_embeddings(case.steps[0]).unwrap();
    assert_eq!(stored.hidden, case.hidden, "{}", case.run);
    let reference = reference_in(&fixtures().join(case.reference));
    let (_, shape) = &reference[&format!("step-{}.cls", case.steps[0])];
    assert_eq!(shape, &vec![405, case.hidden], "{}", case.run);
    max_differences(
        stored_state.root(),
        &fixtures().join(case.reference),
        case.steps,
    )
}

fn assert_parity(cases: &[Case]) {
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let backends = backends_for(case.family);
        assert!(!backends.is_empty(), "{}: no backend serves it", case.run);
        for backend in backends {
            let (cls, logits) = measure(case, backend, scratch.path());
            eprintln!(
                "{:<40} {:<10} max |cls - torch| = {cls:.2e}, max |logits - torch| = {logits:.2e}",
                case.run,
                backend.name()
            );
            if cls > TOLERANCE || logits > TOLERANCE {
                failures.push(format!(
                    "{} on {}: cls {cls:.2e}, logits {logits:.2e}",
                    case.run,
                    backend.name()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "beyond {TOLERANCE}: {failures:#?}");
}

#[test]
fn every_family_run_matches_pytorch_on_every_backend_that_serves_it() {
    assert_parity(FAMILY_RUNS);
}

#[test]
fn activation_bias_pooling_and_position_variants_match_pytorch() {
    assert_parity(VARIANT_RUNS);
}

/// The family runs' checkpoints, copied with one config.json key changed.
fn run_with_config_change(
    run: &str,
    into: &Path,
    change: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let copy = into.join("run");
    copy_dir(&fixtures().join(run), &copy);
    for step in DEBIAN_STEPS {
        let path = copy.join(format!("checkpoint-{step}/config.json"));
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        change(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
    }
    copy
}

fn analyze_stderr(run: &Path, state: &Path, backend: &str) -> (bool, String) {
    let output = dwell()
        .args(["--backend", backend, "analyze"])
        .arg(run)
        .arg("--probe")
        .arg(probe_path())
        .args(["--max-len", "64", "--state"])
        .arg(state)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn analyze_names_the_family_and_the_backend_that_embedded_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = analyze_stderr(
        &fixtures().join("arch/modernbert-run"),
        &dir.path().join("modern"),
        "auto",
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("modernbert model, candle-cpu backend"),
        "{stderr}"
    );
    let (ok, stderr) = analyze_stderr(
        &fixtures().join("arch/roberta-run"),
        &dir.path().join("roberta"),
        "auto",
    );
    assert!(ok, "{stderr}");
    let fast = Backend::best_available().name();
    assert!(
        stderr.contains(&format!("roberta model, {fast} backend")),
        "{stderr}"
    );
}

#[test]
fn a_forced_backend_that_cannot_run_the_family_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for backend in available_backends() {
        if backend.serves(Family::DebertaV2) {
            continue;
        }
        let (ok, stderr) = analyze_stderr(
            &fixtures().join("arch/deberta-v2-run"),
            &dir.path().join(backend.flag()),
            backend.flag(),
        );
        assert!(!ok);
        assert!(
            stderr.contains(&format!(
                "the {} backend does not run deberta-v2 models",
                backend.name()
            )),
            "{stderr}"
        );
    }
}

/// `--backend avx512`, the name before the cpu backend had more than one instruction
/// set, still forces the AVX-512 kernel; `--backend cpu` takes the fastest this CPU has;
/// a kernel the CPU lacks is refused with what it needs.
#[test]
fn the_old_backend_name_and_the_cpu_choices_run_the_kernel_they_name() {
    use dwell::embed::Isa;
    let dir = tempfile::tempdir().unwrap();
    let run = fixtures().join("arch/roberta-run");
    for (flag, expected) in [
        ("avx512", Isa::Avx512),
        ("cpu", Isa::best().unwrap_or(Isa::Avx512)),
        ("cpu-avx2", Isa::Avx2),
        ("cpu-neon", Isa::Neon),
    ] {
        let (ok, stderr) = analyze_stderr(&run, &dir.path().join(flag), flag);
        if expected.supported() {
            assert!(ok, "{flag}: {stderr}");
            let name = Backend::Cpu(expected).name();
            assert!(
                stderr.contains(&format!("roberta model, {name} backend")),
                "{flag}: {stderr}"
            );
        } else {
            assert!(!ok, "{flag}: {stderr}");
            // `cpu` on a CPU without any kernel names no instruction set.
            assert!(
                stderr.contains("the cpu backend") && stderr.contains("needs"),
                "{flag}: {stderr}"
            );
        }
    }
}

#[test]
fn configs_it_cannot_run_are_refused_with_the_file_key_and_value() {
    let cases: [(&str, &str, serde_json::Value, &str); 5] = [
        (
            "arch/deberta-v2-run",
            "conv_kernel_size",
            3.into(),
            "`conv_kernel_size` 3 is not supported",
        ),
        (
            "arch/roberta-run",
            "position_embedding_type",
            "relative_key".into(),
            "`position_embedding_type` \"relative_key\" is not supported; supported: absolute",
        ),
        (
            "arch/electra-run",
            "hidden_act",
            "gelu_10".into(),
            "`hidden_act` \"gelu_10\" is not supported; supported: gelu,",
        ),
        (
            "arch/modernbert-run",
            "classifier_pooling",
            "max".into(),
            "`classifier_pooling` \"max\" is not supported; supported: cls, mean",
        ),
        (
            "arch/deberta-v2-run",
            "pos_att_type",
            serde_json::json!(["p2p"]),
            "`pos_att_type` \"p2p\" is not supported; supported: c2p, p2c",
        ),
    ];
    for (run, key, value, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let copy = run_with_config_change(run, dir.path(), |config| config[key] = value.clone());
        let (ok, stderr) = analyze_stderr(&copy, &dir.path().join("state"), "auto");
        assert!(!ok, "{run} with {key} = {value}: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.contains("config.json"),
            "{run} with {key} = {value}: {stderr}"
        );
    }
}

#[test]
fn a_missing_head_tensor_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("run");
    copy_dir(&fixtures().join("arch/distilbert-run"), &copy);
    for step in DEBIAN_STEPS {
        let path = copy.join(format!("checkpoint-{step}/model.safetensors"));
        let bytes = std::fs::read(&path).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .tensors()
            .into_iter()
            .filter(|(name, _)| !name.starts_with("pre_classifier."))
            .collect();
        let written = safetensors::serialize(kept, None).unwrap();
        std::fs::write(&path, written).unwrap();
    }
    let (ok, stderr) = analyze_stderr(&copy, &dir.path().join("state"), "auto");
    assert!(!ok || stderr.contains("skipped"), "{stderr}");
    assert!(
        stderr.contains("tensor pre_classifier.weight is missing"),
        "{stderr}"
    );
}
