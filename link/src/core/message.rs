//! Reading VOL messages: [`read_message`] takes a message
//! `(id, code, payload)` apart as it is decoded, so that the framing tuples
//! of calls and results are never built, and reports a message of the
//! wrong shape as the rule it breaks.

use std::sync::Arc;

use vole_transport::vec::Reader;

use super::refs::RefTable;
use crate::model::{Error, Object, ObjectRef, Value};
use crate::proto::{code, CallKind};
use crate::violation::ProtocolViolation as V;

/// A VOL message as [`read_message`] takes it apart.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A call of one of this side's objects: `method(args)` if the method
    /// name could be read in place, otherwise the raw argument tuple.
    Call {
        call_id: i64,
        kind: CallKind,
        object: Arc<dyn Object>,
        method: Option<MethodName>,
        args: Vec<Value>,
    },
    /// A result or exception for a call this side made.
    Outcome {
        msg_id: i64,
        code: i64,
        call_id: i64,
        result: Result<Value, Error>,
    },
    /// Any other message, payload whole.
    Other {
        msg_id: i64,
        code: i64,
        payload: Value,
    },
    /// A message of the wrong shape: closes the link.
    Violation(V),
}

/// A method name read from a call, kept inline (no allocation) when short.
#[derive(Clone)]
pub(crate) struct MethodName {
    len: u8,
    bytes: [u8; MethodName::MAX],
}

impl MethodName {
    /// Longest name kept inline.
    const MAX: usize = 46;

    pub(super) fn new(name: &str) -> Option<Self> {
        let len = u8::try_from(name.len())
            .ok()
            .filter(|n| usize::from(*n) <= Self::MAX)?;
        let mut bytes = [0; Self::MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(MethodName { len, bytes })
    }

    pub(crate) fn as_str(&self) -> &str {
        // Copied from a `&str` whole, so always valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The error an exception with `args` is: [`Error::Overloaded`] for an
/// overload refusal (first argument `"overloaded"`, see
/// [`super::OVERLOADED`]; its call was not run), [`Error::Cancelled`] for
/// vole's `("vole.cancelled", reason)`, [`Error::Closing`] for a closing
/// link's refusal `("vole.closing", reason)` (its call was not run either),
/// [`Error::Exception`] for any other.
pub(super) fn exception_error(args: Vec<Value>) -> Error {
    match args.as_slice() {
        [Value::Str(tag), Value::Str(reason)] if tag == crate::proto::CANCELLED => {
            Error::Cancelled(reason.clone())
        }
        [Value::Str(tag), Value::Str(reason)] if tag == crate::proto::CLOSING => {
            Error::Closing(reason.clone())
        }
        [Value::Str(tag)] if tag == super::OVERLOADED => Error::Overloaded(String::new()),
        [Value::Str(tag), Value::Str(reason)] if tag == super::OVERLOADED => {
            Error::Overloaded(reason.clone())
        }
        _ => Error::Exception(args),
    }
}

/// Reads a VOL message `(id, code, payload)`. The framing and the payloads
/// of calls and results are taken apart as they are read, so none of their
/// tuples is built; the other payloads are read whole.
pub(super) fn read_message(
    r: &mut Reader<'_, RefTable>,
) -> Result<Incoming, vole_transport::Error> {
    // A message of an unexpected shape is read to its end (so that the
    // decoder agrees it was read) and reported.
    macro_rules! bad {
        ($violation:expr) => {{
            let violation = $violation;
            r.skip_rest::<ObjectRef>()?;
            return Ok(Incoming::Violation(violation));
        }};
    }
    match r.tuple()? {
        Some(3) => {}
        Some(n) => bad!(V::MalformedMessage {
            found: format!("a {n}-tuple")
        }),
        None => {
            let msg: Value = r.entity()?;
            bad!(V::MalformedMessage {
                found: msg.kind().to_owned()
            })
        }
    }
    let (Some(msg_id), Some(msg_code)) = (r.int(), r.int()) else {
        bad!(V::MalformedMessage {
            found: "a non-integer id or code".to_owned()
        })
    };
    let bad_payload = |expected| V::BadPayload {
        msg_id,
        code: msg_code,
        expected,
    };
    let kind = match msg_code {
        code::METHOD_CALL => CallKind::Normal,
        code::METHOD_CALL_VOID_RESULT => CallKind::Void,
        code::METHOD_CALL_NO_RETURN => CallKind::Oneway,
        code::CALL_RESULT | code::CALL_EXCEPTION => {
            if r.tuple()? != Some(2) {
                bad!(bad_payload("a 2-tuple (call id, value)"))
            }
            let Some(call_id) = r.int() else {
                bad!(bad_payload("a 2-tuple (call id, value)"))
            };
            let value: Value = r.entity()?;
            let result = if msg_code == code::CALL_RESULT {
                Ok(value)
            } else {
                Err(exception_error(match value {
                    Value::Exception(args) => args,
                    other => vec![other],
                }))
            };
            return Ok(Incoming::Outcome {
                msg_id,
                code: msg_code,
                call_id,
                result,
            });
        }
        _ => {
            let payload = r.entity()?;
            return Ok(Incoming::Other {
                msg_id,
                code: msg_code,
                payload,
            });
        }
    };
    if r.tuple()? != Some(2) {
        bad!(bad_payload("a 2-tuple (object, args)"))
    }
    let object = match r.entity()? {
        Value::Ref(ObjectRef::Local(object)) => object,
        Value::Ref(ObjectRef::Remote(_)) => bad!(V::BadCallTarget {
            msg_id,
            found: "the caller's own object"
        }),
        other => bad!(V::BadCallTarget {
            msg_id,
            found: other.kind()
        }),
    };
    let Some(n) = r.tuple()? else {
        bad!(bad_payload("(object, args) with a tuple of arguments"))
    };
    // The method name, read in place when it is short: most calls then
    // allocate only their arguments.
    let mut args = Vec::with_capacity(n);
    let method = match r.str()? {
        Some(name) => {
            let method = MethodName::new(name);
            if method.is_none() {
                // Too long to keep inline: the first argument, as read.
                args.push(Value::str(name));
            }
            method
        }
        None => {
            if n > 0 {
                // A meta call's None, or anything else: read whole.
                args.push(r.entity()?);
            }
            None
        }
    };
    for _ in 1..n {
        args.push(r.entity()?);
    }
    Ok(Incoming::Call {
        call_id: msg_id,
        kind,
        object,
        method,
        args,
    })
}

/// The two parts of a `(int, value)` payload.
pub(super) fn pair(payload: Value) -> Option<(i64, Value)> {
    let Value::Tuple(parts) = payload else {
        return None;
    };
    let Ok([Value::Int(id), second]) = <[Value; 2]>::try_from(parts) else {
        return None;
    };
    Some((id, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_exception_is_told_apart() {
        let e = exception_error(vec![Value::str("overloaded"), Value::str("too many")]);
        assert!(
            matches!(&e, Error::Overloaded(r) if r == "too many"),
            "{e:?}"
        );
        let e = exception_error(vec![Value::str("overloaded")]);
        assert!(matches!(e, Error::Overloaded(_)), "{e:?}");
        // Anything else is an ordinary exception, the arguments kept.
        let e = exception_error(vec![Value::str("overloaded"), Value::Int(3)]);
        assert!(matches!(&e, Error::Exception(a) if a.len() == 2), "{e:?}");
        let e = exception_error(vec![Value::str("other")]);
        assert!(matches!(e, Error::Exception(_)), "{e:?}");
        // Passed on by a method, it stays a refusal.
        let passed = crate::model::CallError::from(Error::Overloaded("x".to_owned()));
        let crate::model::CallError::Exception(args) = passed else {
            panic!("an exception");
        };
        assert!(matches!(exception_error(args), Error::Overloaded(r) if r == "x"));
    }
}
