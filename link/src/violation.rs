//! [`ProtocolViolation`]: which rule of VOL the peer broke.
//!
//! A violation closes the link (it is reported as
//! [`Error::Protocol`](crate::Error::Protocol)). Where the offending message
//! could be read far enough, the variant names its message id (`msg_id`, in
//! the peer's numbering), so a log line can be matched with a capture.

use std::time::Duration;

use crate::proto::code;

/// A rule of the VOL protocol the peer broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// The peer's VOL hello is not `(protocol, copyleft, version)` as VOL
    /// defines it, or names a protocol or version this side cannot speak.
    #[error("bad VOL hello: {reason}")]
    BadHello {
        /// What is wrong with it.
        reason: String,
    },
    /// On a link with the direct handshake (both vole, agreed by TLS ALPN)
    /// the peer must send its settings after its hello; it sent something
    /// else, or settings this side cannot take.
    #[error("bad direct-handshake settings: {reason}")]
    BadDirectSettings {
        /// What is wrong with them.
        reason: String,
    },
    /// After its hello the peer must send a reference to its handshake
    /// object; it sent something else.
    #[error("expected a reference to the peer's handshake object, got {found}")]
    NotAHandshakeObject {
        /// The kind of entity it sent.
        found: &'static str,
    },
    /// The peer called `finish()` on this side's handshake object after it
    /// had already been answered.
    #[error("message {msg_id}: finish() called twice on the handshake object")]
    FinishCalledTwice {
        /// The id of the second call.
        msg_id: i64,
    },
    /// The peer asked for keep-alives twice, or with a period that is not
    /// positive.
    #[error(
        "message {msg_id}: invalid keep_alive({period_ms}) request (repeated, or not positive)"
    )]
    BadKeepAliveRequest {
        /// The id of the call.
        msg_id: i64,
        /// The period asked for, in milliseconds.
        period_ms: i64,
    },
    /// A call on the handshake object other than `finish()` and
    /// `keep_alive(ms)`.
    #[error("message {msg_id}: unexpected call on the handshake object: {call}")]
    UnexpectedHandshakeCall {
        /// The id of the call.
        msg_id: i64,
        /// The call's arguments, as debug text.
        call: String,
    },
    /// The peer's `finish()` returned something other than its gateway
    /// object.
    #[error("the peer's finish() returned a {found}, not its gateway object")]
    GatewayNotAnObject {
        /// The kind of value it returned.
        found: &'static str,
    },
    /// A message is not the 3-tuple `(id: int, code: int, payload)`.
    #[error("a message must be a tuple (id: int, code: int, payload), got {found}")]
    MalformedMessage {
        /// What arrived instead, in words.
        found: String,
    },
    /// A message code VOL does not define.
    #[error("message {msg_id}: unknown message code {code}")]
    UnknownMessageCode {
        /// The message's id.
        msg_id: i64,
        /// Its code.
        code: i64,
    },
    /// A payload of the wrong shape for its message code.
    #[error("message {msg_id}: a {} payload must be {expected}", code_name(*.code))]
    BadPayload {
        /// The message's id.
        msg_id: i64,
        /// Its code.
        code: i64,
        /// The shape VOL requires, in words.
        expected: &'static str,
    },
    /// A call whose target is not an object of the side receiving it.
    #[error("message {msg_id}: a call must target an object of the callee, not {found}")]
    BadCallTarget {
        /// The call's message id.
        msg_id: i64,
        /// What it targets, in words.
        found: &'static str,
    },
    /// A call with a negative message id (ids count up from 1).
    #[error("message {msg_id}: a call's message id must not be negative")]
    NegativeCallId {
        /// The call's message id.
        msg_id: i64,
    },
    /// A result, exception or call error for a call this side did not
    /// make, or that was already answered.
    #[error("message {msg_id}: {} for unknown call {call_id}", code_name(*.code))]
    ResultForUnknownCall {
        /// The answer's message id.
        msg_id: i64,
        /// Its code (result, exception or error).
        code: i64,
        /// The call id it answers.
        call_id: i64,
    },
    /// NOTIFY_DEREF for an object id this side has not sent, or has
    /// already released.
    #[error("message {msg_id}: deref of unknown object id {object_id}")]
    DerefOfUnknownObject {
        /// The notice's message id.
        msg_id: i64,
        /// The object id it names.
        object_id: i64,
    },
    /// NOTIFY_DEREF claims more receipts than this side sent (or a
    /// negative count): the reference count would go below zero.
    #[error("message {msg_id}: deref of object {object_id} claims {claimed} receipts but {sent} were sent")]
    ReferenceUnderflow {
        /// The notice's message id.
        msg_id: i64,
        /// The object id it names.
        object_id: i64,
        /// The receipts the peer claims.
        claimed: i64,
        /// The references this side sent.
        sent: u64,
    },
    /// CONFIRM_DEREF for an object this side still holds or never asked to
    /// release.
    #[error("message {msg_id}: unrequested deref confirmation for object {object_id}")]
    UnrequestedDerefConfirmation {
        /// The confirmation's message id.
        msg_id: i64,
        /// The object id it names.
        object_id: i64,
    },
    /// CONFIRM_DEREF for an object id this side does not know.
    #[error("message {msg_id}: deref confirmation for unknown object id {object_id}")]
    ConfirmOfUnknownObject {
        /// The confirmation's message id.
        msg_id: i64,
        /// The object id it names.
        object_id: i64,
    },
    /// The peer sends keep-alives far more often than the period it agreed
    /// to.
    #[error("peer sends keep-alives every {median_gap:?} (median), far more often than the {agreed:?} agreed")]
    KeepAliveFlood {
        /// The agreed period.
        agreed: Duration,
        /// The median gap between its last keep-alives.
        median_gap: Duration,
    },
}

/// The name of a VOL message code, for messages.
fn code_name(c: i64) -> &'static str {
    match c {
        code::METHOD_CALL => "call",
        code::METHOD_CALL_VOID_RESULT => "void-result call",
        code::METHOD_CALL_NO_RETURN => "one-way call",
        code::CALL_RESULT => "call result",
        code::CALL_EXCEPTION => "call exception",
        code::CALL_ERROR => "call error",
        code::NOTIFY_DEREF => "deref notice",
        code::CONFIRM_DEREF => "deref confirmation",
        code::KEEP_ALIVE => "keep-alive",
        _ => "message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_rule_and_the_message() {
        let v = ProtocolViolation::BadPayload {
            msg_id: 7,
            code: code::NOTIFY_DEREF,
            expected: "(object id, count)",
        };
        assert_eq!(
            v.to_string(),
            "message 7: a deref notice payload must be (object id, count)"
        );
        let v = ProtocolViolation::ResultForUnknownCall {
            msg_id: 100,
            code: code::CALL_EXCEPTION,
            call_id: 999,
        };
        assert_eq!(
            v.to_string(),
            "message 100: call exception for unknown call 999"
        );
    }
}
