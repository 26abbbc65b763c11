//! `dwell bench` end to end on the shipped tiny checkpoint: cases prepared, the whole-run
//! child run in two rounds, the figures printed; a second run reuses the prepared case.

mod common;

use common::{assert_succeeded, dwell, fixtures};
use dwell::embed::{Backend, Isa};

fn bench(cases: &std::path::Path, backend: Backend) -> std::process::Output {
    let output = dwell()
        .args(["--backend", backend.flag(), "bench"])
        .arg("--minilm")
        .arg(fixtures().join("hf-tiny-run/checkpoint-480"))
        .args([
            "--only",
            "minilm",
            "--passes",
            "1",
            "--loads",
            "1",
            "--checkpoints",
            "2",
            "--rounds",
            "2",
            "--threads",
            "2",
            "--cases",
        ])
        .arg(cases)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_succeeded(&output);
    output
}

/// The number in the dwell column of the row that starts with `label`.
fn figure(table: &str, label: &str) -> f64 {
    let line = table
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"));
    let value = line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .unwrap();
    value
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("{label}: {value:?} is not a number"))
}

#[test]
fn bench_prepares_the_cases_runs_the_whole_run_and_prints_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    let fastest = Backend::best_available();
    let output = bench(&cases, fastest);
    let table = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("preparing case minilm"), "{stderr}");

    // Which path ran, as the child said it: for the whole run and for the case.
    assert!(
        table.contains(&format!(
            "whole run, minilm, 2 checkpoints, {} backend, 2 round(s):",
            fastest.name()
        )),
        "{table}"
    );
    // Each round's whole process timed, and the first child's peak RSS measured.
    for round in ["1", "2"] {
        assert!(figure(&table, round) > 0.0, "{table}");
    }
    let whole = table
        .lines()
        .find(|line| line.contains("dwell analyze, whole process"))
        .unwrap();
    assert!(
        whole.contains("peak RSS") && !whole.contains("not measured"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "minilm: 405 texts, max length 64, {} backend",
            fastest.name()
        )),
        "{table}"
    );
    assert!(figure(&table, "texts/s") > 0.0);
    assert!(figure(&table, "tokens/s") > figure(&table, "texts/s"));
    assert!(figure(&table, "pass s, median of 1") > 0.0);
    assert!(figure(&table, "load s, median of 1") > 0.0);
    let padding = figure(&table, "padding share");
    assert!((0.0..100.0).contains(&padding), "{table}");
    // The probe has 405 texts of at least [CLS] and [SEP].
    assert!(figure(&table, "real tokens") >= 810.0);
    // The tiny checkpoint's model.safetensors is 0.53 MB.
    assert_eq!(figure(&table, "weights on disk MB"), 0.5, "{table}");
    assert!(figure(&table, "peak RSS, embedding MB") > 0.0, "{table}");

    // The whole-run child stored both checkpoints of the prepared run.
    let case = cases.join("minilm");
    let stored = std::fs::read_dir(case.join("whole-run-state/embeddings"))
        .unwrap()
        .count();
    assert_eq!(stored, 2);
    for step in [100, 200] {
        assert!(case
            .join(format!("run/checkpoint-{step}/trainer_state.json"))
            .is_file());
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
    assert_eq!(manifest["max_len"], 64);
    assert_eq!(manifest["texts"], 405);
    assert_eq!(manifest["run_checkpoints"], 2);
    let written = std::fs::read(case.join("dwell-output.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&written).unwrap();
    assert_eq!(tensors.tensor("cls").unwrap().shape(), [405, 64]);
    assert_eq!(tensors.tensor("logits").unwrap().shape(), [405, 9]);

    // Forced onto another path (AVX2 on a CPU with AVX-512 as well), both parts say so.
    let avx2 = Backend::Cpu(Isa::Avx2);
    let other = if fastest != avx2 && Isa::Avx2.supported() {
        avx2
    } else {
        Backend::Candle
    };
    let again = bench(&cases, other);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("is up to date"), "{stderr}");
    let table = String::from_utf8(again.stdout).unwrap();
    assert!(
        table.contains(&format!("2 checkpoints, {} backend", other.name()))
            && table.contains(&format!("max length 64, {} backend", other.name())),
        "{table}"
    );
}
