//! The VOL link protocol for vole: handshake, calls, references, published
//! objects and VRIs (only [`uri`] so far).

#![warn(missing_docs)]

pub mod uri;
