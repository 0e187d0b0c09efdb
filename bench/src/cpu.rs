//! CPU time of a process, from `/proc`: the sum over its threads of
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU), falling back to
//! `utime + stime` of `/proc/<pid>/stat` (clock ticks) where schedstat is
//! missing.
//!
//! A multi-process server (a controller and its node processes) is read as
//! a [`Server::Tree`]: the process and all its descendants, found through
//! `/proc/<pid>/task/<tid>/children` where the kernel has it
//! (`CONFIG_PROC_CHILDREN`), else by scanning the parent pid of every
//! process in `/proc`. The tree is listed again at every reading, so the
//! CPU used over a window is, per process, its time at the end less its time
//! at the start (a process that appeared in between counts whole; one that
//! exited in between is missed: benches do not replace nodes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The server processes a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// One process.
    Pid(u32),
    /// A process and all its descendants.
    Tree(u32),
}

/// CPU time per process of a [`Server`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// The process read first (the controller of a tree).
    pub root: u32,
    /// Pid to CPU time so far.
    pub times: BTreeMap<u32, Duration>,
}

impl Reading {
    /// The processes read.
    pub fn processes(&self) -> usize {
        self.times.len()
    }
}

impl Server {
    /// Reads the CPU time of every process of the server, or `None` if the
    /// root process cannot be read.
    pub fn read(self) -> Option<Reading> {
        let (root, pids) = match self {
            Server::Pid(pid) => (pid, vec![pid]),
            Server::Tree(pid) => (pid, tree(pid)),
        };
        let mut times = BTreeMap::new();
        for pid in pids {
            match cpu_time(Process::Pid(pid)) {
                Some(t) => {
                    times.insert(pid, t);
                }
                // A descendant may exit between listing and reading.
                None if pid != root => {}
                None => return None,
            }
        }
        Some(Reading { root, times })
    }
}

/// CPU used between two readings: per process of `end`, its time less its
/// time in `start` (a process new in `end` counts whole).
pub fn used(start: &Reading, end: &Reading) -> Duration {
    end.times
        .iter()
        .map(|(pid, t)| t.saturating_sub(start.times.get(pid).copied().unwrap_or_default()))
        .sum()
}

/// CPU used by the root process alone between two readings.
pub fn used_by_root(start: &Reading, end: &Reading) -> Option<Duration> {
    let (a, b) = (start.times.get(&start.root)?, end.times.get(&end.root)?);
    (start.root == end.root).then(|| b.saturating_sub(*a))
}

/// `root` and its descendants, root first.
pub fn tree(root: u32) -> Vec<u32> {
    match children_from_task_files(root) {
        Some(first) => {
            // The kernel lists children: walk down.
            let mut out = vec![root];
            let mut seen: BTreeSet<u32> = out.iter().copied().collect();
            let mut queue: Vec<u32> = first;
            while let Some(pid) = queue.pop() {
                if !seen.insert(pid) {
                    continue;
                }
                out.push(pid);
                queue.extend(children_from_task_files(pid).unwrap_or_default());
            }
            out
        }
        None => descendants(root, &parent_pids()),
    }
}

/// The children of `pid` from `/proc/<pid>/task/*/children`, or `None` if
/// the kernel does not provide those files (or the process is gone).
fn children_from_task_files(pid: u32) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut any = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        any = true;
        out.extend(parse_children(&text));
    }
    any.then_some(out)
}

/// `(pid, parent pid)` of every process in `/proc`.
fn parent_pids() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat_ppid(&text)?))
        })
        .collect()
}

/// The pids of a `children` file: space-separated; anything else is skipped.
fn parse_children(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The parent pid (field 4) of a stat line; counted after the last `)` as
/// the command name may contain anything.
fn parse_stat_ppid(text: &str) -> Option<u32> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and its descendants by the `(pid, ppid)` pairs, root first;
/// cycles (impossible in `/proc`, possible in bad input) end the walk.
fn descendants(root: u32, pairs: &[(u32, u32)]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in pairs {
        if pid != ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut seen: BTreeSet<u32> = out.iter().copied().collect();
    let mut i = 0;
    while let Some(&pid) = out.get(i) {
        i += 1;
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                out.push(child);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_children() {
        assert_eq!(parse_children("123 456 \n"), vec![123, 456]);
        assert_eq!(parse_children(""), Vec::<u32>::new());
        assert_eq!(parse_children("7 x -1 8"), vec![7, 8]);
    }

    #[test]
    fn parses_parent_pid() {
        let line = "1234 (my (odd) cmd) S 77 1 1 0 -1 4194560 100 0 0 0 61 111 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_ppid(line), Some(77));
        assert_eq!(parse_stat_ppid("1234 (x) S"), None);
        assert_eq!(parse_stat_ppid("1234 (x) S y"), None);
        assert_eq!(parse_stat_ppid("no parenthesis"), None);
    }

    #[test]
    fn walks_descendants() {
        // 1 -> 10 -> {11, 12 -> 13}; 20 is not below 10; 30 <-> 31 a cycle.
        let pairs = [
            (10, 1),
            (11, 10),
            (12, 10),
            (13, 12),
            (20, 1),
            (30, 31),
            (31, 30),
            (5, 5),
        ];
        let mut d = descendants(10, &pairs);
        assert_eq!(d[0], 10);
        d.sort_unstable();
        assert_eq!(d, vec![10, 11, 12, 13]);
        assert_eq!(descendants(99, &pairs), vec![99]);
        let mut c = descendants(30, &pairs);
        c.sort_unstable();
        assert_eq!(c, vec![30, 31]);
        assert_eq!(descendants(5, &pairs), vec![5]);
    }

    #[test]
    fn used_counts_new_processes_whole() {
        let ms = Duration::from_millis;
        let start = Reading {
            root: 1,
            times: [(1, ms(100)), (2, ms(50)), (3, ms(10))].into(),
        };
        let end = Reading {
            root: 1,
            // 3 exited (missed); 4 is new; 2's clock cannot go back.
            times: [(1, ms(150)), (2, ms(40)), (4, ms(7))].into(),
        };
        assert_eq!(used(&start, &end), ms(57));
        assert_eq!(end.processes(), 3);
        assert_eq!(used_by_root(&start, &end), Some(ms(50)));
        let other = Reading {
            root: 2,
            ..end.clone()
        };
        assert_eq!(used_by_root(&start, &other), None);
        assert_eq!(used_by_root(&start, &Reading::default()), None);
    }

    #[test]
    fn reads_a_process_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id();
        let pids = tree(me);
        let found = pids.contains(&child.id());
        let reading = Server::Tree(me).read().expect("tree reading");
        let single = Server::Pid(me).read().expect("pid reading");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(pids[0], me);
        assert!(found, "{pids:?} lacks {}", child.id());
        assert!(reading.processes() >= 2, "{reading:?}");
        assert_eq!(single.processes(), 1);
        assert_eq!(Server::Tree(u32::MAX).read(), None);
    }

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
