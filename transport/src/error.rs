//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in the wire layers.
///
/// Variants are grouped by whose fault they are:
/// * **peer faults**: the bytes a peer sent are malformed, too large or not
///   what the protocol allows. The connection they arrived on must be closed;
///   nothing else is affected.
/// * **local faults**: a value this side tried to send cannot be encoded, or
///   a local file (certificate, key) is unusable.
/// * **I/O**: the socket or the TLS layer failed.
///
/// Display strings are lowercase, one level only; causes are in `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- peer faults: PROXY protocol ---------------------------------------
    /// A PROXY protocol header is missing, malformed, too large, or from a
    /// source not allowed to send one.
    #[error("bad PROXY protocol header: {0}")]
    ProxyHeader(String),
    // ---- peer faults: VEC ------------------------------------------------
    /// An entity declares more bytes than the configured message cap.
    #[error("message of at least {declared} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// Bytes the entity needs, as far as its headers tell.
        declared: u64,
        /// The configured cap.
        max: usize,
    },
    /// Entities nest deeper than the configured cap.
    #[error("entity nesting exceeds the depth cap of {max}")]
    TooDeep {
        /// The configured cap.
        max: usize,
    },
    /// A byte that is not a valid entity type code.
    #[error("invalid entity code {code:#04x}")]
    InvalidCode {
        /// The offending byte.
        code: u8,
    },
    /// An integer field (a length, a count, an id) is larger than allowed.
    #[error("{what} is out of range")]
    OutOfRange {
        /// The field being read.
        what: &'static str,
    },
    /// A string payload is not valid in its codec.
    #[error("string payload is not valid {codec}")]
    InvalidString {
        /// The codec the payload claimed.
        codec: &'static str,
    },
    /// A string names a codec vole does not know.
    #[error("unsupported string codec {0:?}")]
    UnsupportedCodec(String),
    /// A string without an explicit codec arrived before the peer declared a
    /// default codec in its VEC hello.
    #[error("string without codec but the peer declared no default codec")]
    NoStringCodec,
    /// A float with a base below 2 or too large to handle.
    #[error("invalid float base")]
    InvalidFloatBase,
    /// A reference to an object id the receiver does not know.
    #[error("reference to unknown object id {id}")]
    UnknownObject {
        /// The id as sent.
        id: i64,
    },
    /// An entity is structurally invalid (e.g. a tagged value with no value).
    #[error("malformed entity: {0}")]
    Malformed(&'static str),
    /// The stream ended in the middle of an entity.
    #[error("stream ended inside an entity ({0} bytes buffered)")]
    Truncated(usize),
    /// The peer's VEC hello line is malformed.
    #[error("bad VEC hello: {0}")]
    BadVecHello(String),

    // ---- peer faults: VOP --------------------------------------------------
    /// The VOP negotiation line is malformed or too long.
    #[error("bad VOP line: {0}")]
    BadVopLine(String),
    /// The peer offered a transport token vole does not know.
    #[error("unknown VOP transport {0:?}")]
    UnknownTransport(String),
    /// No transport is enabled on both sides.
    #[error("no common transport (peer offered {offered}, local allows {allowed})")]
    NoCommonTransport {
        /// What the peer offered, as sent.
        offered: String,
        /// What this side allows.
        allowed: String,
    },
    /// The peer closed the connection during negotiation.
    #[error("peer closed the connection during {0}")]
    ClosedDuring(&'static str),
    /// A handshake step took longer than allowed.
    #[error("{0} timed out")]
    Timeout(&'static str),

    // ---- peer faults: VTS --------------------------------------------------
    /// The peer's VTS protocol line is malformed or names another version.
    #[error("bad VTS protocol line: {0}")]
    BadVtsHello(String),
    /// A VTS handshake message is malformed or not what the protocol allows.
    #[error("bad VTS handshake: {0}")]
    BadVtsHandshake(&'static str),
    /// No VTS cipher, mode and hashes are allowed by both sides.
    #[error("no common VTS cipher (peer offered {offered}; local allows {allowed})")]
    NoCommonVtsCipher {
        /// What the peer offered.
        offered: String,
        /// What this side allows.
        allowed: String,
    },
    /// RSA-sealed VTS data has the wrong size or does not decrypt to VPy's
    /// block framing.
    #[error("bad VTS RSA block: {0}")]
    BadVtsRsaBlock(&'static str),
    /// A VTS record (or sealed handshake part) failed its integrity check:
    /// it was altered, or the keys do not match.
    #[error("VTS record {record} failed its integrity check")]
    VtsBadMac {
        /// The record's number in its direction, from 0.
        record: u64,
    },
    /// The VTS server's key is not the pinned one.
    #[error("the VTS server key has fingerprint {got}, not the pinned {want}")]
    VtsKeyMismatch {
        /// The fingerprint of the key the server sent.
        got: String,
        /// The pinned fingerprint.
        want: String,
    },

    // ---- local faults --------------------------------------------------------
    /// A VTS key cannot be made, read or used.
    #[error("vts key: {0}")]
    VtsKey(String),
    /// A float that the wire cannot carry (infinity or NaN).
    #[error("cannot encode a non-finite float")]
    NonFiniteFloat,
    /// A value nests deeper than the encoder's depth cap.
    #[error("value nesting exceeds the encoder depth cap of {max}")]
    EncodeTooDeep {
        /// The configured cap.
        max: usize,
    },
    /// An object reference that cannot be sent on this link.
    #[error("cannot send object reference: {0}")]
    BadReference(String),
    /// A value that has no entity form, or an entity that does not fit the
    /// Rust type asked for (serde mapping).
    #[error("cannot convert: {0}")]
    Convert(String),
    /// An object reference where the Rust type asked for needs a plain value
    /// (serde mapping). Names the type asked for.
    #[error("object reference cannot be converted to {0}")]
    RefNotConvertible(String),
    /// A certificate, key or CA file is unusable.
    #[error("{}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS configuration is inconsistent.
    #[error("tls configuration: {0}")]
    TlsConfig(String),
    /// The transport settings are inconsistent (nothing enabled, TLS enabled
    /// without a TLS configuration, a transport vole does not implement).
    #[error("transport configuration: {0}")]
    TransportConfig(String),

    // ---- I/O -----------------------------------------------------------------
    /// The TLS layer failed.
    #[error("tls")]
    Tls(#[source] rustls::Error),
    /// A socket operation failed.
    #[error("i/o")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the error was caused by what the peer sent (as opposed to a
    /// local problem or an I/O failure).
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Error::ProxyHeader(_)
                | Error::TooLarge { .. }
                | Error::TooDeep { .. }
                | Error::InvalidCode { .. }
                | Error::OutOfRange { .. }
                | Error::InvalidString { .. }
                | Error::UnsupportedCodec(_)
                | Error::NoStringCodec
                | Error::InvalidFloatBase
                | Error::UnknownObject { .. }
                | Error::Malformed(_)
                | Error::Truncated(_)
                | Error::BadVecHello(_)
                | Error::BadVopLine(_)
                | Error::UnknownTransport(_)
                | Error::NoCommonTransport { .. }
                | Error::BadVtsHello(_)
                | Error::BadVtsHandshake(_)
                | Error::NoCommonVtsCipher { .. }
                | Error::BadVtsRsaBlock(_)
                | Error::VtsBadMac { .. }
                | Error::VtsKeyMismatch { .. }
        )
    }

    /// On a server: whether its TLS handshake failed on the client's
    /// certificate (none sent where one is required, or one the client CA
    /// does not verify).
    pub fn is_client_certificate_failure(&self) -> bool {
        matches!(
            self,
            Error::Tls(
                rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)
            )
        )
    }
}
