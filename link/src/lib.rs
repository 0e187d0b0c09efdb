//! The VOL link protocol: what runs over a Versile connection once the
//! transport is negotiated.
//!
//! A link connects two object worlds. Each side publishes a *gateway*
//! object; after the handshake each holds a [`RemoteObject`] for the other's
//! gateway and can call its methods. Results can carry further objects in
//! both directions; the link counts references so each side releases an
//! object exactly when the peer no longer holds it.
//!
//! * the protocol itself is handled by a sans-IO core ([`LinkConfig`]
//!   configures it); [`Driver`] runs it over any `AsyncRead + AsyncWrite`
//!   stream on one tokio task; [`serve`] and [`connect`] are the two ways
//!   to start one.
//! * [`Object`] is what can be called; [`publish::Published`] builds objects
//!   from typed async functions and answers `meta.methods()` / `meta.doc()`
//!   and vole's `meta.signature(name)` (a string such as
//!   `"greet(name: str) -> str"`, see [`publish`]); [`service::Service`] is
//!   what the `vole::service` macro implements for typed services.
//! * deadlines and cancellation: [`RemoteObject::with_timeout`] (and
//!   [`Pipeline::set_timeout`]) give calls a deadline; a call given up
//!   (past its deadline, or its future dropped) is cancelled with the peer
//!   by vole's one-way meta call `vole.cancel` ([`proto::CANCEL`]), which
//!   VPy ignores. Served calls are cancelled on that, on
//!   [`LinkConfig::max_call_time`] and when the link closes; handlers see it
//!   through [`CallContext::is_cancelled`] and
//!   [`CallContext::cancellation_token`].
//! * who is calling: [`CallContext::identity`] is what the peer proved in
//!   the transport handshake (a verified client certificate,
//!   [`PeerIdentity`]), and [`CallContext::session`] a typed map the calls
//!   of one link share ([`Session`]).
//! * [`uri`] parses `vop://host:port/path/name?args` resource identifiers;
//!   [`resolve`] connects and resolves them; [`router::Router`] builds
//!   gateways that serve paths.
//!
//! What it is not: it opens no sockets itself and does no TLS (see
//! `vole-transport`), and it knows nothing of processes (see `vole-node`).

#![warn(missing_docs)]
#![deny(unsafe_code)]

// The modules, leaves first: each uses only modules listed before it
// (`.ci/file_cycles.py` checks that no file imports in a circle).
pub mod budget;
mod calls;
mod cancel;
mod core;
mod driver;
pub mod failover;
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod ids;
mod info;
pub mod metrics;
mod model;
pub mod object;
mod pipeline;
pub mod pool;
pub mod proto;
pub mod publish;
mod remote;
pub mod resolve;
pub mod router;
pub mod seqmap;
pub mod service;
mod session;
mod shared;
pub mod uri;
mod violation;

pub use crate::core::{LinkConfig, Overload, DEFAULT_MAX_BUFFERED, OVERLOADED};
pub use driver::{connect, serve, Closed, Driver, HandshakeReceiver, LinkSetup, DRAIN_REFUSALS};
pub use handle::Link;
pub use info::{CallContext, LinkInfo, ServiceHealth, TlsInfo};
pub use model::{CallError, CallFuture, Error, Object, ObjectRef, RemoteObject, Value};
pub use pipeline::Pipeline;
pub use proto::CallKind;
pub use remote::{CallOptions, CallWith, IntoArgs};
pub use session::Session;
pub use shared::LinkStats;
pub use violation::ProtocolViolation;
pub use vole_transport::{Entity, FromEntity, IntoEntity, PeerIdentity};
