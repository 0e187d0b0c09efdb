//! A `vole serve` child process for the bad-input tests: started on a free
//! port, its stderr collected line by line, killed and reaped on drop (so
//! also when a test fails), and a good library link to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::timeout;
use vole_link::resolve::{resolve, ClientConfig, Resolved};
use vole_link::{ObjectRef, RemoteObject, Value};

/// How long anything the server should do promptly may take.
pub const PROMPT: Duration = Duration::from_secs(5);

/// A running `vole serve`.
pub struct Server {
    child: Child,
    /// Its state directory (dev certificate, admin socket), removed on
    /// drop: the tests never touch the user's own state directory.
    state: std::path::PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    log: watch::Receiver<Vec<String>>,
}

impl Server {
    /// Starts `vole serve`, PLAIN only, with short timeouts and a 64 KiB
    /// message cap, and one node process (so the node that serves every
    /// connection is known: see [`Server::node`]), and waits for its
    /// `listening on ADDR` line.
    pub fn start() -> Server {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let state = std::env::temp_dir().join(format!(
            "vole-bad-input-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_vole"))
            .args([
                "serve",
                "--plain",
                "--no-tls",
                "--listen",
                "127.0.0.1:0",
                "--handshake-timeout",
                "1",
                "--write-timeout",
                "1",
                "--max-message",
                "65536",
                "--threads",
                "2",
                "--nodes",
                "1",
            ])
            .arg("--state-dir")
            .arg(&state)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vole serve starts");
        // From here on `server` owns the child: a failed assertion kills it.
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (log_tx, log) = watch::channel(Vec::new());
        let mut server = Server {
            child,
            state,
            port: 0,
            log,
        };
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log_tx.send_modify(|lines| lines.push(strip_ansi(&line)));
            }
        });
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = addr_tx.send(addr.to_owned());
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no 'listening on' line; stderr:\n{}", server.log_text()));
        server.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the listening line");
        server
    }

    /// Everything the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.borrow().join("\n")
    }

    /// Waits (bounded) for a stderr line about the connection from local
    /// port `peer_port` that contains `fragment`, and returns it.
    pub async fn wait_log(&self, peer_port: u16, fragment: &str) -> String {
        let peer = format!("127.0.0.1:{peer_port})");
        let matches = |line: &String| line.contains(&peer) && line.contains(fragment);
        let mut rx = self.log.clone();
        let found = timeout(PROMPT, rx.wait_for(|lines| lines.iter().any(matches))).await;
        let line = match found {
            Ok(Ok(lines)) => lines.iter().find(|l| matches(l)).cloned(),
            _ => None,
        };
        let line = line.unwrap_or_else(|| {
            panic!(
                "no log line for {peer} containing {fragment:?}; stderr:\n{}",
                self.log_text()
            )
        });
        println!("server log: {line}");
        line
    }

    /// The node process that serves the connections (the controller serves
    /// none itself): the one child of the controller named
    /// `vole-node-<id>`, with its start time (pids are reused). Call it
    /// once a link has been served (the node is up).
    pub fn node(&self) -> (u32, u64) {
        let me = self.child.id();
        let nodes: Vec<(u32, u64)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let (comm, ppid, start) = stat(pid)?;
                (ppid == me && comm.starts_with("vole-node-")).then_some((pid, start))
            })
            .collect();
        match nodes.as_slice() {
            [one] => *one,
            other => panic!("expected one node process of controller {me}, found {other:?}"),
        }
    }

    /// Opens a good link with the library client and resolves the echoer.
    pub async fn good_link(&self) -> GoodLink {
        let uri = format!("vop://127.0.0.1:{}/text/echo/", self.port);
        let resolved = timeout(PROMPT, resolve(&uri, &ClientConfig::plain()))
            .await
            .expect("resolve in time")
            .expect("resolve");
        let echo = match &resolved.value {
            Value::Ref(ObjectRef::Remote(r)) => r.clone(),
            other => panic!("resolved to {other:?}, not an object"),
        };
        let good = GoodLink {
            _resolved: resolved,
            echo,
        };
        good.check().await;
        good
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// (comm, ppid, start time in clock ticks) of a process, from
/// /proc/<pid>/stat.
pub fn stat(pid: u32) -> Option<(String, u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let comm = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_owned();
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    Some((
        comm,
        rest.get(1)?.parse().ok()?,
        rest.get(19)?.parse().ok()?,
    ))
}

/// VmRSS of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid).expect("VmRSS in /proc/<pid>/status")
}

/// VmRSS of process `pid` in KiB, if the process is there.
pub fn try_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Removes ANSI escape sequences, in case the subscriber colours anyway.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in '@'..='~'
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A link made with the library client, held open for a whole test.
pub struct GoodLink {
    _resolved: Resolved,
    echo: RemoteObject,
}

impl GoodLink {
    /// The echoer still answers.
    pub async fn check(&self) {
        let reply = timeout(PROMPT, self.echo.call("echo", ("still here",)))
            .await
            .expect("echo in time")
            .expect("echo on the good link");
        assert_eq!(reply, Value::str("still here"));
    }
}
