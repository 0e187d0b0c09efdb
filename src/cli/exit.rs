//! Exit codes, and which errors map to which.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 2 | the remote side answered with an exception or a call error, or a service refused an admin command (a reload with a broken settings file, say) |
//! | 3 | connection, TLS or protocol failure (including a port in use) |
//! | 4 | `vole serve`: nodes kept dying (restart intensity exceeded); the service stopped |
//! | 5 | `vole serve`: stopped, but some node did not drain cleanly |
//! | 6 | `serve --nodes 0`: the service's init failed (under a controller, a failing init is a node failure: restarts, then 4) |
//! | 7 | `vole call`: no answer within `--timeout`; the service was told to cancel the call |
//! | 64 | usage: bad arguments or configuration |
//! | 70 | internal error |
//! | 74 | output could not be written (`completions`, `man` to a closed pipe) |

use vole_link::Error as LinkError;
use vole_transport::Error as TransportError;

/// Success.
pub const OK: u8 = 0;
/// The remote side answered with an error (or a service refused an admin
/// command).
pub const REMOTE: u8 = 2;
/// Connection, TLS or protocol failure.
pub const CONNECTION: u8 = 3;
/// Nodes kept dying: the restart intensity was exceeded.
pub const RESTART_LIMIT: u8 = 4;
/// The service stopped but not every node drained cleanly.
pub const UNCLEAN_STOP: u8 = 5;
/// One-process mode: the service's per-node init failed.
pub const INIT_FAILED: u8 = 6;
/// A call's deadline passed before its answer came (the service was told
/// to cancel it).
pub const DEADLINE: u8 = 7;
/// Bad arguments or configuration.
pub const USAGE: u8 = 64;
/// A bug in vole.
pub const INTERNAL: u8 = 70;
/// Output could not be written (sysexits' `EX_IOERR`).
pub const IO: u8 = 74;

/// A failure with the exit code it should produce.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// The service refused or failed the request.
    pub fn remote(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: REMOTE,
            error: error.into(),
        }
    }

    /// A usage failure.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: USAGE,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: classify(&error),
            error,
        }
    }
}

/// The exit code for an error, by what caused it.
pub fn classify(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<LinkError>() {
            return match e {
                LinkError::Exception(_) | LinkError::CallError | LinkError::Cancelled(_) => REMOTE,
                LinkError::DeadlineExceeded { .. } => DEADLINE,
                LinkError::Resolve { source, .. } if source.is_remote() => REMOTE,
                LinkError::Uri(_) | LinkError::Usage(_) | LinkError::Convert(_) => USAGE,
                _ => CONNECTION,
            };
        }
        if let Some(e) = cause.downcast_ref::<TransportError>() {
            return match e {
                TransportError::Credentials { .. }
                | TransportError::TlsConfig(_)
                | TransportError::Convert(_) => USAGE,
                _ => CONNECTION,
            };
        }
        if let Some(e) = cause.downcast_ref::<vole_controller::Error>() {
            return match e {
                vole_controller::Error::Config(_) => USAGE,
                _ => CONNECTION,
            };
        }
        if cause
            .downcast_ref::<vole_controller::admin::AdminError>()
            .is_some()
        {
            return CONNECTION;
        }
        if cause.downcast_ref::<vole_node::Error>().is_some()
            || cause.downcast_ref::<std::io::Error>().is_some()
        {
            return CONNECTION;
        }
    }
    INTERNAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_and_cancels_have_their_codes() {
        let deadline = anyhow::Error::new(LinkError::DeadlineExceeded {
            method: "sleep".to_owned(),
            timeout: std::time::Duration::from_millis(300),
        })
        .context("sleep() failed");
        assert_eq!(classify(&deadline), DEADLINE);
        let cancelled = anyhow::Error::new(LinkError::Cancelled("too long".to_owned()));
        assert_eq!(classify(&cancelled), REMOTE, "the service answered");
        let timeout = anyhow::Error::new(LinkError::Timeout("the call"));
        assert_eq!(classify(&timeout), CONNECTION);
    }
}
