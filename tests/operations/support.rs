//! Helpers for the operations tests: a guard that finds and kills every
//! process a test started (daemons and upgraded controllers are not the
//! test's children), daemon launches, admin status polling, a tiny HTTP GET,
//! and a load generator that applies the retry rule of the reload and
//! upgrade tests.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;
use vole_controller::admin::{self, AdminRequest, StatusReport};
use vole_link::resolve::{connect_to, ClientConfig};
use vole_link::{CallKind, Entity, Link, RemoteObject, Value};

use crate::harness::{self, all_procs, become_subreaper, proc_info, still_running, Proc, VOLE};

// ------------------------------------------------------------ processes

/// The command line of a process, one string per argument.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an argument names `dir` or something inside it.
fn mentions(args: &[String], dir: &str) -> bool {
    args.iter()
        .any(|a| a == dir || a.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
}

/// Running processes whose command line names `dir` (a test's unique
/// temporary directory): its controllers, daemons and admin commands.
pub fn procs_naming(dir: &Path) -> Vec<Proc> {
    let dir = dir.to_string_lossy().into_owned();
    all_procs()
        .into_iter()
        .filter(|p| p.state != 'Z' && mentions(&cmdline(p.pid), &dir))
        .collect()
}

/// The real uid of a process (from /proc/<pid>/status).
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Running children of `pid` named `vole-node-<id>`, by id.
pub fn nodes_of(pid: u32) -> BTreeMap<u32, Proc> {
    all_procs()
        .into_iter()
        .filter(|p| p.ppid == pid && p.state != 'Z')
        .filter_map(|p| {
            let id = p.comm.strip_prefix("vole-node-")?.parse().ok()?;
            Some((id, p))
        })
        .collect()
}

/// Waits (polling /proc, which has no event) for a child of this process
/// to exit, reaps it and returns its exit code; `None` on a signal or when
/// it is not our child or still runs after `limit`.
pub async fn wait_child_code(pid: u32, limit: Duration) -> Option<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(WaitPidFlag::WNOHANG),
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(_) | Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reaps zombie children of this process named `vole` (the middle process
/// of a daemon's double fork, a daemon that exited), except `keep`.
pub fn reap_vole_zombies(keep: &[u32]) {
    let me = std::process::id();
    for p in all_procs() {
        if p.ppid == me && p.state == 'Z' && p.comm == "vole" && !keep.contains(&p.pid) {
            harness::reap(&p, Duration::from_millis(100));
        }
    }
}

/// Kills and reaps, when dropped, every process of one test: whatever names
/// the test's directory on its command line (controllers, daemons,
/// controllers started by an upgrade), their descendants, and nodes
/// orphaned to this process. On a failing test it prints the files it was
/// told about (log files, a launcher's output).
pub struct Tree {
    dir: PathBuf,
    show: Mutex<Vec<PathBuf>>,
    /// Children reaped elsewhere (a harness `Serve` waits for its
    /// controller).
    not_mine: Mutex<Vec<u32>>,
}

impl Tree {
    pub fn new(dir: &Path) -> Tree {
        become_subreaper();
        Tree {
            dir: dir.to_owned(),
            show: Mutex::new(Vec::new()),
            not_mine: Mutex::new(Vec::new()),
        }
    }

    /// Prints `file` if the test fails.
    pub fn show(&self, file: &Path) {
        if let Ok(mut s) = self.show.lock() {
            s.push(file.to_owned());
        }
    }

    /// `pid` is reaped by someone else; never wait for it here.
    pub fn not_mine(&self, pid: u32) {
        if let Ok(mut n) = self.not_mine.lock() {
            n.push(pid);
        }
    }

    /// Every process of the test that still runs.
    pub fn procs(&self) -> Vec<Proc> {
        let all = all_procs();
        let me = std::process::id();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut set: HashSet<u32> = all
            .iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| {
                mentions(&cmdline(p.pid), &dir)
                    || (p.ppid == me && p.comm.starts_with("vole-node-"))
            })
            .map(|p| p.pid)
            .collect();
        // Their descendants.
        loop {
            let before = set.len();
            for p in &all {
                if p.state != 'Z' && set.contains(&p.ppid) {
                    set.insert(p.pid);
                }
            }
            if set.len() == before {
                break;
            }
        }
        set.remove(&me);
        all.into_iter().filter(|p| set.contains(&p.pid)).collect()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let me = std::process::id();
        let not_mine = self.not_mine.lock().map(|n| n.clone()).unwrap_or_default();
        let mut leftover = Vec::new();
        for _round in 0..3 {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            leftover.extend(procs.iter().map(|p| (p.pid, p.comm.clone())));
            for p in &procs {
                harness::signal(p.pid, Signal::SIGKILL);
            }
            for p in &procs {
                if not_mine.contains(&p.pid) {
                    continue;
                }
                if proc_info(p.pid).is_some_and(|now| now.ppid == me) {
                    harness::reap(p, Duration::from_secs(5));
                } else {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while still_running(p) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        reap_vole_zombies(&not_mine);
        if std::thread::panicking() {
            if !leftover.is_empty() {
                eprintln!("---- processes still running at the end: {leftover:?}");
            }
            let files = self.show.lock().map(|s| s.clone()).unwrap_or_default();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap_or_else(|e| format!("({e})"));
                eprintln!("---- {} ----\n{text}----", f.display());
            }
        }
    }
}

// ------------------------------------------------------------ commands

/// A finished `vole` command.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `vole args...` as a shell would, with stdout and stderr going to
/// files in `dir` (a daemon keeps no pipe of ours open, so this cannot
/// hang on one); waits up to `limit` for that process to exit.
pub async fn run_to_files(dir: &Path, name: &str, args: &[String], limit: Duration) -> Ran {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    let mut child = tokio::process::Command::new(VOLE)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start vole");
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("`vole {}` did not return within {limit:?}", args.join(" ")))
        .expect("wait for vole");
    Ran {
        code: status.code(),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// `vole` with these arguments, bounded; (exit code, stdout, stderr).
pub async fn vole(args: &[&str]) -> Ran {
    let out = harness::run_vole(args).await;
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The service's status over its admin socket (the library call `vole
/// status` makes), or why not.
pub async fn status(admin_socket: &Path) -> Result<StatusReport, String> {
    let r = admin::request(admin_socket, &AdminRequest::Status, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    r.status.ok_or_else(|| format!("no status: {:?}", r.error))
}

/// Waits until the service reports exactly `n` nodes, every one serving
/// with a pid; returns that status (panics after `limit` with the last
/// one). Polls: the admin socket has no change notification.
pub async fn wait_nodes(admin_socket: &Path, n: usize, limit: Duration) -> StatusReport {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(admin_socket).await;
        if let Ok(s) = &s {
            if s.nodes.len() == n
                && s.nodes
                    .iter()
                    .all(|x| x.state == "serving" && x.pid.is_some())
            {
                return s.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the service did not get to {n} serving nodes within {limit:?}; last status: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (id, pid) of every node in a status report.
pub fn id_pids(s: &StatusReport) -> Vec<(u32, u32)> {
    s.nodes.iter().map(|n| (n.id, n.pid.unwrap_or(0))).collect()
}

/// Waits (polling the file, which has no event) until `pred` holds for its
/// text; returns the text, or panics after `limit`.
pub async fn wait_file(
    path: &Path,
    limit: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} not seen within {limit:?}; it holds:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free loopback port (bound, then released: a small race remains).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// `GET path` over plain HTTP/1.1; the body.
pub async fn http_get(port: u16, path: &str) -> Result<String, String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
            _ => Err(format!("unexpected answer: {text}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "GET timed out".to_owned())?
}

// ------------------------------------------------------------ traffic

/// What one call attempt came to.
pub enum Attempt {
    /// Answered.
    Done(Value),
    /// Never executed: refused because the link was closing.
    Closing,
    /// Never executed: the link had closed before the call could be sent.
    Unsent,
    /// Sent, then the link closed without an answer: the call crossed the
    /// server's close. Whether that is allowed depends on how long the
    /// client had been quiet (see [`Traffic`]).
    Crossed(String),
    /// Anything else.
    Fail(String),
}

/// Makes one call, classifying the outcome by the retry rule: a
/// [`vole_link::Error::Closing`] refusal (the server refused the call
/// because its link was closing: `("vole.closing", reason)`), or a call that could not be sent because
/// the link had already closed (the link was closed before the call, or
/// the link's driver never took the call: its count of calls sent did not
/// move), was never executed. Everything else is a failure.
pub async fn attempt(link: &Link, gw: &RemoteObject, args: Vec<Value>) -> Attempt {
    if link.is_closed() {
        return Attempt::Unsent;
    }
    let sent_before = link.stats().calls_out.load(Ordering::SeqCst);
    match tokio::time::timeout(harness::CALL_LIMIT, gw.call_raw(args, CallKind::Normal)).await {
        Err(_) => Attempt::Fail("call timed out".to_owned()),
        Ok(Ok(v)) => Attempt::Done(v),
        Ok(Err(vole_link::Error::Closing(_))) => Attempt::Closing,
        Ok(Err(vole_link::Error::Closed(_)))
            if link.stats().calls_out.load(Ordering::SeqCst) == sent_before =>
        {
            Attempt::Unsent
        }
        Ok(Err(e @ (vole_link::Error::Closed(_) | vole_link::Error::Interrupted(_)))) => {
            Attempt::Crossed(format!("{e} (sent: the link's driver took the call)"))
        }
        Ok(Err(e)) => Attempt::Fail(format!("{e} (sent: the link's driver took the call)")),
    }
}

/// A link and the node that serves it.
pub struct Session {
    pub link: Link,
    pub gw: RemoteObject,
    pub node: (u32, u32),
    /// When its last answered call was sent. The server cannot have read
    /// that call earlier, so the quiet the server sees when it closes is at
    /// most the time since (a client slowed down by a loaded machine may
    /// get its answer late, so the time since the answer would say less).
    pub sent_at: Instant,
}

/// Closes a link in the background (gracefully, bounded).
fn close_later(link: Link) {
    tokio::spawn(async move { harness::close(&link).await });
}

/// Counters and failures of a load run.
#[derive(Default)]
pub struct Traffic {
    pub stop: AtomicBool,
    answered: watch::Sender<u64>,
    /// Calls retried after a "closing" refusal.
    pub closing_retries: AtomicU64,
    /// Calls retried because the link had closed before they were sent.
    pub unsent_retries: AtomicU64,
    /// Connections made.
    pub connections: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// Calls answered per (node id, pid).
    per_node: Mutex<BTreeMap<(u32, u32), u64>>,
    started: Mutex<Option<Instant>>,
    /// Most retries one logical call may take (a reconnection and a new
    /// attempt after a "closing" refusal or an unsent call); beyond it the
    /// call is a failure. 0: [`DEFAULT_MAX_RETRIES`].
    max_retries: AtomicU64,
    /// The most retries any one call took.
    worst_retries: AtomicU64,
    /// Calls lost with their link's close, sent [`vole_node::DRAIN_QUIET`]
    /// or more after the link's previous call was (allowed; retried).
    pub crossed_quiet: AtomicU64,
    crossed_log: Mutex<Vec<String>>,
}

/// Most retries of one call unless a test sets its own bound
/// ([`Traffic::set_max_retries`]).
pub const DEFAULT_MAX_RETRIES: u64 = 4;

impl Traffic {
    pub fn new() -> Arc<Traffic> {
        let t = Traffic::default();
        if let Ok(mut s) = t.started.lock() {
            *s = Some(Instant::now());
        }
        Arc::new(t)
    }

    pub fn answered(&self) -> u64 {
        *self.answered.borrow()
    }

    /// Bounds the retries of each logical call: a call that needs more is
    /// recorded as a failure. An event that replaces `n` nodes one by one
    /// may refuse a client's call once on each of them (its new link can
    /// land on an old node that drains next), so `n` + 1 is a fair bound.
    pub fn set_max_retries(&self, n: u64) {
        self.max_retries.store(n, Ordering::Relaxed);
    }

    fn max_retries(&self) -> u64 {
        match self.max_retries.load(Ordering::Relaxed) {
            0 => DEFAULT_MAX_RETRIES,
            n => n,
        }
    }

    /// The most retries one call took so far.
    pub fn worst_retries(&self) -> u64 {
        self.worst_retries.load(Ordering::Relaxed)
    }

    /// Calls refused as "closing" so far.
    pub fn closing(&self) -> u64 {
        self.closing_retries.load(Ordering::Relaxed)
    }

    /// Connections made so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Waits (up to 20 s) until `more` further calls have been answered.
    pub async fn more(&self, more: u64) -> bool {
        let target = self.answered() + more;
        let mut rx = self.answered.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|n| *n >= target))
            .await
            .is_ok();
        reached
    }

    fn done(&self, node: (u32, u32)) {
        self.answered.send_modify(|n| *n += 1);
        if let Ok(mut p) = self.per_node.lock() {
            *p.entry(node).or_default() += 1;
        }
    }

    fn fail(&self, what: String) {
        let at = self
            .started
            .lock()
            .ok()
            .and_then(|s| *s)
            .map(|s| s.elapsed())
            .unwrap_or_default();
        if let Ok(mut f) = self.failures.lock() {
            f.push(format!("+{at:.3?} {what}"));
        }
    }

    fn retried(&self, a: &Attempt) {
        match a {
            Attempt::Closing => self.closing_retries.fetch_add(1, Ordering::Relaxed),
            Attempt::Unsent => self.unsent_retries.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn per_node(&self) -> BTreeMap<(u32, u32), u64> {
        self.per_node.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} calls answered, {} connections, retried: {} refused as closing + {} unsent \
             (link already closed) + {} lost with a close after a quiet of DRAIN_QUIET {:?}, at \
             most {} for one call, {} failures; calls per (node, pid): {:?}",
            self.answered(),
            self.connections.load(Ordering::Relaxed),
            self.closing_retries.load(Ordering::Relaxed),
            self.unsent_retries.load(Ordering::Relaxed),
            self.crossed_quiet.load(Ordering::Relaxed),
            self.crossed_log
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default(),
            self.worst_retries(),
            self.failures().len(),
            self.per_node()
        )
    }

    /// Opens a link and asks which node serves it (`meta.ping()`).
    /// `Ok(None)`: the ping was never executed (retry on a new link).
    async fn open(&self, port: u16) -> Result<Option<Session>, String> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let (link, gw) = tokio::time::timeout(
            harness::CALL_LIMIT,
            connect_to("127.0.0.1", port, &ClientConfig::plain()),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {}", vole_link::object::error_chain(&e)))?;
        let pinged = Instant::now();
        let ping = attempt(&link, &gw, vec![Value::None, Value::str("ping")]).await;
        match ping {
            Attempt::Done(Entity::Tuple(items)) => match items.as_slice() {
                [Entity::Int(id), Entity::Int(pid)] => Ok(Some(Session {
                    link,
                    gw,
                    node: (*id as u32, *pid as u32),
                    sent_at: pinged,
                })),
                other => Err(format!("ping answered {other:?}")),
            },
            Attempt::Done(other) => Err(format!("ping answered {other:?}")),
            // Right after the handshake: never quiet, never to be lost.
            Attempt::Fail(e) | Attempt::Crossed(e) => {
                link.abort();
                Err(format!("ping: {e}"))
            }
            retry => {
                self.retried(&retry);
                close_later(link);
                Ok(None)
            }
        }
    }

    /// One logical call `echo(n)` on `session` (reconnecting and retrying
    /// per the rule); true when answered correctly. A failure is recorded
    /// and the call given up.
    async fn call(&self, port: u16, session: &mut Option<Session>, n: i64, fresh: bool) {
        let mut retries = 0u64;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            self.worst_retries.fetch_max(retries, Ordering::Relaxed);
            if retries > self.max_retries() {
                self.fail(format!(
                    "{} client: echo({n}) retried {retries} times (at most {} allowed)",
                    kind(fresh),
                    self.max_retries()
                ));
                if let Some(s) = session.take() {
                    close_later(s.link);
                }
                return;
            }
            if session.as_ref().is_none_or(|s| s.link.is_closed()) {
                if session.take().is_some() {
                    // Closed between calls: the call was never sent.
                    self.unsent_retries.fetch_add(1, Ordering::Relaxed);
                    retries += 1;
                    continue;
                }
                match self.open(port).await {
                    Ok(Some(s)) => *session = Some(s),
                    Ok(None) => {
                        retries += 1;
                        continue;
                    }
                    Err(e) => {
                        self.fail(format!("{} client: {e}", kind(fresh)));
                        return;
                    }
                }
            }
            let Some(s) = session.as_mut() else { continue };
            let sent = Instant::now();
            let quiet = sent.saturating_duration_since(s.sent_at);
            let a = attempt(&s.link, &s.gw, vec![Value::str("echo"), Value::Int(n)]).await;
            match a {
                Attempt::Done(Entity::Int(v)) if v == n => {
                    s.sent_at = sent;
                    self.done(s.node);
                    return;
                }
                Attempt::Crossed(e) if quiet >= vole_node::DRAIN_QUIET => {
                    // The client had been quiet for DRAIN_QUIET or more: a
                    // draining link may close then, and VOL has no goodbye,
                    // so a call crossing the close is lost (design.md,
                    // "Stop"). Counted; the call is retried.
                    self.crossed_quiet.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut c) = self.crossed_log.lock() {
                        c.push(format!(
                            "echo({n}) on node {:?} after {quiet:?}: {e}",
                            s.node
                        ));
                    }
                    retries += 1;
                    if let Some(s) = session.take() {
                        s.link.abort();
                    }
                }
                Attempt::Crossed(e) => {
                    self.fail(format!(
                        "{} client: echo({n}) on node {:?}, {quiet:?} after the previous call was sent: {e}",
                        kind(fresh),
                        s.node
                    ));
                    if let Some(s) = session.take() {
                        s.link.abort();
                    }
                    return;
                }
                Attempt::Done(other) => {
                    self.fail(format!("echo({n}) on node {:?} answered {other:?}", s.node));
                    return;
                }
                Attempt::Fail(e) => {
                    self.fail(format!(
                        "{} client: echo({n}) on node {:?}: {e}",
                        kind(fresh),
                        s.node
                    ));
                    if let Some(s) = session.take() {
                        s.link.abort();
                    }
                    return;
                }
                retry => {
                    self.retried(&retry);
                    retries += 1;
                    if let Some(s) = session.take() {
                        close_later(s.link);
                    }
                }
            }
        }
    }
}

fn kind(fresh: bool) -> &'static str {
    if fresh {
        "fresh-connection"
    } else {
        "held-link"
    }
}

/// A client that holds a link and calls `echo` in a loop until stopped.
pub async fn held_client(t: Arc<Traffic>, port: u16, id: i64) {
    let mut session = None;
    let mut n = id * 1_000_000_000;
    while !t.stop.load(Ordering::Relaxed) {
        n += 1;
        t.call(port, &mut session, n, false).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Some(s) = session {
        harness::close(&s.link).await;
    }
}

/// A client that opens a new connection for every call.
pub async fn fresh_client(t: Arc<Traffic>, port: u16, id: i64) {
    let mut n = id * 1_000_000_000;
    while !t.stop.load(Ordering::Relaxed) {
        n += 1;
        let mut session = None;
        t.call(port, &mut session, n, true).await;
        if let Some(s) = session {
            harness::close(&s.link).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `held` held-link clients and `fresh` fresh-connection clients.
pub fn start_load(
    t: &Arc<Traffic>,
    port: u16,
    held: usize,
    fresh: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..held {
        tasks.push(tokio::spawn(held_client(t.clone(), port, i as i64 + 1)));
    }
    for i in 0..fresh {
        tasks.push(tokio::spawn(fresh_client(
            t.clone(),
            port,
            (held + i) as i64 + 1,
        )));
    }
    tasks
}

/// Stops the load and waits for every client (bounded).
pub async fn stop_load(t: &Traffic, tasks: Vec<tokio::task::JoinHandle<()>>) {
    t.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a client did not stop within 30 s")
            .expect("client task panicked");
    }
}
