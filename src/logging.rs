//! Log output: tracing to stderr, as text or JSON; with a log file, stderr
//! itself is pointed at the file.
//!
//! Pointing descriptor 2 at the log file (rather than giving tracing a file
//! writer) means everything the process and its nodes write ends up there:
//! tracing events, the node output the controller copies line by line, and
//! panic messages. Reopening for logrotate (`SIGUSR1`, `vole reopen-logs`)
//! opens the path again and points descriptor 2 at the new file.

use std::fs::OpenOptions;
use std::io::IsTerminal as _;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Where logs go, kept for reopening.
#[derive(Debug, Clone)]
pub struct LogTarget {
    file: Option<PathBuf>,
}

/// Installs the tracing subscriber. `filter` is a level or filter string;
/// `RUST_LOG` overrides it. Node processes name their threads and show
/// them, so every line carries the node id.
pub fn init(filter: &str, format: LogFormat, thread_names: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(thread_names)
        // A failed log write (the controller of a node is gone, say) must
        // not panic the task that logged.
        .log_internal_errors(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Points stderr at `path` (appending). Returns the target for reopening.
pub fn redirect_stderr(path: &Path) -> std::io::Result<LogTarget> {
    let file = open_append(path)?;
    nix::unistd::dup2_stderr(file.as_fd())?;
    Ok(LogTarget {
        file: Some(path.to_owned()),
    })
}

impl LogTarget {
    /// Logging to stderr as it is.
    pub fn stderr() -> Self {
        LogTarget { file: None }
    }

    /// Opens the log file again (after logrotate moved it) and points stderr
    /// at the new one. Nothing to do when logging to stderr.
    pub fn reopen(&self) -> std::io::Result<()> {
        if let Some(path) = &self.file {
            let file = open_append(path)?;
            nix::unistd::dup2_stderr(file.as_fd())?;
            tracing::info!(file = %path.display(), "log file reopened");
        }
        Ok(())
    }
}
