//! [`FromEntity`] and [`IntoEntity`]: the conversions typed code uses.
//!
//! Every serde type converts through [`crate::serde`]; an [`Entity`] itself
//! converts as is, so a typed method can take or return raw entities (and
//! thus object references) next to ordinary Rust values. `Entity`
//! deliberately implements neither `Serialize` nor `Deserialize`, which is
//! what lets both blanket implementations coexist.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Entity, Error};

/// Conversion from an entity.
pub trait FromEntity<R>: Sized {
    /// Converts `entity`, or says why it cannot.
    fn from_entity(entity: Entity<R>) -> Result<Self, Error>;
}

/// Conversion into an entity.
pub trait IntoEntity<R> {
    /// Converts `self`, or says why it cannot.
    fn into_entity(self) -> Result<Entity<R>, Error>;
}

impl<T: DeserializeOwned, R> FromEntity<R> for T {
    fn from_entity(entity: Entity<R>) -> Result<Self, Error> {
        crate::serde::from_entity(entity)
    }
}

impl<R> FromEntity<R> for Entity<R> {
    fn from_entity(entity: Entity<R>) -> Result<Self, Error> {
        Ok(entity)
    }
}

impl<T: Serialize, R> IntoEntity<R> for T {
    fn into_entity(self) -> Result<Entity<R>, Error> {
        crate::serde::to_entity(&self)
    }
}

impl<R> IntoEntity<R> for Entity<R> {
    fn into_entity(self) -> Result<Entity<R>, Error> {
        Ok(self)
    }
}
