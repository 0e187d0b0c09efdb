//! Services for the tests to load: one-process vole services on loopback,
//! built from the library crates (this crate does not depend on the `vole`
//! package, whose demo gateway the command serves).

use std::sync::Arc;
use std::time::Duration;

use vole_link::publish::Published;
use vole_link::router::Router;
use vole_link::{CallError, LinkConfig, Object, Value};
use vole_node::{GatewayFactory, Service, ServiceConfig};
use vole_transport::stream::ServerSettings;
use vole_transport::vop::ServerPolicy;

async fn echo((value,): (Value,)) -> Result<Value, CallError> {
    Ok(value)
}

/// A gateway like the demo's for what the tests use: `echo` at the root
/// and at `/text/echo/`.
pub fn echo_gateway() -> Arc<dyn Object> {
    let echoer = || {
        Published::new("Echoer")
            .method("echo", "Returns its argument.", echo)
            .into_object()
    };
    Router::new(Published::new("TestGateway").method("echo", "Returns its argument.", echo))
        .route(["text", "echo"], move |_| echoer())
        .into_object()
}

/// The configuration of a one-process service with `transport`.
pub fn service_config(transport: ServerSettings) -> ServiceConfig {
    ServiceConfig {
        transport,
        link: LinkConfig {
            hold_peer: false,
            drain_quiet: vole_node::DRAIN_QUIET,
            ..LinkConfig::default()
        },
        node_id: None,
        admission: Default::default(),
        authorizer: None,
        proxy_from: None,
    }
}

/// Serves `config` with gateways from `factory` on a loopback port.
pub async fn serve(config: ServiceConfig, factory: GatewayFactory) -> (Service, u16) {
    let service = Service::new(config, factory);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let s = service.clone();
    tokio::spawn(async move { s.run(listener).await });
    (service, port)
}

/// Serves gateways from `factory` over PLAIN on a loopback port.
pub async fn serve_plain(factory: GatewayFactory) -> (Service, u16) {
    let transport = ServerSettings {
        transports: ServerPolicy::new(false, true),
        tls: None,
        vts: None,
        handshake_timeout: Duration::from_secs(10),
    };
    serve(service_config(transport), factory).await
}

/// [`echo_gateway`] over PLAIN on a loopback port.
pub async fn echo_service() -> (Service, u16) {
    serve_plain(Arc::new(|_| echo_gateway())).await
}

/// Bounds a test's run.
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("in time")
}
