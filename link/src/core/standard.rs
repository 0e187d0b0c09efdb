//! The core's part in the standard, call-based VOL handshake (see
//! [`super::handshake`] for its object and state): publishing this side's
//! handshake object, asking the peer's for keep-alives and calling
//! `finish()` on it, answering the peer's calls on this side's, and taking
//! the answers.

use std::sync::Arc;
use std::time::Duration;

use vole_transport::Entity;

use super::handshake::HandshakeObject;
use super::keepalive::millis;
use super::refs::object_key;
use super::{Event, LinkCore, Pending};
use crate::model::{Error, Object, ObjectRef, RemoteObject, Value};
use crate::proto::CallKind;
use crate::violation::ProtocolViolation as V;

impl LinkCore {
    /// After the peer's hello: publishes this side's handshake object.
    pub(super) fn publish_handshake_object(&mut self) -> Result<(), Error> {
        let hs: Arc<dyn Object> = Arc::new(HandshakeObject);
        self.hs.our_id = self.refs.register_local(hs.clone(), object_key(&hs));
        self.write_raw(&Entity::Ref(ObjectRef::Local(hs)))
    }

    /// The peer's handshake object arrived (`obj`): asks it for keep-alives
    /// if configured, and calls `finish()` on it.
    pub(super) fn peer_handshake_object(&mut self, obj: Value) -> Result<(), Error> {
        let Entity::Ref(ObjectRef::Remote(peer_hs)) = obj else {
            return Err(Error::Protocol(V::NotAHandshakeObject {
                found: obj.kind(),
            }));
        };
        self.hs.peer_object = Some(peer_hs.clone());
        if let Some(period) = self.config.keep_alive {
            let id = self.send_call(
                &peer_hs,
                &[Value::str("keep_alive"), Value::Int(millis(period))],
                CallKind::Normal,
            )?;
            self.pending.insert(id as u64, Pending::KeepAlive);
            self.hs.keep_alive_call = Some(id);
        }
        // `finish()` goes in the same flight as the keep-alive request:
        // waiting for that answer first would cost a round trip. The
        // handshake completes only once both are answered.
        self.can_finish(&peer_hs)
    }

    fn can_finish(&mut self, peer_hs: &RemoteObject) -> Result<(), Error> {
        self.hs.allow_finish = true;
        for call_id in std::mem::take(&mut self.hs.deferred_finish) {
            self.answer_finish(call_id)?;
        }
        let id = self.send_call(peer_hs, &[Value::str("finish")], CallKind::Normal)?;
        self.pending.insert(id as u64, Pending::Finish);
        self.hs.finish_call = Some(id);
        Ok(())
    }

    fn answer_finish(&mut self, call_id: u64) -> Result<(), Error> {
        let gw = Value::Ref(ObjectRef::Local(self.gateway.clone()));
        self.respond(call_id, CallKind::Normal, Ok(gw))?;
        self.hs.sent_gateway = true;
        self.check_handshake_done();
        Ok(())
    }

    pub(super) fn check_handshake_done(&mut self) {
        if self.hs.done
            || !self.hs.sent_gateway
            || self.hs.peer_gateway.is_none()
            || self.hs.keep_alive_call.is_some()
        {
            return;
        }
        self.hs.done = true;
        // The peer calls next: a drain waits for that as for any call.
        self.last_call_in = self.now;
        // Release the peer's handshake object (its proxy drop sends the
        // NOTIFY_DEREF).
        self.hs.peer_object = None;
        if let Some(gw) = self.hs.peer_gateway.take() {
            self.events.push_back(Event::HandshakeDone(gw));
        }
        tracing::debug!(link = self.shared.id, "link handshake completed");
    }

    pub(super) fn handshake_call(
        &mut self,
        call_id: u64,
        kind: CallKind,
        args: Vec<Value>,
    ) -> Result<(), Error> {
        match args.as_slice() {
            [Value::Str(m)] if m == "finish" => {
                if self.hs.sent_gateway {
                    return Err(Error::Protocol(V::FinishCalledTwice {
                        msg_id: call_id as i64,
                    }));
                }
                if self.hs.allow_finish {
                    self.answer_finish(call_id)
                } else {
                    self.hs.deferred_finish.push(call_id);
                    Ok(())
                }
            }
            [Value::Str(m), Value::Int(ms)] if m == "keep_alive" => {
                if self.hs.got_keep_alive_request || *ms <= 0 {
                    return Err(Error::Protocol(V::BadKeepAliveRequest {
                        msg_id: call_id as i64,
                        period_ms: *ms,
                    }));
                }
                self.hs.got_keep_alive_request = true;
                let granted = self
                    .keep_alive
                    .grant(*ms, self.config.keep_alive_min_send, self.now);
                self.respond(call_id, kind, Ok(Value::Int(granted)))
            }
            _ => Err(Error::Protocol(V::UnexpectedHandshakeCall {
                msg_id: call_id as i64,
                call: format!("{args:?}"),
            })),
        }
    }

    /// The peer's answer to this side's keep-alive request.
    pub(super) fn keep_alive_answer(&mut self, result: Result<Value, Error>) -> Result<(), Error> {
        let requested = self.config.keep_alive.unwrap_or_default();
        match result {
            Ok(Value::Int(ms)) if ms > 0 && Duration::from_millis(ms as u64) >= requested => {
                self.keep_alive.recv = Some(Duration::from_millis(ms as u64));
            }
            other => {
                return Err(Error::Handshake(format!(
                    "peer refused keep-alive: {:?}",
                    other.map(|v| v.kind())
                )));
            }
        }
        self.hs.keep_alive_call = None;
        self.check_handshake_done();
        Ok(())
    }

    /// The peer's answer to this side's `finish()`: its gateway.
    pub(super) fn finish_answer(&mut self, result: Result<Value, Error>) -> Result<(), Error> {
        match result {
            Ok(Value::Ref(ObjectRef::Remote(gw))) => {
                self.hs.peer_gateway = Some(gw);
                self.check_handshake_done();
                Ok(())
            }
            Ok(other) => Err(Error::Protocol(V::GatewayNotAnObject {
                found: other.kind(),
            })),
            Err(e) => Err(Error::Handshake(format!("peer refused finish(): {e}"))),
        }
    }
}
