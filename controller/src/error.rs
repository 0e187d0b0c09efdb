//! The controller's one error type.

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A listening socket could not be set up.
    #[error(transparent)]
    Listen(#[from] vole_control::Error),
    /// A system call failed while the controller was at `step`.
    #[error("{step}")]
    Io {
        /// What the controller was doing (e.g. "opening the controller's
        /// executable").
        step: &'static str,
        /// The system call's error.
        #[source]
        source: std::io::Error,
    },
    /// The descriptors systemd passed (socket activation) are unusable.
    #[error("socket activation: {0}")]
    SocketActivation(String),
    /// The systemd notification socket or watchdog settings are unusable.
    #[error("systemd notify: {0}")]
    Notify(String),
}
