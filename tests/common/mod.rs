//! Helpers shared by the integration tests: fixture copies and the PyTorch reference.
#![allow(dead_code)]

pub mod slack_like;
pub mod trainer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn probe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/debian-sections/test.jsonl")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the tiny run with only the given checkpoints.
pub fn tiny_run_with(steps: &[u64], into: &Path) -> PathBuf {
    let run = into.join("run");
    for step in steps {
        copy_dir(
            &fixtures().join(format!("hf-tiny-run/checkpoint-{step}")),
            &run.join(format!("checkpoint-{step}")),
        );
    }
    run
}

/// `step-<step>.cls` and `.logits` as computed by PyTorch, as flat f32 vectors.
pub fn reference() -> HashMap<String, (Vec<f32>, Vec<usize>)> {
    reference_in(&fixtures().join("hf-tiny-run-reference.safetensors"))
}

/// The tensors of a reference file (`<run>-reference.safetensors`), as flat f32 vectors.
pub fn reference_in(path: &Path) -> HashMap<String, (Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = dwell::store::f32_from_le_bytes(view.data());
            (name, (values, view.shape().to_vec()))
        })
        .collect()
}

/// The largest |stored − reference| of `cls` and of `logits` over `steps`, for the
/// embeddings stored in the state directory `state`.
pub fn max_differences(state: &Path, reference: &Path, steps: &[u64]) -> (f32, f32) {
    let (state, _) = dwell::store::StateDir::open_existing(state).unwrap();
    let reference = reference_in(reference);
    let (mut cls, mut logits) = (0f32, 0f32);
    for &step in steps {
        let stored = state.read_embeddings(step).unwrap();
        cls = cls.max(max_abs_difference(
            &stored.cls,
            &reference[&format!("step-{step}.cls")].0,
        ));
        logits = logits.max(max_abs_difference(
            stored.logits.as_ref().unwrap(),
            &reference[&format!("step-{step}.logits")].0,
        ));
    }
    (cls, logits)
}

pub fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "different sizes");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn dwell() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dwell"));
    command.env("DWELL_LOG", "warn");
    command
}

/// `GET path` on 127.0.0.1:`port`; the status line and the body.
pub fn get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the series `name` (with its labels, if any) in a Prometheus exposition.
pub fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in\n{exposition}"))
        .parse()
        .unwrap()
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `dwell analyze` on the fixture run with its training counts, into `dir/state`.
pub fn analyze_fixture(dir: &std::path::Path) -> (std::process::Output, std::path::PathBuf) {
    let state = dir.join("state");
    // The snapshot's rounded figures are pinned to one backend's last bits: candle's,
    // which every machine has.
    let output = dwell()
        .args(["--backend", "candle", "analyze"])
        .arg(fixtures().join("hf-tiny-run"))
        .arg("--probe")
        .arg(probe_path())
        .arg("--train")
        .arg(probe_path().with_file_name("train.jsonl"))
        .args(["--max-len", "64", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert_succeeded(&output);
    (output, state)
}

/// Opens the pipeline on `run_dir` with the shipped probe set and embeds everything.
pub fn embed_run(
    run_dir: &Path,
    probe: &Path,
    state: &Path,
    train: Option<PathBuf>,
) -> dwell::pipeline::Pipeline {
    embed_run_on(
        run_dir,
        probe,
        state,
        train,
        dwell::embed::Backend::best_available(),
    )
}

/// Every backend this machine can run, each forced: candle's always, and the cpu
/// backend on every instruction set the CPU has (on an AVX-512 CPU both the AVX-512 and
/// the AVX2 kernels).
pub fn available_backends() -> Vec<dwell::embed::Backend> {
    use dwell::embed::{Backend, Isa};
    let backends = Backend::available();
    let missing: Vec<&str> = Isa::ALL
        .into_iter()
        .filter(|isa| !backends.contains(&Backend::Cpu(*isa)))
        .map(Isa::name)
        .collect();
    eprintln!(
        "backends tested: {}; no kernel on this CPU: {}",
        backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", "),
        missing.join(", ")
    );
    backends
}

pub fn embed_run_on(
    run_dir: &Path,
    probe: &Path,
    state: &Path,
    train: Option<PathBuf>,
    backend: dwell::embed::Backend,
) -> dwell::pipeline::Pipeline {
    let config = dwell::pipeline::PipelineConfig {
        probe: probe.to_path_buf(),
        train,
        ..pipeline_config(run_dir, state)
    };
    let embedder = dwell::embed::ModelEmbedder::with_backend(32, backend).unwrap();
    let mut pipeline = dwell::pipeline::Pipeline::open(config, Box::new(embedder)).unwrap();
    pipeline
        .embed_pending(
            usize::MAX,
            &std::sync::atomic::AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
    pipeline
}

/// Fails the test with the command's stderr unless it exited 0.
pub fn assert_succeeded(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The pipeline settings of the tests: the shipped probe set, `--max-len 64`, every
/// other setting at its default, nothing to settle.
pub fn pipeline_config(run_dir: &Path, state: &Path) -> dwell::pipeline::PipelineConfig {
    dwell::pipeline::PipelineConfig {
        run_dir: run_dir.to_path_buf(),
        shown_as: None,
        probe: probe_path(),
        state_dir: Some(state.to_path_buf()),
        max_len: 64,
        base_model: None,
        labels: None,
        dictionaries: Default::default(),
        tokenizer: None,
        batch_size: 32,
        analysis: Default::default(),
        rules: Default::default(),
        train: None,
        settle: std::time::Duration::ZERO,
        secure_copy_limit: dwell::store::DEFAULT_COPY_LIMIT_BYTES,
    }
}
