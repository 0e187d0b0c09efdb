//! VEC, the Versile entity channel: the hello line and the entity codec.
//!
//! After the VEC hello (`VEC_DRAFT-0.8[-codec]\n`, see [`hello`]), a VEC
//! stream is a plain concatenation of self-delimiting entities; one VOL
//! message is one top-level entity. An entity is written as all of its
//! headers in depth-first pre-order, then all payload bytes in reverse
//! pre-order. [`Encoder`] writes that layout and [`Decoder`] reads it
//! incrementally from a growing buffer, checking the message-size and
//! nesting caps before it allocates anything.
//!
//! The wire vocabulary both directions share lives in leaf modules:
//! [`code`] (the entity type codes) and `string_codec` ([`Codec`], the string
//! codecs VEC can name).
//!
//! Everything here is sans-IO: bytes in, entities out.

mod build;
pub mod code;
#[cfg(test)]
#[path = "tests.rs"]
mod codec_tests;
mod decode;
mod encode;
pub mod hello;
pub(crate) mod netbytes;
mod string_codec;

pub use build::{Reader, RefDecoder};
pub use decode::{decode_complete, DecodeConfig, Decoder};
pub use encode::{encode_to_vec, EncodeConfig, Encoder, Part};
pub use string_codec::Codec;
