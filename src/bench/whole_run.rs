//! The headline case: the whole `dwell analyze` process over the minilm case's run,
//! start-up, loading, tokenising, storing and the report included, in rounds that
//! alternate with PyTorch's whole run.

use std::ffi::OsString;
use std::process::Command;
use std::time::Instant;

use super::cases::PreparedCase;
use super::{median, memory, BaselineWholeRun, BenchConfig, BenchError, BenchProgress};
use crate::store::StateDir;

#[derive(Debug, Clone, PartialEq)]
pub struct WholeRunMeasurement {
    /// Checkpoints the child stored embeddings for.
    pub checkpoints: usize,
    /// The backend the round-1 child says embedded the run (`cpu (avx2)`).
    pub backend: Option<String>,
    /// In the order they ran.
    pub rounds: Vec<WholeRunRound>,
    /// The `dwell analyze` child's peak RSS in round 1, when it is this process's only
    /// child so far; the error says why it is not known.
    pub peak_rss: Result<u64, String>,
}

/// One `dwell analyze` process and, with `--python`, PyTorch's whole run right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct WholeRunRound {
    /// Wall clock of the whole `dwell analyze` process.
    pub dwell_seconds: f64,
    pub torch: Option<BaselineWholeRun>,
}

impl WholeRunMeasurement {
    pub fn dwell_median(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(|round| round.dwell_seconds)
                .collect::<Vec<_>>(),
        )
    }

    /// PyTorch's summed passes per round; `None` unless every round has them.
    pub fn torch_totals(&self) -> Option<Vec<f64>> {
        self.rounds
            .iter()
            .map(|round| round.torch.as_ref().map(BaselineWholeRun::total_seconds))
            .collect()
    }

    /// ONNX Runtime's summed passes per round; `None` unless every round has them.
    pub fn ort_totals(&self) -> Option<Vec<f64>> {
        self.rounds
            .iter()
            .map(|round| round.torch.as_ref()?.ort_total_seconds())
            .collect()
    }

    /// ONNX Runtime's passes over dwell's whole process, round by round.
    pub fn ort_speedups(&self) -> Option<Vec<f64>> {
        Some(self.over_dwell(self.ort_totals()?))
    }

    /// PyTorch's passes over dwell's whole process, round by round.
    pub fn speedups(&self) -> Option<Vec<f64>> {
        Some(self.over_dwell(self.torch_totals()?))
    }

    /// Each round's `totals` over its dwell process.
    fn over_dwell(&self, totals: Vec<f64>) -> Vec<f64> {
        totals
            .iter()
            .zip(&self.rounds)
            .map(|(total, round)| total / round.dwell_seconds)
            .collect()
    }
}

/// One timed `dwell analyze` process.
pub(crate) struct DwellRun {
    pub checkpoints: usize,
    pub backend: Option<String>,
    pub seconds: f64,
    pub peak_rss: Result<u64, String>,
}

/// Runs `dwell analyze` on the case's run into a fresh state folder and times it.
/// Its peak RSS is read as the children's maximum, so it is known only when the child
/// is this process's first (`first_child`).
pub(crate) fn measure(
    config: &BenchConfig,
    case: &PreparedCase,
    round: usize,
    first_child: bool,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<DwellRun, BenchError> {
    let state = case.dir.join("whole-run-state");
    if state.exists() {
        std::fs::remove_dir_all(&state).map_err(BenchError::io(&state))?;
    }
    let args: Vec<OsString> = vec![
        "--threads".into(),
        config.threads.to_string().into(),
        "--backend".into(),
        config.backend.flag().into(),
        "analyze".into(),
        case.run_dir().into(),
        "--probe".into(),
        case.probe_path().into(),
        "--state".into(),
        state.clone().into(),
        "--max-len".into(),
        case.manifest.max_len.to_string().into(),
        "--batch-size".into(),
        config.batch_size.to_string().into(),
    ];
    let command_line = describe_command(&config.dwell_exe, &args);
    progress(BenchProgress::WholeRun {
        round,
        rounds: config.rounds,
        checkpoints: case.manifest.run_checkpoints,
        command: &command_line,
    });
    // Linux carries the spawning process's peak RSS over into the child's ru_maxrss:
    // lowered to our current RSS first, it is a floor the child's own peak must exceed.
    let floor = memory::reset_peak_rss()
        .and_then(|()| memory::rss_now_and_peak())
        .map(|(now, _)| now);
    let mut command = Command::new(&config.dwell_exe);
    command.args(&args);
    // The child runs with exactly the flags above: no DWELL_TRAIN, DWELL_CONFIG, ... from
    // this environment may add work to what is timed.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DWELL_") && key != "DWELL_LOG" {
            command.env_remove(key);
        }
    }
    let started = Instant::now();
    let output = command.output().map_err(|error| BenchError::Spawn {
        program: config.dwell_exe.clone(),
        error,
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let failed = |status: String| BenchError::ChildFailed {
        command: command_line.clone(),
        status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if !output.status.success() {
        return Err(failed(output.status.to_string()));
    }
    let (state_dir, _) = StateDir::open_existing(&state)?;
    let checkpoints = state_dir.stored_steps()?.len();
    if checkpoints != case.manifest.run_checkpoints {
        return Err(failed(format!(
            "embedded {checkpoints} of {} checkpoints",
            case.manifest.run_checkpoints
        )));
    }
    let peak_rss = match (floor, memory::children_peak_rss()) {
        _ if !first_child => Err("measured in round 1 only, before other children ran".into()),
        (Ok(floor), Some(peak)) if peak > floor => Ok(peak),
        (Ok(floor), Some(_)) => Err(format!(
            "not above the bench's own RSS when it started the child, {:.1} MB",
            floor as f64 / 1e6
        )),
        (Ok(_), None) => Err("getrusage(RUSAGE_CHILDREN) failed".into()),
        (Err(why), _) => Err(why),
    };
    Ok(DwellRun {
        checkpoints,
        backend: reported_backend(&String::from_utf8_lossy(&output.stderr)),
        seconds,
        peak_rss,
    })
}

/// The backend named in `dwell analyze`'s closing line on stderr,
/// `(… s, bert model, cpu (avx2) backend, 2 threads)`.
fn reported_backend(stderr: &str) -> Option<String> {
    stderr.lines().rev().find_map(|line| {
        let (before, _) = line.rsplit_once(" backend, ")?;
        let (_, backend) = before.rsplit_once(" model, ")?;
        Some(backend.to_string())
    })
}

/// A command as a shell line, for messages.
pub(crate) fn describe_command(program: &std::path::Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_read_from_the_closing_line() {
        let stderr = "skipped step 3: …\nembedded 12 checkpoint(s), 0 already stored, 0 skipped, \
                      0 incomplete, 0 vanished (4.1 s, bert model, cpu (avx2) backend, 2 threads)\n";
        assert_eq!(reported_backend(stderr).as_deref(), Some("cpu (avx2)"));
        assert_eq!(reported_backend("no such line\n"), None);
    }
}
