//! systemd integration without libsystemd: service notifications
//! (`sd_notify`) and socket activation (`sd_listen_fds`).
//!
//! * [`Notifier`] sends state changes (`READY=1`, `RELOADING=1`,
//!   `STOPPING=1`, `STATUS=`, `MAINPID=`, `WATCHDOG=1`) as datagrams to the
//!   socket named by `NOTIFY_SOCKET`, a path or an abstract name (`@name`).
//!   Without the variable it is a no-op, so the same code runs under
//!   systemd, another supervisor or a terminal. Failures are logged, never
//!   fatal: a service must not die because its supervisor is unreachable.
//! * [`listen_fds`] adopts the listening TCP sockets systemd passed at
//!   descriptors 3.. (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`),
//!   checking each is a listening TCP socket, and clears the variables.
//!
//! Why not the `sd-notify` crate: its `notify` reads `NOTIFY_SOCKET` from
//! the environment on every call and passes the value to
//! `UnixDatagram::connect` as a path, so abstract sockets (`@name`, used by
//! systemd in containers and by `systemd-run --user` setups) do not work, and
//! there is no way to aim it at a socket other than the environment's (the
//! tests, and a process handing over to its replacement, need that). Its
//! `listen_fds` does not check what the descriptors are. The protocol is a
//! few lines over `std::os::unix::net::UnixDatagram`.
//!
//! Processes of this service: only the controller (and a process started to
//! replace it in a binary upgrade) notifies. Node processes must not see
//! the variables ([`NODE_ENV_REMOVE`]). A replacement controller notifies
//! from another pid than the one systemd started, which systemd accepts only
//! with `NotifyAccess=all` in the unit (see `deploy/vole.service`).

#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;

use crate::error::Error;
use crate::lifecycle::Lifecycle;

/// Variable naming the service manager's notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Variable with the watchdog timeout, microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// Variable with the pid the watchdog timeout is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// Variable with the pid the passed descriptors are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Variable with the number of passed descriptors.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// Variable with the colon-separated names of the passed descriptors.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first passed descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Variables to remove from a node process's environment: they are meant
/// for the service's main process, and a node that read them could report
/// to systemd in the controller's name (`NotifyAccess=all` accepts any
/// process of the service).
pub const NODE_ENV_REMOVE: [&str; 6] = [
    NOTIFY_SOCKET,
    WATCHDOG_USEC,
    WATCHDOG_PID,
    LISTEN_PID,
    LISTEN_FDS,
    LISTEN_FDNAMES,
];

/// How long one notification may wait for room in the service manager's
/// queue before it is dropped (and logged).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends service state notifications to systemd (the `sd_notify`
/// protocol). Cheap to clone; every clone sends to the same socket.
///
/// All methods but [`Notifier::send`] log failures and return nothing: a
/// notification that cannot be delivered never stops the service.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
    watchdog: Option<Duration>,
    /// This process replaces the main process (binary upgrade).
    successor: bool,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages and for a successor.
    raw: OsString,
    /// Whether the last send failed (later failures are logged quietly).
    failing: AtomicBool,
}

impl Notifier {
    /// A notifier for this process's environment: `NOTIFY_SOCKET` and the
    /// watchdog variables. Without `NOTIFY_SOCKET`, or with a value that
    /// cannot be used (logged), it sends nothing.
    ///
    /// Reads the environment only: it may be called at any time, from any
    /// thread.
    pub fn from_env() -> Notifier {
        let mut notifier = match std::env::var_os(NOTIFY_SOCKET) {
            None => Notifier::disabled(),
            Some(v) if v.is_empty() => Notifier::disabled(),
            Some(v) => match Notifier::connect(&v) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "not notifying systemd");
                    Notifier::disabled()
                }
            },
        };
        if notifier.is_enabled() {
            let usec = std::env::var_os(WATCHDOG_USEC);
            let pid = std::env::var_os(WATCHDOG_PID);
            match watchdog_timeout(usec.as_deref(), pid.as_deref(), std::process::id()) {
                Ok(timeout) => notifier.watchdog = timeout,
                Err(e) => tracing::warn!(error = %e, "systemd watchdog not enabled"),
            }
        }
        notifier
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// A notifier for the socket `notify_socket`, in `NOTIFY_SOCKET`'s
    /// syntax: an absolute path, or `@name` for an abstract socket. No
    /// watchdog.
    pub fn connect(notify_socket: &OsStr) -> Result<Notifier, Error> {
        let addr = notify_addr(notify_socket)?;
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_write_timeout(Some(SEND_TIMEOUT)).map(|()| s))
            .map_err(|e| Error::Notify(format!("cannot create a datagram socket: {e}")))?;
        Ok(Notifier {
            target: Some(Arc::new(Target {
                socket,
                addr,
                raw: notify_socket.to_owned(),
                failing: AtomicBool::new(false),
            })),
            watchdog: None,
            successor: false,
        })
    }

    /// Sets the watchdog timeout (as `WATCHDOG_USEC` would).
    pub fn with_watchdog(mut self, timeout: Option<Duration>) -> Notifier {
        self.watchdog = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Marks this process as the replacement of the main process (a binary
    /// upgrade): [`Lifecycle::Ready`] then also says `MAINPID=<own pid>`
    /// (see [`Notifier::take_over`]), so systemd follows the new process
    /// even if the old one cannot say so any more.
    pub fn successor(mut self) -> Notifier {
        self.successor = true;
        self
    }

    /// Tells systemd about a moment of the controller's life:
    ///
    /// | event | datagram |
    /// |---|---|
    /// | `Ready` | `READY=1`, `STATUS=serving` (a successor: `MAINPID=<own pid>` first) |
    /// | `Reloading` | `RELOADING=1`, `MONOTONIC_USEC=<now>` |
    /// | `Reloaded` | `READY=1`, `STATUS=serving` |
    /// | `Stopping` | `STOPPING=1` |
    /// | `MainPid(pid)` | `MAINPID=<pid>` |
    /// | `Watchdog` | `WATCHDOG=1` |
    pub fn lifecycle(&self, event: Lifecycle) {
        match event {
            Lifecycle::Ready if self.successor => self.take_over(Some("serving")),
            Lifecycle::Ready | Lifecycle::Reloaded => self.ready(Some("serving")),
            Lifecycle::ReloadFailed => self.ready(Some("serving; the last reload failed")),
            Lifecycle::Reloading => self.reloading(),
            Lifecycle::Stopping => self.stopping(),
            Lifecycle::MainPid(pid) => self.mainpid(pid),
            Lifecycle::Watchdog => self.watchdog(),
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Start-up (or a reload) is complete: `READY=1`, with a status line.
    pub fn ready(&self, status: Option<&str>) {
        let mut msg = String::from("READY=1");
        push_status(&mut msg, status);
        self.notify(&msg);
    }

    /// A configuration reload starts: `RELOADING=1` and `MONOTONIC_USEC=`
    /// (systemd 253 and later require the timestamp). Send
    /// [`Notifier::ready`] when the reload is done, whether it worked or
    /// not.
    pub fn reloading(&self) {
        if !self.is_enabled() {
            return;
        }
        let msg = match monotonic_usec() {
            Ok(now) => format!("RELOADING=1\nMONOTONIC_USEC={now}"),
            Err(e) => {
                tracing::warn!(error = %e, "no monotonic clock for MONOTONIC_USEC");
                "RELOADING=1".to_owned()
            }
        };
        self.notify(&msg);
    }

    /// The service is stopping: `STOPPING=1`.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// A one-line status for `systemctl status`: `STATUS=`. Control
    /// characters (a newline would start another assignment) become
    /// spaces.
    pub fn status(&self, text: &str) {
        let mut msg = String::new();
        push_status(&mut msg, Some(text));
        self.notify(msg.trim_start_matches('\n'));
    }

    /// The service's main process is now `pid`: `MAINPID=`.
    pub fn mainpid(&self, pid: u32) {
        self.notify(&format!("MAINPID={pid}"));
    }

    /// For a process started to replace the main process (a binary
    /// upgrade): this process is the main process now and serves, in one
    /// datagram: `MAINPID=<own pid>`, `READY=1`, optional `STATUS=`.
    /// systemd accepts it only with `NotifyAccess=all`.
    pub fn take_over(&self, status: Option<&str>) {
        let mut msg = format!("MAINPID={}\nREADY=1", std::process::id());
        push_status(&mut msg, status);
        self.notify(&msg);
    }

    /// Keep-alive for the watchdog: `WATCHDOG=1`. Send it every
    /// [`Notifier::watchdog_interval`] from the loop whose liveness it
    /// vouches for.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// Asks for `by` more time than the start, reload or stop timeout
    /// allows, counted from now: `EXTEND_TIMEOUT_USEC=`.
    pub fn extend_timeout(&self, by: Duration) {
        self.notify(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
    }

    /// How often to call [`Notifier::watchdog`]: half the watchdog timeout
    /// systemd set (`WATCHDOG_USEC`, if `WATCHDOG_PID` is unset or names
    /// this process), or `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.is_enabled() {
            return None;
        }
        self.watchdog.map(|t| t / 2)
    }

    /// The environment a process started to replace this one (a binary
    /// upgrade) needs to notify and keep the watchdog fed: each variable to
    /// set (`Some`) or remove (`None`). `WATCHDOG_PID` is removed: it names
    /// this process, and without it the watchdog applies to whoever reads
    /// `WATCHDOG_USEC`.
    pub fn successor_env(&self) -> Vec<(&'static str, Option<OsString>)> {
        let mut env = vec![
            (NOTIFY_SOCKET, self.target.as_ref().map(|t| t.raw.clone())),
            (
                WATCHDOG_USEC,
                self.watchdog
                    .filter(|_| self.is_enabled())
                    .map(|t| OsString::from(t.as_micros().to_string())),
            ),
            (WATCHDOG_PID, None),
        ];
        env.extend(
            [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES]
                .into_iter()
                .map(|k| (k, None)),
        );
        env
    }

    /// Sends `message` (newline-separated `KEY=value` assignments) as one
    /// datagram. A disabled notifier sends nothing and succeeds.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sent = target
            .socket
            .send_to_addr(message.as_bytes(), &target.addr)?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification truncated",
            ));
        }
        Ok(())
    }

    /// [`Notifier::send`], logging a failure: the first of a run of
    /// failures as a warning, the rest at debug level (a missing socket
    /// would otherwise log every watchdog period).
    fn notify(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let what = message.split('\n').next().unwrap_or(message);
        match self.send(message) {
            Ok(()) => {
                if target.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(socket = ?target.raw, "systemd notifications are delivered again");
                }
            }
            Err(e) => {
                if target.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, socket = ?target.raw, what, "systemd notification failed");
                } else {
                    tracing::warn!(error = %e, socket = ?target.raw, what, "systemd notification failed");
                }
            }
        }
    }
}

fn push_status(msg: &mut String, status: Option<&str>) {
    if let Some(text) = status {
        msg.push_str("\nSTATUS=");
        msg.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
    }
}

/// Parses `NOTIFY_SOCKET`: an absolute path, or `@name` for an abstract
/// socket. (systemd also knows `vsock:` addresses, for virtual machines;
/// not supported.)
fn notify_addr(value: &OsStr) -> Result<SocketAddr, Error> {
    let bytes = value.as_bytes();
    let bad = |why: &str| Error::Notify(format!("{NOTIFY_SOCKET}={value:?}: {why}"));
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(Path::new(value)).map_err(|e| bad(&e.to_string())),
        Some(b'@') if bytes.len() > 1 => {
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(|e| bad(&e.to_string()))
        }
        _ => Err(bad(
            "neither an absolute path nor an abstract socket name (@name)",
        )),
    }
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC=` wants it.
fn monotonic_usec() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).map_err(io::Error::other)?;
    let nanos = u64::try_from(ts.tv_nsec).map_err(io::Error::other)?;
    Ok(secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000))
}

/// The watchdog timeout from `WATCHDOG_USEC` and `WATCHDOG_PID` (which, if
/// set, must be `our_pid`): `None` if there is no watchdog for us.
fn watchdog_timeout(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Result<Option<Duration>, Error> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        let parsed = pid.to_str().and_then(|p| p.parse::<u32>().ok());
        match parsed {
            Some(p) if p == our_pid => {}
            Some(_) => return Ok(None),
            None => {
                return Err(Error::Notify(format!(
                    "{WATCHDOG_PID}={pid:?} is not a process id"
                )))
            }
        }
    }
    let usec = usec
        .to_str()
        .and_then(|u| u.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::Notify(format!(
                "{WATCHDOG_USEC}={usec:?} is not a number of microseconds"
            ))
        })?;
    Ok(Some(Duration::from_micros(usec)).filter(|d| !d.is_zero()))
}

/// A listening socket passed by systemd (socket activation).
#[derive(Debug)]
pub struct ActivatedListener {
    /// Its name (`FileDescriptorName=` in the socket unit), if systemd gave
    /// names.
    pub name: Option<String>,
    /// The socket: listening, TCP, non-blocking, close-on-exec.
    pub listener: TcpListener,
}

/// Adopts the listening sockets systemd passed (socket activation): if
/// `LISTEN_PID` is this process, the `LISTEN_FDS` descriptors from 3 on,
/// named by `LISTEN_FDNAMES` (colon-separated, optional). Each must be a
/// listening TCP socket; it is made close-on-exec and non-blocking.
/// Returns no listeners without activation (no `LISTEN_PID`, or one meant
/// for another process).
///
/// The three variables are removed from the environment in every case, so
/// no child process takes the descriptors for its own.
///
/// A descriptor that is not a listening TCP socket is an
/// [`Error::SocketActivation`] naming the descriptor and its name; then
/// every passed descriptor is closed.
///
/// # Safety
///
/// Call it once, at the start of `main`, before any other thread exists
/// (in particular before the tokio runtime is built):
///
/// * it modifies the environment, which is undefined behaviour while
///   another thread may read or write it (`std::env::remove_var`);
/// * it takes ownership of descriptors 3 to 3 + `LISTEN_FDS` - 1: nothing
///   else in the process may own or use them. That holds at the start of
///   `main` when systemd passed them, since nothing has opened a file yet
///   to reuse the numbers.
///
/// It is an `unsafe fn`, not a safe function with a comment, because both
/// conditions concern the whole process and no check inside can establish
/// them: the caller must.
pub unsafe fn listen_fds() -> Result<Vec<ActivatedListener>, Error> {
    let pid = std::env::var_os(LISTEN_PID);
    let fds = std::env::var_os(LISTEN_FDS);
    let names = std::env::var_os(LISTEN_FDNAMES);
    // The caller guarantees no other thread exists (see # Safety), so
    // changing the environment races with nothing. Removed whatever the
    // outcome, as sd_listen_fds(3) does with unset_environment.
    for var in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
        std::env::remove_var(var);
    }
    let passed = parse_listen_env(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    // SAFETY: the caller guarantees the passed descriptors are ours alone.
    unsafe { adopt(passed) }
}

/// What the `LISTEN_*` variables pass: each descriptor with its name;
/// empty when nothing is passed to `our_pid`.
fn parse_listen_env(
    pid: Option<&OsStr>,
    fds: Option<&OsStr>,
    names: Option<&OsStr>,
    our_pid: u32,
) -> Result<Vec<(RawFd, Option<String>)>, Error> {
    let bad = |what: String| Error::SocketActivation(what);
    let Some(pid) = pid else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .to_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad(format!("{LISTEN_PID}={pid:?} is not a process id")))?;
    if pid != our_pid {
        tracing::debug!(
            listen_pid = pid,
            "socket activation variables are for another process; ignored"
        );
        return Ok(Vec::new());
    }
    let Some(fds) = fds else {
        return Ok(Vec::new());
    };
    let count: RawFd = fds
        .to_str()
        .and_then(|n| n.parse::<RawFd>().ok())
        .filter(|n| *n >= 0 && n.checked_add(LISTEN_FDS_START).is_some())
        .ok_or_else(|| bad(format!("{LISTEN_FDS}={fds:?} is not a descriptor count")))?;
    let names: Vec<Option<String>> = match names {
        Some(names) if count > 0 => {
            let names = names
                .to_str()
                .ok_or_else(|| bad(format!("{LISTEN_FDNAMES}={names:?} is not valid UTF-8")))?;
            let names: Vec<Option<String>> = names
                .split(':')
                .map(|n| (!n.is_empty()).then(|| n.to_owned()))
                .collect();
            if names.len() != count as usize {
                return Err(bad(format!(
                    "{LISTEN_FDNAMES} has {} names for {count} descriptors",
                    names.len()
                )));
            }
            names
        }
        _ => vec![None; count as usize],
    };
    Ok((LISTEN_FDS_START..).zip(names).collect())
}

/// How an error names a passed descriptor.
fn describe(fd: RawFd, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("fd {fd} (name {name:?})"),
        None => format!("fd {fd} (no name)"),
    }
}

/// Takes the passed descriptors over: close-on-exec first (all of them, so
/// none leaks into a child even if a later one is refused), then owned,
/// then checked.
///
/// # Safety
///
/// The descriptors in `passed` must be owned by nothing else in this
/// process.
unsafe fn adopt(passed: Vec<(RawFd, Option<String>)>) -> Result<Vec<ActivatedListener>, Error> {
    let mut owned = Vec::with_capacity(passed.len());
    for (fd, name) in passed {
        // SAFETY: fcntl on a descriptor number only reads and sets its
        // flags; an unused number fails with EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            let e = io::Error::last_os_error();
            return Err(Error::SocketActivation(format!(
                "{} was passed but is not open: {e}",
                describe(fd, name.as_deref())
            )));
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            let e = io::Error::last_os_error();
            return Err(Error::SocketActivation(format!(
                "{}: cannot make it close-on-exec: {e}",
                describe(fd, name.as_deref())
            )));
        }
        // SAFETY: the descriptor is open (F_GETFD succeeded) and, by the
        // caller's guarantee, owned by nothing else: we may close it.
        owned.push((unsafe { OwnedFd::from_raw_fd(fd) }, fd, name));
    }
    let mut listeners = Vec::with_capacity(owned.len());
    for (fd, number, name) in owned {
        check_listener(fd.as_fd()).map_err(|why| {
            Error::SocketActivation(format!("{} {why}", describe(number, name.as_deref())))
        })?;
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true).map_err(|e| {
            Error::SocketActivation(format!(
                "{}: cannot make it non-blocking: {e}",
                describe(number, name.as_deref())
            ))
        })?;
        match listener.local_addr() {
            Ok(addr) => tracing::debug!(fd = number, name, %addr, "adopted a socket from systemd"),
            Err(_) => tracing::debug!(fd = number, name, "adopted a socket from systemd"),
        }
        listeners.push(ActivatedListener { name, listener });
    }
    Ok(listeners)
}

/// Checks that `fd` is a listening TCP socket; the error says what it is
/// instead (it follows the descriptor's name in the message).
fn check_listener(fd: BorrowedFd<'_>) -> Result<(), String> {
    let sock = SockRef::from(&fd);
    let ty = sock.r#type().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => "is not a socket".to_owned(),
        _ => format!("cannot be inspected: {e}"),
    })?;
    if ty != socket2::Type::STREAM {
        return Err(format!("is not a stream socket (type {ty:?})"));
    }
    let local = sock
        .local_addr()
        .map_err(|e| format!("has no local address: {e}"))?;
    if local.as_socket().is_none() {
        return Err(format!("is not a TCP socket (domain {:?})", local.domain()));
    }
    match sock.protocol() {
        Ok(None) | Ok(Some(socket2::Protocol::TCP)) => {}
        Ok(Some(p)) => return Err(format!("is not a TCP socket (protocol {p:?})")),
        Err(e) => return Err(format!("cannot be inspected: {e}")),
    }
    if !sock
        .is_listener()
        .map_err(|e| format!("cannot be inspected: {e}"))?
    {
        return Err("is not listening (bound or connected, not in the LISTEN state)".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A fresh directory for a test's sockets, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "vole-systemd-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A bound notification socket and a notifier aimed at it.
    fn listening(tag: &str) -> (TempDir, UnixDatagram, Notifier) {
        let dir = TempDir::new(tag);
        let path = dir.0.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let n = Notifier::connect(path.as_os_str()).expect("notifier");
        (dir, sock, n)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    #[test]
    fn each_notification_is_one_exact_datagram() {
        let (_dir, sock, n) = listening("exact");
        assert!(n.is_enabled());
        n.ready(None);
        assert_eq!(recv(&sock), "READY=1");
        n.ready(Some("serving on 127.0.0.1:4433, 2 nodes"));
        assert_eq!(
            recv(&sock),
            "READY=1\nSTATUS=serving on 127.0.0.1:4433, 2 nodes"
        );
        n.stopping();
        assert_eq!(recv(&sock), "STOPPING=1");
        n.status("draining 3 links");
        assert_eq!(recv(&sock), "STATUS=draining 3 links");
        n.mainpid(4242);
        assert_eq!(recv(&sock), "MAINPID=4242");
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.extend_timeout(Duration::from_millis(13_500));
        assert_eq!(recv(&sock), "EXTEND_TIMEOUT_USEC=13500000");
        n.take_over(Some("upgraded"));
        assert_eq!(
            recv(&sock),
            format!("MAINPID={}\nREADY=1\nSTATUS=upgraded", std::process::id())
        );
        n.send("FOO=1\nBAR=2").expect("raw send");
        assert_eq!(recv(&sock), "FOO=1\nBAR=2");
    }

    #[test]
    fn lifecycle_events_map_to_their_notifications() {
        let (_dir, sock, n) = listening("life");
        n.lifecycle(Lifecycle::Ready);
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving");
        n.lifecycle(Lifecycle::Reloading);
        assert!(recv(&sock).starts_with("RELOADING=1\nMONOTONIC_USEC="));
        n.lifecycle(Lifecycle::Reloaded);
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving");
        n.lifecycle(Lifecycle::MainPid(31337));
        assert_eq!(recv(&sock), "MAINPID=31337");
        n.lifecycle(Lifecycle::Watchdog);
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.lifecycle(Lifecycle::Stopping);
        assert_eq!(recv(&sock), "STOPPING=1");
        let successor = n.successor();
        successor.lifecycle(Lifecycle::Ready);
        assert_eq!(
            recv(&sock),
            format!("MAINPID={}\nREADY=1\nSTATUS=serving", std::process::id())
        );
        successor.lifecycle(Lifecycle::Reloaded);
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving");
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let (_dir, sock, n) = listening("reload");
        let before = monotonic_usec().expect("clock");
        n.reloading();
        let after = monotonic_usec().expect("clock");
        let msg = recv(&sock);
        let (first, second) = msg.split_once('\n').expect("two lines");
        assert_eq!(first, "RELOADING=1");
        let usec: u64 = second
            .strip_prefix("MONOTONIC_USEC=")
            .expect("MONOTONIC_USEC")
            .parse()
            .expect("a number");
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );
        // The same clock as std's Instant (CLOCK_MONOTONIC on Linux): not
        // wall-clock microseconds since 1970.
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros() as u64;
        assert!(usec < wall / 2, "{usec} looks like wall-clock time");
    }

    #[test]
    fn a_status_cannot_smuggle_another_assignment() {
        let (_dir, sock, n) = listening("inject");
        n.status("ok\nMAINPID=1\r\0x");
        assert_eq!(recv(&sock), "STATUS=ok MAINPID=1  x");
        n.ready(Some("a\nREADY=0"));
        assert_eq!(recv(&sock), "READY=1\nSTATUS=a READY=0");
    }

    #[test]
    fn abstract_sockets_are_reached_by_at_names() {
        let name = format!("vole-systemd-test-{}-abstract", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let n = Notifier::connect(OsStr::new(&format!("@{name}"))).expect("notifier");
        n.ready(Some("abstract"));
        assert_eq!(recv(&sock), "READY=1\nSTATUS=abstract");
    }

    #[test]
    fn unusable_notify_socket_values_are_refused() {
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            match Notifier::connect(OsStr::new(bad)) {
                Err(Error::Notify(msg)) => {
                    assert!(msg.contains("NOTIFY_SOCKET"), "{msg}");
                }
                other => panic!("{bad:?}: expected a refusal, got {other:?}"),
            }
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(matches!(
            Notifier::connect(OsStr::new(&long)),
            Err(Error::Notify(_))
        ));
    }

    #[test]
    fn an_unreachable_socket_fails_the_send_but_never_the_caller() {
        let dir = TempDir::new("gone");
        let n = Notifier::connect(dir.0.join("nobody-listens").as_os_str()).expect("notifier");
        let e = n.send("READY=1").expect_err("nobody listens");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        // The logging methods swallow it, repeatedly.
        n.ready(None);
        n.watchdog();
        n.watchdog();
        // And recover when the socket appears.
        let sock = UnixDatagram::bind(dir.0.join("nobody-listens")).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[test]
    fn a_disabled_notifier_sends_nothing_and_succeeds() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.ready(Some("x"));
        n.reloading();
        n.stopping();
        n.send("READY=1").expect("no-op");
        assert_eq!(
            n.with_watchdog(Some(Duration::from_secs(4)))
                .watchdog_interval(),
            None
        );
        let env = Notifier::disabled().successor_env();
        assert!(env.iter().all(|(_, v)| v.is_none()), "{env:?}");
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_our_pid() {
        let me = 1234;
        let os = |s: &'static str| Some(OsStr::new(s));
        let t = |u, p| watchdog_timeout(u, p, me);
        assert_eq!(t(None, None).expect("ok"), None);
        assert_eq!(
            t(os("5000000"), None).expect("ok"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            t(os("5000000"), os("1234")).expect("ok"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            t(os("5000000"), os("999")).expect("ok"),
            None,
            "another pid's watchdog"
        );
        assert_eq!(t(os("0"), None).expect("ok"), None);
        for (u, p) in [
            (os("five"), None),
            (os("-1"), None),
            (os("5000000"), os("pid")),
        ] {
            assert!(matches!(t(u, p), Err(Error::Notify(_))), "{u:?} {p:?}");
        }
        let (_dir, _sock, n) = listening("wd");
        let n = n.with_watchdog(Some(Duration::from_secs(5)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn a_successor_gets_the_socket_and_the_watchdog_but_not_our_pid() {
        let (_dir, _sock, n) = listening("succ");
        let n = n.with_watchdog(Some(Duration::from_secs(8)));
        let env = n.successor_env();
        let get = |k: &str| {
            env.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
        };
        assert!(get(NOTIFY_SOCKET)
            .flatten()
            .is_some_and(|v| v.as_bytes().ends_with(b"notify.sock")));
        assert_eq!(get(WATCHDOG_USEC), Some(Some(OsString::from("8000000"))));
        for k in [WATCHDOG_PID, LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
            assert_eq!(get(k), Some(None), "{k} removed");
        }
    }

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn listen_env_is_parsed_as_sd_listen_fds_does() {
        let me = 77;
        let p = |pid, fds, names| parse_listen_env(pid, fds, names, me);
        assert!(
            p(None, os("2"), None).expect("ok").is_empty(),
            "no LISTEN_PID"
        );
        assert!(
            p(os("78"), os("2"), None).expect("ok").is_empty(),
            "another pid"
        );
        assert!(
            p(os("77"), None, None).expect("ok").is_empty(),
            "no LISTEN_FDS"
        );
        assert!(p(os("77"), os("0"), os("")).expect("ok").is_empty());
        assert_eq!(
            p(os("77"), os("2"), None).expect("ok"),
            vec![(3, None), (4, None)]
        );
        assert_eq!(
            p(os("77"), os("3"), os("vop::admin")).expect("ok"),
            vec![
                (3, Some("vop".to_owned())),
                (4, None),
                (5, Some("admin".to_owned()))
            ]
        );
    }

    #[test]
    fn bad_listen_env_is_a_clear_error() {
        let me = 77;
        type Case<'a> = (
            Option<&'a OsStr>,
            Option<&'a OsStr>,
            Option<&'a OsStr>,
            &'a str,
        );
        let cases: [Case<'_>; 6] = [
            (os("x"), os("1"), None, "LISTEN_PID"),
            (os("77"), os("many"), None, "LISTEN_FDS"),
            (os("77"), os("-1"), None, "LISTEN_FDS"),
            (os("77"), os("2147483647"), None, "LISTEN_FDS"),
            (os("77"), os("2"), os("vop"), "1 names for 2"),
            (os("77"), os("1"), os("a:b"), "2 names for 1"),
        ];
        for (pid, fds, names, want) in cases {
            match parse_listen_env(pid, fds, names, me) {
                Err(Error::SocketActivation(msg)) => assert!(msg.contains(want), "{msg}"),
                other => panic!("{pid:?} {fds:?} {names:?}: {other:?}"),
            }
        }
        let not_utf8 = OsStr::from_bytes(b"v\xffp");
        assert!(matches!(
            parse_listen_env(os("77"), os("1"), Some(not_utf8), me),
            Err(Error::SocketActivation(m)) if m.contains("UTF-8")
        ));
    }

    #[test]
    fn only_listening_tcp_sockets_pass_the_check() {
        use socket2::{Domain, Socket, Type};
        let v4 = TcpListener::bind("127.0.0.1:0").expect("v4");
        assert_eq!(check_listener(v4.as_fd()), Ok(()));
        if let Ok(v6) = TcpListener::bind("[::1]:0") {
            assert_eq!(check_listener(v6.as_fd()), Ok(()));
        }

        let bound = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        bound
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .expect("addr")
                    .into(),
            )
            .expect("bind");
        let e = check_listener(bound.as_fd()).expect_err("not listening");
        assert!(e.contains("not listening"), "{e}");

        let connected =
            std::net::TcpStream::connect(v4.local_addr().expect("addr")).expect("connect");
        let e = check_listener(connected.as_fd()).expect_err("connected");
        assert!(e.contains("not listening"), "{e}");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let e = check_listener(udp.as_fd()).expect_err("udp");
        assert!(
            e.contains("not a stream socket") && e.contains("SOCK_DGRAM"),
            "{e}"
        );

        let dir = TempDir::new("unix");
        let unix = std::os::unix::net::UnixListener::bind(dir.0.join("l.sock")).expect("unix");
        let e = check_listener(unix.as_fd()).expect_err("unix");
        assert!(e.contains("not a TCP socket"), "{e}");

        let file = std::fs::File::open("/proc/self/exe").expect("a file");
        assert_eq!(
            check_listener(file.as_fd()),
            Err("is not a socket".to_owned())
        );
    }

    #[test]
    fn errors_name_the_descriptor_and_its_name() {
        assert_eq!(describe(4, Some("vop")), "fd 4 (name \"vop\")");
        assert_eq!(describe(3, None), "fd 3 (no name)");
        let e = Error::SocketActivation(format!("{} is not listening", describe(4, Some("vop"))));
        assert_eq!(
            e.to_string(),
            "socket activation: fd 4 (name \"vop\") is not listening"
        );
    }

    #[test]
    fn nodes_lose_every_systemd_variable() {
        for k in [
            NOTIFY_SOCKET,
            WATCHDOG_USEC,
            WATCHDOG_PID,
            LISTEN_PID,
            LISTEN_FDS,
            LISTEN_FDNAMES,
        ] {
            assert!(NODE_ENV_REMOVE.contains(&k), "{k}");
        }
    }
}
