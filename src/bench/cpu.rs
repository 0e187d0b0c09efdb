//! CPU time of a process, from `/proc`: the sum over its threads of
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU), falling back to
//! `utime + stime` of `/proc/<pid>/stat` (clock ticks) where schedstat is
//! missing.

use std::path::Path;
use std::time::Duration;

/// Which process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// This process.
    This,
    /// Another process.
    Pid(u32),
}

impl Process {
    fn dir(self) -> String {
        match self {
            Process::This => "/proc/self".to_owned(),
            Process::Pid(pid) => format!("/proc/{pid}"),
        }
    }
}

/// CPU time the process has used so far, or `None` if it cannot be read
/// (no such process, no `/proc`).
pub fn cpu_time(process: Process) -> Option<Duration> {
    let dir = process.dir();
    schedstat_total(Path::new(&dir)).or_else(|| stat_total(Path::new(&dir)))
}

fn schedstat_total(dir: &Path) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut any = false;
    for task in std::fs::read_dir(dir.join("task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total = total.saturating_add(parse_schedstat(&text)?);
        any = true;
    }
    any.then(|| Duration::from_nanos(total))
}

/// The first field of a schedstat line: nanoseconds on CPU.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

fn stat_total(dir: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(dir.join("stat")).ok()?;
    let ticks = parse_stat_ticks(&text)?;
    // Linux reports ticks in USER_HZ, which is 100 on every architecture
    // vole targets (sysconf is not bound here).
    Some(Duration::from_millis(ticks.saturating_mul(10)))
}

/// `utime + stime` (fields 14 and 15) of a stat line. The command name
/// (field 2) is in parentheses and may contain spaces, so fields are counted
/// after the last `)`.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": field 3 (state) is the first; utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedstat() {
        assert_eq!(
            parse_schedstat("147995037 9984222 375\n"),
            Some(147_995_037)
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn parses_stat() {
        let line = "1234 (my (odd) cmd) S 1 1 1 0 -1 4194560 100 0 0 0 61 111 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_ticks(line), Some(172));
        assert_eq!(parse_stat_ticks("1234 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_this_process() {
        let before = cpu_time(Process::This).expect("own cpu time");
        let mut x: u64 = 0;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let after = cpu_time(Process::This).expect("own cpu time");
        assert!(after > before, "{before:?} -> {after:?}");
        assert!(stat_total(Path::new("/proc/self")).is_some());
    }

    #[test]
    fn missing_process_is_none() {
        // Pids are below 2^22 on Linux.
        assert_eq!(cpu_time(Process::Pid(u32::MAX)), None);
    }
}
