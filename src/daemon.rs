//! Daemon mode and the pid file.
//!
//! [`detach`] runs before any thread or runtime exists: it forks, the child
//! calls `setsid` and forks again (so the daemon can never reacquire a
//! terminal), and the grandchild changes to `/`, sets the umask and carries
//! on starting the service. The launching process does not exit at once: it
//! waits on a pipe for the daemon to say it serves (all nodes ready) or why
//! it could not start (bad certificate, port in use, bad configuration), and
//! prints that on the launching terminal with a non-zero exit. Start-up
//! errors are never lost silently.
//!
//! [`PidFile`] writes the pid atomically (a temporary file, locked, then
//! renamed into place), keeps it locked (`flock`) while the service runs, so
//! a second instance with the same pid file refuses, and removes it on exit
//! if it is still ours.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{fork, setsid, ForkResult};

/// Set once a failure went to the launcher, which prints it.
pub static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The daemon's end of the start-up pipe.
#[derive(Debug)]
pub struct ReadyPipe {
    file: Option<File>,
}

impl ReadyPipe {
    /// Not a daemon: nothing to report.
    pub fn none() -> Self {
        ReadyPipe { file: None }
    }

    /// Reports on an inherited descriptor (a binary upgrade's readiness
    /// pipe).
    pub fn from_fd(fd: OwnedFd) -> Self {
        ReadyPipe {
            file: Some(File::from(fd)),
        }
    }

    /// Tells the launcher the service runs; it exits 0.
    pub fn ready(&mut self) {
        if let Some(mut f) = self.file.take() {
            let _ = f.write_all(b"ok\n");
        }
    }

    /// Tells the launcher why the service could not start; it prints the
    /// message and exits with `code`. (This process then stays quiet: the
    /// launcher has said it.)
    pub fn failed(&mut self, code: u8, message: &str) {
        if let Some(mut f) = self.file.take() {
            let _ = writeln!(f, "{code} {message}");
            REPORTED.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether the launcher still waits.
    pub fn pending(&self) -> bool {
        self.file.is_some()
    }
}

/// Detaches from the terminal. Returns in the daemon only; the launching
/// process exits inside this function once the daemon reports.
///
/// Must be called before any thread is started.
pub fn detach() -> std::io::Result<ReadyPipe> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: no other thread exists yet (documented precondition), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(write);
            launcher_wait(read);
        }
        ForkResult::Child => {}
    }
    drop(read);
    setsid()?;
    // SAFETY: as above, single-threaded.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            // SAFETY: _exit is always safe; skip destructors and atexit
            // handlers that belong to the launching process.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {}
    }
    std::env::set_current_dir("/")?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    // stdin from /dev/null; stdout too (nobody reads it). stderr stays on
    // the terminal until the service reports, then goes to the log file or
    // /dev/null (see `release_terminal`).
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    Ok(ReadyPipe {
        file: Some(File::from(write)),
    })
}

/// Points stderr at /dev/null (when there is no log file), so a daemon
/// holds no terminal.
pub fn release_terminal() -> std::io::Result<()> {
    let null = OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

/// The launching process: wait for the daemon's word, print it, exit.
fn launcher_wait(read: OwnedFd) -> ! {
    let mut text = String::new();
    let mut f = File::from(read);
    let _ = f.read_to_string(&mut text);
    let line = text.lines().next().unwrap_or("");
    if line == "ok" {
        std::process::exit(0);
    }
    let (code, message) = match line.split_once(' ') {
        Some((code, message)) => (code.parse::<i32>().unwrap_or(1), message.to_owned()),
        None => (
            1,
            "the daemon exited during start-up without saying why (see its log file)".to_owned(),
        ),
    };
    let _ = writeln!(std::io::stderr(), "vole: {message}");
    std::process::exit(code);
}

/// Errors of the pid file.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another live process holds the pid file.
    #[error("another vole is running (pid {pid}) with pid file {path}")]
    Running {
        /// The pid file.
        path: PathBuf,
        /// What it says.
        pid: String,
    },
    /// The pid file cannot be written.
    #[error("pid file {path}")]
    Io {
        /// The pid file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A locked pid file, removed on drop if it is still ours.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    /// Held for its lock (released when dropped).
    _lock: Flock<File>,
    ino: u64,
}

impl PidFile {
    /// Writes our pid to `path` and locks it. Refuses if a live process
    /// holds it, except `taking_over_from` (a binary upgrade takes the pid
    /// file over from the controller it replaces).
    pub fn create(path: &Path, taking_over_from: Option<u32>) -> Result<PidFile, PidFileError> {
        let io = |source| PidFileError::Io {
            path: path.to_owned(),
            source,
        };
        if let Ok(existing) = OpenOptions::new().read(true).open(path) {
            match Flock::lock(existing, FlockArg::LockExclusiveNonblock) {
                Ok(unlocked) => drop(unlocked), // stale: its owner is gone
                Err((mut held, _)) => {
                    let mut pid = String::new();
                    let _ = held.read_to_string(&mut pid);
                    let pid = pid.trim().to_owned();
                    if taking_over_from.map(|p| p.to_string()) != Some(pid.clone()) {
                        return Err(PidFileError::Running {
                            path: path.to_owned(),
                            pid,
                        });
                    }
                }
            }
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("pid"),
            std::process::id()
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io)?;
        let written = writeln!(file, "{}", std::process::id()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, e)) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(e.into()));
            }
        };
        let ino = lock.metadata().map_err(io)?.ino();
        std::fs::rename(&tmp, path).map_err(io)?;
        // Two instances starting at once could both get here; only the one
        // whose file is now at the path keeps running.
        let now = std::fs::metadata(path).map_err(io)?.ino();
        if now != ino {
            return Err(PidFileError::Running {
                path: path.to_owned(),
                pid: "another starting instance".to_owned(),
            });
        }
        Ok(PidFile {
            path: path.to_owned(),
            _lock: lock,
            ino,
        })
    }
}

/// The pid file of a service: taken at start, or, by the new controller of
/// a binary upgrade, only once it serves ([`PidSlot::take_over`]), so a new
/// controller that fails never touches the pid file of the one that still
/// serves. Dropping the slot removes the file if it is still ours (after an
/// upgrade the new controller has renamed its own over it).
#[derive(Debug, Default)]
pub struct PidSlot {
    held: Option<PidFile>,
    /// Where to take it over, and from whom.
    pending: Option<(PathBuf, u32)>,
    /// Why taking it over failed.
    failed: Option<String>,
}

impl PidSlot {
    /// The pid file at `path`, taken now.
    pub fn taken(path: &Path) -> Result<PidSlot, PidFileError> {
        Ok(PidSlot {
            held: Some(PidFile::create(path, None)?),
            ..PidSlot::default()
        })
    }

    /// The pid file at `path`, to take over from the controller `from` once
    /// this one serves.
    pub fn pending(path: &Path, from: u32) -> PidSlot {
        PidSlot {
            pending: Some((path.to_owned(), from)),
            ..PidSlot::default()
        }
    }

    /// Takes the pid file over if it is pending (once; later calls give the
    /// same answer).
    pub fn take_over(&mut self) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some((path, from)) = self.pending.take() else {
            return Ok(());
        };
        match PidFile::create(&path, Some(from)) {
            Ok(p) => {
                self.held = Some(p);
                Ok(())
            }
            Err(e) => {
                let e = format!("{:#}", anyhow::Error::new(e));
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Lets go of the pid file: removes it if it is still ours.
    pub fn remove(&mut self) {
        self.pending = None;
        self.held = None;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.ino != 0 && std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vole-pid-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn pid_file_is_written_locked_and_removed() {
        let d = dir("basic");
        let p = d.join("vole.pid");
        let pf = PidFile::create(&p, None).expect("create");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read").trim(),
            std::process::id().to_string()
        );
        match PidFile::create(&p, None) {
            Err(PidFileError::Running { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(pf);
        assert!(!p.exists(), "removed on drop");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_stale_pid_file_is_replaced_and_an_upgrade_takes_over() {
        let d = dir("stale");
        let p = d.join("vole.pid");
        std::fs::write(&p, "999999\n").expect("stale");
        let first = PidFile::create(&p, None).expect("stale file replaced");
        let me = std::process::id();
        let second = PidFile::create(&p, Some(me)).expect("the upgrade takes over");
        // The first no longer owns the path: dropping it leaves the file.
        drop(first);
        assert!(p.exists());
        drop(second);
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_upgrade_takes_the_pid_file_over_only_when_asked() {
        let d = dir("slot");
        let p = d.join("vole.pid");
        let me = std::process::id();
        let old = PidFile::create(&p, None).expect("the old controller's");
        let ino = std::fs::metadata(&p).expect("meta").ino();
        // A new controller that fails before serving leaves it alone.
        let mut failed = PidSlot::pending(&p, me);
        failed.remove();
        drop(failed);
        assert_eq!(std::fs::metadata(&p).expect("still there").ino(), ino);
        // One that serves puts its own in place; the old one's exit
        // leaves that.
        let mut new = PidSlot::pending(&p, me);
        assert_eq!(std::fs::metadata(&p).expect("untouched").ino(), ino);
        new.take_over().expect("taken over");
        assert_ne!(std::fs::metadata(&p).expect("replaced").ino(), ino);
        drop(old);
        assert!(p.exists());
        new.remove();
        assert!(!p.exists());
        // Someone else's: refused, and the answer stays.
        let other = PidFile::create(&p, None).expect("another");
        let mut slot = PidSlot::pending(&p, me + 1);
        assert!(slot.take_over().is_err());
        assert!(slot.take_over().is_err());
        drop(other);
        let _ = std::fs::remove_dir_all(&d);
    }
}
