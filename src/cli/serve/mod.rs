//! `serve`: the hosted service, in one process (`nodes = 0`) or as a
//! controller with node processes; in the foreground or as a daemon.
//!
//! Start-up happens in two steps. [`prepare`] runs before any thread or
//! runtime exists: it resolves the settings, sets up logging, detaches (in
//! daemon mode), takes the pid file, and adopts sockets inherited from a
//! controller being upgraded. [`run`] then runs the service on the tokio
//! runtime. In daemon mode the launching shell waits until the nodes serve,
//! or prints why the start failed; nothing is lost silently.

mod controller;
mod health;
mod http;
mod metrics;
pub(crate) mod privileges;
pub(crate) mod setup;
mod single;
pub mod upgrade;
mod watch;

pub use setup::{prepare, resolve, tls_material, Prepared};

use crate::cli::exit::Failure;

/// Runs the service until it stops.
pub async fn run(p: Prepared) -> Result<(), Failure> {
    let result = if p.settings.nodes == 0 {
        single::run(&p).await
    } else {
        controller::run(&p).await
    };
    if let Err(f) = &result {
        p.report_failure(f);
    }
    // Removed if still ours: after an upgrade the new controller, serving,
    // has already put its own in place, and that one stays.
    if let Ok(mut slot) = p.pidfile.lock() {
        slot.remove();
    }
    result.map(|_stepped_down| ())
}
