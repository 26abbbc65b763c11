//! The paper's model family: Japanese BERTs with transformers' BertJapaneseTokenizer
//! (MeCab with ipadic or unidic-lite, then WordPiece or characters), token for token,
//! and their embeddings at PyTorch's parity. The dictionaries are the PyPI packages
//! `ipadic` and `unidic-lite` of the python3 on PATH (`.ci/run` installs them).

mod common;

use std::path::{Path, PathBuf};

use common::*;

const VARIANTS: [&str; 3] = ["ipadic", "unidic-lite", "char"];

fn arch(name: &str) -> PathBuf {
    fixtures().join("arch").join(name)
}

fn japanese_probe() -> PathBuf {
    arch("japanese/test.jsonl")
}

fn tokenize(
    checkpoint: &Path,
    configure: impl Fn(&mut std::process::Command),
) -> std::process::Output {
    let mut command = dwell();
    command
        .arg("tokenize")
        .arg(checkpoint)
        .arg("--probe")
        .arg(japanese_probe())
        .args(["--max-len", "64"])
        .env_remove("DWELL_MECAB_DICDIR");
    configure(&mut command);
    command.output().unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn tokenize_gives_transformers_ids_and_tokens_on_every_text_of_every_variant() {
    for variant in VARIANTS {
        let output = tokenize(
            &arch(&format!("japanese-{variant}-run/checkpoint-12")),
            |_| {},
        );
        assert_succeeded(&output);
        let ours = json_lines(&String::from_utf8(output.stdout).unwrap());
        let theirs = json_lines(
            &std::fs::read_to_string(arch(&format!("japanese-{variant}-tokens.jsonl"))).unwrap(),
        );
        assert_eq!(ours.len(), 30, "{variant}");
        assert_eq!(ours.len(), theirs.len(), "{variant}");
        for (row, (ours, theirs)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(ours["row"], row, "{variant}");
            assert_eq!(
                ours["ids"], theirs["input_ids"],
                "{variant} row {row}: {}",
                theirs["text"]
            );
            assert_eq!(ours["tokens"], theirs["tokens"], "{variant} row {row}");
        }
    }
}

#[test]
fn every_variant_matches_pytorch_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let reference = arch(&format!("japanese-{variant}-reference.safetensors"));
        for backend in available_backends() {
            let state = dir.path().join(format!("{variant}-{}", backend.flag()));
            embed_run_on(
                &arch(&format!("japanese-{variant}-run")),
                &japanese_probe(),
                &state,
                None,
                backend,
            );
            let (cls, logits) = max_differences(&state, &reference, &[12, 24]);
            eprintln!(
                "japanese-{variant} {}: max |cls - torch| = {cls:.2e}, max |logits - torch| = {logits:.2e}",
                backend.name()
            );
            assert!(cls <= 1e-4 && logits <= 1e-4, "{variant}: {cls} {logits}");
        }
    }
}

#[test]
fn a_missing_dictionary_names_itself_every_place_tried_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    // No python3 on PATH, no --mecab-dicdir: nowhere to find ipadic.
    let output = tokenize(&arch("japanese-ipadic-run/checkpoint-12"), |command| {
        command.env("PATH", dir.path());
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "the MeCab dictionary ipadic is not installed",
        "python3 on PATH",
        "pip install ipadic",
        "--mecab-dicdir",
        "tokenizer_config.json",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in {stderr}");
    }
    // Given the folder, it needs no Python at all; a folder without sys.dic is listed.
    let found = python_dicdir("ipadic");
    let output = tokenize(&arch("japanese-ipadic-run/checkpoint-12"), |command| {
        command
            .env("PATH", dir.path())
            .arg("--mecab-dicdir")
            .arg(&found);
    });
    assert_succeeded(&output);
    let output = tokenize(&arch("japanese-ipadic-run/checkpoint-12"), |command| {
        command
            .env("PATH", dir.path())
            .arg("--mecab-dicdir")
            .arg(dir.path());
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{} (--mecab-dicdir)", dir.path().display())),
        "{stderr}"
    );
}

/// The dictionary folder of the python3 on PATH, as the test machine has it.
fn python_dicdir(package: &str) -> PathBuf {
    let output = std::process::Command::new("python3")
        .args(["-c", &format!("import {package}; print({package}.DICDIR)")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python3 has no {package}: `pip install {package}` (.ci/run does)"
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// A copy of the ipadic checkpoint in `dir` with one key of tokenizer_config.json set.
fn ipadic_with(dir: &Path, key: &str, value: serde_json::Value) -> PathBuf {
    let checkpoint = dir.join("checkpoint");
    copy_dir(&arch("japanese-ipadic-run/checkpoint-12"), &checkpoint);
    let config_path = checkpoint.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(&config_path, config.to_string()).unwrap();
    checkpoint
}

#[test]
fn other_japanese_word_tokenizers_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = ipadic_with(dir.path(), "word_tokenizer_type", "sudachi".into());
    let output = tokenize(&checkpoint, |_| {});
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("word_tokenizer_type \"sudachi\" is not supported; supported: mecab"),
        "{stderr}"
    );
}

#[test]
fn do_lower_case_lowers_surfaces_but_never_the_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = ipadic_with(dir.path(), "do_lower_case", true.into());
    let output = tokenize(&checkpoint, |_| {});
    assert_succeeded(&output);
    let rows = json_lines(&String::from_utf8(output.stdout).unwrap());
    let tokens = |row: usize| -> Vec<String> {
        serde_json::from_value(rows[row]["tokens"].clone()).unwrap()
    };
    // Row 1's ＡＩ is "AI" after NFKC, in the vocabulary; lower-cased, "ai" is not.
    assert!(tokens(1).contains(&"[UNK]".to_string()));
    assert!(!tokens(1).contains(&"AI".to_string()), "{:?}", tokens(1));
    // Row 16's literal [SEP] stays the special token.
    assert_eq!(tokens(16).iter().filter(|t| *t == "[SEP]").count(), 2);
}
