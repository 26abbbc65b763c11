//! The PyTorch and ONNX Runtime baselines: `bench/torch_baseline.py` run on the
//! prepared cases with the same thread count and batch size, and the JSON it writes
//! (schema documented at the top of the script).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::cases::{read_json, CaseName};
use super::whole_run::describe_command;
use super::{median, BenchConfig, BenchError, BenchProgress};

pub const BASELINE_SCHEMA: &str = "dwell.torch-baseline/2";

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Baseline {
    pub schema: String,
    pub torch: String,
    pub transformers: String,
    pub threads: usize,
    pub batch_size: usize,
    /// ONNX Runtime's version, when it ran (`--ort`).
    pub onnxruntime: Option<String>,
    /// By case folder name.
    pub cases: BTreeMap<String, BaselineCase>,
    pub whole_run: Option<BaselineWholeRun>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BaselineCase {
    pub texts: usize,
    pub load_seconds: Vec<f64>,
    pub tokenize_seconds: f64,
    pub pass_seconds: Vec<f64>,
    pub tokens: usize,
    pub padded_tokens: usize,
    pub rss_at_start_bytes: Option<u64>,
    pub loading_peak_rss_bytes: Option<u64>,
    pub embedding_peak_rss_bytes: Option<u64>,
    /// Peak RSS of the whole Python process so far, torch's import included.
    pub process_max_rss_bytes: u64,
    pub attn_implementation: String,
    pub parity: Option<Parity>,
    pub ort: Option<OrtCase>,
}

/// ONNX Runtime on the exported model, length-sorted batches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrtCase {
    /// The InferenceSession created from the exported file (the export not counted).
    pub session_seconds: f64,
    pub pass_seconds: Vec<f64>,
    pub padded_tokens: usize,
    pub parity: Option<Parity>,
}

impl OrtCase {
    pub fn pass_median(&self) -> f64 {
        median(&self.pass_seconds)
    }
}

/// Largest absolute differences between PyTorch's outputs and dwell's.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Parity {
    pub cls_max_abs_diff: f64,
    pub logits_max_abs_diff: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BaselineWholeRun {
    pub checkpoints: usize,
    pub pass_seconds: Vec<f64>,
    /// ONNX Runtime's sorted pass per checkpoint, when it ran.
    pub ort_pass_seconds: Option<Vec<f64>>,
}

impl BaselineCase {
    pub fn pass_median(&self) -> f64 {
        median(&self.pass_seconds)
    }
}

impl BaselineWholeRun {
    /// The embedding passes alone, one per checkpoint, summed.
    pub fn total_seconds(&self) -> f64 {
        self.pass_seconds.iter().sum()
    }

    /// ONNX Runtime's passes alone, summed.
    pub fn ort_total_seconds(&self) -> Option<f64> {
        self.ort_pass_seconds
            .as_ref()
            .map(|passes| passes.iter().sum())
    }
}

/// The modules the baseline imports: PyTorch's, and ONNX Runtime's with the exporter's
/// (`pip install onnxruntime onnx onnxscript`) unless `--no-ort`.
fn imports(ort: bool) -> &'static str {
    if ort {
        "import torch, transformers, safetensors, onnxruntime, onnx, onnxscript"
    } else {
        "import torch, transformers, safetensors"
    }
}

/// Fails early, before minutes of measuring, when `python` cannot run the baseline.
pub(crate) fn check_python(python: &Path, ort: bool) -> Result<(), BenchError> {
    let args: Vec<OsString> = vec!["-c".into(), imports(ort).into()];
    let output = Command::new(python)
        .args(&args)
        .output()
        .map_err(|error| BenchError::Spawn {
            program: python.to_path_buf(),
            error,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    stderr.push_str(if ort {
        "\nthe baseline needs `pip install torch transformers safetensors onnxruntime onnx \
         onnxscript` in that Python (or --no-ort to leave ONNX Runtime out)"
    } else {
        "\nthe baseline needs `pip install torch transformers safetensors` in that Python"
    });
    Err(BenchError::ChildFailed {
        command: describe_command(python, &args),
        status: output.status.to_string(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    })
}

/// What one run of the script measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The cases, as `dwell bench` measures them in-process.
    Cases,
    /// One whole run over the minilm case's checkpoints: one round of the comparison.
    WholeRun { round: usize },
}

impl Part {
    /// Where in the cases folder the script writes this part's JSON.
    pub(crate) fn file_name(self) -> String {
        match self {
            Part::Cases => "torch.json".into(),
            Part::WholeRun { round } => format!("torch-whole-run-{round}.json"),
        }
    }
}

/// Runs the script for `part`, writing its JSON into the cases folder.
pub(crate) fn run(
    config: &BenchConfig,
    python: &Path,
    script: &Path,
    part: Part,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<Baseline, BenchError> {
    let part_flag = match part {
        Part::Cases => "cases",
        Part::WholeRun { .. } => "whole-run",
    };
    let out = config.cases_dir.join(part.file_name());
    if out.exists() {
        std::fs::remove_file(&out).map_err(BenchError::io(&out))?;
    }
    let mut args: Vec<OsString> = vec![
        script.into(),
        "--cases".into(),
        config.cases_dir.clone().into(),
        "--threads".into(),
        config.threads.to_string().into(),
        "--passes".into(),
        config.passes.to_string().into(),
        "--loads".into(),
        config.loads.to_string().into(),
        "--batch-size".into(),
        config.batch_size.to_string().into(),
        "--part".into(),
        part_flag.into(),
        "--out".into(),
        out.clone().into(),
    ];
    if config.ort {
        args.push("--ort".into());
    }
    let cases = match part {
        Part::Cases => config.cases.clone(),
        Part::WholeRun { .. } => vec![CaseName::Minilm],
    };
    for case in cases {
        args.push("--only".into());
        args.push(case.dir_name().into());
    }
    let command_line = describe_command(python, &args);
    progress(BenchProgress::Baseline {
        command: &command_line,
    });
    // Its progress and summary go to stderr: stdout is for dwell's table.
    let status = Command::new(python)
        .args(&args)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|error| BenchError::Spawn {
            program: python.to_path_buf(),
            error,
        })?;
    if !status.success() {
        return Err(BenchError::BaselineFailed {
            command: command_line,
            status: status.to_string(),
        });
    }
    let baseline: Baseline = read_json(&out)?;
    if baseline.schema != BASELINE_SCHEMA {
        return Err(BenchError::Invalid {
            path: out,
            message: format!(
                "schema {:?}, expected {BASELINE_SCHEMA:?}: the script and this dwell differ in version",
                baseline.schema
            ),
        });
    }
    Ok(baseline)
}
