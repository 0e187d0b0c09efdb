//! The call-based VOL handshake: the object each side publishes for it and
//! the state of the exchange. (The exchange itself, which sends and
//! answers calls, is run by the core.)

use std::sync::Arc;

use crate::info::CallContext;
use crate::model::{CallError, CallFuture, Object, RemoteObject, Value};

/// The handshake object each side publishes; calls to it never reach user
/// code, the core answers them.
pub(super) struct HandshakeObject;

impl Object for HandshakeObject {
    fn call(self: Arc<Self>, _cx: CallContext, _args: Vec<Value>) -> CallFuture {
        Box::pin(async { Err(CallError::failed("handshake object called out of band")) })
    }

    fn type_name(&self) -> &str {
        "VHandshake"
    }
}

/// Where the handshake stands: this side's handshake object, the calls
/// made on the peer's, and what has been exchanged.
#[derive(Default)]
pub(super) struct Handshake {
    /// The peer agreed on the direct handshake (see `direct`): none of
    /// the rest is used.
    pub(super) direct: bool,
    pub(super) our_id: i64,
    pub(super) peer_object: Option<RemoteObject>,
    pub(super) keep_alive_call: Option<i64>,
    pub(super) finish_call: Option<i64>,
    pub(super) deferred_finish: Vec<u64>,
    pub(super) allow_finish: bool,
    pub(super) sent_gateway: bool,
    pub(super) got_keep_alive_request: bool,
    pub(super) peer_gateway: Option<RemoteObject>,
    pub(super) done: bool,
}
