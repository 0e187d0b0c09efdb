//! vole hosts Versile-protocol object services across many processes.
//!
//! **vole hosts your service.** [`Host`] turns any program into a full
//! host for its own gateway: a controller with N node processes re-executed
//! from the program's binary, balancing, supervision, daemon mode, the
//! admin commands, systemd and metrics, all on one command line:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn my_gateway(_: &vole::link::LinkInfo) -> Arc<dyn vole::link::Object> { vole::demo::gateway() }
//! fn main() -> std::process::ExitCode {
//!     vole::Host::new("greeter", |info: &vole::link::LinkInfo| my_gateway(info)).main()
//! }
//! ```
//!
//! The `vole` command is built the same way (its service is the demo
//! gateway) plus client commands. This crate is also a facade over the
//! workspace:
//!
//! * [`transport`]: VEC entities and codec, serde mapping, VOP negotiation,
//!   TLS and PLAIN transports;
//! * [`link`]: the VOL link protocol, published objects, URIs, resolving;
//! * [`node`]: serving sessions on a listening socket;
//! * [`control`]: the controller-node protocol and descriptor plumbing;
//! * [`controller`]: the multi-process host;
//! * [`demo`]: the demo gateway `vole serve` runs;
//! * [`host`], [`cli`], [`settings`]: the host, its command line and its
//!   settings.
//!
//! A one-process service without the host, in a few lines:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use vole::link::{publish::Published, CallError};
//!
//! async fn greet((name,): (String,)) -> Result<String, CallError> {
//!     Ok(format!("hello, {name}"))
//! }
//!
//! let gateway = Published::new("Greeter").method("greet", "Greets.", greet).into_object();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4433").await?;
//! let service = vole::serve_plain(Arc::new(move |_| gateway.clone()));
//! service.run(listener).await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod access;
pub mod cli;
mod daemon;
mod defaults;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
mod hosted;
mod logging;
pub mod settings;

pub use host::Host;

// Lets code in this crate (the demo) use `#[vole::service]`, whose
// expansion names `::vole::...`.
extern crate self as vole;

pub use vole_macros::service;

pub use vole_control as control;
pub use vole_controller as controller;
pub use vole_link as link;
pub use vole_node as node;
pub use vole_transport as transport;

use std::time::Duration;

use vole_link::LinkConfig;
use vole_node::{GatewayFactory, Service, ServiceConfig};
use vole_transport::stream::ServerSettings;
use vole_transport::vop::ServerPolicy;

/// A one-process service over PLAIN only (for trusted networks and tests).
pub fn serve_plain(factory: GatewayFactory) -> Service {
    let config = ServiceConfig {
        transport: ServerSettings {
            transports: ServerPolicy::new(false, true),
            tls: None,
            vts: None,
            handshake_timeout: Duration::from_secs(10),
        },
        link: LinkConfig {
            hold_peer: false,
            drain_quiet: vole_node::DRAIN_QUIET,
            ..LinkConfig::default()
        },
        node_id: None,
        admission: Default::default(),
        authorizer: None,
        proxy_from: None,
    };
    Service::new(config, factory)
}
