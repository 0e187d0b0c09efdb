//! [`Router`]: a gateway that serves objects by path.
//!
//! Resolving `vop://host/text/echo/` calls `urlget(("text", "echo"))` on the
//! gateway; a router answers with a fresh object from the factory registered
//! for that path (VPy's dispatcher does the same: each resolution gets its
//! own object, so per-object state like an adder's sum is per client).
//! The router's own methods (those of the [`Published`] it wraps) stay
//! callable at the root.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::object::{CallContext, CallError, Object};
use crate::publish::Published;
use crate::{ObjectRef, Value};

/// Makes the object served at a path.
pub type Factory = Arc<dyn Fn(&CallContext) -> Arc<dyn Object> + Send + Sync>;

/// A gateway that maps paths to object factories.
pub struct Router<S = ()> {
    base: Published<S>,
    routes: BTreeMap<Vec<String>, Factory>,
}

impl<S: Send + Sync + 'static> Router<S> {
    /// A router whose root answers `base`'s methods.
    pub fn new(base: Published<S>) -> Self {
        Router {
            base,
            routes: BTreeMap::new(),
        }
    }

    /// Serves a new object from `factory` at `path` (its segments, e.g.
    /// `["text", "echo"]` for `/text/echo/`).
    pub fn route<'a>(
        mut self,
        path: impl IntoIterator<Item = &'a str>,
        factory: impl Fn(&CallContext) -> Arc<dyn Object> + Send + Sync + 'static,
    ) -> Self {
        let key: Vec<String> = path.into_iter().map(str::to_owned).collect();
        self.routes.insert(key, Arc::new(factory));
        self
    }

    /// The registered paths, as `/a/b/`.
    pub fn paths(&self) -> impl Iterator<Item = String> + '_ {
        self.routes.keys().map(|k| format!("/{}/", k.join("/")))
    }

    /// Finishes the gateway: the base object plus an `urlget` method.
    pub fn into_object(self) -> Arc<dyn Object> {
        let routes = Arc::new(self.routes);
        self.base
            .method_raw(
                "urlget",
                "Returns the object served at a path (a tuple of segments).",
                move |_, cx, args| {
                    let outcome = lookup(&routes, &cx, args);
                    Box::pin(std::future::ready(outcome))
                },
            )
            .into_object()
    }
}

fn lookup(
    routes: &BTreeMap<Vec<String>, Factory>,
    cx: &CallContext,
    args: Vec<Value>,
) -> Result<Value, CallError> {
    let [Value::Tuple(segments)] = args.as_slice() else {
        return Err(CallError::failed("urlget takes one tuple of path segments"));
    };
    let mut path = Vec::with_capacity(segments.len());
    for s in segments {
        match s {
            Value::Str(s) => path.push(s.clone()),
            other => {
                return Err(CallError::failed(format!(
                    "path segment is a {}, not a string",
                    other.kind()
                )))
            }
        }
    }
    match routes.get(&path) {
        Some(factory) => Ok(Value::Ref(ObjectRef::Local(factory(cx)))),
        None => Err(CallError::exception(format!(
            "no object at /{}/",
            path.join("/")
        ))),
    }
}
