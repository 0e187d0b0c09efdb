//! Where a controller is in its life, as an init system hears it, and how
//! it ended.

/// Moments of a controller's life that an init system wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Every node serves (the first time).
    Ready,
    /// A reload started.
    Reloading,
    /// A reload finished; serving again.
    Reloaded,
    /// A reload was abandoned (a replacement ended before it served); the
    /// old nodes serve on.
    ReloadFailed,
    /// Stopping.
    Stopping,
    /// A new controller (binary upgrade) is now the main process.
    MainPid(u32),
    /// The controller's loop is alive (systemd watchdog).
    Watchdog,
}

/// How the controller ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped and every node drained.
    Stopped,
    /// Stopped, but some nodes had to be forced or killed.
    StoppedUnclean,
    /// Nodes kept dying: more restarts than the intensity allows.
    Escalated {
        /// Restarts in the window.
        restarts: u32,
    },
    /// A node found the configuration unusable.
    ConfigError(String),
    /// A new controller took over (binary upgrade); this one drained and
    /// stepped down. The pid file and admin socket now belong to the new one.
    Upgraded {
        /// The new controller's pid.
        pid: u32,
    },
}
