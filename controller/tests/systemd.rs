//! systemd integration without systemd: child processes get what systemd
//! would give them (sockets at descriptor 3 on with `LISTEN_*`, a
//! notification socket in `NOTIFY_SOCKET`, a watchdog) and this test plays
//! the service manager.
//!
//! The child is this test binary again, run with one ignored helper
//! test selected (`--exact --ignored`) and told what to do by
//! `VOLE_SYSTEMD_CHILD`. `LISTEN_PID` and `WATCHDOG_PID` must be the child's
//! own pid, which is known only after the fork: the child runs through
//! `/bin/sh -c 'export LISTEN_PID=$$; exec "$0" "$@"'`, where `$$` is the
//! shell's pid, which `exec` keeps (systemd sets them after its fork too).

#![allow(unsafe_code)]

use std::io::{BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vole_controller::systemd::{self, listen_fds, Notifier};

const CHILD_VAR: &str = "VOLE_SYSTEMD_CHILD";
/// Bound on every child: killed if it runs longer (the test then fails).
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Kills the child if the test has not finished with it in time, or if
/// the test fails before reaping it (else a child blocked in `accept`
/// would outlive the test run).
struct Watchdog {
    pid: libc::pid_t,
    stop: Option<mpsc::Sender<()>>,
    reaped: bool,
}

impl Watchdog {
    fn new(child: &Child) -> Watchdog {
        let pid = child.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(CHILD_LIMIT) {
                // SAFETY: kill(2) on a child not yet reaped: the test reaps
                // it only after stopping this thread (`finish`).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        Watchdog {
            pid,
            stop: Some(tx),
            reaped: false,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.take();
        if !self.reaped {
            // SAFETY: as above: not reaped, so the pid is still our child's.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// Starts this binary's helper `helper` with `fds` at descriptors 3.., the
/// variables in `env`, and each of `own_pid_vars` set to the child's pid.
fn spawn_child(
    helper: &str,
    fds: &[BorrowedFd<'_>],
    env: &[(&str, String)],
    own_pid_vars: &[&str],
) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    let mut script = String::new();
    for var in own_pid_vars {
        script.push_str(&format!("export {var}=$$; "));
    }
    script.push_str(r#"exec "$0" "$@""#);
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg(exe)
        .args([
            helper,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for var in systemd::NODE_ENV_REMOVE {
        cmd.env_remove(var);
    }
    cmd.env(CHILD_VAR, helper);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    const MAX_FDS: usize = 8;
    assert!(raw.len() <= MAX_FDS, "at most {MAX_FDS} descriptors");
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (fcntl, dup2, close_range) on numbers,
    // allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first (a source could sit on a target number),
            // then onto 3, 4, ...: dup2 clears close-on-exec on the target.
            let mut high = [0 as RawFd; MAX_FDS];
            for (i, fd) in raw.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high[..raw.len()].iter().enumerate() {
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Nothing else inherited reaches the child (a cargo jobserver
            // pipe, say), so "descriptor 4 is not open" is deterministic.
            libc::syscall(
                libc::SYS_close_range,
                (3 + raw.len()) as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    cmd.spawn().expect("spawn the child")
}

/// The child's report lines (`CHILD ...`), read until `until` (or EOF).
fn read_report(reader: &mut impl std::io::BufRead, until: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("child output") == 0 {
            return lines;
        }
        if let Some(at) = line.find("CHILD ") {
            let report = line[at + "CHILD ".len()..].trim_end().to_owned();
            let last = report.starts_with(until);
            lines.push(report);
            if last {
                return lines;
            }
        }
    }
}

/// Reads the child's remaining output (libtest's summary: a closed pipe
/// would fail the child) and checks it exited successfully.
fn finish(mut child: Child, mut watchdog: Watchdog, mut out: impl std::io::Read) {
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).expect("child output");
    // Stop the watchdog before reaping, so it never signals a reused pid.
    watchdog.stop.take();
    watchdog.reaped = true;
    drop(watchdog);
    let status = child.wait().expect("wait");
    assert!(status.success(), "child failed: {status}");
}

fn descriptor_flags(fd: RawFd) -> (bool, bool) {
    // SAFETY: fcntl reading the flags of a descriptor we own.
    let (fd_flags, fl_flags) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFD),
            libc::fcntl(fd, libc::F_GETFL),
        )
    };
    assert!(fd_flags >= 0 && fl_flags >= 0);
    (
        fd_flags & libc::FD_CLOEXEC != 0,
        fl_flags & libc::O_NONBLOCK != 0,
    )
}

/// Helper run in a child: adopts the passed sockets, reports, and answers
/// one connection on each with its name.
#[test]
#[ignore = "helper: run in a child process by the socket activation tests"]
fn activation_child() {
    if std::env::var(CHILD_VAR).as_deref() != Ok("activation_child") {
        return;
    }
    // SAFETY: this process runs this one test (--exact, --test-threads=1):
    // libtest's main thread only waits for it and touches neither the
    // environment nor descriptors 3 and up, which systemd's stand-in
    // passed for us alone.
    let result = unsafe { listen_fds() };
    let cleared = [
        systemd::LISTEN_PID,
        systemd::LISTEN_FDS,
        systemd::LISTEN_FDNAMES,
    ]
    .iter()
    .all(|v| std::env::var_os(v).is_none());
    println!("CHILD env-cleared {cleared}");
    let listeners = match result {
        Ok(l) => l,
        Err(e) => {
            println!("CHILD error {e}");
            return;
        }
    };
    println!("CHILD count {}", listeners.len());
    for l in &listeners {
        let (cloexec, nonblocking) = descriptor_flags(l.listener.as_raw_fd());
        println!(
            "CHILD listener fd={} name={} addr={} cloexec={cloexec} nonblocking={nonblocking}",
            l.listener.as_raw_fd(),
            l.name.as_deref().unwrap_or("-"),
            l.listener.local_addr().expect("addr"),
        );
    }
    println!("CHILD accepting");
    for l in &listeners {
        l.listener.set_nonblocking(false).expect("blocking");
        let (mut conn, _) = l.listener.accept().expect("accept");
        writeln!(conn, "{}", l.name.as_deref().unwrap_or("-")).expect("answer");
    }
    println!("CHILD done");
}

/// Helper run in a child: notifies from the environment as a process that
/// replaces the main process would.
#[test]
#[ignore = "helper: run in a child process by the notification tests"]
fn notify_child() {
    if std::env::var(CHILD_VAR).as_deref() != Ok("notify_child") {
        return;
    }
    let n = Notifier::from_env();
    let watchdog = n
        .watchdog_interval()
        .map_or("none".to_owned(), |d| d.as_millis().to_string());
    println!(
        "CHILD pid={} enabled={} watchdog-ms={watchdog}",
        std::process::id(),
        n.is_enabled()
    );
    n.take_over(Some("taken over"));
    n.watchdog();
    println!("CHILD done");
}

fn activate(
    fds: &[BorrowedFd<'_>],
    names: Option<&str>,
    count: usize,
) -> (Child, Watchdog, BufReader<std::process::ChildStdout>) {
    let mut env = vec![(systemd::LISTEN_FDS, count.to_string())];
    if let Some(names) = names {
        env.push((systemd::LISTEN_FDNAMES, names.to_owned()));
    }
    let mut child = spawn_child("activation_child", fds, &env, &[systemd::LISTEN_PID]);
    let watchdog = Watchdog::new(&child);
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (child, watchdog, out)
}

#[test]
fn socket_activation_adopts_named_listeners_and_serves_them() {
    let vop = TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addrs: Vec<SocketAddr> = [&vop, &admin]
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let (child, watchdog, mut out) = activate(&[vop.as_fd(), admin.as_fd()], Some("vop:admin"), 2);
    // Only the child holds the sockets now.
    drop((vop, admin));
    let report = read_report(&mut out, "accepting");
    assert_eq!(report[0], "env-cleared true", "{report:?}");
    assert_eq!(report[1], "count 2", "{report:?}");
    assert_eq!(
        report[2],
        format!(
            "listener fd=3 name=vop addr={} cloexec=true nonblocking=true",
            addrs[0]
        )
    );
    assert_eq!(
        report[3],
        format!(
            "listener fd=4 name=admin addr={} cloexec=true nonblocking=true",
            addrs[1]
        )
    );
    for (addr, name) in addrs.iter().zip(["vop", "admin"]) {
        let mut conn = TcpStream::connect(addr).expect("connect");
        conn.set_read_timeout(Some(CHILD_LIMIT)).expect("timeout");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("answer");
        assert_eq!(answer, format!("{name}\n"));
    }
    assert_eq!(read_report(&mut out, "done"), vec!["done"]);
    finish(child, watchdog, out);
}

#[test]
fn socket_activation_refuses_a_socket_that_does_not_listen() {
    let vop = TcpListener::bind("127.0.0.1:0").expect("bind");
    let idle =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    idle.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let (child, watchdog, mut out) = activate(&[vop.as_fd(), idle.as_fd()], Some("vop:idle"), 2);
    let report = read_report(&mut out, "error");
    assert_eq!(
        report,
        vec![
            "env-cleared true".to_owned(),
            "error socket activation: fd 4 (name \"idle\") is not listening (bound or connected, not in the LISTEN state)".to_owned(),
        ]
    );
    finish(child, watchdog, out);
}

#[test]
fn socket_activation_refuses_a_datagram_socket() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (child, watchdog, mut out) = activate(&[udp.as_fd()], None, 1);
    let report = read_report(&mut out, "error");
    assert_eq!(
        report.last().map(String::as_str),
        Some("error socket activation: fd 3 (no name) is not a stream socket (type SOCK_DGRAM)")
    );
    finish(child, watchdog, out);
}

#[test]
fn socket_activation_refuses_a_descriptor_that_was_not_passed() {
    let vop = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (child, watchdog, mut out) = activate(&[vop.as_fd()], None, 2);
    let report = read_report(&mut out, "error");
    let last = report.last().expect("a report");
    assert!(
        last.starts_with("error socket activation: fd 4 (no name) was passed but is not open"),
        "{report:?}"
    );
    finish(child, watchdog, out);
}

#[test]
fn socket_activation_ignores_variables_meant_for_another_process() {
    let vop = TcpListener::bind("127.0.0.1:0").expect("bind");
    // LISTEN_PID is the shell's parent (us), not the child.
    let env = [
        (systemd::LISTEN_PID, std::process::id().to_string()),
        (systemd::LISTEN_FDS, "1".to_owned()),
    ];
    let mut child = spawn_child("activation_child", &[vop.as_fd()], &env, &[]);
    let watchdog = Watchdog::new(&child);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let report = read_report(&mut out, "done");
    assert_eq!(
        report,
        vec!["env-cleared true", "count 0", "accepting", "done"]
    );
    finish(child, watchdog, out);
}

fn notify_socket(addr: &std::os::unix::net::SocketAddr) -> UnixDatagram {
    let sock = UnixDatagram::bind_addr(addr).expect("bind the notify socket");
    sock.set_read_timeout(Some(CHILD_LIMIT)).expect("timeout");
    sock
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).expect("utf-8")
}

/// Runs `notify_child` with `env` (and WATCHDOG_PID set to its own pid if
/// `own_watchdog`); returns it, its report line and the rest of its output.
fn run_notify_child(
    env: &[(&str, String)],
    own_watchdog: bool,
) -> (Child, Watchdog, String, impl std::io::Read) {
    let own: &[&str] = if own_watchdog {
        &[systemd::WATCHDOG_PID]
    } else {
        &[]
    };
    let mut child = spawn_child("notify_child", &[], env, own);
    let watchdog = Watchdog::new(&child);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let report = read_report(&mut out, "done");
    assert_eq!(report.len(), 2, "{report:?}");
    (child, watchdog, report[0].clone(), out)
}

#[test]
fn a_successor_process_notifies_through_a_path_socket_with_its_watchdog() {
    let dir = std::env::temp_dir().join(format!("vole-systemd-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("notify.sock");
    let sock = notify_socket(&std::os::unix::net::SocketAddr::from_pathname(&path).expect("addr"));
    let env = [
        (
            systemd::NOTIFY_SOCKET,
            path.to_str().expect("utf-8").to_owned(),
        ),
        (systemd::WATCHDOG_USEC, "6000000".to_owned()),
    ];
    let (child, watchdog, report, out) = run_notify_child(&env, true);
    let pid = child.id();
    assert_eq!(report, format!("pid={pid} enabled=true watchdog-ms=3000"));
    assert_eq!(
        recv(&sock),
        format!("MAINPID={pid}\nREADY=1\nSTATUS=taken over")
    );
    assert_eq!(recv(&sock), "WATCHDOG=1");
    finish(child, watchdog, out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_abstract_notify_socket_works_and_another_pid_s_watchdog_is_ignored() {
    let name = format!("vole-systemd-it-{}", std::process::id());
    let sock = notify_socket(
        &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr"),
    );
    let env = [
        (systemd::NOTIFY_SOCKET, format!("@{name}")),
        (systemd::WATCHDOG_USEC, "6000000".to_owned()),
        (systemd::WATCHDOG_PID, "1".to_owned()),
    ];
    let (child, watchdog, report, out) = run_notify_child(&env, false);
    let pid = child.id();
    assert_eq!(report, format!("pid={pid} enabled=true watchdog-ms=none"));
    assert_eq!(
        recv(&sock),
        format!("MAINPID={pid}\nREADY=1\nSTATUS=taken over")
    );
    assert_eq!(recv(&sock), "WATCHDOG=1");
    finish(child, watchdog, out);
}

#[test]
fn without_notify_socket_the_notifier_does_nothing() {
    let env = [(systemd::WATCHDOG_USEC, "6000000".to_owned())];
    let (child, watchdog, report, out) = run_notify_child(&env, true);
    assert_eq!(
        report,
        format!("pid={} enabled=false watchdog-ms=none", child.id())
    );
    finish(child, watchdog, out);
}

#[test]
fn a_bad_notify_socket_value_disables_notifications() {
    let env = [(systemd::NOTIFY_SOCKET, "relative/notify".to_owned())];
    let (child, watchdog, report, out) = run_notify_child(&env, false);
    assert_eq!(
        report,
        format!("pid={} enabled=false watchdog-ms=none", child.id())
    );
    finish(child, watchdog, out);
}
