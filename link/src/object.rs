//! Objects that can be called over a link: the [`Object`] trait, the
//! [`CallContext`] a call runs in, and [`CallError`], how a call fails.
//!
//! Most services do not implement [`Object`] by hand but build objects with
//! [`crate::publish::Published`], which parses the VOB calling convention,
//! converts typed arguments and answers the `meta` calls.
//!
//! The types are defined in `model` (the object trait and the values it
//! is called with refer to each other) and `info`; this module is where the
//! API names them.

pub use crate::info::{CallContext, LinkInfo, TlsInfo};
pub use crate::model::{error_chain, CallError, CallFuture, Object};
