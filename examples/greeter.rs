//! A vole service and a client for it in one program.
//!
//! The service publishes a gateway with a typed method and a stateful
//! counter under `/counter/`; the client resolves both, calls them, and keeps
//! several calls in flight with a pipeline. PLAIN on loopback, so it needs
//! no certificate:
//!
//! ```sh
//! cargo run --example greeter
//! ```
//!
//! `vole serve` runs the same kind of service over TLS, across processes.

use std::sync::{Arc, Mutex};

use vole::link::publish::Published;
use vole::link::resolve::{self, ClientConfig};
use vole::link::router::Router;
use vole::link::{CallError, Value};

async fn greet((name,): (String,)) -> Result<String, CallError> {
    if name.is_empty() {
        // The caller gets a VException with these arguments.
        return Err(CallError::exception("nobody to greet"));
    }
    Ok(format!("hello, {name}"))
}

async fn add(total: Arc<Mutex<i64>>, (n,): (i64,)) -> Result<i64, CallError> {
    let mut total = total.lock().map_err(|_| CallError::failed("poisoned"))?;
    *total += n;
    Ok(*total)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One counter shared by every session; a fresh gateway per session.
    let counter = Published::with_state("Counter", Mutex::new(0i64))
        .doc("Adds numbers up.")
        .method("add", "Adds to the total and returns it.", add)
        .into_object();
    let factory = Arc::new(move |_: &vole::link::LinkInfo| {
        let root = Published::new("Greeter").doc("Says hello.").method(
            "greet",
            "Greets someone by name.",
            greet,
        );
        let counter = counter.clone();
        Router::new(root)
            .route(["counter"], move |_| counter.clone())
            .into_object()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = vole::serve_plain(factory);
    let server = service.clone();
    tokio::spawn(async move { server.run(listener).await });
    println!("serving on vop://{addr}/ (PLAIN)");

    let config = ClientConfig::plain();
    // Resolve the root, call a method, and see a deliberate exception.
    let root = resolve::resolve(&format!("vop://{addr}/"), &config).await?;
    let gateway = root.gateway.clone();
    let hello: String = gateway.call_as("greet", ("vole",)).await?;
    println!("greet(\"vole\") = {hello:?}");
    match gateway.call("greet", ("",)).await {
        Err(e) => println!("greet(\"\") failed as it should: {e}"),
        Ok(v) => println!("greet(\"\") unexpectedly gave {v:?}"),
    }
    println!("methods: {:?}", gateway.meta_methods().await?);

    // Resolve a path on the same link and keep calls in flight.
    let Value::Ref(counter) = resolve::resolve_relative(&gateway, "counter/").await? else {
        return Err("counter/ is not an object".into());
    };
    let counter = counter.as_remote().cloned().ok_or("not a remote object")?;
    let mut pipe = counter.pipeline();
    for n in 1..=10i64 {
        pipe.call("add", (n,)).await?;
    }
    let mut last = 0;
    while let Some((_ticket, outcome)) = pipe.next().await {
        if let Value::Int(total) = outcome? {
            last = last.max(total);
        }
    }
    println!("1 + 2 + ... + 10 = {last}");

    drop((pipe, counter, gateway));
    root.link.close().await;
    service.stop_accepting();
    service.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
