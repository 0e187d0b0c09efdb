//! Objects that can be called over a link: the [`Object`] trait, the
//! [`CallContext`] a call runs in, and [`CallError`], how a call fails.
//!
//! Most services do not implement [`Object`] by hand but build objects with
//! [`crate::publish::Published`], which parses the VOB calling convention,
//! converts typed arguments and answers the `meta` calls.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::Value;

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
                write!(f, "exception: {}", crate::value::describe_args(args))
            }
            CallError::Failed(reason) => f.write_str(reason),
        }
    }
}

impl From<crate::Error> for CallError {
    /// A failed call made by a method becomes: the same exception if the
    /// callee raised one, otherwise a failure with the error's text.
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Exception(args) => CallError::Exception(args),
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

/// What a link knows about its connection, shared by every call on it.
#[derive(Debug, Clone, Default)]
pub struct LinkInfo {
    /// Process-unique id of the link.
    pub link_id: u64,
    /// The peer's socket address, if the link runs over a socket.
    pub peer_addr: Option<SocketAddr>,
    /// This side's socket address.
    pub local_addr: Option<SocketAddr>,
    /// The transport VOP negotiated (`"TLS"`, `"PLAIN"`), if any.
    pub transport: Option<&'static str>,
    /// TLS details, if the transport is TLS.
    pub tls: Option<TlsInfo>,
    /// The serving node's id, when running under a controller.
    pub node_id: Option<u32>,
}

/// TLS details of a link.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// Protocol version, e.g. `"TLSv1_3"`.
    pub version: String,
    /// Negotiated cipher suite.
    pub cipher_suite: String,
    /// The server name the client asked for (server side).
    pub server_name: Option<String>,
    /// SHA-256 of the peer's end-entity certificate, if it sent one.
    pub peer_cert_sha256: Option<[u8; 32]>,
    /// Whether the TLS session was resumed.
    pub resumed: bool,
}

/// The context a call runs in: which link it came from and who the peer is.
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallContext {
    info: Arc<LinkInfo>,
}

impl CallContext {
    /// A context for calls arriving on a link described by `info`.
    pub fn new(info: Arc<LinkInfo>) -> Self {
        CallContext { info }
    }

    /// A context with no connection details, for calls made in-process.
    pub fn detached() -> Self {
        CallContext {
            info: Arc::new(LinkInfo::default()),
        }
    }

    /// Everything the link knows about its connection.
    pub fn link(&self) -> &LinkInfo {
        &self.info
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.info.peer_addr
    }

    /// The negotiated transport.
    pub fn transport(&self) -> Option<&'static str> {
        self.info.transport
    }

    /// TLS details.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.info.tls.as_ref()
    }
}
