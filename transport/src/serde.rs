//! Stub replaced by the serde mapping (see branch `serde`).
use crate::{Entity, Error};

/// Converts a serializable value.
pub fn to_entity<T: ::serde::Serialize + ?Sized, R>(_value: &T) -> Result<Entity<R>, Error> {
    Err(Error::Convert("serde mapping not built yet".into()))
}

/// Converts to a deserializable value.
pub fn from_entity<T: ::serde::de::DeserializeOwned, R>(_entity: Entity<R>) -> Result<T, Error> {
    Err(Error::Convert("serde mapping not built yet".into()))
}
