//! VPy's frozen dict: its tags, building one, and reading one (see the
//! [`serde`](super) module doc for the wire form).

use std::fmt;

use crate::entity::Entity;

/// The tags VPy puts on a `VFrozenDict`: the OID form of its VSE code
/// (`21` = OID of two arcs relative to the VSE prefix, then the arcs `1.2`).
pub const FROZEN_DICT_TAGS: [i64; 3] = [21, 1, 2];

/// The frozen-dict tags as entities.
pub fn frozen_dict_tags<R>() -> Vec<Entity<R>> {
    FROZEN_DICT_TAGS.iter().map(|&t| Entity::Int(t)).collect()
}

/// Builds a VPy frozen dict from key-value pairs, in the order given.
pub fn frozen_dict<R>(pairs: impl IntoIterator<Item = (Entity<R>, Entity<R>)>) -> Entity<R> {
    let mut flat = Vec::new();
    for (key, value) in pairs {
        flat.push(key);
        flat.push(value);
    }
    frozen_dict_from_flat(flat)
}

/// Builds a frozen dict from its flat `(k, v, k, v, ...)` element list; the
/// caller guarantees an even length.
pub(super) fn frozen_dict_from_flat<R>(flat: Vec<Entity<R>>) -> Entity<R> {
    Entity::Tagged(Box::new(Entity::Tuple(flat)), frozen_dict_tags())
}

/// Whether `tags` are exactly the frozen-dict tags.
pub(super) fn has_frozen_dict_tags<R>(tags: &[Entity<R>]) -> bool {
    tags.len() == FROZEN_DICT_TAGS.len()
        && tags
            .iter()
            .zip(FROZEN_DICT_TAGS)
            .all(|(tag, want)| tag.as_i64() == Some(want))
}

/// The flat element list of a well-formed frozen dict.
pub(super) fn frozen_dict_items<R>(entity: &Entity<R>) -> Option<&[Entity<R>]> {
    match entity {
        Entity::Tagged(value, tags) if has_frozen_dict_tags(tags) => match value.as_ref() {
            Entity::Tuple(items) if items.len() % 2 == 0 => Some(items),
            _ => None,
        },
        _ => None,
    }
}

/// Reads `entity` as a frozen dict, if it is a well-formed one (the right
/// tags, no residual tags, a tuple of even length as value).
pub fn as_frozen_dict<R>(entity: &Entity<R>) -> Option<FrozenDict<'_, R>> {
    frozen_dict_items(entity).map(|items| FrozenDict { items })
}

/// Takes a frozen dict apart into its key-value pairs, in wire order.
///
/// Returns the entity unchanged as the error if it is not a well-formed
/// frozen dict.
pub fn into_frozen_dict<R>(entity: Entity<R>) -> Result<FrozenDictPairs<R>, Entity<R>> {
    match entity {
        Entity::Tagged(value, tags) if has_frozen_dict_tags(&tags) => match *value {
            Entity::Tuple(items) if items.len() % 2 == 0 => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(key), Some(value)) = (it.next(), it.next()) {
                    pairs.push((key, value));
                }
                Ok(pairs)
            }
            other => Err(Entity::Tagged(Box::new(other), tags)),
        },
        other => Err(other),
    }
}

/// The key-value pairs of a frozen dict, in wire order.
pub type FrozenDictPairs<R> = Vec<(Entity<R>, Entity<R>)>;

/// A borrowed view of a well-formed frozen dict (see [`as_frozen_dict`]).
pub struct FrozenDict<'a, R> {
    /// `(k, v, k, v, ...)`, even length.
    items: &'a [Entity<R>],
}

impl<'a, R> FrozenDict<'a, R> {
    /// The number of key-value pairs.
    pub fn len(&self) -> usize {
        self.items.len() / 2
    }

    /// Whether the dict has no pairs.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The key-value pairs in wire order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a Entity<R>, &'a Entity<R>)> + 'a {
        self.items.chunks_exact(2).map(|pair| (&pair[0], &pair[1]))
    }

    /// The value of the first pair whose key is the string `key`.
    pub fn get_str(&self, key: &str) -> Option<&'a Entity<R>> {
        self.iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

impl<R> Clone for FrozenDict<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for FrozenDict<'_, R> {}

impl<R: fmt::Debug> fmt::Debug for FrozenDict<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
