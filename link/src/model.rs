//! The data model of a link: [`Value`] and [`ObjectRef`], the [`Object`]
//! trait and [`CallError`], the proxy [`RemoteObject`], and the [`Error`]
//! its calls return.
//!
//! These types are defined in terms of each other: a value holds objects
//! and proxies, an object is called with values, a proxy's calls carry
//! values and end in errors, and an error can carry the values of an
//! exception. So they live in this one file, with only the behaviour that
//! needs nothing else; everything that works with them (calling a proxy
//! in [`crate::remote`], the link handle, the core, the driver) lives in
//! the files above and imports them from here.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use vole_transport::Entity;

use crate::info::CallContext;
use crate::proto::CallKind;
use crate::shared::LinkShared;
use crate::violation::ProtocolViolation;

// ---- values ------------------------------------------------------------

/// An entity as the link layer sees it: references are live objects.
pub type Value = Entity<ObjectRef>;

/// A reference carried in a [`Value`]: either an object served by this side
/// or a proxy for an object of the peer.
#[derive(Clone)]
pub enum ObjectRef {
    /// An object this process serves. Sending it gives the peer a proxy.
    Local(Arc<dyn Object>),
    /// A proxy for an object of some link's peer. Sending it back on its own
    /// link hands the peer its own object; sending it on another link makes
    /// this process forward calls to it.
    Remote(RemoteObject),
}

impl ObjectRef {
    /// Wraps a local object.
    pub fn local(object: Arc<dyn Object>) -> Self {
        ObjectRef::Local(object)
    }

    /// The remote proxy, if this is one.
    pub fn as_remote(&self) -> Option<&RemoteObject> {
        match self {
            ObjectRef::Remote(r) => Some(r),
            ObjectRef::Local(_) => None,
        }
    }

    /// This reference as something that can be called: the local object, or
    /// the proxy (which forwards the call over its link).
    pub fn as_object(&self) -> Arc<dyn Object> {
        match self {
            ObjectRef::Local(o) => o.clone(),
            ObjectRef::Remote(r) => Arc::new(r.clone()),
        }
    }
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ObjectRef::Local(a), ObjectRef::Local(b)) => {
                std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
            }
            (ObjectRef::Remote(a), ObjectRef::Remote(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Local(o) => write!(f, "local {}", o.type_name()),
            ObjectRef::Remote(r) => write!(f, "{r:?}"),
        }
    }
}

impl From<RemoteObject> for Value {
    fn from(r: RemoteObject) -> Self {
        Entity::Ref(ObjectRef::Remote(r))
    }
}

/// A short human-readable rendering of exception arguments: strings
/// unquoted when there is exactly one, otherwise the tuple.
pub(crate) fn describe_args(args: &[Value]) -> String {
    match args {
        [] => "(no arguments)".to_owned(),
        [Entity::Str(s)] => s.clone(),
        _ => format!("{:?}", Entity::Tuple(args.to_vec())),
    }
}

// ---- objects -----------------------------------------------------------

/// The future a call returns.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Value, CallError>> + Send + 'static>>;

/// Something that can be called over a link.
///
/// `args` is the raw VOB argument tuple: `(method_name, arg...)` for a
/// method call or `(None, meta_name, arg...)` for a meta call. The future
/// runs on the link's task; a method that does heavy work should spawn it.
pub trait Object: Send + Sync + 'static {
    /// Handles one call.
    fn call(self: Arc<Self>, cx: CallContext, args: Vec<Value>) -> CallFuture;

    /// Handles a call of the method named `method`: `args` are the
    /// arguments after the name. The link calls this for VOB method calls
    /// whose name it could read in place; the default rebuilds the raw
    /// argument tuple and hands it to [`Object::call`]. Objects that look
    /// methods up by name override it and spare that.
    fn call_method(self: Arc<Self>, cx: CallContext, method: &str, args: Vec<Value>) -> CallFuture {
        let mut full = Vec::with_capacity(1 + args.len());
        full.push(Value::str(method));
        full.extend(args);
        self.call(cx, full)
    }

    /// A name for the object's type, used in logs and by `describe`.
    fn type_name(&self) -> &str {
        "object"
    }
}

impl fmt::Debug for dyn Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "local {}", self.type_name())
    }
}

/// How a call failed, as the method reports it.
#[derive(Debug, Clone)]
pub enum CallError {
    /// An exception the method raises on purpose. The peer receives a VOL
    /// CALL_EXCEPTION carrying a VException with these arguments.
    Exception(Vec<Value>),
    /// Any other failure: unknown method, wrong arguments, an internal
    /// error. The peer receives a VOL CALL_ERROR, which carries no detail;
    /// the reason is logged here.
    Failed(String),
}

impl CallError {
    /// An exception with one string argument.
    pub fn exception(message: impl Into<String>) -> Self {
        CallError::Exception(vec![Value::Str(message.into())])
    }

    /// The exception a cancelled call is answered with:
    /// `("vole.cancelled", reason)` (see [`crate::proto::CANCELLED`]); a
    /// vole caller sees it as [`Error::Cancelled`].
    pub fn cancelled(reason: impl Into<String>) -> Self {
        CallError::Exception(vec![
            Value::str(crate::proto::CANCELLED),
            Value::Str(reason.into()),
        ])
    }

    /// The exception a closing link refuses a call with:
    /// `("vole.closing", reason)` (see [`crate::proto::CLOSING`]); a vole
    /// caller sees it as [`Error::Closing`] and knows the call was not run.
    pub fn closing(reason: impl Into<String>) -> Self {
        CallError::Exception(vec![
            Value::str(crate::proto::CLOSING),
            Value::Str(reason.into()),
        ])
    }

    /// A failure with a reason that is logged locally.
    pub fn failed(reason: impl Into<String>) -> Self {
        CallError::Failed(reason.into())
    }

    /// The call named a method the object does not have.
    pub fn unknown_method(name: &str) -> Self {
        CallError::Failed(format!("no method {name:?}"))
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Exception(args) => {
                write!(f, "exception: {}", describe_args(args))
            }
            CallError::Failed(reason) => f.write_str(reason),
        }
    }
}

impl From<Error> for CallError {
    /// A failed call made by a method becomes: the same exception if the
    /// callee raised one, otherwise a failure with the error's text.
    fn from(e: Error) -> Self {
        match e {
            Error::Exception(args) => CallError::Exception(args),
            Error::Cancelled(reason) => CallError::cancelled(reason),
            // Passed on as the same refusal, so the caller's caller may
            // retry too.
            Error::Overloaded(reason) => CallError::Exception(vec![
                Value::str(crate::core::OVERLOADED),
                Value::Str(reason),
            ]),
            other => CallError::Failed(error_chain(&other)),
        }
    }
}

/// The error and its causes on one line, separated by `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// ---- proxies -----------------------------------------------------------

/// A call a proxy hands to its link's driver.
pub(crate) struct Call {
    /// The object called; holding it keeps the peer's object alive until
    /// the call is sent.
    pub(crate) target: RemoteObject,
    /// The raw VOB argument tuple.
    pub(crate) args: Vec<Value>,
    pub(crate) kind: CallKind,
}

/// How a call this side made ended.
pub(crate) type Outcome = Result<Value, Error>;

/// The shared state of a link, as its proxies hold it.
pub(crate) type Shared = LinkShared<Call, Outcome>;

/// A reference to an object living on the other side of a link.
#[derive(Clone)]
pub struct RemoteObject {
    inner: Arc<RemoteInner>,
}

pub(crate) struct RemoteInner {
    id: i64,
    link: Arc<Shared>,
}

impl Drop for RemoteInner {
    fn drop(&mut self) {
        // Never blocks; once the link is gone there is nothing to release.
        self.link.signals.release(self.id);
    }
}

impl RemoteObject {
    pub(crate) fn new(id: i64, link: Arc<Shared>) -> Self {
        RemoteObject {
            inner: Arc::new(RemoteInner { id, link }),
        }
    }

    pub(crate) fn upgrade(weak: &Weak<RemoteInner>) -> Option<Self> {
        weak.upgrade().map(|inner| RemoteObject { inner })
    }

    pub(crate) fn downgrade(&self) -> Weak<RemoteInner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn inner_key(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The object's id in the peer's id space.
    pub fn id(&self) -> i64 {
        self.inner.id
    }

    /// The id of the link this proxy belongs to.
    pub fn link_id(&self) -> u64 {
        self.inner.link.id
    }

    /// The state of the link this proxy belongs to.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.link
    }
}

impl PartialEq for RemoteObject {
    fn eq(&self, other: &Self) -> bool {
        self.link_id() == other.link_id() && self.id() == other.id()
    }
}

impl Eq for RemoteObject {}

impl fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "remote object {} on link {}", self.id(), self.link_id())
    }
}

// ---- errors ------------------------------------------------------------

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
    #[error("remote exception: {}", describe_args(.0))]
    Exception(Vec<Value>),
    /// The remote side failed the call without detail (VOL CALL_ERROR): an
    /// unknown method, wrong arguments, or an internal error there.
    #[error("remote call failed (the peer gives no detail: unknown method, bad arguments or an internal error)")]
    CallError,
    /// The peer refused the call because it runs too many of this link's
    /// calls (its `overload = "refuse"` setting): the call was not run, so
    /// it may be retried. On the wire, an exception whose first argument is
    /// `"overloaded"`; this is the reason it gives.
    #[error("the peer is overloaded; the call was not run: {0}")]
    Overloaded(String),
    /// The peer broke the VOL protocol (the variant names the rule and,
    /// where known, the message); the link was closed.
    #[error("protocol violation: {0}")]
    Protocol(ProtocolViolation),
    /// The link was closed before the call was sent: the call was not
    /// run, so it may be retried on another link.
    #[error("link closed: {0}")]
    Closed(String),
    /// The link closed while the call was in flight: it was sent, and the
    /// peer may or may not have run it. Retry it only if it is idempotent.
    #[error("link closed with the call in flight (it may have run): {0}")]
    Interrupted(String),
    /// The peer refused the call because its link is closing (a stop,
    /// drain, reload or upgrade): the call was not run, so it may be
    /// retried on another link. On the wire, an exception whose first
    /// argument is `"vole.closing"`; this is the reason it gives.
    #[error("the peer is closing; the call was not run: {0}")]
    Closing(String),
    /// The link handshake did not complete.
    #[error("link handshake failed: {0}")]
    Handshake(String),
    /// An operation did not complete in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// A call's deadline passed before its answer came (see
    /// [`RemoteObject::with_timeout`]). The peer was told to cancel the
    /// call; its answer, if one still comes, is discarded.
    #[error("call of {method} exceeded its deadline of {timeout:?}")]
    DeadlineExceeded {
        /// The method called (`meta.<name>` for a meta call).
        method: String,
        /// The timeout the call was given.
        timeout: std::time::Duration,
    },
    /// The peer cancelled the call: it ran longer than the service's
    /// `max-call-time`, the link was closing, or the caller asked. A remote
    /// outcome (the peer answered with a `vole.cancelled` exception); this
    /// is the reason it gave.
    #[error("call cancelled by the peer: {0}")]
    Cancelled(String),
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
        matches!(
            self,
            Error::Exception(_)
                | Error::CallError
                | Error::Cancelled(_)
                | Error::Overloaded(_)
                | Error::Closing(_)
        )
    }

    /// Whether the call provably never ran at the peer, so trying it again
    /// (on another link, or later) is safe even if it is not idempotent:
    /// the link was closed before it was sent, or the peer refused it as
    /// closing or overloaded. A call cut off in flight
    /// ([`Error::Interrupted`]) or past its deadline may have run.
    pub fn never_ran(&self) -> bool {
        matches!(
            self,
            Error::Closed(_) | Error::Closing(_) | Error::Overloaded(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_error_prints_its_rule_once() {
        let e = Error::Protocol(ProtocolViolation::UnknownMessageCode {
            msg_id: 3,
            code: 42,
        });
        assert_eq!(
            e.to_string(),
            "protocol violation: message 3: unknown message code 42"
        );
        // Display and the chain of causes agree: the rule is not repeated.
        assert_eq!(error_chain(&e), e.to_string());
    }
}
