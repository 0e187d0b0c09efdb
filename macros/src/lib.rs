//! The `#[vole::service]` attribute: typed Versile-protocol services.
//!
//! Use it through the `vole` crate, which re-exports it as
//! `vole::service`; the generated code names `::vole::link::...` (or the
//! path given with `crate = "..."`).

#![warn(missing_docs)]

mod model;
mod render;
mod types;

use proc_macro::TokenStream;

/// Turns an `impl` block into a Versile-protocol service and a typed
/// client for it.
///
/// ```
/// use vole::link::{CallContext, CallError};
///
/// /// Greets people.
/// struct Greeter {
///     greeting: String,
/// }
///
/// #[vole::service(name = "Greeter")]
/// impl Greeter {
///     /// Greets someone by name.
///     async fn greet(&self, name: String) -> Result<String, CallError> {
///         if name.is_empty() {
///             return Err(CallError::exception("who?"));
///         }
///         Ok(format!("{}, {name}", self.greeting))
///     }
///
///     /// Says where the call came from.
///     fn whoami(&self, cx: &CallContext) -> String {
///         format!("{:?}", cx.peer_addr())
///     }
///
///     /// Writes a line to the log; the client does not wait.
///     #[vole(oneway)]
///     fn log(&self, line: String) {
///         println!("{line}");
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), vole::link::Error> {
/// let greeter = Greeter { greeting: "hello".into() };
/// let gateway = greeter.into_object(); // an Arc<dyn vole::link::Object>
/// # let _ = gateway;
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| vole::link::Error::Usage(e.to_string()))?;
/// # let port = listener.local_addr().map_err(|e| vole::link::Error::Usage(e.to_string()))?.port();
/// # let service = vole::serve_plain(std::sync::Arc::new(|_| Greeter { greeting: "hello".into() }.into_object()));
/// # tokio::spawn(async move { service.run(listener).await });
/// # let uri = format!("vop://127.0.0.1:{port}/");
/// // In a client:
/// let config = vole::link::resolve::ClientConfig::plain();
/// let client = GreeterClient::resolve(&uri, &config).await?;
/// assert_eq!(client.greet("world".into()).await?, "hello, world");
/// assert_eq!(
///     client.remote().meta_signature("greet").await?.as_deref(),
///     Some("greet(name: str) -> str")
/// );
/// # Ok(()) }
/// ```
///
/// # Attribute arguments
///
/// All optional: `#[vole::service(name = "Greeter", doc = "...", client =
/// "GreeterClient", crate = "::vole")]`.
///
/// * `name`: the object's type name (logs, `describe`); the type's name by
///   default.
/// * `doc`: the object's documentation (`meta.doc()`); by default the doc
///   comment of the `impl` block (an attribute on the block cannot see the
///   type's own doc comment).
/// * `client`: the name of the generated client type (`<Type>Client` by
///   default), or `client = false` for none.
/// * `crate`: the path of the `vole` crate, for crates that rename it.
///
/// # Methods
///
/// Every function of the block that takes `&self` is a method of the
/// service, under its own name; functions without a receiver (such as
/// constructors) are left alone, and so is a method marked
/// `#[vole(skip)]`. A method:
///
/// * is an `async fn` or a plain `fn` (which runs on the link's task: keep
///   it short);
/// * takes its arguments as owned types: anything `Deserialize`,
///   `vole::link::Value` for a raw value, or an object reference:
///   `vole::link::ObjectRef`, `vole::link::RemoteObject` (a proxy, to call
///   back) or `Arc<dyn vole::link::Object>`;
/// * may take a `vole::link::CallContext` or `&CallContext` anywhere in its
///   parameters: the call's context (peer address, transport, node id),
///   not an argument on the wire;
/// * may end with `#[vole(rest)] args: Vec<Value>`, which takes any number
///   of further arguments;
/// * returns `Result<T, E>` with `E: Into<CallError>` (an error is a
///   CALL_EXCEPTION for `CallError::Exception`, a CALL_ERROR otherwise), or
///   a plain `T`, or nothing; `T` is anything `Serialize`, a `Value`, or an
///   object (`Arc<dyn Object>`, `RemoteObject`, `ObjectRef`), which the peer
///   receives as a reference.
///
/// Method attributes: `#[vole(name = "wire_name")]` publishes the method
/// under another name; `#[vole(oneway)]` makes the client send it one-way
/// (the method returns nothing); `#[vole(skip)]` leaves it out.
///
/// Wrong argument counts or types fail the call with a CALL_ERROR, as
/// `vole::link::publish::Published` does; the link stays up.
///
/// # What it generates
///
/// * The block itself, with the `#[vole(...)]` attributes removed.
/// * `impl vole::link::service::Service for Type`, whose `publish()` builds
///   a `Published::with_state(name, self)` with one method per service
///   method, its doc comment as `meta.doc(method)` and a signature for
///   `meta.signature(method)`, such as `"greet(name: str) -> str"`; and an
///   inherent `into_object(self) -> Arc<dyn Object>`.
/// * `TypeClient`, a typed proxy: `TypeClient::new(remote)`,
///   `TypeClient::resolve(uri, &config).await?`, `.remote()`,
///   `.into_remote()`, and one `async fn` per method with the same
///   arguments (less the context; objects as `impl IntoObjectRef`, so a
///   client passes its own objects or services as callbacks) returning
///   `Result<T, vole::link::Error>`; object results come back as
///   `RemoteObject` (wrap it in that service's client, e.g.
///   `CounterClient::new(remote)`). Methods that return nothing are void
///   calls, and `#[vole(oneway)]` methods one-way calls. A client method
///   has the Rust name of its method, whatever its wire name.
///
/// To return a service from a method, return `service.into_object()` as an
/// `Arc<dyn Object>`. Object references are recognized by their type's
/// name as written (`ObjectRef`, `RemoteObject`, `Arc<dyn Object>`, also
/// as `T` of a `Result<T, E>`), not inside other types: an
/// `Option<RemoteObject>` argument is not supported, take a `Value`.
///
/// Unsupported shapes (generic methods, `self` by value, `&mut self`,
/// borrowed or `impl Trait` arguments, generic or trait `impl` blocks) are
/// compile errors that point at the offending item.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    match model::Service::parse(attr.into(), item.into()) {
        Ok(service) => render::render(&service).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
