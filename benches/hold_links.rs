//! Holds N idle links open against a service, for measuring what an idle
//! link costs the server (issue #17):
//!
//! ```sh
//! cargo bench --bench hold_links --no-run
//! target/release/deps/hold_links-* 127.0.0.1:4433 5000 tls
//! ```
//!
//! Arguments: the service's address, the number of links (default 5000),
//! and `tls` (trusting any certificate: a local measurement) or `plain`.
//! Each link resolves `text/echo`, makes one `echo` call (so its buffers
//! are as a used link's), and then stays idle. Once all are open it prints
//! `held N` and keeps them until its standard input closes; the caller
//! reads the server's RSS meanwhile (`benches/idle_memory.sh`).

use std::io::Read as _;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use vole::link::resolve::{self, ClientConfig};
use vole::link::Value;
use vole::transport::tls::ServerTrust;

/// As in the `vole` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Links being opened at once.
const OPENING: usize = 64;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let addr = args
        .next()
        .expect("usage: hold_links HOST:PORT [N] [tls|plain]");
    let links: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let tls = args.next().as_deref() != Some("plain");
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let port: u16 = port.parse().expect("a port");
    let config = if tls {
        ClientConfig::tls(&ServerTrust::DangerAcceptAny).expect("client config")
    } else {
        ClientConfig::plain()
    };
    let config = Arc::new(config);
    let path = vec!["text".to_owned(), "echo".to_owned()];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let held: Vec<_> = stream::iter(0..links)
            .map(|_| {
                let (config, path) = (config.clone(), path.clone());
                let host = host.to_owned();
                async move {
                    let (link, gateway) = resolve::connect_to(&host, port, &config)
                        .await
                        .expect("connect");
                    let echo = resolve::resolve_path(&gateway, &path)
                        .await
                        .expect("resolve");
                    echo.call("echo", vec![Value::Str("x".repeat(64))])
                        .await
                        .expect("echo");
                    (link, gateway, echo)
                }
            })
            .buffer_unordered(OPENING)
            .collect()
            .await;
        println!("held {}", held.len());
        // Until stdin closes (a blocking read, off the runtime's thread).
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .expect("stdin reader");
        drop(held);
    });
}
