//! Resident memory and the machine, as Linux reports them in `/proc`.

use std::path::Path;

/// Lowers this process's peak RSS (VmHWM) to its current RSS, so a later reading covers
/// only what follows. Linux only; the error says why it could not be done.
pub(crate) fn reset_peak_rss() -> Result<(), String> {
    // "5" resets the peak RSS counter (proc(5), /proc/pid/clear_refs).
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| format!("cannot reset the peak RSS through /proc/self/clear_refs: {e}"))
}

/// This process's current RSS and its peak since start or the last reset, in bytes.
pub(crate) fn rss_now_and_peak() -> Result<(u64, u64), String> {
    let path = Path::new("/proc/self/status");
    let status = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let field = |name| {
        status_bytes(&status, name)
            .ok_or_else(|| format!("{} has no {name} line in kB", path.display()))
    };
    Ok((field("VmRSS")?, field("VmHWM")?))
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in bytes.
pub(crate) fn status_bytes(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// The largest peak RSS of the children waited for so far, in bytes.
pub(crate) fn children_peak_rss() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the buffer we own and reads nothing else.
    let result = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (zeroed before anyway).
    let max_rss = unsafe { usage.assume_init() }.ru_maxrss;
    u64::try_from(max_rss).ok().map(|rss| rss * MAX_RSS_UNIT)
}

/// `ru_maxrss` is in kilobytes on Linux, in bytes on macOS.
#[cfg(target_os = "macos")]
const MAX_RSS_UNIT: u64 = 1;
#[cfg(not(target_os = "macos"))]
const MAX_RSS_UNIT: u64 = 1024;

/// The CPU's model name from `/proc/cpuinfo`, or "unknown CPU".
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_in_kib_become_bytes() {
        let status = "Name:\tdwell\nVmHWM:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(status_bytes(status, "VmHWM"), Some(123_456 * 1024));
        assert_eq!(status_bytes(status, "VmRSS"), Some(2 * 1024 * 1024));
        assert_eq!(status_bytes(status, "Threads"), None);
        assert_eq!(status_bytes(status, "VmSwap"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_peak_at_least_its_rss() {
        let (now, peak) = rss_now_and_peak().unwrap();
        assert!(now > 0 && peak >= now);
    }
}
