//! Typed services: what the `vole::service` macro generates code against.
//!
//! A type whose `impl` block carries `#[vole::service]` implements
//! [`Service`]: [`Service::into_object`] gives the object a gateway
//! factory returns, [`Service::publish`] the [`Published`] builder behind
//! it (to add dynamic methods). The macro also generates a typed client
//! proxy; see the macro's documentation in the `vole` crate.
//!
//! [`IntoObjectRef`] is how a client passes a local object (a callback) as
//! an argument. The `__private` module holds the conversions generated
//! code calls; it is not a public API.

use std::sync::Arc;

use crate::object::Object;
use crate::publish::Published;
use crate::{ObjectRef, RemoteObject};

/// A typed service: an object built from an `impl` block by the
/// `vole::service` macro.
pub trait Service: Sized + Send + Sync + 'static {
    /// The service's name (the object's type name in logs and `describe`).
    const NAME: &'static str;

    /// The [`Published`] object serving `self`: one method per service
    /// method, with docs and signatures. Add dynamic methods to it before
    /// [`Published::into_object`] if need be.
    fn publish(self) -> Published<Self>;

    /// The object serving `self`, as a gateway factory returns it.
    fn into_object(self) -> Arc<dyn Object> {
        self.publish().into_object()
    }
}

/// Something that can be passed where a method takes an object: a local
/// object (sent as a reference the peer can call back), a service, or a
/// reference received before.
pub trait IntoObjectRef {
    /// The reference.
    fn into_object_ref(self) -> ObjectRef;
}

impl IntoObjectRef for ObjectRef {
    fn into_object_ref(self) -> ObjectRef {
        self
    }
}

impl IntoObjectRef for Arc<dyn Object> {
    fn into_object_ref(self) -> ObjectRef {
        ObjectRef::Local(self)
    }
}

impl IntoObjectRef for RemoteObject {
    fn into_object_ref(self) -> ObjectRef {
        ObjectRef::Remote(self)
    }
}

impl IntoObjectRef for &RemoteObject {
    fn into_object_ref(self) -> ObjectRef {
        ObjectRef::Remote(self.clone())
    }
}

impl<S: Service> IntoObjectRef for S {
    fn into_object_ref(self) -> ObjectRef {
        ObjectRef::Local(self.into_object())
    }
}

#[doc(hidden)]
pub mod __private {
    //! Conversions the code `vole::service` generates calls. Not a public
    //! API: it changes with the macro.

    use std::sync::Arc;

    use vole_transport::{FromEntity, IntoEntity};

    use super::IntoObjectRef;
    use crate::object::{CallError, Object};
    use crate::{Error, ObjectRef, RemoteObject, Value};

    pub use std::boxed::Box;
    pub use std::future::ready;
    pub use std::sync::Arc as StdArc;
    pub use std::vec::Vec;

    /// Checks the number of arguments: exactly `n`, or at least `n` when
    /// the method takes the rest.
    pub fn check_count(args: &[Value], n: usize, rest: bool) -> Result<(), CallError> {
        if args.len() == n || (rest && args.len() > n) {
            Ok(())
        } else if rest {
            Err(CallError::failed(format!(
                "expected at least {n} argument(s), got {}",
                args.len()
            )))
        } else {
            Err(CallError::failed(format!(
                "expected {n} argument(s), got {}",
                args.len()
            )))
        }
    }

    fn bad(i: usize, what: impl std::fmt::Display, v: &Value) -> CallError {
        CallError::failed(format!("argument {}: {} ({} given)", i + 1, what, v.kind()))
    }

    /// Argument `i` (0-based) as a `T`.
    pub fn arg<T: FromEntity<ObjectRef>>(i: usize, v: Option<Value>) -> Result<T, CallError> {
        let v = v.ok_or_else(|| CallError::failed("missing argument"))?;
        let kind = v.kind();
        T::from_entity(v)
            .map_err(|e| CallError::failed(format!("argument {}: {} ({} given)", i + 1, e, kind)))
    }

    /// Argument `i` as an object reference.
    pub fn arg_object_ref(i: usize, v: Option<Value>) -> Result<ObjectRef, CallError> {
        match v {
            Some(Value::Ref(r)) => Ok(r),
            Some(other) => Err(bad(i, "expected an object", &other)),
            None => Err(CallError::failed("missing argument")),
        }
    }

    /// Argument `i` as something callable.
    pub fn arg_object(i: usize, v: Option<Value>) -> Result<Arc<dyn Object>, CallError> {
        arg_object_ref(i, v).map(|r| r.as_object())
    }

    /// Argument `i` as a proxy for an object of the peer.
    pub fn arg_remote(i: usize, v: Option<Value>) -> Result<RemoteObject, CallError> {
        match arg_object_ref(i, v)? {
            ObjectRef::Remote(r) => Ok(r),
            ObjectRef::Local(_) => Err(CallError::failed(format!(
                "argument {}: expected a remote object, got a local one",
                i + 1
            ))),
        }
    }

    /// A method's result as a value.
    pub fn ret<T: IntoEntity<ObjectRef>>(v: T) -> Result<Value, CallError> {
        v.into_entity()
            .map_err(|e| CallError::failed(format!("result cannot be sent: {e}")))
    }

    /// A method's object result as a value.
    pub fn ret_object(v: impl IntoObjectRef) -> Result<Value, CallError> {
        Ok(Value::Ref(v.into_object_ref()))
    }

    /// A method's error as a call error.
    pub fn err<E: Into<CallError>>(e: E) -> CallError {
        e.into()
    }

    /// A client's argument as a value.
    pub fn to_arg<T: IntoEntity<ObjectRef>>(v: T) -> Result<Value, Error> {
        v.into_entity().map_err(|e| Error::Convert(e.to_string()))
    }

    /// A client's object argument as a value.
    pub fn to_arg_object(v: impl IntoObjectRef) -> Result<Value, Error> {
        Ok(Value::Ref(v.into_object_ref()))
    }

    /// A result as the client's return type.
    pub fn from_ret<T: FromEntity<ObjectRef>>(v: Value) -> Result<T, Error> {
        T::from_entity(v).map_err(|e| Error::Convert(e.to_string()))
    }

    /// An object result as a proxy.
    pub fn from_ret_remote(v: Value) -> Result<RemoteObject, Error> {
        match v {
            Value::Ref(ObjectRef::Remote(r)) => Ok(r),
            Value::Ref(ObjectRef::Local(_)) => Err(Error::Convert(
                "expected a remote object, got a local one".to_owned(),
            )),
            other => Err(Error::Convert(format!(
                "expected an object, got a {}",
                other.kind()
            ))),
        }
    }

    /// An object result as a reference.
    pub fn from_ret_object_ref(v: Value) -> Result<ObjectRef, Error> {
        match v {
            Value::Ref(r) => Ok(r),
            other => Err(Error::Convert(format!(
                "expected an object, got a {}",
                other.kind()
            ))),
        }
    }

    /// The object a resolved URI names.
    pub fn resolved(r: crate::resolve::Resolved) -> Result<RemoteObject, Error> {
        from_ret_remote(r.value)
    }
}
