//! [`Session`]: state the handlers of one link share.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A typed map, one per link: what one call's handler stores (a login, a
/// per-client cache) the next call's handler on the same link finds.
/// Entries are keyed by their type (one value of each type), held as
/// `Arc`s, and dropped when the link's last call context is.
///
/// Reach it through [`crate::CallContext::session`]. A detached context
/// has a session of its own that nothing else shares.
#[derive(Default)]
pub struct Session {
    entries: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map_or(0, |e| e.len());
        f.debug_struct("Session").field("entries", &n).finish()
    }
}

impl Session {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<TypeId, Arc<dyn Any + Send + Sync>>> {
        // The lock is held only around map operations that cannot panic
        // (user code never runs under it), so poison is not expected; if
        // it happens the map itself is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let entry = self.entries().get(&TypeId::of::<T>())?.clone();
        entry.downcast::<T>().ok()
    }

    /// Stores `value` as the value of type `T`; returns the one it
    /// replaces.
    pub fn insert<T: Send + Sync + 'static>(&self, value: T) -> Option<Arc<T>> {
        let old = self.entries().insert(TypeId::of::<T>(), Arc::new(value))?;
        old.downcast::<T>().ok()
    }

    /// The value of type `T`, stored first from `make` if there is none.
    /// (`make` runs outside the lock; if two calls race, the first stored
    /// wins and both get it.)
    pub fn get_or_insert_with<T: Send + Sync + 'static>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(v) = self.get::<T>() {
            return v;
        }
        let fresh = Arc::new(make());
        let mut entries = self.entries();
        let key = TypeId::of::<T>();
        match entries
            .get(&key)
            .and_then(|e| e.clone().downcast::<T>().ok())
        {
            Some(existing) => existing,
            None => {
                entries.insert(key, fresh.clone());
                fresh
            }
        }
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let old = self.entries().remove(&TypeId::of::<T>())?;
        old.downcast::<T>().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Login(String);

    #[test]
    fn values_are_keyed_by_type() {
        let s = Session::default();
        assert_eq!(s.get::<Login>(), None);
        assert_eq!(s.insert(Login("alice".into())), None);
        assert_eq!(s.insert(7u32), None);
        assert_eq!(s.get::<Login>().as_deref(), Some(&Login("alice".into())));
        assert_eq!(s.get::<u32>().as_deref(), Some(&7));
        let old = s.insert(Login("bob".into()));
        assert_eq!(old.as_deref(), Some(&Login("alice".into())));
        assert_eq!(s.remove::<u32>().as_deref(), Some(&7));
        assert_eq!(s.get::<u32>(), None);
    }

    #[test]
    fn get_or_insert_with_makes_once() {
        let s = Session::default();
        let a = s.get_or_insert_with(|| 1u64);
        let b = s.get_or_insert_with(|| 2u64);
        assert_eq!((*a, *b), (1, 1));
        assert!(Arc::ptr_eq(&a, &b));
    }
}
