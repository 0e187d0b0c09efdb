//! The direct handshake, between two vole peers that agreed on it by TLS
//! ALPN (`vole/1`, [`vole_transport::tls::ALPN_DIRECT`]).
//!
//! The standard handshake exchanges handshake objects and calls `finish()`
//! on each other's to learn the gateways: after the hellos, two more round
//! trips before the first call. The direct handshake leaves that exchange
//! out. After its VEC and VOL hellos each side sends one settings entity,
//!
//! ```text
//! ("vole.direct", 1, keep_alive_ms | None, keep_alive_min_send_ms)
//! ```
//!
//! and each side's gateway is its object 1, counted as sent once: the peer
//! holds a reference to it as if it had received one. A client can call the
//! service's gateway in its first flight, so resolving a path costs one
//! round trip, as a call does.
//!
//! Keep-alive is agreed as the standard handshake agrees it: a side that
//! asks for keep-alives at a period gets them at that period or at the
//! peer's minimum, whichever is longer. Everything after the settings is
//! standard VOL. A VPy peer never sees any of this: it cannot agree on the
//! ALPN protocol (VPy does not speak TLS with ALPN, and PLAIN and VTS have
//! no ALPN), so its links run the standard handshake.

use std::time::{Duration, Instant};

use super::config::LinkConfig;
use super::keepalive::{millis, KeepAlive};
use crate::model::{Error, Value};
use crate::violation::ProtocolViolation as V;

/// The ALPN protocol, as the link info shows it, that selects the direct
/// handshake ([`vole_transport::tls::ALPN_DIRECT`]).
pub(super) const ALPN: &str = "vole/1";

/// The first item of the settings entity.
const SETTINGS: &str = "vole.direct";
/// The version of the settings this side sends; a later version may add
/// items at the end, which this one ignores.
const VERSION: i64 = 1;
/// Each side's gateway is its object 1.
pub(super) const GATEWAY_ID: i64 = 1;

/// What the peer's settings say.
#[derive(Debug, PartialEq, Eq)]
struct PeerSettings {
    /// The keep-alive period the peer asks for, in ms.
    keep_alive: Option<i64>,
    /// The shortest keep-alive period the peer sends at, in ms.
    keep_alive_min_send: i64,
}

/// This side's settings entity, sent after its hellos.
pub(super) fn settings(config: &LinkConfig) -> Value {
    Value::Tuple(vec![
        Value::str(SETTINGS),
        Value::Int(VERSION),
        config
            .keep_alive
            .map_or(Value::None, |d| Value::Int(millis(d))),
        Value::Int(millis(config.keep_alive_min_send)),
    ])
}

/// Takes the peer's settings entity: agrees keep-alives (at `now`), or
/// says what is wrong with it.
pub(super) fn agree(
    entity: &Value,
    config: &LinkConfig,
    keep_alive: &mut KeepAlive,
    now: Instant,
) -> Result<(), Error> {
    let peer = parse(entity).map_err(|reason| Error::Protocol(V::BadDirectSettings { reason }))?;
    if let Some(ms) = peer.keep_alive {
        keep_alive.grant(ms, config.keep_alive_min_send, now);
    }
    if let Some(asked) = config.keep_alive {
        let granted = millis(asked).max(peer.keep_alive_min_send);
        keep_alive.recv = Some(Duration::from_millis(granted as u64));
    }
    Ok(())
}

fn parse(entity: &Value) -> Result<PeerSettings, String> {
    let Value::Tuple(items) = entity else {
        return Err(format!("a {}, not a tuple", entity.kind()));
    };
    let [tag, version, keep_alive, min_send, ..] = items.as_slice() else {
        return Err(format!("{} items, not 4", items.len()));
    };
    if !matches!(tag, Value::Str(t) if t == SETTINGS) {
        return Err(format!("tagged {tag:?}, not {SETTINGS:?}"));
    }
    if !matches!(version, Value::Int(v) if *v >= VERSION) {
        return Err(format!("version {version:?}"));
    }
    let keep_alive = match keep_alive {
        Value::None => None,
        Value::Int(ms) if *ms > 0 => Some(*ms),
        other => return Err(format!("keep-alive period {other:?}")),
    };
    let keep_alive_min_send = match min_send {
        Value::Int(ms) if *ms >= 0 => *ms,
        other => return Err(format!("keep-alive minimum {other:?}")),
    };
    Ok(PeerSettings {
        keep_alive,
        keep_alive_min_send,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(items: Vec<Value>) -> Value {
        Value::Tuple(items)
    }

    #[test]
    fn settings_parse_and_refuse() {
        let good = settings(vec![
            Value::str(SETTINGS),
            Value::Int(1),
            Value::Int(5000),
            Value::Int(300),
        ]);
        assert_eq!(
            parse(&good),
            Ok(PeerSettings {
                keep_alive: Some(5000),
                keep_alive_min_send: 300
            })
        );
        // A later version may add items.
        let later = settings(vec![
            Value::str(SETTINGS),
            Value::Int(2),
            Value::None,
            Value::Int(0),
            Value::str("more"),
        ]);
        assert_eq!(
            parse(&later),
            Ok(PeerSettings {
                keep_alive: None,
                keep_alive_min_send: 0
            })
        );
        for bad in [
            Value::Int(1),
            settings(vec![Value::str(SETTINGS), Value::Int(1), Value::None]),
            settings(vec![
                Value::str("other"),
                Value::Int(1),
                Value::None,
                Value::Int(0),
            ]),
            settings(vec![
                Value::str(SETTINGS),
                Value::Int(0),
                Value::None,
                Value::Int(0),
            ]),
            settings(vec![
                Value::str(SETTINGS),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
            ]),
            settings(vec![
                Value::str(SETTINGS),
                Value::Int(1),
                Value::None,
                Value::Int(-1),
            ]),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_alpn_name_is_the_transports() {
        assert_eq!(ALPN.as_bytes(), vole_transport::tls::ALPN_DIRECT);
    }
}
