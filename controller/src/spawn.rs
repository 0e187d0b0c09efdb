//! Starting node processes.
//!
//! The controller opens its own executable once at start ([`Executable`])
//! and starts every node from that open file (`/proc/self/fd/N`), so a node
//! started after the binary on disk was replaced still runs the same code
//! as its controller. Each node gets:
//!
//! * the control socket at descriptor 3 (and, in `dispatch` mode, the
//!   connection socket at 4): the only descriptors it inherits, since every
//!   other one the controller holds is close-on-exec;
//! * `PR_SET_PDEATHSIG` = SIGTERM, set before `exec`, plus a check that the
//!   controller did not die before that took effect: a node never outlives
//!   its controller;
//! * its own process group, so a Ctrl-C in the controller's terminal reaches
//!   only the controller, which then stops the nodes in order;
//! * piped stdout and stderr, which the controller copies to its own stderr
//!   line by line, each line whole and prefixed with the node id and pid
//!   (with JSON logs, the id and pid are added to each line's object
//!   instead, so every line stays one JSON object).

#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use vole_control::quiet::QuietStream;

use crate::balance::NodeId;

/// The descriptor a node finds its control socket at.
pub const CONTROL_FD: RawFd = 3;
/// The descriptor a node finds its connection socket at (`dispatch` mode).
pub const CONN_FD: RawFd = 4;
/// Longest node output line copied whole; longer lines are split.
const MAX_LINE: usize = 64 * 1024;

/// The controller's own executable, opened once.
#[derive(Debug)]
pub struct Executable {
    file: File,
}

impl Executable {
    /// Opens the running executable.
    pub fn open_self() -> io::Result<Self> {
        Ok(Executable {
            file: File::open("/proc/self/exe")?,
        })
    }

    fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct NodeCommand {
    /// The node's id.
    pub id: NodeId,
    /// The hosted service's name; the node's `argv[0]` is
    /// `<name>-node-<id>`.
    pub name: String,
    /// Arguments after `vole node --id N --control-fd 3 [--conn-fd 4]`.
    pub extra_args: Vec<String>,
    /// Whether the node gets a connection socket (`dispatch` mode).
    pub dispatch: bool,
    /// Run the node as this user and group (uid, gid) instead of the
    /// controller's.
    pub user: Option<(u32, u32)>,
    /// The node logs JSON lines: its output is forwarded as JSON objects.
    pub log_json: bool,
    /// An external node's program and arguments ([`spawn_external`]);
    /// `None` for the host's own node.
    pub external: Option<Vec<String>>,
}

/// A started node: the process and the controller's ends of its sockets.
#[derive(Debug)]
pub struct Spawned {
    /// The process (stdout and stderr already taken for forwarding).
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// The controller's end of the control socket.
    pub control: QuietStream,
    /// The connection socket, in `dispatch` mode.
    pub conn: Option<ConnSocket>,
}

/// The controller's hold on a node's `dispatch` connection socket.
#[derive(Debug)]
pub struct ConnSocket {
    /// The controller's end, which it sends connections on (dormant: the
    /// node sends nothing back; see [`QuietStream::dormant`]).
    pub ours: QuietStream,
    /// A copy of the node's end, never read while the node lives. It keeps
    /// the node's end of the socket, and the connections queued in it, in
    /// existence after the node is gone, so the controller can take back
    /// those it never received ([`vole_control::fdpass::drain`]).
    pub node_end: OwnedFd,
}

impl ConnSocket {
    /// Bytes (frames) queued in the node's end that it has not received
    /// yet: 0 once the node has taken every connection sent so far.
    pub fn unreceived(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on a socket we hold writes one c_int.
        let r = unsafe { libc::ioctl(self.node_end.as_raw_fd(), libc::FIONREAD, &mut n) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

fn socketpair() -> io::Result<(
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
)> {
    // Both ends close-on-exec: the child's end is moved to a fixed number
    // (which clears the flag on that number only) just before exec.
    std::os::unix::net::UnixStream::pair()
}

/// Starts this executable as node `cmd.id` with the arguments `args`
/// adds, `fds` placed at descriptors 3, 4, ... (the only ones it
/// inherits), PDEATHSIG, a process group of its own, the node user, and
/// its output forwarded line by line. Returns the child and its pid.
fn launch(
    exe: &Executable,
    cmd: &NodeCommand,
    fds: &[RawFd],
    args: impl FnOnce(&mut Command),
) -> io::Result<(Child, u32)> {
    let controller_pid = nix::unistd::getpid().as_raw();
    let reset_sched = crate::sched::nodes_need_reset();
    let mut command = Command::new(exe.path());
    command.arg0(format!("{}-node-{}", cmd.name, cmd.id));
    args(&mut command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Nodes do not talk to systemd or take sockets from it: the controller
    // does.
    for var in crate::systemd::NODE_ENV_REMOVE {
        command.env_remove(var);
    }
    if let Some((uid, gid)) = cmd.user {
        // std sets the group, drops supplementary groups and sets the user
        // before running the closure below, so PDEATHSIG (which a
        // credential change would clear) is armed after the switch.
        command.gid(gid).uid(uid);
    }
    let fds = fds.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (sched_setscheduler, fcntl, dup2,
    // prctl, getppid, setpgid); it allocates nothing (`fds` was copied
    // before the fork and is only read) and takes no locks.
    unsafe {
        command.pre_exec(move || {
            if reset_sched {
                // Not fatal: a node left SCHED_BATCH still serves.
                let _ = crate::sched::reset_in_child();
            }
            child_setup(&fds, controller_pid)
        });
    }
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("node exited before its pid was known"))?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, cmd.id, pid, cmd.log_json));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, cmd.id, pid, cmd.log_json));
    }
    Ok((child, pid))
}

/// Starts a node process.
pub fn spawn(exe: &Executable, cmd: &NodeCommand) -> io::Result<Spawned> {
    let (control_parent, control_child) = socketpair()?;
    let conn_pair = if cmd.dispatch {
        Some(socketpair()?)
    } else {
        None
    };
    let mut fds = vec![control_child.as_raw_fd()];
    fds.extend(conn_pair.as_ref().map(|(_, child)| child.as_raw_fd()));
    let (child, pid) = launch(exe, cmd, &fds, |command| {
        command
            .arg("node")
            .arg("--id")
            .arg(cmd.id.to_string())
            .arg("--control-fd")
            .arg(CONTROL_FD.to_string());
        if cmd.dispatch {
            command.arg("--conn-fd").arg(CONN_FD.to_string());
        }
        command.args(&cmd.extra_args);
    })?;
    drop(control_child);
    let conn = match conn_pair {
        Some((parent, child_end)) => Some(ConnSocket {
            ours: QuietStream::dormant(parent)?,
            // Close-on-exec like every descriptor here: no other node
            // inherits it.
            node_end: OwnedFd::from(child_end),
        }),
        None => None,
    };
    Ok(Spawned {
        child,
        pid,
        control: QuietStream::new(control_parent)?,
        conn,
    })
}

/// The hidden subcommand of a host's own binary that starts an external
/// node: it sets `LISTEN_PID` to its own pid (known only after the fork)
/// and execs the command (see [`spawn_external`]).
pub const EXEC_NODE: &str = "exec-node";

/// A started external node.
#[derive(Debug)]
pub struct SpawnedExternal {
    /// The process (stdout and stderr already taken for forwarding).
    pub child: Child,
    /// Its pid.
    pub pid: u32,
}

/// Starts an external node: `argv` (a program in any language) with the
/// listening sockets at descriptors 3, 4, ... by the systemd
/// socket-activation convention (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`) plus `VOLE_NODE_ID`, under the same supervision as a
/// vole node: PDEATHSIG, its own process group, line-atomic output capture,
/// the node user.
///
/// `LISTEN_PID` must be the node's own pid, known only after the fork, and
/// nothing may be allocated between fork and exec; so the child runs this
/// executable's [`EXEC_NODE`] mode, which sets it and execs `argv` in the
/// same process.
pub fn spawn_external(
    exe: &Executable,
    cmd: &NodeCommand,
    argv: &[String],
    listeners: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<SpawnedExternal> {
    if argv.is_empty() {
        return Err(io::Error::other("the node command is empty"));
    }
    if listeners.is_empty() || listeners.len() > MAX_NODE_FDS {
        return Err(io::Error::other(format!(
            "an external node takes 1 to {MAX_NODE_FDS} listening sockets, not {}",
            listeners.len()
        )));
    }
    let raw: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    let (child, pid) = launch(exe, cmd, &raw, |command| {
        command
            .arg(EXEC_NODE)
            .arg("--id")
            .arg(cmd.id.to_string())
            .arg("--fds")
            .arg(listeners.len().to_string())
            .arg("--name")
            .arg(&cmd.name)
            .arg("--")
            .args(argv);
    })?;
    Ok(SpawnedExternal { child, pid })
}

/// What [`EXEC_NODE`] does, in the new process before anything else: sets
/// the socket-activation variables for `fds` listening sockets at 3, 4,
/// ... and `VOLE_NODE_ID`, then replaces itself with `argv`. Returns only
/// if the exec fails.
///
/// Call it only while the process has one thread (it sets environment
/// variables).
pub fn exec_node(id: NodeId, fds: usize, name: &str, argv: &[String]) -> io::Error {
    use std::os::unix::process::CommandExt as _;
    let Some((program, args)) = argv.split_first() else {
        return io::Error::other("the node command is empty");
    };
    let names: Vec<String> = (0..fds).map(|_| name.replace(':', "_")).collect();
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env("LISTEN_FDS", fds.to_string())
        .env("LISTEN_PID", std::process::id().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env("VOLE_NODE_ID", id.to_string());
    command.exec()
}

/// Most descriptors a node gets at fixed numbers (3 and up).
pub const MAX_NODE_FDS: usize = 16;

/// In the child, between fork and exec: puts `fds` at 3, 4, ... (the only
/// descriptors the node inherits), arms PDEATHSIG and moves to a process
/// group of its own.
fn child_setup(fds: &[RawFd], controller_pid: libc::pid_t) -> io::Result<()> {
    if fds.len() > MAX_NODE_FDS {
        return Err(io::Error::other("too many descriptors for a node"));
    }
    // Move the sockets out of the way first (to numbers above any target),
    // then onto their fixed numbers; dup2 leaves close-on-exec clear on the
    // new number only. A fixed array: nothing is allocated here.
    let mut high = [0 as RawFd; MAX_NODE_FDS];
    for (slot, &fd) in high.iter_mut().zip(fds) {
        // SAFETY: plain fcntl on a descriptor this process owns.
        let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + MAX_NODE_FDS as RawFd) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        *slot = r;
    }
    for (i, &from) in high[..fds.len()].iter().enumerate() {
        // SAFETY: dup2 onto a fixed number in the child.
        if unsafe { libc::dup2(from, CONTROL_FD + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Anything else this process inherited without close-on-exec (from
    // whatever started the controller) must not reach the node: mark every
    // descriptor above ours close-on-exec. (Closing them here would also
    // close the pipe std uses to report a failed exec.) The first
    // descriptor above ours: an inherited descriptor numbered just past
    // them would otherwise reach the node.
    let first = CONTROL_FD + fds.len() as RawFd;
    // SAFETY: close_range with the CLOEXEC flag only sets descriptor flags.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked != 0 {
        // Kernels before 5.11: set the flag one descriptor at a time, up to
        // the descriptor limit (fcntl is async-signal-safe).
        // SAFETY: getrlimit and fcntl on descriptor numbers; F_SETFD on a
        // closed number just fails with EBADF.
        unsafe {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(1 << 20) as RawFd
            } else {
                4096
            };
            for fd in first..max {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    // SAFETY: prctl, getppid and setpgid with valid arguments.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // The controller may have died before PDEATHSIG was armed.
        if libc::getppid() != controller_pid {
            return Err(io::Error::other(
                "controller exited while starting the node",
            ));
        }
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Copies a node's output to the controller's stderr, one whole line at a
/// time, each marked with the node id and pid (see [`node_line`]).
async fn forward_lines(stream: impl AsyncRead + Unpin, id: NodeId, pid: u32, json: bool) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let out = node_line(&line, id, pid, json);
                // One write per line under the stderr lock: lines from
                // different nodes never interleave.
                let _ = io::stderr().lock().write_all(&out);
            }
        }
    }
}

/// One line of a node's output as the controller writes it, ending in a
/// newline. Text logs: prefixed `[node <id> pid <pid>] `. JSON logs: a line
/// that is a JSON object gets `"node"` and `"pid"` fields (unless it has
/// them), any other line (a panic message, say) becomes
/// `{"node":..,"pid":..,"message":"<the line>"}`, so the log stays one JSON
/// object per line.
fn node_line(line: &[u8], id: NodeId, pid: u32, json: bool) -> Vec<u8> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    if !json {
        let mut out = format!("[node {id} pid {pid}] ").into_bytes();
        out.extend_from_slice(text);
        out.push(b'\n');
        return out;
    }
    let object = std::str::from_utf8(text).ok().and_then(|t| {
        let map = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(t).ok()?;
        // A JSON object: `{` is its first non-blank character.
        let body = t.trim_start().strip_prefix('{')?;
        Some((map, body))
    });
    let mut out = match object {
        Some((map, body)) => {
            let mut fields = Vec::new();
            if !map.contains_key("node") {
                fields.push(format!("\"node\":{id}"));
            }
            if !map.contains_key("pid") {
                fields.push(format!("\"pid\":{pid}"));
            }
            let sep = if fields.is_empty() || map.is_empty() {
                ""
            } else {
                ","
            };
            format!("{{{}{sep}{body}", fields.join(","))
        }
        None => serde_json::json!({
            "node": id,
            "pid": pid,
            "message": String::from_utf8_lossy(text),
        })
        .to_string(),
    }
    .into_bytes();
    out.push(b'\n');
    out
}

/// Sends SIGTERM to a process (ignoring a process that is already gone).
pub fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Sends SIGKILL to a process (ignoring a process that is already gone).
pub fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &str, json: bool) -> String {
        String::from_utf8(node_line(input.as_bytes(), 3, 42, json)).expect("utf-8")
    }

    #[test]
    fn text_lines_get_a_prefix() {
        assert_eq!(line("hello\n", false), "[node 3 pid 42] hello\n");
        // A line cut at the length limit still ends in a newline.
        assert_eq!(line("cut", false), "[node 3 pid 42] cut\n");
    }

    #[test]
    fn json_lines_get_the_node_and_pid_as_fields() {
        let out = line("{\"level\":\"INFO\",\"message\":\"hi\"}\n", true);
        assert_eq!(
            out,
            "{\"node\":3,\"pid\":42,\"level\":\"INFO\",\"message\":\"hi\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!((v["node"].as_u64(), v["pid"].as_u64()), (Some(3), Some(42)));
        // Fields the line has are kept, not repeated.
        let out = line("{\"node\":3,\"message\":\"x\"}", true);
        assert_eq!(out, "{\"pid\":42,\"node\":3,\"message\":\"x\"}\n");
        let out = line("{\"node\":3,\"pid\":7}", true);
        assert_eq!(out, "{\"node\":3,\"pid\":7}\n");
        assert_eq!(line("{}", true), "{\"node\":3,\"pid\":42}\n");
    }

    #[test]
    fn other_lines_in_json_mode_become_objects() {
        for input in [
            "thread 'main' panicked at src/x.rs:1:1\n",
            "[1, 2]",
            "{not json",
            "\u{fffd}",
        ] {
            let out = line(input, true);
            let v: serde_json::Value = serde_json::from_str(&out).expect("json");
            assert_eq!(v["node"].as_u64(), Some(3), "{out}");
            assert_eq!(
                v["message"].as_str(),
                Some(input.trim_end_matches('\n')),
                "{out}"
            );
        }
        // Bytes that are not UTF-8 are replaced, not dropped.
        let out = String::from_utf8(node_line(b"a\xffb\n", 3, 42, true)).expect("utf-8");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["message"].as_str(), Some("a\u{fffd}b"));
    }
}
