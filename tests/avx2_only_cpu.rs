//! `dwell analyze` on a CPU without AVX-512, whatever CPU runs the tests: the binary runs
//! under `qemu-x86_64 -cpu Haswell` (Debian's qemu-user; .ci/run installs it), whose
//! CPUID reports AVX2 and FMA and no AVX-512, and which stops the process on any
//! AVX-512 instruction (QEMU does not emulate them). So this checks what forcing
//! `cpu-avx2` on an AVX-512 host cannot: that `--backend auto` picks the AVX2 kernel
//! there, and that nothing on the path (our kernels, candle's, the tokenizer's) assumes
//! AVX-512. The embeddings are held to PyTorch's, as in tests/parity.rs.
#![cfg(target_arch = "x86_64")]

mod common;

use common::{assert_succeeded, fixtures, max_differences, probe_path};

#[test]
fn analyze_on_an_avx2_only_cpu_picks_the_avx2_kernel_at_pytorch_parity() {
    let steps = [40, 240, 480];
    let dir = tempfile::tempdir().unwrap();
    let run = common::tiny_run_with(&steps, dir.path());
    let state = dir.path().join("state");
    let output = std::process::Command::new("qemu-x86_64")
        .args(["-cpu", "Haswell", env!("CARGO_BIN_EXE_dwell"), "analyze"])
        .arg(&run)
        .arg("--probe")
        .arg(probe_path())
        .args(["--max-len", "64", "--state"])
        .arg(&state)
        .env("DWELL_LOG", "warn")
        .output()
        .expect("qemu-x86_64 (Debian's qemu-user; .ci/run installs it)");
    assert_succeeded(&output);
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains("embedded 3 checkpoint(s)") && summary.contains("cpu (avx2) backend"),
        "expected the AVX2 kernel to embed all three checkpoints:\n{summary}"
    );
    let (cls, logits) = max_differences(
        &state,
        &fixtures().join("hf-tiny-run-reference.safetensors"),
        &steps,
    );
    println!("cpu (avx2) under qemu Haswell: max |cls - torch| = {cls:.2e}, max |logits - torch| = {logits:.2e}");
    assert!(cls <= 1e-4 && logits <= 1e-4, "cls {cls}, logits {logits}");
}
