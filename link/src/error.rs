//! The one error type of this crate.

use crate::violation::ProtocolViolation;
use crate::Value;

/// Everything that can go wrong on a link, seen from the side that called
/// or that runs the link.
///
/// Grouped by whose fault it is:
/// * **remote outcomes**: the call reached the peer and the peer answered
///   with an exception or an error ([`Error::Exception`], [`Error::CallError`]);
/// * **peer faults**: the peer broke the VOL protocol ([`Error::Protocol`]);
///   the link is closed;
/// * **link state**: the link closed, timed out or could not be set up;
/// * **caller faults**: a value could not be converted or is not allowed
///   here ([`Error::Convert`], [`Error::Usage`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote method raised a VException on purpose; these are its
    /// arguments.
    #[error("remote exception: {}", crate::value::describe_args(.0))]
    Exception(Vec<Value>),
    /// The remote side failed the call without detail (VOL CALL_ERROR): an
    /// unknown method, wrong arguments, or an internal error there.
    #[error("remote call failed (the peer gives no detail: unknown method, bad arguments or an internal error)")]
    CallError,
    /// The peer broke the VOL protocol (the variant names the rule and,
    /// where known, the message); the link was closed.
    #[error("protocol violation: {0}")]
    Protocol(ProtocolViolation),
    /// The link closed before the call completed, or was already closed.
    #[error("link closed: {0}")]
    Closed(String),
    /// The link handshake did not complete.
    #[error("link handshake failed: {0}")]
    Handshake(String),
    /// An operation did not complete in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The wire layers failed (VOP, TLS, VEC, socket).
    #[error("transport")]
    Transport(#[from] vole_transport::Error),
    /// A URI could not be parsed.
    #[error("bad uri")]
    Uri(#[from] crate::uri::UriError),
    /// A path did not resolve to an object.
    #[error("path {path} did not resolve")]
    Resolve {
        /// The path, as given.
        path: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A value could not be converted to or from the requested Rust type.
    #[error("conversion: {0}")]
    Convert(String),
    /// The call is not allowed in this state or with these arguments.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Whether the peer answered the call (an exception or a call error), as
    /// opposed to the call not completing.
    pub fn is_remote(&self) -> bool {
        matches!(self, Error::Exception(_) | Error::CallError)
    }
}
