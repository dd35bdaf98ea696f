//! CPU time of other processes, read from `/proc/<pid>/stat`: what the
//! load generators report as the members' CPU per request (`--cpu-of`).
//! Measured by the generator itself so that it covers exactly the measured
//! phase of one workload, not the warm-up, the key population or the
//! connection set-up around it.

use std::fmt;

/// `/proc/<pid>/stat`'s utime and stime are in clock ticks of this rate
/// (`USER_HZ`, 100 on every Linux architecture Cairn builds for).
pub const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Why the CPU time of a process could not be read.
#[derive(Debug)]
pub enum CpuError {
    /// No such process any more, or no procfs.
    Unreadable { pid: u32, cause: std::io::Error },
    /// The stat line did not have the expected fields.
    Malformed { pid: u32 },
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuError::Unreadable { pid, cause } => {
                write!(f, "cannot read /proc/{pid}/stat: {cause}")
            }
            CpuError::Malformed { pid } => write!(f, "/proc/{pid}/stat has no utime/stime fields"),
        }
    }
}

impl std::error::Error for CpuError {}

/// CPU time (user + system, all threads) the processes have used so far,
/// in clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> Result<u64, CpuError> {
    let mut total = 0;
    for &pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|cause| CpuError::Unreadable { pid, cause })?;
        total += utime_plus_stime(&stat).ok_or(CpuError::Malformed { pid })?;
    }
    Ok(total)
}

/// utime + stime of one stat line. The command name (field 2) may contain
/// spaces and parentheses; the fields after its last `)` are
/// space-separated, starting with the state (field 3); utime and stime are
/// fields 14 and 15.
fn utime_plus_stime(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks spread over `requests`, in microseconds per request (0 when
/// nothing completed).
pub fn us_per_request(ticks: u64, requests: u64) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    ticks as f64 * 1e6 / CLOCK_TICKS_PER_SECOND / requests as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 9 0";
        assert_eq!(utime_plus_stime(stat), Some(42));
        assert_eq!(utime_plus_stime("4242 (x) S 1 2"), None, "too few fields");
        assert_eq!(utime_plus_stime("no parenthesis at all"), None);
    }

    #[test]
    fn reads_this_process_and_grows_with_work() {
        let me = [std::process::id()];
        let before = cpu_ticks(&me).expect("own /proc stat parses");
        let start = std::time::Instant::now();
        // Five ticks is 50 ms of CPU; spin until the kernel has counted them.
        while cpu_ticks(&me).expect("parses") < before + 5 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "10 s of spinning never showed as 50 ms of CPU"
            );
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(matches!(
            cpu_ticks(&[u32::MAX]),
            Err(CpuError::Unreadable { .. })
        ));
    }

    #[test]
    fn per_request_is_microseconds() {
        // 3 ticks = 30 ms over 1,000 requests = 30 µs each.
        assert!((us_per_request(3, 1_000) - 30.0).abs() < 1e-9);
        assert_eq!(us_per_request(3, 0), 0.0);
    }
}
