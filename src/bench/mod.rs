//! `dwell bench`: embedding throughput, load time and peak memory on fixed cases, with
//! `bench/torch_baseline.py` measuring the same cases with PyTorch for comparison
//! (docs/BENCH.md). It sits beside the pipeline: it uses `checkpoint`, `embed` and
//! `probe` directly, and nothing imports it.
//!
//! The order matters: the cases are prepared first; the first whole-run `dwell analyze`
//! child runs before any other child process (the Python check included), so that the
//! children's peak RSS is its own; with `--python`, each whole run is followed by
//! PyTorch's, round after round, so that the host's drift in speed (up to 2× within
//! minutes on a shared VM) touches both alike; then each case is measured in this
//! process, and PyTorch measures the cases last.

mod baseline;
mod cases;
mod measure;
mod memory;
mod table;
mod weights;
mod whole_run;

pub use baseline::{Baseline, BaselineCase, BaselineWholeRun, OrtCase, Parity, BASELINE_SCHEMA};
pub use cases::{CaseManifest, CaseName, CaseSource, PreparedCase, GENERATOR_VERSION};
pub use measure::{CaseMeasurement, PeakMemory};
pub use table::render;
pub use whole_run::{WholeRunMeasurement, WholeRunRound};

use std::path::{Path, PathBuf};

use crate::checkpoint::CheckpointError;
use crate::embed::{Backend, BackendChoice, EmbedError, Isa};
use crate::probe::ProbeError;
use crate::store::StoreError;

/// Where `--python` finds the baseline, relative to the working directory (the repository root).
pub const BASELINE_SCRIPT: &str = "bench/torch_baseline.py";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    // The message holds the I/O error itself: as a `source` it would print twice in
    // main's `{:#}` chain.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Flag(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start {program}: {error}")]
    Spawn {
        program: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "`{command}` failed ({status})\n--- its stdout ---\n{stdout}\n--- its stderr ---\n{stderr}"
    )]
    ChildFailed {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` failed ({status}); its output is above")]
    BaselineFailed { command: String, status: String },
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| BenchError::Io { path, error }
    }
}

/// What `dwell bench` measures, and with what.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The all-MiniLM-L6-v2 folder (or any BERT checkpoint folder); only read.
    pub minilm: PathBuf,
    pub probe: PathBuf,
    pub cases_dir: PathBuf,
    pub cases: Vec<CaseName>,
    /// Timed passes per case, after one untimed warm-up pass.
    pub passes: usize,
    pub loads: usize,
    /// Checkpoints in the whole-run case.
    pub checkpoints: usize,
    /// Whole runs of `dwell analyze`, each followed by PyTorch's with `--python`.
    pub rounds: usize,
    pub threads: usize,
    /// `--backend`: the in-process cases and the `dwell analyze` children embed with it.
    pub backend: BackendChoice,
    pub batch_size: usize,
    /// The `dwell` binary the whole-run case runs as a child.
    pub dwell_exe: PathBuf,
    /// A Python with torch and transformers, to run [`BASELINE_SCRIPT`] with.
    pub python: Option<PathBuf>,
    /// With `python`: ONNX Runtime on the exported model too (onnxruntime, onnx and
    /// onnxscript installed there).
    pub ort: bool,
}

/// What the bench tells its caller while it works (each step can take minutes).
#[derive(Debug)]
pub enum BenchProgress<'a> {
    Preparing {
        case: CaseName,
        dir: &'a Path,
    },
    Reused {
        case: CaseName,
        dir: &'a Path,
    },
    WholeRun {
        round: usize,
        rounds: usize,
        checkpoints: usize,
        command: &'a str,
    },
    Measuring {
        case: CaseName,
    },
    Baseline {
        command: &'a str,
    },
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub machine: Machine,
    pub batch_size: usize,
    pub whole_run: Option<WholeRunMeasurement>,
    pub cases: Vec<CaseMeasurement>,
    pub baseline: Option<Baseline>,
    /// The cpu backend's tile product alone, where the cases ran on it.
    pub kernel_ceiling: Option<KernelCeiling>,
}

/// What the kernel of the instruction set the cases ran on does with everything in L1
/// cache on one thread: the ceiling a pass's rate is set against.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelCeiling {
    pub isa: Isa,
    pub gflops_per_thread: f64,
}

/// Prepares the cases, measures them and, with `--python`, runs the PyTorch baseline.
pub fn run(
    config: &BenchConfig,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<BenchReport, BenchError> {
    for (flag, value) in [
        ("--passes", config.passes),
        ("--loads", config.loads),
        ("--checkpoints", config.checkpoints),
        ("--rounds", config.rounds),
        ("--threads", config.threads),
        ("--batch-size", config.batch_size),
    ] {
        if value == 0 {
            return Err(BenchError::Flag(format!("{flag} must be at least 1")));
        }
    }
    let baseline_script = Path::new(BASELINE_SCRIPT);
    if config.python.is_some() && !baseline_script.is_file() {
        return Err(BenchError::Flag(format!(
            "--python runs {BASELINE_SCRIPT}, which is not in the working directory: run `dwell bench` from the dwell repository root"
        )));
    }
    let mut prepared = Vec::new();
    for &case in &config.cases {
        prepared.push(cases::prepare(config, case, progress)?);
    }
    let whole_run = match prepared.iter().find(|case| case.name == CaseName::Minilm) {
        Some(minilm) => Some(measure_whole_runs(
            config,
            minilm,
            baseline_script,
            progress,
        )?),
        None => {
            if let Some(python) = &config.python {
                baseline::check_python(python, config.ort)?;
            }
            None
        }
    };
    let mut measured = Vec::new();
    for case in &prepared {
        progress(BenchProgress::Measuring { case: case.name });
        measured.push(measure::measure_case(
            case,
            config.backend,
            config.batch_size,
            config.loads,
            config.passes,
        )?);
    }
    let baseline = match &config.python {
        Some(python) => Some(baseline::run(
            config,
            python,
            baseline_script,
            baseline::Part::Cases,
            progress,
        )?),
        None => None,
    };
    let kernel_ceiling = measured.iter().find_map(|case| match case.backend {
        Backend::Cpu(isa) => isa
            .tile_rate_in_l1(0.5)
            .map(|gflops_per_thread| KernelCeiling {
                isa,
                gflops_per_thread,
            }),
        Backend::Candle => None,
    });
    Ok(BenchReport {
        machine: Machine {
            cpu: memory::cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads: config.threads,
        },
        batch_size: config.batch_size,
        whole_run,
        cases: measured,
        baseline,
        kernel_ceiling,
    })
}

/// `dwell analyze` over the case's run, then (with `--python`) PyTorch's whole run, for
/// each round. The first `dwell analyze` is this process's first child: getrusage
/// (RUSAGE_CHILDREN) then describes it alone.
fn measure_whole_runs(
    config: &BenchConfig,
    minilm: &PreparedCase,
    baseline_script: &Path,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<WholeRunMeasurement, BenchError> {
    let mut rounds = Vec::new();
    let mut first = None;
    for round in 1..=config.rounds {
        let dwell = whole_run::measure(config, minilm, round, round == 1, progress)?;
        let torch = match &config.python {
            Some(python) => {
                if round == 1 {
                    baseline::check_python(python, config.ort)?;
                }
                let part = baseline::Part::WholeRun { round };
                let baseline = baseline::run(config, python, baseline_script, part, progress)?;
                Some(baseline.whole_run.ok_or_else(|| BenchError::Invalid {
                    path: config.cases_dir.join(part.file_name()),
                    message: "no whole_run: the script found no minilm run to embed".into(),
                })?)
            }
            None => None,
        };
        rounds.push(WholeRunRound {
            dwell_seconds: dwell.seconds,
            torch,
        });
        first.get_or_insert(dwell);
    }
    let first = first.expect("--rounds is at least 1");
    Ok(WholeRunMeasurement {
        checkpoints: first.checkpoints,
        backend: first.backend,
        rounds,
        peak_rss: first.peak_rss,
    })
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
