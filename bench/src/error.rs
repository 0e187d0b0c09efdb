//! What can make a run fail, and which kind of failure each is.
//!
//! A failure *during* a run (a call that errs, a link lost, a session that
//! times out) is counted in the summary, not returned: only what stops a
//! run from starting is an [`Error`]: bad arguments, a client
//! configuration the caller could not build, a target that cannot be
//! reached or answers the first call with an error, a baseline server that
//! cannot start.

use std::net::SocketAddr;

use vole_link::Error as LinkError;
use vole_transport::Error as TransportError;

/// Any error, kept as the cause of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why `vole bench` or `vole bench-server` could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments, or a target the load generator cannot drive (a query
    /// instead of an object, `raw-tls://` without TLS).
    #[error("{message}")]
    Usage {
        /// What is wrong, naming the flag.
        message: String,
        /// The error underneath, if there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The caller could not build the client configuration for the
    /// target's host (bad trust flags, an unreadable CA file); shown as the
    /// caller's error.
    #[error(transparent)]
    ClientConfig(BoxError),
    /// The target could not be reached: the TCP connection, VOP, TLS, the
    /// link handshake or resolving the path failed or timed out.
    #[error("cannot connect to {target}")]
    Connect {
        /// The `--target` given.
        target: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// The target answered the first call or resolution with an error (an
    /// exception, a call error, a path it does not serve) or with a wrong
    /// answer.
    #[error("{target} answered with an error")]
    Remote {
        /// The `--target` given.
        target: String,
        /// What it answered.
        #[source]
        source: BoxError,
    },
    /// `vole bench-server --tls`: the dev certificate could not be loaded
    /// or made.
    #[error("cannot set up TLS with the dev certificate")]
    ServerTls(#[source] TransportError),
    /// `vole bench-server`: the listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// `vole bench-server`: the SIGTERM and SIGINT handlers could not be
    /// installed.
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
}

/// The kinds of [`Error`], for a command line to map to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad arguments or configuration.
    Usage,
    /// A connection, TLS or protocol failure (a port in use included).
    Connection,
    /// The remote side answered with an error.
    Remote,
    /// Something that should not fail did.
    Internal,
}

impl Error {
    /// A usage error with no cause underneath.
    pub(crate) fn usage(message: impl Into<String>) -> Error {
        Error::Usage {
            message: message.into(),
            source: None,
        }
    }

    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage { .. } | Error::ClientConfig(_) => ErrorKind::Usage,
            Error::Connect { .. } | Error::Listen { .. } => ErrorKind::Connection,
            Error::Remote { .. } => ErrorKind::Remote,
            Error::ServerTls(e) => transport_kind(e),
            Error::Signals(_) => ErrorKind::Internal,
        }
    }

    /// The error for a failure to set up the first link or session with
    /// `target`: a [`Remote`](Error::Remote), a [`Connect`](Error::Connect)
    /// or a [`Usage`](Error::Usage) error, by the link or transport error in
    /// `error`'s chain, else by `otherwise`.
    pub(crate) fn setting_up(target: &str, error: anyhow::Error, otherwise: ErrorKind) -> Error {
        let target = target.to_owned();
        match classify(&error).unwrap_or(otherwise) {
            ErrorKind::Remote => Error::Remote {
                target,
                source: error.into(),
            },
            ErrorKind::Usage => Error::Usage {
                message: format!("cannot use {target}"),
                source: Some(error.into()),
            },
            ErrorKind::Connection | ErrorKind::Internal => Error::Connect {
                target,
                source: error.into(),
            },
        }
    }
}

/// The kind of the first link, transport or I/O error in `error`'s chain.
fn classify(error: &anyhow::Error) -> Option<ErrorKind> {
    error.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<LinkError>() {
            return Some(match e {
                LinkError::Exception(_) | LinkError::CallError => ErrorKind::Remote,
                LinkError::Resolve { source, .. } if source.is_remote() => ErrorKind::Remote,
                LinkError::Uri(_) | LinkError::Usage(_) | LinkError::Convert(_) => ErrorKind::Usage,
                _ => ErrorKind::Connection,
            });
        }
        if let Some(e) = cause.downcast_ref::<TransportError>() {
            return Some(transport_kind(e));
        }
        cause
            .downcast_ref::<std::io::Error>()
            .map(|_| ErrorKind::Connection)
    })
}

/// The kind of a transport error: its configuration is usage, the rest is
/// the connection.
fn transport_kind(e: &TransportError) -> ErrorKind {
    match e {
        TransportError::Credentials { .. }
        | TransportError::TlsConfig(_)
        | TransportError::Convert(_) => ErrorKind::Usage,
        _ => ErrorKind::Connection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause() {
        let io = || anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = Error::setting_up("t", io().context("tcp connect"), ErrorKind::Internal);
        assert!(matches!(e, Error::Connect { .. }));
        assert_eq!(e.kind(), ErrorKind::Connection);
        let e = Error::setting_up(
            "t",
            anyhow::Error::new(LinkError::CallError).context("call"),
            ErrorKind::Connection,
        );
        assert_eq!(e.kind(), ErrorKind::Remote);
        let e = Error::setting_up("t", anyhow::anyhow!("wrong answer"), ErrorKind::Remote);
        assert_eq!(e.kind(), ErrorKind::Remote);
        assert_eq!(Error::usage("--links").kind(), ErrorKind::Usage);
    }

    #[test]
    fn causes_are_printed_once() {
        let e = Error::setting_up(
            "raw-tcp://127.0.0.1:1",
            anyhow::Error::new(std::io::Error::other("refused")).context("tcp connect"),
            ErrorKind::Connection,
        );
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "cannot connect to raw-tcp://127.0.0.1:1: tcp connect: refused"
        );
        let e = Error::ClientConfig(anyhow::anyhow!("bad").context("--pin").into());
        assert_eq!(format!("{:#}", anyhow::Error::new(e)), "--pin: bad");
    }
}
