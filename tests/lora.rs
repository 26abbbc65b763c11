//! peft LoRA checkpoints: merged into their base model, found offline in a Hugging Face
//! cache or given with --base-model, at PyTorch+peft's parity on every backend.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;
use dwell::embed::Backend;
use dwell::store::StateDir;

const TOLERANCE: f32 = 1e-4;
const LABELS: &str = "games,net,utils,sound,fonts,science,mail,editors,database";
const STEPS: [u64; 3] = [30, 60, 90];

fn arch(name: &str) -> PathBuf {
    fixtures().join("arch").join(name)
}

/// `dwell analyze` with `extra` arguments, no Hugging Face cache but `cache` and no
/// home cache either: stderr, and whether it succeeded.
fn analyze(
    run: &Path,
    state: &Path,
    backend: Backend,
    cache: Option<&Path>,
    extra: &[&OsStr],
) -> (bool, String) {
    let mut command = dwell();
    command
        .env_remove("HF_HOME")
        .env("HOME", state.with_extension("home"))
        .args(["--backend", backend.flag(), "analyze"])
        .arg(run)
        .arg("--probe")
        .arg(probe_path())
        .args(["--max-len", "64", "--state"])
        .arg(state)
        .args(extra);
    match cache {
        Some(cache) => command.env("HF_HUB_CACHE", cache),
        None => command.env_remove("HF_HUB_CACHE"),
    };
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_matches_reference(state: &Path, reference: &str, what: &str) -> (f32, f32) {
    assert_matches(state, &arch(reference), &STEPS, what)
}

fn assert_matches(state: &Path, reference: &Path, steps: &[u64], what: &str) -> (f32, f32) {
    let (cls_error, logits_error) = max_differences(state, reference, steps);
    eprintln!(
        "{what}: max |cls - torch| = {cls_error:.2e}, max |logits - torch| = {logits_error:.2e}"
    );
    assert!(
        cls_error <= TOLERANCE && logits_error <= TOLERANCE,
        "{what}: cls {cls_error}, logits {logits_error}"
    );
    (cls_error, logits_error)
}

#[test]
fn lora_and_rslora_runs_match_peft_with_the_base_from_the_cache_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let labels_file = dir.path().join("labels.txt");
    std::fs::write(&labels_file, LABELS.replace(',', "\n")).unwrap();
    let cache = arch("hf-cache/hub");
    for backend in available_backends() {
        for (run, reference) in [
            ("bert-lora-run", "bert-lora-reference.safetensors"),
            ("bert-rslora-run", "bert-rslora-reference.safetensors"),
        ] {
            let name = backend.flag();
            // The base found offline by the adapter's base_model_name_or_path, in the cache.
            let state = dir.path().join(format!("{run}-{name}-cache"));
            let labels = [OsStr::new("--labels"), OsStr::new(LABELS)];
            let (ok, stderr) = analyze(&arch(run), &state, backend, Some(&cache), &labels);
            assert!(ok, "{stderr}");
            assert!(stderr.contains("embedded 3 checkpoint(s)"), "{stderr}");
            assert_matches_reference(&state, reference, &format!("{run} {name}, cache"));
            // The base given as a folder, and no cache at all.
            let state = dir.path().join(format!("{run}-{name}-flag"));
            let base = arch("bert-lora-base");
            let flags = [
                OsStr::new("--base-model"),
                base.as_os_str(),
                OsStr::new("--labels"),
                labels_file.as_os_str(),
            ];
            let (ok, stderr) = analyze(&arch(run), &state, backend, None, &flags);
            assert!(ok, "{stderr}");
            assert_matches_reference(&state, reference, &format!("{run} {name}, --base-model"));
        }
    }
}

#[test]
fn a_base_that_is_nowhere_is_named_with_every_place_searched() {
    let dir = tempfile::tempdir().unwrap();
    let empty_cache = dir.path().join("empty-cache");
    std::fs::create_dir(&empty_cache).unwrap();
    let (ok, stderr) = analyze(
        &arch("bert-lora-run"),
        &dir.path().join("state"),
        Backend::Candle,
        Some(&empty_cache),
        &[OsStr::new("--labels"), OsStr::new(LABELS)],
    );
    assert!(!ok);
    for needle in [
        "model \"dwell-fixtures/tiny-bert\" is nowhere to be found offline",
        "--base-model",
        "models--dwell-fixtures--tiny-bert",
        "adapter_config.json",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in {stderr}");
    }
}

#[test]
fn labels_are_never_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = arch("hf-cache/hub");
    let run = arch("bert-lora-run");
    let (ok, stderr) = analyze(
        &run,
        &dir.path().join("a"),
        Backend::Candle,
        Some(&cache),
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("its head has 9 classes") && stderr.contains("--labels NAME,NAME,..."),
        "{stderr}"
    );
    let two = [OsStr::new("--labels"), OsStr::new("games,net")];
    let (ok, stderr) = analyze(
        &run,
        &dir.path().join("b"),
        Backend::Candle,
        Some(&cache),
        &two,
    );
    assert!(!ok);
    assert!(
        stderr.contains("the head has 9 classes, --labels names 2"),
        "{stderr}"
    );
    // A probe labelled with class ids needs no names.
    let probe = dir.path().join("ids.jsonl");
    let names: Vec<&str> = LABELS.split(',').collect();
    let lines: Vec<String> = std::fs::read_to_string(probe_path())
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = names.iter().position(|n| *n == value["label"]).unwrap();
            value["label"] = id.into();
            value.to_string()
        })
        .collect();
    std::fs::write(&probe, lines.join("\n")).unwrap();
    let state = dir.path().join("ids");
    let output = dwell()
        .env("HF_HUB_CACHE", &cache)
        .args(["--backend", "candle", "analyze"])
        .arg(arch("bert-lora-run"))
        .arg("--probe")
        .arg(&probe)
        .args(["--max-len", "64", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert_succeeded(&output);
    assert_matches_reference(&state, "bert-lora-reference.safetensors", "integer labels");
}

#[test]
fn an_adapter_checkpoint_without_tokenizer_files_takes_its_bases() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    copy_dir(&arch("bert-lora-run"), &run);
    for step in STEPS {
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::remove_file(run.join(format!("checkpoint-{step}/{name}"))).unwrap();
        }
    }
    let state = dir.path().join("state");
    let labels = [OsStr::new("--labels"), OsStr::new(LABELS)];
    let cache = arch("hf-cache/hub");
    let (ok, stderr) = analyze(&run, &state, Backend::Candle, Some(&cache), &labels);
    assert!(ok, "{stderr}");
    assert_matches_reference(
        &state,
        "bert-lora-reference.safetensors",
        "base's tokenizer",
    );
}

#[test]
fn base_model_accepts_a_hub_id_for_step_zero() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let flags = [
        OsStr::new("--base-model"),
        OsStr::new("dwell-fixtures/tiny-bert"),
    ];
    let run = tiny_run_with(&[480], dir.path());
    let cache = arch("hf-cache/hub");
    let (ok, stderr) = analyze(&run, &state, Backend::Candle, Some(&cache), &flags);
    assert!(ok, "{stderr}");
    let (stored, _) = StateDir::open_existing(&state).unwrap();
    assert_eq!(
        stored
            .stored_steps()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![0, 480]
    );
    let base = stored.read_embeddings(0).unwrap();
    assert_eq!((base.hidden, base.logits.is_none()), (64, true));
}

/// LoRA on other families and other modules: rank and alpha patterns with `lora_bias`
/// and `dense` targets (RoBERTa), `Wqkv`/`Wo` with rsLoRA (ModernBERT), an Embedding
/// target (DistilBERT), DeBERTa-v2's projections; heads from `modules_to_save`.
#[test]
fn lora_on_every_family_and_module_kind_matches_peft() {
    use dwell::checkpoint::Family;
    let variants = fixtures().join("lora-variants");
    let cache = variants.join("hf-cache/hub");
    let dir = tempfile::tempdir().unwrap();
    let labels = [OsStr::new("--labels"), OsStr::new(LABELS)];
    for (name, family) in [
        ("roberta-lora-patterns", Family::Roberta),
        ("modernbert-lora-wqkv", Family::ModernBert),
        ("distilbert-lora-embedding", Family::DistilBert),
        ("deberta-v2-lora", Family::DebertaV2),
    ] {
        for backend in available_backends()
            .into_iter()
            .filter(|b| b.serves(family))
        {
            let state = dir.path().join(format!("{name}-{}", backend.flag()));
            let run = variants.join(format!("{name}-run"));
            let (ok, stderr) = analyze(&run, &state, backend, Some(&cache), &labels);
            assert!(ok, "{name}: {stderr}");
            assert_matches(
                &state,
                &variants.join(format!("{name}-reference.safetensors")),
                &[1, 2],
                &format!("{name} {}", backend.name()),
            );
        }
    }
}

/// A full checkpoint without tokenizer files takes the tokenizer of the model its
/// `config.json` says it was fine-tuned from (`_name_or_path`), found in the cache.
#[test]
fn a_full_checkpoint_without_tokenizer_files_takes_its_pretrained_models() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join("hf-tiny-run/checkpoint-480");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = dir.path().join("cache/models--dwell-test--tiny-run");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(source.join(name), snapshot.join(name)).unwrap();
    }
    let run = tiny_run_with(&[480], dir.path());
    let checkpoint = run.join("checkpoint-480");
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(checkpoint.join(name)).unwrap();
    }
    let config_path = checkpoint.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["_name_or_path"] = "dwell-test/tiny-run".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let state = dir.path().join("state");
    let cache = dir.path().join("cache");
    let (ok, stderr) = analyze(&run, &state, Backend::Candle, Some(&cache), &[]);
    assert!(ok, "{stderr}");
    let (cls, logits) = max_differences(
        &state,
        &fixtures().join("hf-tiny-run-reference.safetensors"),
        &[480],
    );
    assert!(
        cls <= TOLERANCE && logits <= TOLERANCE,
        "cls {cls}, logits {logits}"
    );
}
