//! `dwell analyze --embeddings DIR`: a run's stored embeddings exported as another
//! framework would write them give the report of the run itself.

mod common;

use common::*;
use std::path::Path;

/// `np.save`'s bytes for a C-order float32 matrix.
fn npy(values: &[f32], rows: usize, columns: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

/// Every stored step of `state` into `dir`: the even-numbered ones as `.npy` pairs, the
/// others as safetensors holding only `cls` and `logits` (no metadata).
fn export(state: &Path, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let (state, manifest) = dwell::store::StateDir::open_existing(state).unwrap();
    for (index, step) in state.stored_steps().unwrap().into_iter().enumerate() {
        let stored = state.read_embeddings(step).unwrap();
        let rows = stored.cls.len() / stored.hidden;
        let logits = stored.logits.unwrap();
        if index % 2 == 0 {
            std::fs::write(
                dir.join(format!("step-{step}.npy")),
                npy(&stored.cls, rows, stored.hidden),
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("step-{step}.logits.npy")),
                npy(&logits, rows, stored.num_labels),
            )
            .unwrap();
        } else {
            let cls: Vec<u8> = stored.cls.iter().flat_map(|v| v.to_le_bytes()).collect();
            let logit_bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            use safetensors::tensor::{Dtype, TensorView};
            let views = vec![
                (
                    "cls",
                    TensorView::new(Dtype::F32, vec![rows, stored.hidden], &cls).unwrap(),
                ),
                (
                    "logits",
                    TensorView::new(Dtype::F32, vec![rows, stored.num_labels], &logit_bytes)
                        .unwrap(),
                ),
            ];
            let bytes = safetensors::serialize(views, None).unwrap();
            std::fs::write(dir.join(format!("step-{step}.safetensors")), bytes).unwrap();
        }
    }
    manifest.labels
}

fn analyze_exported(dir: &Path, labels: &str, state: &Path) -> std::process::Output {
    dwell()
        .args(["analyze", "--embeddings"])
        .arg(dir)
        .arg("--probe")
        .arg(probe_path())
        .arg("--train")
        .arg(probe_path().with_file_name("train.jsonl"))
        .args(["--labels", labels, "--max-steps", "480", "--max-len", "64"])
        .arg("--state")
        .arg(state)
        .output()
        .unwrap()
}

/// The parts of a report that say where the embeddings came from, not what they show.
fn without_provenance(mut report: serde_json::Value) -> serde_json::Value {
    report["run"]["directory"] = serde_json::Value::Null;
    report["run"]["model_type"] = serde_json::Value::Null;
    for checkpoint in report["checkpoints"].as_array_mut().unwrap() {
        checkpoint["source"] = serde_json::Value::Null;
    }
    report
}

fn read_report(state: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap()
}

#[test]
fn exported_embeddings_give_the_report_of_their_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_, run_state) = analyze_fixture(dir.path());
    let exported = dir.path().join("exported");
    let labels = export(&run_state, &exported).join(",");
    let state = dir.path().join("exported-state");
    let output = analyze_exported(&exported, &labels, &state);
    assert_succeeded(&output);

    let from_run = read_report(&run_state);
    let from_files = read_report(&state);
    assert_eq!(from_files["run"]["model_type"], "exported");
    assert_eq!(from_files["checkpoints"][0]["source"], "step-40");
    assert_eq!(from_files["checkpoints"].as_array().unwrap().len(), 12);
    assert_eq!(without_provenance(from_run), without_provenance(from_files));
    assert!(state.join("report.html").is_file());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("add data to class `editors`"), "{stdout}");

    // The sweep reads the state alone: the same rows from both.
    let sweep = |state: &Path| {
        let output = dwell()
            .args([
                "sweep",
                "--detector",
                "relative",
                "--thresholds",
                "0.2,0.5",
                "--json",
            ])
            .arg("--state")
            .arg(state)
            .output()
            .unwrap();
        assert_succeeded(&output);
        output.stdout
    };
    assert_eq!(sweep(&run_state), sweep(&state));

    // A second run over the same folder stores nothing again and says the same.
    let again = analyze_exported(&exported, &labels, &state);
    assert_succeeded(&again);
    assert_eq!(
        without_provenance(read_report(&state)),
        without_provenance(read_report(&run_state))
    );
}

/// The fixture run's class names in id order, from its config.json.
fn fixture_labels() -> String {
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("hf-tiny-run/checkpoint-40/config.json")).unwrap(),
    )
    .unwrap();
    let id2label = config["id2label"].as_object().unwrap();
    (0..id2label.len())
        .map(|id| id2label[&id.to_string()].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_file_that_does_not_fit_the_probe_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let labels = fixture_labels();
    let exported = dir.path().join("exported");
    std::fs::create_dir_all(&exported).unwrap();
    // 405 probe examples; this file has 3 rows.
    std::fs::write(exported.join("step-5.npy"), npy(&[0.5; 6], 3, 2)).unwrap();
    let output = analyze_exported(&exported, &labels, &dir.path().join("state"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("step-5.npy") && stderr.contains("3 rows") && stderr.contains("405"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Names in the probe do not say which logit column is which class.
    std::fs::write(
        exported.join("step-5.npy"),
        npy(&vec![0.5; 405 * 2], 405, 2),
    )
    .unwrap();
    let output = dwell()
        .args(["analyze", "--embeddings"])
        .arg(&exported)
        .arg("--probe")
        .arg(probe_path())
        .arg("--state")
        .arg(dir.path().join("state2"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--labels"), "{stderr}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let output = analyze_exported(&empty, &labels, &dir.path().join("state3"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no step-<N>.safetensors"), "{stderr}");
}
