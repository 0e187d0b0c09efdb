//! `vole serve` under a stand-in for systemd: this test is the notify socket
//! (READY, RELOADING with MONOTONIC_USEC, MAINPID on upgrade, STOPPING, the
//! periodic WATCHDOG=1 when `WATCHDOG_USEC` is set) and passes a listening
//! socket the way socket activation does (LISTEN_FDS).

#![allow(unsafe_code)]

use std::io::{BufRead as _, BufReader};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VOLE: &str = env!("CARGO_BIN_EXE_vole");
const LIMIT: Duration = Duration::from_secs(30);

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vole-systemd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Kills every process whose pid is recorded, and the child, on drop.
struct Cleanup {
    child: Option<Child>,
    pidfile: PathBuf,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) with a pid from our own pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve(dir: &Path, notify: Option<&Path>, extra: &[&str]) -> Command {
    let mut cmd = Command::new(VOLE);
    cmd.args([
        "serve",
        "--plain",
        "--no-tls",
        "--grace",
        "2",
        "--nodes",
        "2",
        "--allow-root-nodes",
    ])
    .arg("--state-dir")
    .arg(dir)
    .arg("--pidfile")
    .arg(dir.join("vole.pid"))
    .args(extra)
    .env("NO_COLOR", "1")
    .env_remove("RUST_LOG")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for var in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        cmd.env_remove(var);
    }
    if let Some(n) = notify {
        cmd.env("NOTIFY_SOCKET", n);
    }
    cmd
}

/// Reads datagrams until one satisfies `want` (returns it) or time runs out.
fn expect(sock: &UnixDatagram, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if want(&msg) {
                return msg;
            }
        }
    }
    panic!("no matching notification; saw {seen:?}");
}

fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn notifications_follow_the_lifecycle() {
    let dir = temp_dir("notify");
    let notify_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).expect("notify socket");
    let mut cleanup = Cleanup {
        child: None,
        pidfile: dir.join("vole.pid"),
        dir: dir.clone(),
    };
    let child = serve(&dir, Some(&notify_path), &["--listen", "127.0.0.1:0"])
        .spawn()
        .expect("vole serve");
    let first = child.id();
    cleanup.child = Some(child);
    let mut seen = Vec::new();

    let ready = expect(&sock, &mut seen, |m| m.contains("READY=1"));
    assert!(ready.contains("STATUS=serving"), "{ready}");

    // SIGHUP: a reload is announced with a monotonic timestamp, then ready.
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(first as i32, libc::SIGHUP) };
    let reloading = expect(&sock, &mut seen, |m| m.contains("RELOADING=1"));
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("RELOADING=1 comes with MONOTONIC_USEC");
    assert!(usec > 0);
    expect(&sock, &mut seen, |m| m.contains("READY=1"));

    // No watchdog was asked for (no WATCHDOG_USEC): no keep-alives.
    assert!(
        !seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "WATCHDOG=1 without a watchdog: {seen:?}"
    );

    // SIGUSR2: the old controller names the new main pid; the new one takes
    // over; nobody says STOPPING.
    seen.clear();
    // SAFETY: as above.
    unsafe { libc::kill(first as i32, libc::SIGUSR2) };
    let mainpid = expect(&sock, &mut seen, |m| {
        m.starts_with("MAINPID=") && !m.contains(&format!("MAINPID={first}"))
    });
    let new: u32 = mainpid
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("MAINPID="))
        .and_then(|v| v.parse().ok())
        .expect("pid");
    assert_ne!(new, first);
    let deadline = Instant::now() + LIMIT;
    // Polls: the pid file and /proc give no event. The file is read without
    // panicking (it may be between writes).
    let pid_now = || {
        std::fs::read_to_string(dir.join("vole.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
    };
    while Instant::now() < deadline && (alive(first) || pid_now() != Some(new)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(c) = cleanup.child.as_mut() {
        let status = c.wait().expect("old controller");
        assert!(
            status.success(),
            "the old controller exits 0 after the upgrade: {status}"
        );
    }
    cleanup.child = None;
    assert_eq!(
        pid_in(&dir.join("vole.pid")),
        new,
        "the new controller owns the pid file"
    );
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING during an upgrade: {seen:?}"
    );

    // SIGTERM to the new controller: STOPPING.
    // SAFETY: kill(2) on the controller named by our pid file.
    unsafe { libc::kill(new as i32, libc::SIGTERM) };
    expect(&sock, &mut seen, |m| m.contains("STOPPING=1"));
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline && alive(new) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(new), "the new controller stopped");
}

/// With `WATCHDOG_USEC` set (as systemd sets it for `WatchdogSec=`), the
/// controller sends `WATCHDOG=1` every half timeout for as long as it runs:
/// never a gap as long as the timeout (systemd would kill the service), and
/// about as many as the window holds half timeouts.
#[test]
fn watchdog_keep_alives_come_every_half_timeout() {
    // The timeout systemd would enforce; the pings come every 1 s.
    const TIMEOUT: Duration = Duration::from_secs(2);
    const WINDOW: Duration = Duration::from_secs(6);
    let dir = temp_dir("watchdog");
    let notify_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).expect("notify socket");
    let mut cleanup = Cleanup {
        child: None,
        pidfile: dir.join("vole.pid"),
        dir: dir.clone(),
    };
    let mut cmd = serve(&dir, Some(&notify_path), &["--listen", "127.0.0.1:0"]);
    cmd.env("WATCHDOG_USEC", TIMEOUT.as_micros().to_string());
    let child = cmd.spawn().expect("vole serve");
    let pid = child.id();
    cleanup.child = Some(child);
    let mut seen = Vec::new();
    expect(&sock, &mut seen, |m| m.contains("READY=1"));

    // The keep-alives are the events measured: each is timed as it comes
    // for the whole window.
    let start = Instant::now();
    let mut pings = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    while start.elapsed() < WINDOW {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains("WATCHDOG=1") {
                pings.push(start.elapsed());
            } else {
                seen.push(msg);
            }
        }
    }
    let mut gaps = Vec::new();
    let mut last = Duration::ZERO;
    for p in &pings {
        gaps.push(*p - last);
        last = *p;
    }
    gaps.push(WINDOW - last);
    println!("{} keep-alives in {WINDOW:?}, at {pings:?}", pings.len());
    let longest = gaps.iter().max().copied().unwrap_or(WINDOW);
    assert!(
        longest < TIMEOUT,
        "a {longest:?} gap between keep-alives: systemd would have killed the service \
         (pings at {pings:?})"
    );
    // 6 half timeouts; a stalled loop may catch up with a burst, so the
    // count, not each gap's lower bound, shows the pace.
    let expected = (WINDOW.as_millis() / (TIMEOUT / 2).as_millis()) as usize;
    assert!(
        (expected - 2..=expected + 2).contains(&pings.len()),
        "{} keep-alives in {WINDOW:?}, expected about {expected}: {pings:?}",
        pings.len()
    );
    assert!(!seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");

    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    expect(&sock, &mut seen, |m| m.contains("STOPPING=1"));
    if let Some(c) = cleanup.child.as_mut() {
        let status = c.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
    cleanup.child = None;
}

#[test]
fn serves_on_a_socket_passed_by_socket_activation() {
    let dir = temp_dir("activation");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let raw: RawFd = listener.as_raw_fd();
    let cmd = serve(&dir, None, &[]);
    // systemd sets LISTEN_PID to the service's own pid after forking: the
    // shell exports its own pid and execs vole, which keeps it.
    let script = r#"export LISTEN_PID=$$; exec "$0" "$@""#;
    let mut wrapped = Command::new("/bin/sh");
    wrapped
        .arg("-c")
        .arg(script)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "vop")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec: dup2 only.
    unsafe {
        wrapped.pre_exec(move || {
            // Via a high number: if the listener already is 3, dup2(3, 3)
            // would leave close-on-exec set.
            let high = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 100);
            if high < 0 || libc::dup2(high, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = wrapped.spawn().expect("vole serve");
    drop(listener);
    let out = child.stdout.take().expect("stdout");
    let mut cleanup = Cleanup {
        child: Some(child),
        pidfile: dir.join("vole.pid"),
        dir: dir.clone(),
    };
    let mut lines = BufReader::new(out).lines();
    let mut listening = None;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(addr) = line.strip_prefix("listening on ") {
            listening = Some(addr.to_owned());
        }
        if line.starts_with("ready:") {
            break;
        }
    }
    assert_eq!(
        listening,
        Some(format!("127.0.0.1:{port}")),
        "serves on the passed socket, binds nothing"
    );
    let out = Command::new(VOLE)
        .args([
            "call",
            "--plain",
            &format!("vop://127.0.0.1:{port}/"),
            "echo",
            "activated",
        ])
        .output()
        .expect("vole call");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"activated\"");
    // `meta.ping` from the command line names the node that served it.
    let uri = format!("vop://127.0.0.1:{port}/");
    let call = |method: &str| {
        Command::new(VOLE)
            .args(["call", "--plain", &uri, method])
            .output()
            .expect("vole call")
    };
    let ping = call("meta.ping");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&ping.stdout).expect("meta.ping prints JSON");
    let (node, pid) = (answer[0].as_u64(), answer[1].as_u64());
    assert!(
        matches!(node, Some(0 | 1)),
        "node id of one of 2 nodes: {answer}"
    );
    let controller = cleanup.child.as_ref().map(|c| u64::from(c.id()));
    assert!(pid.is_some() && pid != controller, "a node's pid: {answer}");
    // An unknown meta call is the peer's error (exit code 2), not a usage one.
    let bad = call("meta.no_such");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    if let Some(c) = cleanup.child.as_mut() {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let status = c.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
    cleanup.child = None;
}
