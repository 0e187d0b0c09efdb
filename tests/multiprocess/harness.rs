//! Test harness for the multi-process tests: starts `vole serve` with node
//! processes, captures its output, inspects processes through /proc, and
//! makes sure that whatever a test started is killed and reaped when the
//! test ends, passes or fails.

#![allow(dead_code)] // not every test uses every helper

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;
use vole_link::resolve::{connect_to, ClientConfig};
use vole_link::{Entity, Link, RemoteObject};

/// The `vole` binary under test.
pub const VOLE: &str = env!("CARGO_BIN_EXE_vole");

/// Tests that start process trees run one at a time: on two CPUs, two of
/// them at once make each other's timing meaningless.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the lock that serializes the tests of this file; reports the
/// test's run time when dropped.
pub struct Serial {
    _guard: tokio::sync::MutexGuard<'static, ()>,
    started: Instant,
}

impl Drop for Serial {
    fn drop(&mut self) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        println!("[time] {name}: {:?}", self.started.elapsed());
    }
}

/// Takes the lock that serializes the tests of this file.
pub async fn serial() -> Serial {
    let guard = SERIAL.lock().await;
    Serial {
        _guard: guard,
        started: Instant::now(),
    }
}

// ---------------------------------------------------------------- /proc

/// What /proc/<pid>/stat says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// Start time in clock ticks since boot: with the pid, identifies the
    /// process (pids are reused).
    pub start: u64,
}

/// Reads /proc/<pid>/stat; `None` if the process does not exist.
pub fn proc_info(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    Some(Proc {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

/// Every process visible in /proc.
pub fn all_procs() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_info)
        .collect()
}

/// Whether the process is running: it exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    proc_info(pid).is_some_and(|p| p.state != 'Z' && p.state != 'X')
}

/// Whether `p` (as first seen) still runs: same pid, same start time, not a
/// zombie.
pub fn still_running(p: &Proc) -> bool {
    proc_info(p.pid).is_some_and(|now| now.start == p.start && now.state != 'Z' && now.state != 'X')
}

/// Makes this test process the reaper of orphaned descendants: a node whose
/// controller died becomes our child, so the harness can reap it (an init
/// that does not reap, as in some containers, would otherwise collect
/// zombies).
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// Reaps `p` if it is (now) a child of this process, waiting up to `limit`
/// for it to die. True when it was reaped here or is not our child (its
/// parent reaped it, or still owns it); false if it still runs as our child.
pub fn reap(p: &Proc, limit: Duration) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + limit;
    loop {
        // Only the very process first seen (pids are reused).
        if proc_info(p.pid).is_none_or(|now| now.start != p.start) {
            return true;
        }
        match waitpid(Pid::from_raw(p.pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return true,
            Err(_) => return true, // not our child
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Zombie children of this test process.
pub fn my_zombies() -> Vec<Proc> {
    let me = std::process::id();
    all_procs()
        .into_iter()
        .filter(|p| p.ppid == me && p.state == 'Z')
        .collect()
}

/// Sends a signal.
pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Polls `cond` every 5 ms until it holds or `limit` passes. For process
/// state in /proc, which gives no event to wait on.
pub async fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the process is gone (or a zombie): it can no longer run.
pub async fn wait_dead(p: &Proc, limit: Duration) -> bool {
    poll_until(limit, || !still_running(p)).await
}

// ---------------------------------------------------------------- output

/// Output of a process, captured by a reader thread.
pub struct Captured {
    text: Mutex<String>,
    eof: AtomicBool,
    changed: watch::Sender<u64>,
}

impl Captured {
    fn new() -> Arc<Self> {
        Arc::new(Captured {
            text: Mutex::new(String::new()),
            eof: AtomicBool::new(false),
            changed: watch::channel(0).0,
        })
    }

    fn push(&self, line: &str) {
        if let Ok(mut t) = self.text.lock() {
            t.push_str(line);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn close(&self) {
        self.eof.store(true, Ordering::SeqCst);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Waits until `pred` holds for the text; false at end of output or
    /// after `limit`.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if pred(&self.text()) {
                    return true;
                }
                if self.eof.load(Ordering::SeqCst) {
                    return pred(&self.text());
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// Waits until the text contains `needle`.
    pub async fn wait_contains(&self, limit: Duration, needle: &str) -> bool {
        self.wait_for(limit, |t| t.contains(needle)).await
    }
}

fn read_lines(
    stream: impl Read + Send + 'static,
    out: Arc<Captured>,
    on_line: impl Fn(&str) + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    on_line(&line);
                    out.push(&line);
                }
            }
        }
        out.close();
    });
}

// ---------------------------------------------------------------- serve

/// How to start `vole serve`.
#[derive(Debug, Clone)]
pub struct Opts {
    pub nodes: u32,
    pub balance: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    /// Wait for `ready:` (otherwise only for `listening on`).
    pub wait_ready: bool,
    /// Start the controller with this file open, without close-on-exec, at
    /// descriptors [`STRAY_FDS`] (as a careless parent process would).
    pub stray: Option<PathBuf>,
    /// Serve TLS only (with a dev certificate in the state directory)
    /// instead of PLAIN only.
    pub tls: bool,
    /// Pass `--nodes` (off: the number of nodes comes from a settings file
    /// given in [`Opts::args`], so a reload can change it).
    pub nodes_flag: bool,
    /// The host program (`vole`, or a service built with `vole::Host`).
    pub program: String,
    /// Its service name: nodes are `<name>-node-<id>`.
    pub name: String,
}

/// Where [`Opts::stray`] opens its file in the controller: 4 (the first
/// number a node gets nothing at, unless in `dispatch` mode) and a higher one.
pub const STRAY_FDS: [i32; 2] = [4, 9];

impl Opts {
    pub fn new(nodes: u32, balance: &'static str) -> Self {
        Opts {
            nodes,
            balance,
            args: Vec::new(),
            env: Vec::new(),
            wait_ready: true,
            stray: None,
            tls: false,
            nodes_flag: true,
            program: VOLE.to_owned(),
            name: "vole".to_owned(),
        }
    }

    /// Serves with another host program, whose service is `name`.
    pub fn program(mut self, program: &Path, name: &str) -> Self {
        self.program = program.to_string_lossy().into_owned();
        self.name = name.to_owned();
        self
    }

    /// Leaves `--nodes` out (see [`Opts::nodes_flag`]).
    pub fn nodes_from_config(mut self) -> Self {
        self.nodes_flag = false;
        self
    }

    pub fn stray(mut self, file: &Path) -> Self {
        self.stray = Some(file.to_owned());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| (*s).to_owned()));
        self
    }

    pub fn env(mut self, k: &'static str, v: &str) -> Self {
        self.env.push((k, v.to_owned()));
        self
    }

    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }
}

struct ExitState {
    status: Mutex<Option<ExitStatus>>,
    cv: Condvar,
    tx: watch::Sender<bool>,
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("vole-mp-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `vole serve` with its node processes. Dropping it kills the
/// whole tree (controller and every node it ever started that still runs),
/// reaps the controller, and on a failing test prints what the controller
/// wrote.
pub struct Serve {
    pub pid: u32,
    pub addr: SocketAddr,
    pub admin: PathBuf,
    pub dir: TempDir,
    pub stdout: Arc<Captured>,
    pub stderr: Arc<Captured>,
    exit: Arc<ExitState>,
    /// Every node process seen (pid and start time), for the cleanup.
    known: Arc<Mutex<HashMap<u32, Proc>>>,
    started: Instant,
    /// Node process names start with this.
    node_prefix: String,
}

/// Time to wait for the service to come up (a debug build on a busy CI
/// machine).
const START_LIMIT: Duration = Duration::from_secs(30);

impl Serve {
    /// Starts `vole serve` on an ephemeral loopback port, PLAIN only, with
    /// its own state directory and admin socket; waits until it is ready.
    pub async fn start(opts: Opts) -> Serve {
        become_subreaper();
        let dir = TempDir::new(opts.balance);
        let admin = dir.path().join("admin.sock");
        let mut cmd = match &opts.stray {
            None => Command::new(&opts.program),
            Some(file) => {
                // The shell opens the file at fixed numbers without
                // close-on-exec and execs the controller (same pid).
                let redirects: Vec<String> = STRAY_FDS
                    .iter()
                    .map(|n| format!("{n}<\"$VOLE_TEST_STRAY\""))
                    .collect();
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("exec \"$0\" \"$@\" {}", redirects.join(" ")))
                    .arg(&opts.program)
                    .env("VOLE_TEST_STRAY", file);
                c
            }
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(if opts.tls {
                &[][..]
            } else {
                &["--plain", "--no-tls"][..]
            })
            .args(if opts.nodes_flag {
                vec!["--nodes".to_owned(), opts.nodes.to_string()]
            } else {
                Vec::new()
            })
            .arg("--balance")
            .arg(opts.balance)
            .arg("--state-dir")
            .arg(dir.path())
            .arg("--admin-socket")
            .arg(&admin)
            .args(&opts.args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("VOLE_TEST_NODE_FAULT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child: Child = cmd.spawn().expect("start vole serve");
        let pid = child.id();
        let stdout = Captured::new();
        let stderr = Captured::new();
        let known: Arc<Mutex<HashMap<u32, Proc>>> = Arc::default();
        read_lines(child.stdout.take().expect("stdout"), stdout.clone(), |_| {});
        {
            // Record every node the controller starts, from its log line
            // "node started node=N pid=P", while it is still the parent.
            let known = known.clone();
            read_lines(
                child.stderr.take().expect("stderr"),
                stderr.clone(),
                move |line| {
                    if let Some(p) = field(line, "node started", "pid=") {
                        if let Some(info) = proc_info(p).filter(|i| i.ppid == pid) {
                            if let Ok(mut k) = known.lock() {
                                k.insert(p, info);
                            }
                        }
                    }
                },
            );
        }
        let exit = Arc::new(ExitState {
            status: Mutex::new(None),
            cv: Condvar::new(),
            tx: watch::channel(false).0,
        });
        {
            let exit = exit.clone();
            std::thread::spawn(move || {
                let status = child.wait().ok();
                if let Ok(mut s) = exit.status.lock() {
                    *s = status;
                }
                exit.cv.notify_all();
                exit.tx.send_replace(true);
            });
        }
        let mut serve = Serve {
            pid,
            addr: "0.0.0.0:0".parse().expect("addr"),
            admin,
            dir,
            stdout,
            stderr,
            exit,
            known,
            started: Instant::now(),
            node_prefix: format!("{}-node-", opts.name),
        };
        let want = if opts.wait_ready {
            "ready: "
        } else {
            "listening on "
        };
        let up = serve.stdout.wait_contains(START_LIMIT, want).await;
        assert!(
            up,
            "vole serve did not print {want:?} within {START_LIMIT:?}; stdout: {}",
            serve.stdout.text()
        );
        let out = serve.stdout.text();
        let addr = out
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
            .expect("listening line");
        serve.addr = addr.trim().parse().expect("listening address");
        serve
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    /// The node processes now: children of the controller named
    /// `<name>-node-<id>`, by id.
    pub fn nodes(&self) -> HashMap<u32, Proc> {
        let mut nodes = HashMap::new();
        for p in all_procs() {
            if p.ppid == self.pid && p.state != 'Z' {
                if let Some(id) = p
                    .comm
                    .strip_prefix(self.node_prefix.as_str())
                    .and_then(|s| s.parse().ok())
                {
                    if let Ok(mut k) = self.known.lock() {
                        k.insert(p.pid, p.clone());
                    }
                    nodes.insert(id, p);
                }
            }
        }
        nodes
    }

    /// Every node process ever recorded that still runs.
    pub fn running_nodes(&self) -> Vec<Proc> {
        self.nodes();
        self.known
            .lock()
            .map(|k| k.values().filter(|p| still_running(p)).cloned().collect())
            .unwrap_or_default()
    }

    pub fn signal(&self, sig: Signal) {
        if self.exit_status().is_none() {
            signal(self.pid, sig);
        }
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit.status.lock().ok().and_then(|s| *s)
    }

    /// Waits for the controller to exit (it is reaped by then).
    pub async fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let mut rx = self.exit.tx.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
        self.exit_status()
    }

    /// Waits for the controller to exit and its output to end; returns the
    /// exit code (None: killed by a signal or still running).
    pub async fn wait_code(&self, limit: Duration) -> Option<i32> {
        let status = self.wait_exit(limit).await?;
        // Output ends when the last holder of the pipes (nodes too) is gone.
        self.stderr
            .wait_for(Duration::from_secs(2), |_| false)
            .await;
        status.code()
    }

    /// `vole status --json` against this service.
    pub async fn status(&self) -> serde_json::Value {
        let out = run_vole(&[
            "status",
            "--json",
            "--admin-socket",
            self.admin.to_str().expect("utf-8 path"),
        ])
        .await;
        assert!(
            out.status.success(),
            "vole status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("vole status --json prints JSON")
    }

    /// Per node id from `vole status --json`: (pid, state, sessions).
    pub async fn status_nodes(&self) -> HashMap<u32, (Option<u32>, String, u64)> {
        let s = self.status().await;
        let mut out = HashMap::new();
        for n in s["nodes"].as_array().expect("nodes array") {
            let id = n["id"].as_u64().expect("id") as u32;
            let pid = n["pid"].as_u64().map(|p| p as u32);
            let state = n["state"].as_str().unwrap_or_default().to_owned();
            let sessions = n["sessions"].as_u64().unwrap_or_default();
            out.insert(id, (pid, state, sessions));
        }
        out
    }

    /// Reaps the nodes orphaned by the controller's death (they become
    /// children of this process, a subreaper).
    pub fn reap_nodes(&self) {
        let known: Vec<Proc> = self
            .known
            .lock()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default();
        for p in &known {
            reap(p, Duration::from_secs(5));
        }
    }

    /// How long since the controller started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Learn the current nodes while the controller is still their
        // parent, then kill the controller and every node that still runs.
        let _ = self.nodes();
        if self.exit_status().is_none() {
            signal(self.pid, Signal::SIGKILL);
        }
        let known: Vec<Proc> = self
            .known
            .lock()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default();
        for p in &known {
            if still_running(p) {
                signal(p.pid, Signal::SIGKILL);
            }
        }
        // Reap the controller (its waiter thread does the wait).
        if let Ok(guard) = self.exit.status.lock() {
            let _ = self
                .exit
                .cv
                .wait_timeout_while(guard, Duration::from_secs(10), |s| s.is_none());
        }
        // Its orphaned nodes are ours now: reap them.
        self.reap_nodes();
        if std::thread::panicking() {
            eprintln!(
                "---- vole serve (pid {}) stdout ----\n{}---- vole serve stderr ----\n{}----",
                self.pid,
                self.stdout.text(),
                self.stderr.text()
            );
        }
    }
}

/// The number after `key` on a line that contains `marker`.
pub fn field(line: &str, marker: &str, key: &str) -> Option<u32> {
    if !line.contains(marker) {
        return None;
    }
    let at = line.find(key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Runs a `vole` subcommand to completion (bounded).
pub async fn run_vole(args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(VOLE)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(20), child)
        .await
        .expect("vole command timed out")
        .expect("run vole")
}

// ---------------------------------------------------------------- clients

/// Limit for any one client operation.
pub const CALL_LIMIT: Duration = Duration::from_secs(10);

/// A client link to the service.
pub struct Client {
    pub link: Link,
    pub gw: RemoteObject,
    /// (node id, node pid) the connection reported.
    pub node: (u32, u32),
}

/// Connects (PLAIN) and asks the gateway which node serves the link.
pub async fn connect(port: u16) -> Result<Client, String> {
    let (link, gw) = tokio::time::timeout(
        CALL_LIMIT,
        connect_to("127.0.0.1", port, &ClientConfig::plain()),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;
    let node = ping(&gw).await?;
    Ok(Client { link, gw, node })
}

/// Only the transport and link handshakes, no call.
pub async fn connect_only(port: u16) -> Result<(Link, RemoteObject), String> {
    tokio::time::timeout(
        CALL_LIMIT,
        connect_to("127.0.0.1", port, &ClientConfig::plain()),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))
}

/// `meta.ping()`: (node id, pid).
pub async fn ping(gw: &RemoteObject) -> Result<(u32, u32), String> {
    let v = tokio::time::timeout(CALL_LIMIT, gw.call_meta("ping", []))
        .await
        .map_err(|_| "ping timed out".to_owned())?
        .map_err(|e| format!("ping: {e}"))?;
    match v {
        Entity::Tuple(items) => match items.as_slice() {
            [Entity::Int(node), Entity::Int(pid)] => Ok((*node as u32, *pid as u32)),
            other => Err(format!("ping answered {other:?}")),
        },
        other => Err(format!("ping answered {other:?}")),
    }
}

/// `echo(i)`, checking the answer.
pub async fn echo(gw: &RemoteObject, i: i64) -> Result<(), String> {
    let v = tokio::time::timeout(CALL_LIMIT, gw.call("echo", (i,)))
        .await
        .map_err(|_| "echo timed out".to_owned())?
        .map_err(|e| format!("echo: {e}"))?;
    match v {
        Entity::Int(n) if n == i => Ok(()),
        other => Err(format!("echo({i}) answered {other:?}")),
    }
}

/// `sleep(ms)`: returns ms.
pub async fn sleep_call(gw: &RemoteObject, ms: i64) -> Result<i64, String> {
    let v = tokio::time::timeout(
        CALL_LIMIT + Duration::from_millis(ms as u64),
        gw.call("sleep", (ms,)),
    )
    .await
    .map_err(|_| "sleep timed out".to_owned())?
    .map_err(|e| format!("sleep: {e}"))?;
    match v {
        Entity::Int(n) => Ok(n),
        other => Err(format!("sleep({ms}) answered {other:?}")),
    }
}

/// Closes a link, bounded.
pub async fn close(link: &Link) {
    if tokio::time::timeout(Duration::from_secs(2), link.close())
        .await
        .is_err()
    {
        link.abort();
    }
}

/// Sessions per node id among `clients`.
pub fn spread(clients: &[Client]) -> HashMap<u32, u64> {
    let mut per: HashMap<u32, u64> = HashMap::new();
    for c in clients {
        *per.entry(c.node.0).or_default() += 1;
    }
    per
}
