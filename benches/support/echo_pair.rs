//! An echo service and a client linked over an in-memory pipe, shared by
//! the benchmarks that time the link without sockets (`codec.rs`,
//! `echo_profile.rs`). Call from inside a tokio runtime.

use vole::link::publish::Published;
use vole::link::{CallError, Link, LinkSetup, RemoteObject, Value};

async fn echo((value,): (Value,)) -> Result<Value, CallError> {
    Ok(value)
}

/// Serves an `Echoer` on one end of a pipe (in a spawned task) and links
/// to it from the other; returns the client's link and the echo object.
pub async fn echo_pair() -> (Link, RemoteObject) {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let setup = LinkSetup {
        config: Default::default(),
        gateway: Published::new("Echoer")
            .method("echo", "", echo)
            .into_object(),
        info: Default::default(),
    };
    tokio::spawn(vole::link::serve(server_io, setup, |_| {}));
    let setup = LinkSetup {
        config: Default::default(),
        gateway: Published::new("Client").into_object(),
        info: Default::default(),
    };
    vole::link::connect(client_io, setup).await.expect("link")
}
