//! A run on S3: `dwell analyze s3://bucket/run/` against a real S3-compatible server
//! (moto's, from PyPI; .ci/run installs it) on loopback, compared with the same run on disk.

mod common;

use common::*;
use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

/// A secret that must never appear in any log line.
const SECRET: &str = "never-log-this-S3cr3t-value";

/// moto's S3 server on a free loopback port, stopped when dropped.
struct MotoServer {
    child: std::process::Child,
    port: u16,
}

impl MotoServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 with moto[server] (pip install 'moto[server]==5.2.1'; .ci/run does)");
        let server = Self { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto's server did not start on port {port}: is moto[server] installed?"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id("testing")
                .with_secret_access_key(SECRET)
                .build()
                .unwrap(),
        )
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Uploads every file under `dir` to `prefix/…`.
async fn upload(store: &dyn ObjectStore, dir: &Path, prefix: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = format!("{prefix}/{name}");
        if entry.file_type().unwrap().is_dir() {
            Box::pin(upload(store, &entry.path(), &key)).await;
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            store
                .put(&ObjectPath::from(key), PutPayload::from(bytes))
                .await
                .unwrap();
        }
    }
}

async fn listing(store: &dyn ObjectStore) -> Vec<(String, u64)> {
    use futures_util::StreamExt;
    let mut objects: Vec<(String, u64)> = store
        .list(None)
        .map(|meta| {
            let meta = meta.unwrap();
            (meta.location.to_string(), meta.size)
        })
        .collect()
        .await;
    objects.sort();
    objects
}

fn analyze(run: &std::ffi::OsStr, state: &Path, server: &MotoServer) -> std::process::Output {
    dwell()
        .args(["--backend", "candle", "analyze"])
        .arg(run)
        .arg("--probe")
        .arg(probe_path())
        .args(["--max-len", "64", "--state"])
        .arg(state)
        .env("DWELL_LOG", "debug")
        .env("AWS_ENDPOINT", server.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap()
}

#[test]
fn an_s3_run_embeds_as_the_same_run_on_disk() {
    let server = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let steps = [40, 80, 120];
    let run = tiny_run_with(&steps, dir.path());
    // What the Trainer also writes and dwell never reads: it must not be fetched.
    std::fs::write(run.join("checkpoint-80/optimizer.pt"), vec![7u8; 4096]).unwrap();
    std::fs::copy(
        run.join("checkpoint-40/tokenizer.json"),
        run.join("tokenizer.json"),
    )
    .unwrap();
    let store = server.store("sweep");
    let runtime = runtime();
    let before = runtime.block_on(async {
        let creator = reqwest::Client::new();
        let created = creator
            .put(format!("{}/sweep", server.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{created:?}");
        upload(store.as_ref(), &run, "runs/a").await;
        listing(store.as_ref()).await
    });

    let remote_state = dir.path().join("remote-state");
    let output = analyze("s3://sweep/runs/a/".as_ref(), &remote_state, &server);
    assert_succeeded(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(SECRET), "the secret was logged:\n{stderr}");
    assert!(stderr.contains("fetched 3 checkpoint(s)"), "{stderr}");

    let local_state = dir.path().join("local-state");
    assert_succeeded(&analyze(run.as_os_str(), &local_state, &server));

    let (remote, _) = dwell::store::StateDir::open_existing(&remote_state).unwrap();
    let (local, _) = dwell::store::StateDir::open_existing(&local_state).unwrap();
    assert_eq!(
        remote.stored_steps().unwrap(),
        local.stored_steps().unwrap()
    );
    for step in steps {
        assert_eq!(
            remote.read_embeddings(step).unwrap(),
            local.read_embeddings(step).unwrap(),
            "step {step}"
        );
    }
    let report = |state: &Path| -> serde_json::Value {
        let mut report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap();
        report["run"]["directory"] = serde_json::Value::Null;
        report
    };
    let remote_report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(remote_state.join("report.json")).unwrap()).unwrap();
    assert_eq!(remote_report["run"]["directory"], "s3://sweep/runs/a/");
    assert_eq!(report(&remote_state), report(&local_state));

    // The mirror keeps the newest checkpoint only, and never the unread files.
    let mirror = dwell::checkpoint::mirror_dir(&remote_state);
    let mirrored: Vec<String> = std::fs::read_dir(&mirror)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("checkpoint-"))
        .collect();
    assert_eq!(mirrored, vec!["checkpoint-120"]);
    assert!(mirror.join("tokenizer.json").is_file());
    // Nothing was written to the bucket.
    assert_eq!(runtime.block_on(listing(store.as_ref())), before);

    // A second run fetches nothing: every step is stored.
    let again = analyze("s3://sweep/runs/a/".as_ref(), &remote_state, &server);
    assert_succeeded(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("fetched 0 checkpoint(s)"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn an_s3_run_needs_a_local_state_and_a_bucket() {
    let output = dwell()
        .args(["analyze", "s3://bucket/run/", "--probe"])
        .arg(probe_path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--state"), "{stderr}");
}

#[test]
fn watch_polls_an_s3_run_until_it_finishes() {
    let server = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = server.store("nightly");
    let runtime = runtime();
    runtime.block_on(async {
        let created = reqwest::Client::new()
            .put(format!("{}/nightly", server.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{created:?}");
        upload(store.as_ref(), &tiny_run_with(&[440], dir.path()), "job").await;
    });
    let state = dir.path().join("state");
    let mut watcher = dwell()
        .args([
            "--backend",
            "candle",
            "watch",
            "s3://nightly/job",
            "--probe",
        ])
        .arg(probe_path())
        .args([
            "--max-len",
            "64",
            "--poll",
            "0.3",
            "--settle",
            "0.3",
            "--exit-on-finish",
        ])
        .arg("--state")
        .arg(&state)
        .env("DWELL_LOG", "debug")
        .env("AWS_ENDPOINT", server.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .stderr(std::fs::File::create(dir.path().join("watch.log")).unwrap())
        .spawn()
        .unwrap();
    // The last checkpoint (max_steps reached) arrives while the watcher runs.
    let first = dwell::checkpoint::mirror_dir(&state).join("checkpoint-440");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !first.exists() && !state.join("embeddings/step-440.safetensors").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint-440 was never fetched"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    runtime.block_on(upload(
        store.as_ref(),
        &tiny_run_with(&[480], &dir.path().join("later")),
        "job",
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = watcher.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = watcher.kill();
            panic!("the watcher did not finish");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let stderr = std::fs::read_to_string(dir.path().join("watch.log")).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret was logged:\n{stderr}");
    let (stored, _) = dwell::store::StateDir::open_existing(&state).unwrap();
    assert_eq!(
        stored
            .stored_steps()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![440, 480]
    );
    // The report (and every message built from it) names the run as the user did, not
    // its local mirror.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["run"]["directory"], "s3://nightly/job");
}
