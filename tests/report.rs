//! The report and the sweep, end to end through the binary on the fixture run.

mod common;

use common::*;

/// Numbers rounded so that the snapshot holds across CPUs' last float bits.
fn rounded(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            serde_json::json!((x * 1e4).round() / 1e4)
        }
        serde_json::Value::Array(items) => items.into_iter().map(rounded).collect(),
        serde_json::Value::Object(map) => map.into_iter().map(|(k, v)| (k, rounded(v))).collect(),
        other => other,
    }
}

#[test]
fn report_json_snapshot_and_advice_table() {
    let dir = tempfile::tempdir().unwrap();
    let (output, state) = analyze_fixture(dir.path());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["schema"], "dwell.report/1");
    assert_eq!(report["examples"].as_array().unwrap().len(), 405);
    // The three classes with 10 training examples are the ones told to get data.
    let data_classes: Vec<&str> = report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "add_data")
        .map(|r| r["class"].as_str().unwrap())
        .collect();
    let mut sorted = data_classes.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["database", "editors", "mail"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("add data to class `editors`"), "{stdout}");

    let mut summary = rounded(report);
    // The per-example onsets are covered by the analytics tests; keep the snapshot readable.
    summary["examples"] = serde_json::json!(summary["examples"].as_array().unwrap()[..3]);
    insta::assert_json_snapshot!("tiny_run_report", summary, {
        ".run.directory" => "[run]",
        ".probe.path" => "[probe]",
    });
}

#[test]
fn sweep_json_has_rows_per_threshold_and_class() {
    let dir = tempfile::tempdir().unwrap();
    let (_, state) = analyze_fixture(dir.path());
    let output = dwell()
        .args([
            "sweep",
            "--detector",
            "distance",
            "--thresholds",
            "1,2,3,4,5",
            "--T",
            "4",
            "--json",
            "--state",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert_succeeded(&output);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let counts: Vec<u64> = rows
        .iter()
        .map(|r| r["trajectories"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "a larger D flags more: {counts:?}"
    );
    for row in rows {
        let per_class = row["per_class"].as_array().unwrap();
        assert_eq!(per_class.len(), 9);
        let sum: u64 = per_class
            .iter()
            .map(|c| c["trajectories"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, row["trajectories"].as_u64().unwrap());
        let share = row["share"].as_f64().unwrap();
        assert!((share - row["trajectories"].as_f64().unwrap() / 405.0).abs() < 1e-12);
    }
    let table = dwell()
        .args([
            "sweep",
            "--detector",
            "straightness",
            "--thresholds",
            "0.1,0.25",
            "--state",
        ])
        .arg(&state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("405 trajectories over 12 checkpoints"),
        "{text}"
    );
}
