//! `dwell watch --runs ROOT`: a two-run sweep watched live by one process.

mod common;

use common::slack_like::{Reply, SlackLike};
use common::trainer::{write_like_the_trainer, WritePace};
use common::*;
use std::path::Path;
use std::time::Duration;

fn checkpoint(root: &Path, run: &str, step: u64) {
    write_like_the_trainer(
        &fixtures().join(format!("hf-tiny-run/checkpoint-{step}")),
        &root.join(run).join(format!("checkpoint-{step}")),
        WritePace::USUAL,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_run_sweep_is_watched_live_with_a_message_per_run_and_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sweep");
    std::fs::create_dir_all(&root).unwrap();
    // Run `lr-a` is there from the start, `lr-b` appears while dwell watches.
    checkpoint(&root, "lr-a", 40);
    let server = SlackLike::start_on("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let log = dir.path().join("watch.log");
    let mut child = dwell()
        .args(["--backend", "candle", "watch", "--runs"])
        .arg(&root)
        .arg("--probe")
        .arg(probe_path())
        .args([
            "--max-len",
            "64",
            "--poll",
            "0.2",
            "--settle",
            "0.3",
            "--idle",
            "3",
        ])
        .args(["--exit-on-finish", "--min-interval", "0"])
        .env("DWELL_LOG", "info")
        .env(
            "DWELL_SLACK_WEBHOOK",
            format!("http://{}/services/T0/B0/secret", server.address),
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let trainer = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(800));
            checkpoint(&root, "lr-b", 40);
            checkpoint(&root, "lr-a", 80);
            std::thread::sleep(Duration::from_millis(500));
            checkpoint(&root, "lr-b", 80);
            checkpoint(&root, "lr-a", 120);
        })
    };
    trainer.await.unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the watcher did not finish");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("secret"), "the webhook URL is in the logs");

    let state = root.with_file_name("sweep-state");
    let steps = |run: &str| -> Vec<u64> {
        let (stored, _) = dwell::store::StateDir::open_existing(&state.join(run)).unwrap();
        stored.stored_steps().unwrap().into_iter().collect()
    };
    assert_eq!(steps("lr-a"), vec![40, 80, 120]);
    assert_eq!(steps("lr-b"), vec![40, 80]);
    for run in ["lr-a", "lr-b"] {
        assert!(state.join(run).join("report.html").is_file(), "{run}");
        // Nothing of dwell's inside the run folders.
        assert!(!root.join(run).join(".dwell").exists(), "{run}");
    }
    // One embedding thread for both runs.
    assert!(!logs.contains("panicked"), "{logs}");

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("index.json")).unwrap()).unwrap();
    let runs = index.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["name"], "lr-a");
    assert_eq!(runs[0]["status"], "finished");
    assert_eq!(runs[0]["latest_step"], 120);
    assert_eq!(runs[0]["macro_f1"].as_array().unwrap().len(), 3);
    assert_eq!(runs[1]["macro_f1"].as_array().unwrap().len(), 2);
    let html = std::fs::read_to_string(state.join("index.html")).unwrap();
    assert!(
        html.contains("href=\"lr-a/report.html\"") && html.contains("<polyline"),
        "{html}"
    );

    // Each run is finished by --idle with a message of its own; none names both runs.
    let texts: Vec<String> = server
        .received()
        .iter()
        .filter(|r| r.reply == Reply::Ok)
        .map(|r| r.body.to_string())
        .collect();
    let finished_for = |run: &str| {
        texts
            .iter()
            .filter(|t| t.contains("run finished") && t.contains(&format!("sweep/{run}")))
            .count()
    };
    assert_eq!(finished_for("lr-a"), 1, "{texts:#?}");
    assert_eq!(finished_for("lr-b"), 1, "{texts:#?}");
    for text in &texts {
        assert!(
            !(text.contains("sweep/lr-a") && text.contains("sweep/lr-b")),
            "a message mixes runs: {text}"
        );
    }
}
