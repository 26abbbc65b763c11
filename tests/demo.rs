//! `dwell demo`, shortened: training and the watcher together, end to end through the binary.

mod common;

use common::*;

#[test]
fn a_short_demo_trains_watches_and_prints_the_advice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let output = dwell()
        .env_remove("DWELL_LOG")
        .args(["demo", "--epochs", "1", "--save-steps", "12", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Both halves showed progress.
    assert!(
        stderr.contains("[train] step 48: checkpoint written"),
        "{stderr}"
    );
    assert!(stderr.contains("embedded step=48"), "{stderr}");
    // Every checkpoint the trainer wrote was embedded by the watcher.
    for step in [12, 24, 36, 48] {
        assert!(out
            .join(format!("run/checkpoint-{step}/trainer_state.json"))
            .is_file());
        assert!(out
            .join(format!("state/embeddings/step-{step}.safetensors"))
            .is_file());
    }
    assert!(stdout.contains("class      quadrant"), "{stdout}");
    assert!(stdout.contains("report: "), "{stdout}");
    assert!(out.join("state/report.html").is_file());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("state/report.json")).unwrap()).unwrap();
    assert_eq!(report["run"]["finished"], true);
    assert_eq!(report["checkpoints"].as_array().unwrap().len(), 4);
}
