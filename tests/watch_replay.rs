//! The replay of issue 19: a 12-checkpoint run written the way the Trainer writes it,
//! with `save_total_limit=1` rotation, while `dwell watch` (the library's, in this
//! process) embeds with a real embedder made slow: every checkpoint is embedded although
//! each lives about one checkpoint interval, the run folder is left exactly as the
//! Trainer left it, Slack hears at most 4 messages in all, and the metrics endpoint
//! shows the counters moving during the replay.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::slack_like::{Reply, SlackLike};
use common::trainer::{folder_state, rotate_like_the_trainer, write_like_the_trainer, WritePace};
use common::*;
use dwell::embed::{EmbedError, Embedder, Embeddings, ModelEmbedder, ModelSource, TokenizedProbe};
use dwell::sinks::{SinkConfig, SinkKind, WebhookUrl};
use dwell::watch::{AnnouncePolicy, WatchConfig, WatchExit};

/// The replay saved every 2 s; 1 s here keeps the test short, and the embedder
/// is made three times slower than that.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
const EMBED_DELAY: Duration = Duration::from_secs(3);

/// The real embedder, waiting `EMBED_DELAY` before it reads the checkpoint: by then the
/// rotation has removed the folder it was asked to read, unless it was secured.
struct SlowEmbedder(ModelEmbedder);

impl Embedder for SlowEmbedder {
    fn embed(
        &mut self,
        model: &ModelSource,
        probe: &TokenizedProbe,
    ) -> Result<Embeddings, EmbedError> {
        std::thread::sleep(EMBED_DELAY);
        self.0.embed(model, probe)
    }

    fn accepts(&self, family: dwell::checkpoint::Family) -> Result<(), EmbedError> {
        self.0.accepts(family)
    }
}

fn steps() -> Vec<u64> {
    (1..=12).map(|i| i * 40).collect()
}

fn watch_config(run: &Path, state: &Path, slack: &SlackLike, metrics_port: u16) -> WatchConfig {
    let url = format!("http://{}/services/T0/B0/replay", slack.address);
    let mut pipeline = pipeline_config(run, state);
    pipeline.settle = Duration::from_millis(300);
    WatchConfig {
        pipeline,
        poll: Duration::from_secs(10),
        exit_on_finish: true,
        sinks: vec![SinkConfig::new(
            "slack",
            SinkKind::Slack,
            WebhookUrl::parse(&url, "test").unwrap(),
        )],
        flush_deadline: Duration::from_secs(10),
        announce: AnnouncePolicy::default(),
        metrics_addr: Some(([127, 0, 0, 1], metrics_port).into()),
        remote: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_run_faster_than_embedding_is_embedded_whole_and_told_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let state = dir.path().join("state");
    let slack = SlackLike::start_on("127.0.0.1:0".parse().unwrap(), Vec::new()).await;
    let port = free_port();
    let config = watch_config(&run, &state, &slack, port);
    let embedders: dwell::watch::EmbedderFactory = Box::new(|| {
        ModelEmbedder::with_backend(32, dwell::embed::Backend::Candle)
            .map(|embedder| Box::new(SlowEmbedder(embedder)) as Box<dyn Embedder>)
    });
    let daemon = tokio::spawn(dwell::watch::watch(
        config,
        embedders,
        std::future::pending::<()>(),
    ));

    let trainer = {
        let run = run.clone();
        std::thread::spawn(move || {
            let mut last = Vec::new();
            for step in steps() {
                let name = format!("checkpoint-{step}");
                write_like_the_trainer(
                    &fixtures().join("hf-tiny-run").join(&name),
                    &run.join(&name),
                    WritePace::USUAL,
                );
                rotate_like_the_trainer(&run, 1);
                last = folder_state(&run.join(&name));
                std::thread::sleep(CHECKPOINT_INTERVAL);
            }
            last
        })
    };

    // Scraped while the replay runs: the counters move.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        assert!(Instant::now() < deadline, "nothing embedded in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok((status, body)) = tokio::task::spawn_blocking(move || get(port, "/metrics")).await
        else {
            continue;
        };
        assert!(status.contains("200"), "{status}");
        if metric(&body, "dwell_checkpoints_embedded_total") >= 1.0 {
            break body;
        }
    };
    assert!(
        metric(&first, "dwell_checkpoints_secured_total") >= 2.0,
        "{first}"
    );
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/healthz"))
        .await
        .unwrap();
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");
    let last_checkpoint_files = tokio::task::spawn_blocking(move || trainer.join().unwrap())
        .await
        .unwrap();
    let (status, later) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    assert!(status.contains("200"));
    assert!(
        metric(&later, "dwell_checkpoints_embedded_total")
            > metric(&first, "dwell_checkpoints_embedded_total"),
        "{later}"
    );
    assert!(
        metric(&later, "dwell_embed_seconds_count") >= 2.0,
        "{later}"
    );
    assert!(metric(&later, "dwell_since_last_checkpoint_seconds") < 30.0);
    assert_eq!(metric(&later, "dwell_checkpoint_gaps_total"), 0.0);

    let exit = tokio::time::timeout(Duration::from_secs(120), daemon)
        .await
        .expect("the daemon finished the run")
        .unwrap()
        .unwrap();
    assert_eq!(exit, WatchExit::Finished);

    // 12 of 12, although only the last checkpoint is left in the run folder.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap();
    let embedded: Vec<u64> = report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(embedded, steps());
    assert_eq!(report["gaps"], serde_json::json!([]));
    assert_eq!(report["skipped"], serde_json::json!([]));
    // The run folder exactly as the Trainer left it: one checkpoint, same files, sizes
    // and mtimes (its own mtime included); nothing of dwell's left in the state either.
    let left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["checkpoint-480"]);
    assert_eq!(
        folder_state(&run.join("checkpoint-480")),
        last_checkpoint_files
    );
    assert_eq!(
        std::fs::read_dir(state.join("secured")).unwrap().count(),
        0,
        "secured copies released once embedded"
    );

    // At most 4 messages, the run's summary last, carrying the final advice.
    let received = slack.received();
    let texts: Vec<&str> = received
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    eprintln!("{} Slack messages: {texts:#?}", received.len());
    assert!(
        (2..=4).contains(&received.len()),
        "{} messages: {texts:#?}",
        received.len()
    );
    assert!(texts.last().unwrap().contains("run finished"), "{texts:#?}");
    let recommendations = report["recommendations"].as_array().unwrap();
    let summary = received.last().unwrap().body.to_string();
    for recommendation in recommendations.iter().take(5) {
        let class = recommendation["class"].as_str().unwrap();
        assert!(summary.contains(class), "{class} missing from {summary}");
    }
    assert!(
        summary.contains(&format!("{} recommendation", recommendations.len())),
        "{summary}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("replay")),
        "the URL leaked"
    );
    assert_eq!(received[0].reply, Reply::Ok);
}
