//! Building callable objects from typed async functions.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vole_link::publish::Published;
//! use vole_link::{CallError, Value};
//!
//! async fn echo((value,): (Value,)) -> Result<Value, CallError> {
//!     Ok(value)
//! }
//!
//! async fn add(total: Arc<Mutex<i64>>, (n,): (i64,)) -> Result<i64, CallError> {
//!     let mut total = total.lock().map_err(|_| CallError::failed("poisoned"))?;
//!     *total += n;
//!     Ok(*total)
//! }
//!
//! let echoer = Published::new("Echoer").doc("Echoes what it gets.").method("echo", "Returns its argument.", echo);
//! let adder = Published::with_state("Adder", Mutex::new(0i64)).method("add", "Adds to the total.", add);
//! let (_echoer, _adder) = (echoer.into_object(), adder.into_object());
//! ```
//!
//! A handler is an async function (or closure) taking, in this order, an
//! optional `Arc<S>` (the object's state), an optional [`CallContext`], and
//! its arguments as a tuple of types that convert from entities (anything
//! `Deserialize`, or [`Value`] for a raw value, or `Vec<Value>` for any
//! number of raw arguments). It returns `Result<T, CallError>` with `T`
//! anything `Serialize` or a [`Value`].
//!
//! Wrong argument counts or types fail the call with a CALL_ERROR (the
//! reason is logged), exactly like an unknown method; the link stays up.
//! Published objects also answer the VOB meta calls `methods()`, `doc()`,
//! `doc(name)`, and vole's `ping()` and `signature(name)`.
//!
//! # Signatures
//!
//! `meta.signature(name)` is a vole extension (VPy services answer it with
//! an error, and VPy clients never call it). It answers a string such as
//! `"greet(name: str) -> str"`, as set by [`Published::signature`] (the
//! `vole::service` macro sets one for every method it generates), or
//! `None` when the method has no signature; an unknown method is an
//! exception, as for `meta.doc(name)`. Types use VPy-ish names: `str`,
//! `int`, `float`, `bool`, `bytes`, `tuple`, `dict`, `object` (a
//! reference), `any`, `none`; `T|none` is an optional `T`; a trailing
//! `*name: any` takes any number of further arguments. The format is for
//! people and tools that show it, not a type system.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use vole_transport::{FromEntity, IntoEntity};

use crate::object::{CallContext, CallError, CallFuture, Object};
use crate::{ObjectRef, Value};

/// Arguments of a method, converted from the call's argument list.
pub trait FromArgs: Sized + Send + 'static {
    /// Converts the arguments (after the method name).
    fn from_args(args: Vec<Value>) -> Result<Self, CallError>;
}

impl FromArgs for () {
    fn from_args(args: Vec<Value>) -> Result<Self, CallError> {
        if args.is_empty() {
            Ok(())
        } else {
            Err(CallError::failed(format!(
                "expected no arguments, got {}",
                args.len()
            )))
        }
    }
}

impl FromArgs for Vec<Value> {
    fn from_args(args: Vec<Value>) -> Result<Self, CallError> {
        Ok(args)
    }
}

macro_rules! tuple_from_args {
    ($n:expr; $($name:ident),+) => {
        impl<$($name: FromEntity<ObjectRef> + Send + 'static),+> FromArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn from_args(args: Vec<Value>) -> Result<Self, CallError> {
                if args.len() != $n {
                    return Err(CallError::failed(format!("expected {} argument(s), got {}", $n, args.len())));
                }
                let mut it = args.into_iter().enumerate();
                $(
                    let $name = match it.next() {
                        Some((i, v)) => {
                            let kind = v.kind();
                            $name::from_entity(v).map_err(|e| {
                                CallError::failed(format!("argument {}: {} ({} given)", i + 1, e, kind))
                            })?
                        }
                        // Length checked above.
                        None => return Err(CallError::failed("missing argument")),
                    };
                )+
                Ok(($($name,)+))
            }
        }
    };
}

tuple_from_args!(1; A);
tuple_from_args!(2; A, B);
tuple_from_args!(3; A, B, C);
tuple_from_args!(4; A, B, C, D);
tuple_from_args!(5; A, B, C, D, E);
tuple_from_args!(6; A, B, C, D, E, F);
tuple_from_args!(7; A, B, C, D, E, F, G);
tuple_from_args!(8; A, B, C, D, E, F, G, H);

/// A function usable as a method of a [`Published<S>`].
///
/// Implemented for async functions of the shapes `(args)`, `(Arc<S>, args)`
/// and `(Arc<S>, CallContext, args)`; `M` only tells them apart.
pub trait Handler<S, M>: Send + Sync + 'static {
    /// Runs the method.
    fn call(&self, state: &Arc<S>, cx: CallContext, args: Vec<Value>) -> CallFuture;
}

fn finish<T: IntoEntity<ObjectRef>>(r: Result<T, CallError>) -> Result<Value, CallError> {
    r.and_then(|v| {
        v.into_entity()
            .map_err(|e| CallError::failed(format!("result cannot be sent: {e}")))
    })
}

/// Marker: handler takes only its arguments.
pub struct ArgsOnly<A>(PhantomData<A>);
/// Marker: handler takes the state and its arguments.
pub struct WithState<A>(PhantomData<A>);
/// Marker: handler takes the state, the call context and its arguments.
pub struct WithContext<A>(PhantomData<A>);

impl<S, F, A, Fut, T> Handler<S, ArgsOnly<A>> for F
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    A: FromArgs,
    Fut: Future<Output = Result<T, CallError>> + Send + 'static,
    T: IntoEntity<ObjectRef>,
{
    fn call(&self, _state: &Arc<S>, _cx: CallContext, args: Vec<Value>) -> CallFuture {
        match A::from_args(args) {
            Ok(a) => {
                let fut = self(a);
                Box::pin(async move { finish(fut.await) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

impl<S, F, A, Fut, T> Handler<S, WithState<A>> for F
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, A) -> Fut + Send + Sync + 'static,
    A: FromArgs,
    Fut: Future<Output = Result<T, CallError>> + Send + 'static,
    T: IntoEntity<ObjectRef>,
{
    fn call(&self, state: &Arc<S>, _cx: CallContext, args: Vec<Value>) -> CallFuture {
        match A::from_args(args) {
            Ok(a) => {
                let fut = self(state.clone(), a);
                Box::pin(async move { finish(fut.await) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

impl<S, F, A, Fut, T> Handler<S, WithContext<A>> for F
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, CallContext, A) -> Fut + Send + Sync + 'static,
    A: FromArgs,
    Fut: Future<Output = Result<T, CallError>> + Send + 'static,
    T: IntoEntity<ObjectRef>,
{
    fn call(&self, state: &Arc<S>, cx: CallContext, args: Vec<Value>) -> CallFuture {
        match A::from_args(args) {
            Ok(a) => {
                let fut = self(state.clone(), cx, a);
                Box::pin(async move { finish(fut.await) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

type ErasedHandler<S> = Box<dyn Fn(&Arc<S>, CallContext, Vec<Value>) -> CallFuture + Send + Sync>;

struct Method<S> {
    doc: Option<String>,
    signature: Option<String>,
    handler: ErasedHandler<S>,
}

/// An object built from named methods, with optional shared state `S`.
pub struct Published<S = ()> {
    name: String,
    doc: Option<String>,
    state: Arc<S>,
    methods: BTreeMap<String, Method<S>>,
}

impl Published<()> {
    /// An object with no state.
    pub fn new(name: impl Into<String>) -> Self {
        Published::with_state(name, ())
    }
}

impl<S: Send + Sync + 'static> Published<S> {
    /// An object whose methods share `state`.
    pub fn with_state(name: impl Into<String>, state: S) -> Self {
        Published {
            name: name.into(),
            doc: None,
            state: Arc::new(state),
            methods: BTreeMap::new(),
        }
    }

    /// Sets the object's documentation (`meta.doc()`).
    pub fn doc(mut self, doc: impl Into<String>) -> Self {
        self.doc = Some(doc.into());
        self
    }

    /// Adds a method. An empty `doc` means none.
    pub fn method<M>(
        mut self,
        name: impl Into<String>,
        doc: &str,
        handler: impl Handler<S, M>,
    ) -> Self {
        let handler: ErasedHandler<S> = Box::new(move |s, cx, args| handler.call(s, cx, args));
        let doc = (!doc.is_empty()).then(|| doc.to_owned());
        self.methods.insert(
            name.into(),
            Method {
                doc,
                signature: None,
                handler,
            },
        );
        self
    }

    /// Sets the signature `meta.signature(method)` answers, for example
    /// `"greet(name: str) -> str"` (see [the module docs](self#signatures)).
    /// Has no effect unless a method of that name was added before.
    pub fn signature(mut self, method: &str, signature: impl Into<String>) -> Self {
        if let Some(m) = self.methods.get_mut(method) {
            m.signature = Some(signature.into());
        }
        self
    }

    /// Adds a method that receives the raw argument list and returns a raw
    /// future.
    pub fn method_raw(
        mut self,
        name: impl Into<String>,
        doc: &str,
        handler: impl Fn(&Arc<S>, CallContext, Vec<Value>) -> CallFuture + Send + Sync + 'static,
    ) -> Self {
        let doc = (!doc.is_empty()).then(|| doc.to_owned());
        self.methods.insert(
            name.into(),
            Method {
                doc,
                signature: None,
                handler: Box::new(handler),
            },
        );
        self
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<S> {
        &self.state
    }

    /// The published method names, sorted.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// Finishes the object.
    pub fn into_object(self) -> Arc<dyn Object> {
        Arc::new(self)
    }

    fn meta(&self, cx: &CallContext, args: &[Value]) -> Result<Value, CallError> {
        match args {
            [Value::Str(m)] if m == "methods" => Ok(Value::Tuple(
                self.methods.keys().map(|k| Value::Str(k.clone())).collect(),
            )),
            [Value::Str(m)] if m == "doc" => Ok(self.doc.clone().map_or(Value::None, Value::Str)),
            [Value::Str(m), Value::Str(name)] if m == "doc" => match self.methods.get(name) {
                Some(method) => Ok(method.doc.clone().map_or(Value::None, Value::Str)),
                None => Err(CallError::exception(format!("no method {name:?}"))),
            },
            [Value::Str(m), Value::Str(name)] if m == "signature" => match self.methods.get(name) {
                Some(method) => Ok(method.signature.clone().map_or(Value::None, Value::Str)),
                None => Err(CallError::exception(format!("no method {name:?}"))),
            },
            [Value::Str(m)] if m == "health" => Ok(Value::Str(
                cx.link()
                    .health
                    .as_ref()
                    .map_or("SERVING", |h| h.name())
                    .to_owned(),
            )),
            [Value::Str(m)] if m == "ping" => Ok(Value::Tuple(vec![
                cx.link()
                    .node_id
                    .map_or(Value::None, |id| Value::Int(i64::from(id))),
                Value::Int(i64::from(std::process::id())),
            ])),
            [Value::Str(m), ..] => Err(CallError::failed(format!(
                "no meta call {m:?} with these arguments"
            ))),
            _ => Err(CallError::failed("incomplete meta call")),
        }
    }
}

impl<S: Send + Sync + 'static> Object for Published<S> {
    fn call(self: Arc<Self>, cx: CallContext, mut args: Vec<Value>) -> CallFuture {
        if args.is_empty() {
            return Box::pin(std::future::ready(Err(CallError::failed(
                "call without a method name",
            ))));
        }
        match args.remove(0) {
            Value::Str(name) => match self.methods.get(&name) {
                Some(method) => (method.handler)(&self.state, cx, args),
                None => Box::pin(std::future::ready(Err(CallError::unknown_method(&name)))),
            },
            Value::None => Box::pin(std::future::ready(self.meta(&cx, &args))),
            other => Box::pin(std::future::ready(Err(CallError::failed(format!(
                "method name is a {}, not a string",
                other.kind()
            ))))),
        }
    }

    fn call_method(self: Arc<Self>, cx: CallContext, method: &str, args: Vec<Value>) -> CallFuture {
        match self.methods.get(method) {
            Some(m) => (m.handler)(&self.state, cx, args),
            None => Box::pin(std::future::ready(Err(CallError::unknown_method(method)))),
        }
    }

    fn type_name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn greet((name,): (String,)) -> Result<String, CallError> {
        Ok(format!("hello, {name}"))
    }

    fn meta(object: &Arc<dyn Object>, args: &[&str]) -> Result<Value, CallError> {
        let mut full = vec![Value::None];
        full.extend(args.iter().map(|a| Value::str(*a)));
        let fut = object.clone().call(CallContext::detached(), full);
        futures_util::FutureExt::now_or_never(fut).unwrap_or(Err(CallError::failed("pending")))
    }

    #[test]
    fn signature_is_answered_when_set() {
        let object = Published::new("Greeter")
            .method("greet", "Greets.", greet)
            .method("plain", "", greet)
            .signature("greet", "greet(name: str) -> str")
            .signature("missing", "ignored")
            .into_object();
        let sig = meta(&object, &["signature", "greet"]).expect("signature");
        assert_eq!(sig, Value::str("greet(name: str) -> str"));
        let none = meta(&object, &["signature", "plain"]).expect("no signature");
        assert_eq!(none, Value::None);
        assert!(matches!(
            meta(&object, &["signature", "missing"]),
            Err(CallError::Exception(_))
        ));
        assert!(matches!(
            meta(&object, &["signature"]),
            Err(CallError::Failed(_))
        ));
    }
}
