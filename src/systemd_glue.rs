//! Glue between the controller's lifecycle and systemd (placeholder until the
//! systemd module lands: notifications are logged at debug level only).

use vole_controller::Lifecycle;

/// Sends lifecycle notifications.
#[derive(Debug, Default)]
pub struct Notifier;

impl Notifier {
    /// From `NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        Notifier
    }

    /// Reports a lifecycle moment.
    pub fn lifecycle(&self, event: Lifecycle) {
        tracing::debug!(?event, "lifecycle");
    }
}

/// The watchdog ping period, if systemd asked for one.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    None
}
