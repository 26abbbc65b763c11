//! The headline case: the whole `dwell analyze` process over the minilm case's run,
//! start-up, loading, tokenising, storing and the report included.

use std::ffi::OsString;
use std::process::Command;
use std::time::Instant;

use super::cases::PreparedCase;
use super::{memory, BenchConfig, BenchError, BenchProgress};
use crate::store::StateDir;

#[derive(Debug, Clone, PartialEq)]
pub struct WholeRunMeasurement {
    /// Checkpoints the child stored embeddings for.
    pub checkpoints: usize,
    /// Wall clock of the whole child process.
    pub seconds: f64,
    /// The child's peak RSS; the error says why it is not known.
    pub peak_rss: Result<u64, String>,
}

/// Runs `dwell analyze` on the case's run into a fresh state folder and times it.
/// Must be this process's first child: its peak RSS is read as the children's maximum.
pub(crate) fn measure(
    config: &BenchConfig,
    case: &PreparedCase,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<WholeRunMeasurement, BenchError> {
    let state = case.dir.join("whole-run-state");
    if state.exists() {
        std::fs::remove_dir_all(&state).map_err(BenchError::io(&state))?;
    }
    let args: Vec<OsString> = vec![
        "--threads".into(),
        config.threads.to_string().into(),
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
        (Ok(floor), Some(peak)) if peak > floor => Ok(peak),
        (Ok(floor), Some(_)) => Err(format!(
            "not above the bench's own RSS when it started the child, {:.1} MB",
            floor as f64 / 1e6
        )),
        (Ok(_), None) => Err("getrusage(RUSAGE_CHILDREN) failed".into()),
        (Err(why), _) => Err(why),
    };
    Ok(WholeRunMeasurement {
        checkpoints,
        seconds,
        peak_rss,
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
