//! How the embedding program (the `vole` command) takes part in the
//! controller's operations: re-reading its settings, reopening its log
//! file, starting the new controller of an upgrade, telling systemd.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::ControllerConfig;
use crate::lifecycle::Lifecycle;

/// What a binary upgrade hands to the new controller.
#[derive(Debug)]
pub struct UpgradeRequest<'a> {
    /// The listening sockets (or port reservations in `reuseport` mode), in
    /// order.
    pub listeners: Vec<BorrowedFd<'a>>,
    /// The admin socket.
    pub admin: Option<BorrowedFd<'a>>,
}

/// A new controller started for a binary upgrade.
#[derive(Debug)]
pub struct UpgradeChild {
    /// Its pid.
    pub pid: u32,
    /// Resolves when its nodes serve (or why it failed).
    pub ready: oneshot::Receiver<Result<(), String>>,
}

type ReloadHook = Box<dyn Fn() -> Result<ControllerConfig, String> + Send>;
type UpgradeHook = Box<dyn Fn(UpgradeRequest<'_>) -> Result<UpgradeChild, String> + Send>;

/// How the embedding program takes part in the controller's operations.
pub struct Hooks {
    /// Called once when every node serves for the first time.
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// Told about lifecycle moments (systemd notifications).
    pub notify: Box<dyn Fn(Lifecycle) + Send + Sync>,
    /// If set, [`Lifecycle::Watchdog`] is sent at this period from the
    /// controller's own loop (a hung loop stops it).
    pub watchdog: Option<Duration>,
    /// Re-reads the configuration for a reload.
    pub reload: ReloadHook,
    /// Reopens log files.
    pub reopen_logs: Box<dyn Fn() -> Result<(), String> + Send>,
    /// Starts the new controller of a binary upgrade.
    pub upgrade: UpgradeHook,
}

impl Hooks {
    /// Hooks that do nothing; reload keeps the current configuration,
    /// upgrades are refused.
    pub fn none(config: ControllerConfig) -> Hooks {
        Hooks {
            on_ready: None,
            notify: Box::new(|_| {}),
            watchdog: None,
            reload: Box::new(move || Ok(config.clone())),
            reopen_logs: Box::new(|| Ok(())),
            upgrade: Box::new(|_| Err("binary upgrades are not available here".to_owned())),
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("watchdog", &self.watchdog)
            .finish_non_exhaustive()
    }
}
