//! `dwell watch --runs ROOT`: a two-run sweep watched live by one process, its
//! `/metrics` labelled by run; a run whose model cannot be run beside a good one; a
//! bucket refused as ROOT.

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
    let port = free_port();
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
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
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

    // Scraped while it runs (each run is idle 3 s before it finishes): every run's
    // counters under its own label, the runs by status without one.
    let embedded_all = [
        "dwell_checkpoints_embedded_total{run=\"lr-a\"} 3",
        "dwell_checkpoints_embedded_total{run=\"lr-b\"} 2",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let scraped = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the watcher exited before a scrape showed both runs embedded: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "nothing scraped in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok((status, body)) = tokio::task::spawn_blocking(move || get(port, "/metrics")).await
        else {
            continue;
        };
        assert!(status.contains("200"), "{status}");
        if embedded_all
            .iter()
            .all(|line| body.lines().any(|l| l == *line))
        {
            break body;
        }
    };
    for run in ["lr-a", "lr-b"] {
        assert!(
            metric(
                &scraped,
                &format!("dwell_checkpoints_secured_total{{run=\"{run}\"}}")
            ) >= 2.0,
            "{scraped}"
        );
        assert!(
            metric(
                &scraped,
                &format!("dwell_embed_seconds_count{{run=\"{run}\"}}")
            ) >= 2.0,
            "{scraped}"
        );
    }
    assert_eq!(
        metric(&scraped, "dwell_runs{status=\"watching\"}"),
        2.0,
        "{scraped}"
    );
    assert!(
        !scraped
            .lines()
            .any(|l| l.starts_with("dwell_checkpoints_embedded_total ")),
        "an unlabelled per-run series: {scraped}"
    );
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/healthz"))
        .await
        .unwrap();
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");

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

/// A run whose `model_type` dwell refuses and one whose family the forced backend does
/// not run, beside a good run: each is reported once with its file and reason, marked
/// unsupported in the index, and not embedded; the good run is stored and the process
/// exits 0.
#[test]
fn runs_with_models_it_cannot_run_are_marked_unsupported_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sweep");
    let tiny = fixtures().join("hf-tiny-run/checkpoint-40");
    copy_dir(&tiny, &root.join("good/checkpoint-40"));
    let albert = root.join("albert/checkpoint-40");
    copy_dir(&tiny, &albert);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(albert.join("config.json")).unwrap()).unwrap();
    config["model_type"] = "albert".into();
    std::fs::write(albert.join("config.json"), config.to_string()).unwrap();
    copy_dir(
        &fixtures().join("arch/deberta-v2-run/checkpoint-30"),
        &root.join("deberta/checkpoint-30"),
    );
    // The cpu backend runs the good run's BERT, not DeBERTa-v2.
    let output = dwell()
        .args(["--backend", "cpu", "watch", "--runs"])
        .arg(&root)
        .arg("--probe")
        .arg(probe_path())
        .args(["--max-len", "64", "--poll", "0.2", "--settle", "0.1"])
        .args(["--idle", "1", "--exit-on-finish"])
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{logs}");

    let state = root.with_file_name("sweep-state");
    let (good, _) = dwell::store::StateDir::open_existing(&state.join("good")).unwrap();
    assert_eq!(
        good.stored_steps().unwrap().into_iter().collect::<Vec<_>>(),
        vec![40]
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("index.json")).unwrap()).unwrap();
    let run = |name: &str| {
        index
            .as_array()
            .unwrap()
            .iter()
            .find(|run| run["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {index:#}"))
            .clone()
    };
    assert_eq!(run("good")["status"], "finished");
    for (name, file, reason) in [
        (
            "albert",
            "albert/checkpoint-40/config.json",
            "model_type \"albert\" is not supported",
        ),
        (
            "deberta",
            "deberta/checkpoint-30/config.json",
            "backend does not run deberta-v2 models",
        ),
    ] {
        let entry = run(name);
        assert_eq!(entry["status"], "unsupported", "{entry:#}");
        let failure = entry["failure"].as_str().unwrap();
        assert!(
            failure.contains(file) && failure.contains(reason),
            "{name}: {failure}"
        );
        // Not embedded: no state of its own.
        assert!(!state.join(name).exists(), "{name}");
        let told: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("WARN") && line.contains(&format!("run={name}")))
            .collect();
        assert_eq!(told.len(), 1, "{name}: {logs}");
        assert!(
            told[0].contains(file) && told[0].contains(reason),
            "{}",
            told[0]
        );
    }
    let html = std::fs::read_to_string(state.join("index.html")).unwrap();
    assert!(html.contains("unsupported: "), "{html}");
}

/// A bucket is not a folder of runs: refused at start, naming the flag and what works.
#[test]
fn runs_on_object_storage_are_refused_with_what_works_instead() {
    let dir = tempfile::tempdir().unwrap();
    let output = dwell()
        .current_dir(dir.path())
        .args(["watch", "--runs", "s3://bucket/sweep/", "--probe"])
        .arg(probe_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--runs s3://bucket/sweep/") && stderr.contains("dwell watch s3://"),
        "{stderr}"
    );
    // Nothing made locally in its name.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
