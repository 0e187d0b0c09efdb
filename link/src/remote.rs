//! Calling a [`RemoteObject`]: its call methods, how it serves as an
//! [`Object`] for third parties (forwarding), and [`IntoArgs`].
//!
//! A proxy is cheap to clone. When the last clone is dropped, the link
//! tells the peer (NOTIFY_DEREF) so the peer can release the object.
//!
//! Deadlines and cancellation: a call whose future is dropped before its
//! answer (a `select!` that took another branch, a task aborted) is given
//! up: the link tells the peer with vole's cancel message (see
//! [`crate::proto::CANCEL`]) and discards the answer if it still comes.
//! [`RemoteObject::with_timeout`] gives calls a deadline built on that:
//! past it the call fails with [`Error::DeadlineExceeded`] and is cancelled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use vole_transport::{FromEntity, IntoEntity};

use crate::calls::Reply;
use crate::handle::Link;
use crate::info::CallContext;
use crate::model::{
    Call, CallError, CallFuture, Error, Object, ObjectRef, RemoteObject, Shared, Value,
};
use crate::proto::CallKind;

impl RemoteObject {
    /// The link this proxy belongs to.
    pub fn link(&self) -> Link {
        Link::from_shared(self.shared().clone())
    }

    /// Calls `method` with `args` and returns the raw result.
    ///
    /// `args` is anything that converts to entities: a tuple of serializable
    /// values, a `Vec<Value>`, or `()`.
    pub async fn call(&self, method: &str, args: impl IntoArgs) -> Result<Value, Error> {
        self.with_options(CallOptions::default())
            .call(method, args)
            .await
    }

    /// Calls `method` and converts the result to `T`.
    pub async fn call_as<T: FromEntity<ObjectRef>>(
        &self,
        method: &str,
        args: impl IntoArgs,
    ) -> Result<T, Error> {
        self.with_options(CallOptions::default())
            .call_as(method, args)
            .await
    }

    /// Calls `method` as a void-result call: the peer discards the result
    /// but errors still come back.
    pub async fn call_void(&self, method: &str, args: impl IntoArgs) -> Result<(), Error> {
        self.with_options(CallOptions::default())
            .call_void(method, args)
            .await
    }

    /// Calls `method` one-way: no result and no error ever comes back. Returns
    /// once the call is queued on the link.
    pub async fn call_oneway(&self, method: &str, args: impl IntoArgs) -> Result<(), Error> {
        self.with_options(CallOptions::default())
            .call_oneway(method, args)
            .await
    }

    /// A VOL meta call `meta.<name>(args...)`, sent as `(None, name, arg...)`:
    /// `ping`, `methods`, `doc` on vole's objects.
    pub async fn call_meta(
        &self,
        name: &str,
        args: impl IntoIterator<Item = Value>,
    ) -> Result<Value, Error> {
        self.with_options(CallOptions::default())
            .call_meta(name, args)
            .await
    }

    /// `meta.methods()`: the names of the methods the object publishes.
    pub async fn meta_methods(&self) -> Result<Vec<String>, Error> {
        let v = self.call_meta("methods", []).await?;
        Vec::<String>::from_entity(v)
            .map_err(|e| Error::Convert(format!("meta.methods() result: {e}")))
    }

    /// `meta.doc()`: the object's documentation, or a method's when `method`
    /// is given.
    pub async fn meta_doc(&self, method: Option<&str>) -> Result<Option<String>, Error> {
        let v = self.call_meta("doc", method.map(Value::str)).await?;
        Option::<String>::from_entity(v)
            .map_err(|e| Error::Convert(format!("meta.doc() result: {e}")))
    }

    /// `meta.signature(method)`: the method's signature, such as
    /// `"greet(name: str) -> str"` (see [`crate::publish`] for the format).
    ///
    /// A vole extension, so optional: `Ok(None)` when the object has no
    /// signature for the method, and also when the peer answers the meta
    /// call with an error or exception (as VPy services and unknown methods
    /// do). Errors are only those of the link itself.
    pub async fn meta_signature(&self, method: &str) -> Result<Option<String>, Error> {
        match self.call_meta("signature", [Value::str(method)]).await {
            Ok(v) => Ok(Option::<String>::from_entity(v).ok().flatten()),
            Err(e) if e.is_remote() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a call with the raw VOB argument tuple (`(method, arg...)` or
    /// `(None, meta, arg...)`).
    pub async fn call_raw(&self, args: Vec<Value>, kind: CallKind) -> Result<Value, Error> {
        CallOutcome::new(self.clone(), args, kind).await
    }

    /// Calls with a deadline: each call made through the returned
    /// [`CallWith`] fails with [`Error::DeadlineExceeded`] if its answer
    /// has not come `timeout` after it was made, and the peer is told to
    /// cancel it (a vole service drops the call's handler; VPy ignores the
    /// message and its late answer is discarded).
    ///
    /// ```no_run
    /// # async fn demo(remote: vole_link::RemoteObject) -> Result<(), vole_link::Error> {
    /// use std::time::Duration;
    /// let n: i64 = remote
    ///     .with_timeout(Duration::from_millis(200))
    ///     .call_as("count", ())
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> CallWith<'_> {
        self.with_options(CallOptions::default().timeout(timeout))
    }

    /// Calls with `options` (see [`CallOptions`]).
    pub fn with_options(&self, options: CallOptions) -> CallWith<'_> {
        CallWith {
            target: self,
            options,
        }
    }
}

/// Options for calls: see [`RemoteObject::with_options`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// How long a call may wait for its answer; `None`: as long as the
    /// link lives.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// These options with a call timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Calls on a proxy with [`CallOptions`] (a deadline): the same call
/// methods as [`RemoteObject`]'s. Made by [`RemoteObject::with_timeout`]
/// and [`RemoteObject::with_options`].
#[derive(Debug, Clone, Copy)]
pub struct CallWith<'a> {
    target: &'a RemoteObject,
    options: CallOptions,
}

impl CallWith<'_> {
    /// [`RemoteObject::call`] with these options.
    pub async fn call(&self, method: &str, args: impl IntoArgs) -> Result<Value, Error> {
        let full = args.into_call(Value::str(method))?;
        self.call_raw(full, CallKind::Normal).await
    }

    /// [`RemoteObject::call_as`] with these options.
    pub async fn call_as<T: FromEntity<ObjectRef>>(
        &self,
        method: &str,
        args: impl IntoArgs,
    ) -> Result<T, Error> {
        let value = self.call(method, args).await?;
        T::from_entity(value).map_err(|e| Error::Convert(e.to_string()))
    }

    /// [`RemoteObject::call_void`] with these options.
    pub async fn call_void(&self, method: &str, args: impl IntoArgs) -> Result<(), Error> {
        let full = args.into_call(Value::str(method))?;
        self.call_raw(full, CallKind::Void).await.map(|_| ())
    }

    /// [`RemoteObject::call_oneway`] with these options (the timeout bounds
    /// only the wait for room in the link's queue).
    pub async fn call_oneway(&self, method: &str, args: impl IntoArgs) -> Result<(), Error> {
        let full = args.into_call(Value::str(method))?;
        self.call_raw(full, CallKind::Oneway).await.map(|_| ())
    }

    /// [`RemoteObject::call_meta`] with these options.
    pub async fn call_meta(
        &self,
        name: &str,
        args: impl IntoIterator<Item = Value>,
    ) -> Result<Value, Error> {
        let mut full = vec![Value::None, Value::str(name)];
        full.extend(args);
        self.call_raw(full, CallKind::Normal).await
    }

    /// [`RemoteObject::call_raw`] with these options.
    pub async fn call_raw(&self, args: Vec<Value>, kind: CallKind) -> Result<Value, Error> {
        let Some(timeout) = self.options.timeout else {
            return self.target.call_raw(args, kind).await;
        };
        let method = method_name(&args);
        let call = CallOutcome::new(self.target.clone(), args, kind);
        // On timeout the call's future is dropped, which cancels it.
        match tokio::time::timeout(timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::DeadlineExceeded { method, timeout }),
        }
    }
}

/// The method a raw argument tuple calls, for messages: `name` or
/// `meta.name`.
pub(crate) fn method_name(args: &[Value]) -> String {
    match args {
        [Value::Str(m), ..] => m.clone(),
        [Value::None, Value::Str(m), ..] => format!("meta.{m}"),
        _ => "(unnamed method)".to_owned(),
    }
}

/// A proxy can be served to a third party: calls are forwarded.
impl Object for RemoteObject {
    fn call(self: Arc<Self>, _cx: CallContext, args: Vec<Value>) -> CallFuture {
        Box::pin(async move {
            self.call_raw(args, CallKind::Normal)
                .await
                .map_err(CallError::from)
        })
    }

    fn type_name(&self) -> &str {
        "remote object"
    }
}

/// Call arguments: converts to the list of entities after the method name.
pub trait IntoArgs {
    /// The arguments as entities.
    fn into_args(self) -> Result<Vec<Value>, Error>;

    /// The argument tuple of a call: `head` (the method name) and then the
    /// arguments, in one allocation.
    fn into_call(self, head: Value) -> Result<Vec<Value>, Error>
    where
        Self: Sized,
    {
        let args = self.into_args()?;
        let mut full = Vec::with_capacity(1 + args.len());
        full.push(head);
        full.extend(args);
        Ok(full)
    }
}

impl IntoArgs for Vec<Value> {
    fn into_args(self) -> Result<Vec<Value>, Error> {
        Ok(self)
    }

    /// Puts `head` in front in place: no new allocation when the vector has
    /// room for one more.
    fn into_call(mut self, head: Value) -> Result<Vec<Value>, Error> {
        self.insert(0, head);
        Ok(self)
    }
}

impl IntoArgs for () {
    fn into_args(self) -> Result<Vec<Value>, Error> {
        Ok(Vec::new())
    }
}

fn convert<T: IntoEntity<ObjectRef>>(v: T) -> Result<Value, Error> {
    v.into_entity().map_err(|e| Error::Convert(e.to_string()))
}

macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: IntoEntity<ObjectRef>),+> IntoArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Result<Vec<Value>, Error> {
                let ($($name,)+) = self;
                Ok(vec![$(convert($name)?),+])
            }

            #[allow(non_snake_case)]
            fn into_call(self, head: Value) -> Result<Vec<Value>, Error> {
                let ($($name,)+) = self;
                Ok(vec![head, $(convert($name)?),+])
            }
        }
    };
}

tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);

/// The future of one call: queues it, then waits for its outcome.
struct CallOutcome {
    shared: Arc<Shared>,
    state: State,
}

enum State {
    Queue(Option<Call>),
    Wait(usize),
    Done,
}

impl CallOutcome {
    fn new(target: RemoteObject, args: Vec<Value>, kind: CallKind) -> Self {
        CallOutcome {
            shared: target.shared().clone(),
            state: State::Queue(Some(Call { target, args, kind })),
        }
    }
}

impl Future for CallOutcome {
    type Output = Result<Value, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Queue(call) => match this.shared.calls.submit(cx, call, None) {
                    Poll::Ready(Ok(Reply::Slot(slot))) => this.state = State::Wait(slot),
                    Poll::Ready(Ok(Reply::Pipe { .. })) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(Error::Usage("call queued wrongly".to_owned())));
                    }
                    Poll::Ready(Err(reason)) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(Error::Closed(reason)));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Wait(slot) => {
                    let slot = *slot;
                    return match this.shared.calls.poll_outcome(cx, slot) {
                        Poll::Ready(r) => {
                            this.state = State::Done;
                            Poll::Ready(
                                r.unwrap_or_else(|| {
                                    Err(Error::Closed("call slot lost".to_owned()))
                                }),
                            )
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                State::Done => {
                    return Poll::Ready(Err(Error::Usage(
                        "call polled after it finished".to_owned(),
                    )))
                }
            }
        }
    }
}

impl Drop for CallOutcome {
    fn drop(&mut self) {
        if let State::Wait(slot) = self.state {
            self.shared.calls.abandon(slot);
        }
    }
}
