//! `dwell watch` as a user runs it: the real binary beside a simulated Trainer that
//! writes the fixture's checkpoints in the Trainer's order and rotates them, and a
//! real HTTP server on 127.0.0.1 that answers like Slack.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::slack_like::{Reply, SlackLike};
use common::*;

const SECRET_TOKEN: &str = "wAtChS3cr3t";

fn watch_command(run: &Path, state: &Path) -> std::process::Command {
    let mut command = dwell();
    command
        .env("DWELL_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("watch")
        .arg(run)
        .arg("--probe")
        .arg(probe_path())
        .args([
            "--max-len",
            "64",
            "--poll",
            "0.2",
            "--settle",
            "0.3",
            "--state",
        ])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn finish(child: Child, limit: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    let mut child = child;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let logs = String::from_utf8_lossy(&output.stderr).into_owned();
            return (status.code(), logs);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "dwell watch did not exit within {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then the daemon's logs once it has exited with status 0 (within 10 s).
fn terminate(child: Child) -> String {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, logs) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{logs}");
    logs
}

/// Steps named in "embedded" log lines, with how often each was embedded.
fn embedded_counts(logs: &str) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    // ": embedded " is the per-checkpoint line, not "waiting to be embedded" (a backlog).
    for line in logs.lines().filter(|l| l.contains(": embedded ")) {
        let step = line
            .split("step=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no step in {line}"));
        *counts.entry(step).or_insert(0) += 1;
    }
    counts
}

/// Writes `checkpoint-<step>` as the Trainer does: config, weights in chunks over time,
/// tokenizer, training args, and `trainer_state.json` last.
fn write_checkpoint_like_the_trainer(run: &Path, step: u64) {
    let source = fixtures().join(format!("hf-tiny-run/checkpoint-{step}"));
    write_like_the_trainer(&source, &run.join(format!("checkpoint-{step}")));
}

/// Copies the checkpoint folder `source` to `target` in the Trainer's order: the
/// configs, the weights (full or adapter) in chunks over time, the other files, and
/// `trainer_state.json` last.
fn write_like_the_trainer(source: &Path, target: &Path) {
    std::fs::create_dir_all(target).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(source)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|name| match name.as_str() {
        "config.json" | "adapter_config.json" => 0,
        "model.safetensors" | "adapter_model.safetensors" => 1,
        "trainer_state.json" => 3,
        _ => 2,
    });
    for name in names {
        if name.ends_with(".safetensors") {
            let weights = std::fs::read(source.join(&name)).unwrap();
            let mut file = std::fs::File::create(target.join(&name)).unwrap();
            for chunk in weights.chunks(weights.len() / 4 + 1) {
                file.write_all(chunk).unwrap();
                file.flush().unwrap();
                std::thread::sleep(Duration::from_millis(60));
            }
        } else {
            if name == "trainer_state.json" {
                std::thread::sleep(Duration::from_millis(30));
            }
            std::fs::copy(source.join(&name), target.join(&name)).unwrap();
        }
    }
}

/// The Trainer's `save_total_limit`: keep the newest `limit` checkpoints, rmtree the rest.
fn rotate(run: &Path, limit: usize) {
    let mut steps: Vec<u64> = std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort_unstable();
    for step in &steps[..steps.len().saturating_sub(limit)] {
        std::fs::remove_dir_all(run.join(format!("checkpoint-{step}"))).unwrap();
    }
}

fn simulate_training(
    run: PathBuf,
    steps: Vec<u64>,
    interval: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for step in steps {
            write_checkpoint_like_the_trainer(&run, step);
            rotate(&run, 2);
            std::thread::sleep(interval);
        }
    })
}

/// An empty run folder (training not started) and a state folder path, in `dir`.
fn empty_run(dir: &Path) -> (PathBuf, PathBuf) {
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    (run, dir.join("state"))
}

/// Returns once the daemon holds its lock on `state`.
fn wait_until_started(state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("dwell.lock").exists() {
        assert!(Instant::now() < deadline, "dwell watch did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all_steps() -> Vec<u64> {
    (1..=12).map(|i| i * 40).collect()
}

#[test]
fn a_live_run_with_rotation_is_embedded_once_per_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (run, state) = empty_run(dir.path());
    // Started before training: it waits for the first checkpoint.
    let child = watch_command(&run, &state)
        .arg("--exit-on-finish")
        .spawn()
        .unwrap();
    // Training starts once the daemon holds its lock and has looked at the empty run.
    wait_until_started(&state);
    std::thread::sleep(Duration::from_millis(500));
    let trainer = simulate_training(run.clone(), all_steps(), Duration::from_millis(900));
    let (code, logs) = finish(child, Duration::from_secs(120));
    trainer.join().unwrap();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("waiting for the first checkpoint"), "{logs}");
    let counts = embedded_counts(&logs);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        all_steps(),
        "{logs}"
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "embedded more than once: {counts:?}"
    );
    assert!(!logs.contains("skipped"), "{logs}");
    // Rotation left the two newest, exactly as the Trainer wrote them: dwell wrote nothing there.
    let mut left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["checkpoint-440", "checkpoint-480"]);
    let mut files: Vec<String> = std::fs::read_dir(run.join("checkpoint-480"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "trainer_state.json",
            "training_args.bin"
        ]
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["checkpoints"].as_array().unwrap().len(), 12);
}

fn slack_url(server: &SlackLike) -> String {
    format!(
        "http://{}/services/T0DWELL/B0WATCH/{SECRET_TOKEN}",
        server.address
    )
}

async fn run_to_finish(command: std::process::Command) -> (Option<i32>, String) {
    let mut command = command;
    let child = command.spawn().unwrap();
    tokio::task::spawn_blocking(move || finish(child, Duration::from_secs(90)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_each_message_once_in_order_and_a_restart_resends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&all_steps(), dir.path());
    let state = dir.path().join("state");
    let server = SlackLike::start_on(
        "127.0.0.1:0".parse().unwrap(),
        vec![Reply::ServerError, Reply::RateLimited, Reply::Ok, Reply::Ok],
    )
    .await;
    let mut command = watch_command(&run, &state);
    command
        .env("DWELL_SLACK_WEBHOOK", slack_url(&server))
        .arg("--exit-on-finish");
    let (code, logs) = run_to_finish(command).await;
    assert_eq!(code, Some(0), "{logs}");
    let received = server.received();
    assert!(
        received.iter().any(|r| r.reply == Reply::RateLimited)
            && received.iter().any(|r| r.reply == Reply::ServerError),
        "the 500 and the 429 were answered"
    );
    for secret in [slack_url(&server).as_str(), SECRET_TOKEN] {
        assert!(!logs.contains(secret), "the webhook URL is in the logs");
        let report = std::fs::read_to_string(state.join("report.json")).unwrap();
        assert!(!report.contains(secret), "the webhook URL is in the report");
    }

    // Restarted on the same state: nothing is embedded or announced again, and what the
    // first run could not deliver before it exited (1 message a second) goes out now.
    let mut restart_logs = String::new();
    for _ in 0..2 {
        let mut again = watch_command(&run, &state);
        again
            .env("DWELL_SLACK_WEBHOOK", slack_url(&server))
            .args(["--exit-on-finish", "--log-json"]);
        let (code, logs) = run_to_finish(again).await;
        assert_eq!(code, Some(0), "{logs}");
        assert!(embedded_counts(&logs).is_empty(), "{logs}");
        assert!(
            !logs.contains(SECRET_TOKEN),
            "the webhook URL is in the logs"
        );
        restart_logs.push_str(&logs);
    }
    let received = server.received();
    let delivered: Vec<String> = received
        .iter()
        .filter(|r| r.reply == Reply::Ok)
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_string())
        .collect();
    let step_of = |text: &str| -> u64 {
        let after = text
            .split("at step ")
            .nth(1)
            .unwrap_or_else(|| panic!("{text}"));
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let steps: Vec<u64> = delivered.iter().map(|t| step_of(t)).collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated: {delivered:#?}\n{restart_logs}"
    );
    assert!(
        delivered.last().unwrap().contains("run finished"),
        "{delivered:#?}"
    );
    assert!(delivered[..delivered.len() - 1]
        .iter()
        .all(|t| t.contains("advice changed")));
}

#[test]
fn killed_mid_run_and_restarted_embeds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (run, state) = empty_run(dir.path());
    let steps = all_steps();
    let (first_half, second_half) = (steps[..6].to_vec(), steps[6..].to_vec());
    let mut child = watch_command(&run, &state).spawn().unwrap();
    simulate_training(run.clone(), first_half, Duration::from_millis(700))
        .join()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(state.join("embeddings")).map_or(0, |d| d.count()) < 4 {
        assert!(Instant::now() < deadline, "nothing embedded in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let first = child.wait_with_output().unwrap();
    let first_logs = String::from_utf8_lossy(&first.stderr).into_owned();

    let child = watch_command(&run, &state)
        .arg("--exit-on-finish")
        .spawn()
        .unwrap();
    simulate_training(run.clone(), second_half, Duration::from_millis(700))
        .join()
        .unwrap();
    let (code, second_logs) = finish(child, Duration::from_secs(90));
    assert_eq!(code, Some(0), "{second_logs}");
    let mut counts = embedded_counts(&first_logs);
    for (step, n) in embedded_counts(&second_logs) {
        *counts.entry(step).or_insert(0) += n;
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "embedded twice: {counts:?}"
    );
    let stored = std::fs::read_dir(state.join("embeddings")).unwrap().count();
    assert_eq!(stored, counts.len());
    assert!(counts.contains_key(&480));
}

#[test]
fn sigterm_stops_within_ten_seconds_with_exit_0_and_a_second_daemon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run_with(&[40, 80, 120], dir.path());
    let state = dir.path().join("state");
    let child = watch_command(&run, &state).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.join("report.json").exists() {
        assert!(Instant::now() < deadline, "no report in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = watch_command(&run, &state).output().unwrap();
    let message = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{message}");
    assert!(
        message.contains("another dwell is already using this state directory"),
        "{message}"
    );

    let signalled = Instant::now();
    terminate(child);
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert!(state.join("report.json").exists());
}

/// A peft LoRA run written live, its base found in a Hugging Face cache: each adapter
/// checkpoint is embedded once, at peft's parity, as a full run's would be.
#[test]
fn a_live_lora_run_is_embedded_like_a_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let (run, state) = empty_run(dir.path());
    let child = watch_command(&run, &state)
        .env("HF_HUB_CACHE", fixtures().join("arch/hf-cache/hub"))
        .args([
            "--labels",
            "games,net,utils,sound,fonts,science,mail,editors,database",
            "--exit-on-finish",
        ])
        .spawn()
        .unwrap();
    wait_until_started(&state);
    let steps = [30, 60, 90];
    let trainer = {
        let run = run.clone();
        std::thread::spawn(move || {
            for step in steps {
                let name = format!("checkpoint-{step}");
                write_like_the_trainer(
                    &fixtures().join("arch/bert-lora-run").join(&name),
                    &run.join(&name),
                );
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    let (code, logs) = finish(child, Duration::from_secs(90));
    trainer.join().unwrap();
    assert_eq!(code, Some(0), "{logs}");
    let counts = embedded_counts(&logs);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), steps, "{logs}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(!logs.contains("skipped"), "{logs}");
    let (cls, _) = max_differences(
        &state,
        &fixtures().join("arch/bert-lora-reference.safetensors"),
        &steps,
    );
    assert!(cls <= 1e-4, "cls differs by {cls}");
}

/// Started before training, the daemon meets the first checkpoint with its config.json
/// still empty (the Trainer has just created it): it waits, and embeds the checkpoint
/// once trainer_state.json shows it complete.
#[test]
fn a_half_written_first_config_is_waited_out_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let first = run.join("checkpoint-40");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("config.json"), "").unwrap();
    let state = dir.path().join("state");
    let mut child = watch_command(&run, &state).spawn().unwrap();
    wait_until_started(&state);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "dwell watch exited on a half-written config.json"
    );
    write_checkpoint_like_the_trainer(&run, 40);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.join("embeddings/step-40.safetensors").exists() {
        assert!(Instant::now() < deadline, "step 40 was not embedded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = terminate(child);
    assert!(!logs.contains("invalid JSON"), "{logs}");
}
