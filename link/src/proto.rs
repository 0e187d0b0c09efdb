//! VOL wire constants: the hello, message codes and call kinds.
//!
//! Every VOL message is one entity `(msg_id, msg_code, payload)`; message ids
//! count up from 1 per direction. Before the first message each side sends
//! two raw entities: the hello tuple and a reference to its handshake object.

use vole_transport::Entity;

/// VOL message codes.
pub mod code {
    /// `(object, args)`: call with a result.
    pub const METHOD_CALL: i64 = 1;
    /// `(object, args)`: call whose result is replaced by none.
    pub const METHOD_CALL_VOID_RESULT: i64 = 2;
    /// `(object, args)`: call with no reply at all.
    pub const METHOD_CALL_NO_RETURN: i64 = 3;
    /// `(call_id, value)`.
    pub const CALL_RESULT: i64 = 4;
    /// `(call_id, exception)`.
    pub const CALL_EXCEPTION: i64 = 5;
    /// `call_id`.
    pub const CALL_ERROR: i64 = 6;
    /// `(object_id, receive_count)`.
    pub const NOTIFY_DEREF: i64 = 7;
    /// `object_id`.
    pub const CONFIRM_DEREF: i64 = 8;
    /// `None`.
    pub const KEEP_ALIVE: i64 = 9;
}

/// vole's cancel message: the one-way meta call
/// `(None, "vole.cancel", call_id)`, sent to the object a call was made on
/// when its caller gives up (a deadline passed, or the call's future was
/// dropped). VPy does not know it and, as the call is one-way, answers
/// nothing; a vole peer drops the call's handler and answers the call with
/// a [`CANCELLED`] exception (which the caller discards).
pub const CANCEL: &str = "vole.cancel";

/// The first argument of the exception a vole service answers a call it
/// cancelled with: `("vole.cancelled", reason)`. Callers see it as
/// [`Error::Cancelled`](crate::Error::Cancelled).
pub const CANCELLED: &str = "vole.cancelled";

/// The first argument of the exception a closing vole link refuses a call
/// with: `("vole.closing", reason)`. The call was not run, so it may be
/// retried on another link; callers see it as
/// [`Error::Closing`](crate::Error::Closing). A VPy caller sees an
/// ordinary exception.
pub const CLOSING: &str = "vole.closing";

/// The raw argument tuple of the cancel message for `call_id` (see
/// [`CANCEL`]).
pub fn cancel_args<R>(call_id: i64) -> Vec<Entity<R>> {
    vec![Entity::None, Entity::str(CANCEL), Entity::Int(call_id)]
}

/// The kinds of call VOL knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A call with a result (`METHOD_CALL`).
    Normal,
    /// A call whose result is discarded by the callee, which answers none
    /// (`METHOD_CALL_VOID_RESULT`); errors still come back.
    Void,
    /// A call with no reply at all (`METHOD_CALL_NO_RETURN`).
    Oneway,
}

impl CallKind {
    pub(crate) fn code(self) -> i64 {
        match self {
            CallKind::Normal => code::METHOD_CALL,
            CallKind::Void => code::METHOD_CALL_VOID_RESULT,
            CallKind::Oneway => code::METHOD_CALL_NO_RETURN,
        }
    }
}

/// The protocol name in the hello.
pub const PROTOCOL: &[u8] = b"VOL_DRAFT";

/// The hello vole sends: `(b"VOL_DRAFT", (False, None, None), (0, 8))`.
///
/// vole is not copyleft, so it announces no license (VPy announces LGPLv3).
pub fn hello<R>() -> Entity<R> {
    Entity::Tuple(vec![
        Entity::Bytes(PROTOCOL.to_vec()),
        Entity::Tuple(vec![Entity::Bool(false), Entity::None, Entity::None]),
        Entity::Tuple(vec![Entity::Int(0), Entity::Int(8)]),
    ])
}

/// What the peer announced in its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// Whether the peer says it is copyleft, with its license and URL.
    pub copyleft: Option<(String, String)>,
}

/// Validates a peer's hello the way VPy does.
pub fn parse_hello<R>(e: &Entity<R>) -> Result<PeerHello, String> {
    let Entity::Tuple(parts) = e else {
        return Err(format!("hello is a {}, not a tuple", e.kind()));
    };
    let [protocol, copyleft, version] = parts.as_slice() else {
        return Err(format!("hello has {} elements, not 3", parts.len()));
    };
    match protocol {
        Entity::Bytes(p) if p == PROTOCOL => {}
        _ => return Err("hello does not name VOL_DRAFT".to_owned()),
    }
    match version.as_tuple() {
        Some([Entity::Int(0), Entity::Int(8)]) => {}
        _ => return Err("unsupported VOL version".to_owned()),
    }
    let Some([is_copyleft, license, url]) = copyleft.as_tuple() else {
        return Err("malformed copyleft tuple".to_owned());
    };
    match (is_copyleft, license, url) {
        (Entity::Bool(false), Entity::None, Entity::None) => Ok(PeerHello { copyleft: None }),
        (Entity::Bool(true), Entity::Str(lic), Entity::Str(u)) => {
            let lower = u.to_ascii_lowercase();
            if ["http://", "https://", "vop://"]
                .iter()
                .any(|p| lower.starts_with(p))
            {
                Ok(PeerHello {
                    copyleft: Some((lic.clone(), u.clone())),
                })
            } else {
                Err(format!("copyleft URL {u:?} is not http, https or vop"))
            }
        }
        _ => Err("malformed copyleft tuple".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vole_transport::vec::{encode_to_vec, EncodeConfig};
    use vole_transport::WireRef;

    #[test]
    fn vole_hello_parses_and_encodes_as_expected() {
        let h: Entity<WireRef> = hello();
        assert_eq!(parse_hello(&h), Ok(PeerHello { copyleft: None }));
        let bytes = encode_to_vec(&h, EncodeConfig::default()).expect("encodes");
        // f6 03 | f3 09 | f6 03 f1 f8 f8 | f6 02 01 09 | "VOL_DRAFT"
        let mut expected = vec![
            0xf6, 0x03, 0xf3, 0x09, 0xf6, 0x03, 0xf1, 0xf8, 0xf8, 0xf6, 0x02, 0x01, 0x09,
        ];
        expected.extend_from_slice(b"VOL_DRAFT");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn the_cancel_arguments_encode_as_a_meta_call() {
        let args: Entity<WireRef> = Entity::Tuple(cancel_args(300));
        let bytes = encode_to_vec(&args, EncodeConfig::default()).expect("encodes");
        // Headers first, then payloads (VEC's order): f6 03 (a 3-tuple) |
        // f8 (None) | f4 0b (an 11-byte string) | ef 3e (the int 300) |
        // "vole.cancel".
        let mut expected = vec![0xf6, 0x03, 0xf8, 0xf4, 0x0b, 0xef, 0x3e];
        expected.extend_from_slice(b"vole.cancel");
        assert_eq!(bytes, expected);
        assert_eq!(CANCEL.len(), 0x0b);
    }

    #[test]
    fn vpy_hello_is_accepted() {
        let h: Entity<WireRef> = Entity::Tuple(vec![
            Entity::Bytes(b"VOL_DRAFT".to_vec()),
            Entity::Tuple(vec![
                Entity::Bool(true),
                Entity::str("LGPLv3"),
                Entity::str("https://www.gnu.org/licenses/lgpl.txt"),
            ]),
            Entity::Tuple(vec![Entity::Int(0), Entity::Int(8)]),
        ]);
        let parsed = parse_hello(&h).expect("valid");
        assert_eq!(parsed.copyleft.map(|c| c.0), Some("LGPLv3".to_owned()));
    }

    #[test]
    fn bad_hellos_are_refused() {
        let ok_cl = Entity::<WireRef>::Tuple(vec![Entity::Bool(false), Entity::None, Entity::None]);
        let ver = Entity::<WireRef>::Tuple(vec![Entity::Int(0), Entity::Int(8)]);
        let cases: Vec<Entity<WireRef>> = vec![
            Entity::Int(1),
            Entity::Tuple(vec![]),
            Entity::Tuple(vec![
                Entity::Bytes(b"VOL".to_vec()),
                ok_cl.clone(),
                ver.clone(),
            ]),
            Entity::Tuple(vec![
                Entity::Bytes(PROTOCOL.to_vec()),
                ok_cl.clone(),
                Entity::Tuple(vec![Entity::Int(0), Entity::Int(9)]),
            ]),
            Entity::Tuple(vec![
                Entity::Bytes(PROTOCOL.to_vec()),
                Entity::Tuple(vec![
                    Entity::Bool(true),
                    Entity::str("x"),
                    Entity::str("ftp://x"),
                ]),
                ver.clone(),
            ]),
            Entity::Tuple(vec![
                Entity::Bytes(PROTOCOL.to_vec()),
                Entity::Tuple(vec![Entity::Bool(false), Entity::str("x"), Entity::None]),
                ver,
            ]),
        ];
        for c in cases {
            assert!(parse_hello(&c).is_err(), "{c:?}");
        }
    }
}
