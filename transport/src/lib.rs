//! The wire layers of vole, below the VOL link protocol.
//!
//! A Versile connection is a stack: TCP, then **VOP** negotiation choosing a
//! transport (TLS or PLAIN here), then that transport, then **VEC**, a stream
//! of self-delimiting entities. This crate implements every layer of that
//! stack up to and including VEC:
//!
//! * [`entity`]: the data model ([`Entity`], [`VFloat`], [`WireRef`]).
//! * [`vec`](mod@vec): the VEC hello line and the entity codec, with the real layout
//!   (all headers first, then payloads in reverse order), a message-size cap
//!   checked before allocating and a nesting-depth cap.
//! * [`serde`]: conversion between Rust types and entities, so typed method
//!   arguments and results need no hand-written code.
//! * [`vop`]: the VOP negotiation line in both roles.
//! * [`tls`] and [`stream`]: TLS 1.3 through rustls, PLAIN, dev certificates,
//!   client certificates, and the connection type the link runs over.
//! * [`vts`] and [`vts_io`]: VTS, VPy's default transport (sans-IO, and its
//!   async driver), byte for byte as VPy 0.8.5 speaks it (`docs/vts.md`).
//! * [`identity`]: who the peer proved to be ([`PeerIdentity`]).
//! * [`proxy`]: the PROXY protocol header a TCP balancer sends first.
//!
//! What it is not: it knows nothing of calls, objects or gateways (that is
//! `vole-link`), and the codec and negotiation code does no I/O: it takes
//! bytes and returns bytes, so it is tested with byte vectors and fuzzed.
//! Only [`stream`] and the async helpers in [`vop`] touch sockets.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod ahead;
pub mod convert;
pub mod entity;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
mod prefixed;
pub mod proxy;
pub mod serde;
pub mod stream;
pub mod tickets;
pub mod tls;
pub mod vec;
pub mod vop;
pub mod vop_ahead;
pub mod vts;
pub mod vts_io;

pub use convert::{FromEntity, IntoEntity};
pub use entity::{Entity, Owner, RefEncoder, VFloat, WireRef};
pub use error::Error;
pub use identity::PeerIdentity;
pub use num_bigint::BigInt;
