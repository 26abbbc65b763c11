//! Every bad input gets a clear error naming the file (and line), or a listed skip: never a panic.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::*;

fn analyze(run: &Path, probe: &Path, state: &Path) -> std::process::Output {
    dwell()
        .arg("analyze")
        .arg(run)
        .arg("--probe")
        .arg(probe)
        .arg("--state")
        .arg(state)
        .args(["--max-len", "64"])
        .output()
        .unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clean_failure(output: &std::process::Output, needles: &[&str]) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "missing {needle:?} in: {message}");
    }
}

fn report(state: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap()
}

#[test]
fn bad_probe_lines_are_all_reported_before_any_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&[40], dir.path());
    let probe = dir.path().join("probe.jsonl");
    std::fs::write(
        &probe,
        "{\"text\": \"an smtp server\", \"label\": \"mail\"}\n{\"text\": \"\", \"label\": \"mail\"}\n{\"text\": \"x\", \"label\": \n",
    )
    .unwrap();
    let output = analyze(&run, &probe, &dir.path().join("state"));
    assert_clean_failure(
        &output,
        &[
            "probe.jsonl",
            "line 2: \"text\" is empty",
            "line 3: invalid JSON",
        ],
    );
    assert!(!dir.path().join("state/embeddings").exists());
}

#[test]
fn unknown_label_names_the_label_and_the_models_labels() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&[40], dir.path());
    let probe = dir.path().join("probe.csv");
    std::fs::write(
        &probe,
        "text,label\nan smtp server,mail\na chess game,sports\n",
    )
    .unwrap();
    let output = analyze(&run, &probe, &dir.path().join("state"));
    assert_clean_failure(
        &output,
        &[
            "probe.csv",
            "line 3: \"sports\"",
            "games, net, utils, sound",
        ],
    );
}

#[test]
fn corrupt_weights_and_missing_tokenizer_are_listed_skips_and_the_rest_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&[40, 80, 120], dir.path());
    let weights = run.join("checkpoint-80/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(run.join("checkpoint-120").join(name)).unwrap();
    }
    let state = dir.path().join("state");
    let output = analyze(&run, &probe_path(), &state);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = report(&state);
    let steps: Vec<u64> = report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![40]);
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[0]["step"], 80);
    assert!(skipped[0]["file"]
        .as_str()
        .unwrap()
        .ends_with("checkpoint-80/model.safetensors"));
    assert!(skipped[0]["reason"]
        .as_str()
        .unwrap()
        .contains("cannot read weights"));
    assert_eq!(skipped[1]["step"], 120);
    assert!(skipped[1]["reason"]
        .as_str()
        .unwrap()
        .contains("no tokenizer"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("skipped step 80"), "{stdout}");
}

#[test]
fn unsupported_model_type_names_what_is_supported() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&[40], dir.path());
    let config_path = run.join("checkpoint-40/config.json");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"model_type\": \"bert\"", "\"model_type\": \"albert\"");
    std::fs::write(&config_path, config).unwrap();
    let output = analyze(&run, &probe_path(), &dir.path().join("state"));
    assert_clean_failure(
        &output,
        &[
            "config.json",
            "\"albert\" is not supported; supported: bert, distilbert, roberta,",
        ],
    );
}

#[test]
fn a_changed_probe_file_is_refused_and_a_rerun_embeds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&[40], dir.path());
    let probe = dir.path().join("probe.jsonl");
    std::fs::copy(probe_path(), &probe).unwrap();
    let state = dir.path().join("state");
    assert!(analyze(&run, &probe, &state).status.success());
    let again = analyze(&run, &probe, &state);
    assert!(stderr(&again).contains("embedded 0 checkpoint(s), 1 already stored"));
    let mut changed = std::fs::read_to_string(&probe).unwrap();
    changed.push_str("{\"text\": \"one more mail client\", \"label\": \"mail\"}\n");
    std::fs::write(&probe, changed).unwrap();
    assert_clean_failure(
        &analyze(&run, &probe, &state),
        &["probe set changed", "another --state directory"],
    );
}

#[test]
fn a_run_without_checkpoints_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let output = analyze(
        &dir.path().join("run"),
        &probe_path(),
        &dir.path().join("state"),
    );
    assert_clean_failure(&output, &["no complete checkpoint"]);
}

#[test]
fn a_failed_checkpoint_is_retried_only_once_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&[40, 80], dir.path());
    let weights = run.join("checkpoint-80/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let mut pipeline = common::embed_run(&run, &probe_path(), &dir.path().join("state"), None);
    let pass = |pipeline: &mut dwell::pipeline::Pipeline| {
        let mut skips = 0;
        let summary = pipeline
            .embed_pending(usize::MAX, &AtomicBool::new(false), &mut |progress| {
                if let dwell::pipeline::Progress::Skipped(_) = progress {
                    skips += 1;
                }
            })
            .unwrap();
        (summary, skips)
    };
    // Unchanged: not read again, not reported again, still listed in the report.
    let (summary, skips) = pass(&mut pipeline);
    assert_eq!(
        (summary.unchanged_failures, summary.skipped, skips),
        (1, 0, 0)
    );
    assert!(summary.embedded.is_empty());
    assert_eq!(pipeline.build_report().unwrap().skipped.len(), 1);
    // The Trainer (or the user) rewrites the file: retried, embedded, no longer listed.
    std::fs::write(&weights, &bytes).unwrap();
    let (summary, skips) = pass(&mut pipeline);
    assert_eq!(
        (summary.embedded, summary.unchanged_failures, skips),
        (vec![80], 0, 0)
    );
    assert!(pipeline.build_report().unwrap().skipped.is_empty());
}
