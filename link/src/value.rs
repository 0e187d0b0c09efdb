//! [`Value`]: an entity whose object references are live objects.

use std::fmt;
use std::sync::Arc;

use vole_transport::Entity;

use crate::object::Object;
use crate::remote::RemoteObject;

/// An entity as the link layer sees it: references are live objects.
pub type Value = Entity<ObjectRef>;

/// A reference carried in a [`Value`]: either an object served by this side
/// or a proxy for an object of the peer.
#[derive(Clone)]
pub enum ObjectRef {
    /// An object this process serves. Sending it gives the peer a proxy.
    Local(Arc<dyn Object>),
    /// A proxy for an object of some link's peer. Sending it back on its own
    /// link hands the peer its own object; sending it on another link makes
    /// this process forward calls to it.
    Remote(RemoteObject),
}

impl ObjectRef {
    /// Wraps a local object.
    pub fn local(object: Arc<dyn Object>) -> Self {
        ObjectRef::Local(object)
    }

    /// The remote proxy, if this is one.
    pub fn as_remote(&self) -> Option<&RemoteObject> {
        match self {
            ObjectRef::Remote(r) => Some(r),
            ObjectRef::Local(_) => None,
        }
    }

    /// This reference as something that can be called: the local object, or
    /// the proxy (which forwards the call over its link).
    pub fn as_object(&self) -> Arc<dyn Object> {
        match self {
            ObjectRef::Local(o) => o.clone(),
            ObjectRef::Remote(r) => Arc::new(r.clone()),
        }
    }
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ObjectRef::Local(a), ObjectRef::Local(b)) => {
                std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
            }
            (ObjectRef::Remote(a), ObjectRef::Remote(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Local(o) => write!(f, "local {}", o.type_name()),
            ObjectRef::Remote(r) => write!(f, "{r:?}"),
        }
    }
}

impl From<RemoteObject> for Value {
    fn from(r: RemoteObject) -> Self {
        Entity::Ref(ObjectRef::Remote(r))
    }
}

/// A short human-readable rendering of exception arguments: strings
/// unquoted when there is exactly one, otherwise the tuple.
pub(crate) fn describe_args(args: &[Value]) -> String {
    match args {
        [] => "(no arguments)".to_owned(),
        [Entity::Str(s)] => s.clone(),
        _ => format!("{:?}", Entity::Tuple(args.to_vec())),
    }
}
