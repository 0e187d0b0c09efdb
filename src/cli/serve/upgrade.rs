//! Zero-downtime binary upgrade (`SIGUSR2`, `vole upgrade`).
//!
//! The running controller starts a new controller from the executable path
//! it was started from (so a binary replaced on disk is picked up), with the
//! same arguments minus `--daemon`, and hands it, at fixed descriptor
//! numbers, the listening sockets, the admin socket, the metrics and health
//! endpoints' sockets and the write end of a readiness pipe; the environment says which
//! is which. The new controller adopts them instead of binding, starts its
//! nodes (which accept from the very same sockets, so no connection is
//! refused), and once they serve takes over the pid file, answers metrics
//! scrapes and reports on the pipe. Only then does the old controller tell
//! systemd the new main pid, stop answering scrapes and drain its own
//! nodes. A new controller that fails before that never touched the pid
//! file; the old one kills it and keeps serving, and `vole upgrade` says
//! why.

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::Read as _;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use tokio::sync::oneshot;
use vole_controller::{UpgradeChild, UpgradeRequest};

const ENV_FROM: &str = "VOLE_UPGRADE_FROM";
const ENV_LISTEN: &str = "VOLE_UPGRADE_LISTEN_FDS";
const ENV_ADMIN: &str = "VOLE_UPGRADE_ADMIN_FD";
const ENV_METRICS: &str = "VOLE_UPGRADE_METRICS_FD";
const ENV_HEALTH: &str = "VOLE_UPGRADE_HEALTH_FD";
const ENV_READY: &str = "VOLE_UPGRADE_READY_FD";
/// The first descriptor handed over.
const FIRST_FD: RawFd = 3;
/// Most descriptors handed over.
const MAX_FDS: usize = 32;

/// What a controller started by an upgrade inherits.
#[derive(Debug)]
pub struct Inherited {
    /// The controller being replaced.
    pub from: u32,
    /// Its listening sockets (or port reservations), in order.
    pub listeners: Vec<std::net::TcpListener>,
    /// Its admin socket.
    pub admin: Option<OwnedFd>,
    /// Its metrics endpoint's listening socket.
    pub metrics: Option<std::net::TcpListener>,
    /// Its health endpoint's listening socket.
    pub health: Option<std::net::TcpListener>,
    /// Where to say "ok" once serving.
    pub ready: Option<OwnedFd>,
}

fn adopt(fd: RawFd, what: &str) -> anyhow::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads flags; a closed number fails.
    if fd < FIRST_FD || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        anyhow::bail!("inherited {what} descriptor {fd} is not open");
    }
    // SAFETY: the descriptor is open (checked) and was handed to this
    // process by its parent for exactly this purpose; it is adopted once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    vole_control::fdpass::set_cloexec(std::os::fd::AsFd::as_fd(&owned))?;
    Ok(owned)
}

impl Inherited {
    /// Picks up the sockets of an upgrade, if this process was started by
    /// one, and clears the variables. Must run before threads start.
    pub fn take() -> anyhow::Result<Option<Inherited>> {
        let Some(from) = std::env::var_os(ENV_FROM) else {
            return Ok(None);
        };
        let from: u32 = from
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad {ENV_FROM}"))?;
        let num = |name: &str| -> anyhow::Result<Option<RawFd>> {
            match std::env::var(name) {
                Ok(v) => Ok(Some(v.parse().map_err(|_| anyhow::anyhow!("bad {name}"))?)),
                Err(_) => Ok(None),
            }
        };
        let listen =
            std::env::var(ENV_LISTEN).map_err(|_| anyhow::anyhow!("{ENV_LISTEN} missing"))?;
        let mut listeners = Vec::new();
        for n in listen.split(',').filter(|s| !s.is_empty()) {
            let fd: RawFd = n.parse().map_err(|_| anyhow::anyhow!("bad {ENV_LISTEN}"))?;
            listeners.push(std::net::TcpListener::from(adopt(fd, "listening socket")?));
        }
        let admin = num(ENV_ADMIN)?
            .map(|fd| adopt(fd, "admin socket"))
            .transpose()?;
        let metrics = num(ENV_METRICS)?
            .map(|fd| adopt(fd, "metrics socket").map(std::net::TcpListener::from))
            .transpose()?;
        let health = num(ENV_HEALTH)?
            .map(|fd| adopt(fd, "health socket").map(std::net::TcpListener::from))
            .transpose()?;
        let ready = num(ENV_READY)?
            .map(|fd| adopt(fd, "readiness pipe"))
            .transpose()?;
        for name in [
            ENV_FROM,
            ENV_LISTEN,
            ENV_ADMIN,
            ENV_METRICS,
            ENV_HEALTH,
            ENV_READY,
        ] {
            // Single-threaded here (documented precondition).
            std::env::remove_var(name);
        }
        tracing::info!(
            from,
            listeners = listeners.len(),
            "taking over from the controller being upgraded"
        );
        Ok(Some(Inherited {
            from,
            listeners,
            admin,
            metrics,
            health,
            ready,
        }))
    }
}

/// How to start the new controller.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// The executable path this controller was started from.
    pub exe: PathBuf,
    /// Its arguments (after the program name), without `--daemon`.
    pub args: Vec<OsString>,
}

impl Relaunch {
    /// Captured at start, before the binary on disk can change.
    pub fn current() -> Relaunch {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let args = std::env::args_os()
            .skip(1)
            .filter(|a| a != "--daemon")
            .collect();
        Relaunch { exe, args }
    }
}

/// Starts the new controller of an upgrade, handing it the sockets of
/// `request` and the metrics and health endpoints' sockets (which this
/// program serves, not the controller).
pub fn spawn(
    relaunch: &Relaunch,
    request: UpgradeRequest<'_>,
    metrics: Option<BorrowedFd<'_>>,
    health: Option<BorrowedFd<'_>>,
    notifier: &vole_controller::systemd::Notifier,
) -> Result<UpgradeChild, String> {
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let mut fds: Vec<RawFd> = request
        .listeners
        .iter()
        .map(BorrowedFd::as_raw_fd)
        .collect();
    let listen_numbers: Vec<String> = (0..fds.len())
        .map(|i| (FIRST_FD + i as RawFd).to_string())
        .collect();
    let admin_number = request.admin.map(|a| {
        fds.push(a.as_raw_fd());
        FIRST_FD + fds.len() as RawFd - 1
    });
    let metrics_number = metrics.map(|m| {
        fds.push(m.as_raw_fd());
        FIRST_FD + fds.len() as RawFd - 1
    });
    let health_number = health.map(|h| {
        fds.push(h.as_raw_fd());
        FIRST_FD + fds.len() as RawFd - 1
    });
    fds.push(ready_write.as_raw_fd());
    let ready_number = FIRST_FD + fds.len() as RawFd - 1;

    let mut cmd = tokio::process::Command::new(&relaunch.exe);
    cmd.args(&relaunch.args)
        .env(ENV_FROM, std::process::id().to_string())
        .env(ENV_LISTEN, listen_numbers.join(","))
        .env(ENV_READY, ready_number.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    if let Some(n) = admin_number {
        cmd.env(ENV_ADMIN, n.to_string());
    }
    if let Some(n) = metrics_number {
        cmd.env(ENV_METRICS, n.to_string());
    }
    if let Some(n) = health_number {
        cmd.env(ENV_HEALTH, n.to_string());
    }
    // The new controller talks to systemd as the successor (and must not
    // inherit a WATCHDOG_PID naming this process).
    for (key, value) in notifier.successor_env() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let placed = fds.clone();
    // SAFETY: runs in the forked child before exec; fcntl and dup2 only.
    unsafe {
        cmd.pre_exec(move || place_fds(&placed));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", relaunch.exe.display()))?;
    drop(ready_write);
    let pid = child.id().ok_or("the new controller exited at once")?;
    // Reap it if it dies while this controller still runs.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let (tx, rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = std::fs::File::from(ready_read).read_to_string(&mut text);
        let line = text.lines().next().unwrap_or("").to_owned();
        let result = match line.as_str() {
            "ok" => Ok(()),
            "" => Err("the new controller exited before serving".to_owned()),
            other => Err(other.split_once(' ').map_or(other, |(_, m)| m).to_owned()),
        };
        let _ = tx.send(result);
    });
    Ok(UpgradeChild { pid, ready: rx })
}

/// In the child: puts `fds` at 3, 4, ... (clearing close-on-exec there).
/// Allocates nothing (the child of a multi-threaded process must not).
fn place_fds(fds: &[RawFd]) -> std::io::Result<()> {
    let mut high = [0 as RawFd; MAX_FDS];
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other("too many descriptors to hand over"));
    }
    for (slot, &fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on descriptors this process owns.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        if h < 0 {
            return Err(std::io::Error::last_os_error());
        }
        *slot = h;
    }
    for (i, &h) in high[..fds.len()].iter().enumerate() {
        // SAFETY: dup2 onto a fixed number.
        if unsafe { libc::dup2(h, FIRST_FD + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
