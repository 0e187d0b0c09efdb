//! The vole load generator: `vole bench`, and `vole bench-server`, the
//! baseline servers it is compared with.
//!
//! This crate is a client tool. The `vole` command runs it as `vole bench`
//! (a client command, like `vole call`), adding its own connection flags
//! and building the client configuration from them; it is not part of a
//! service, and a service built on the library crates does not carry it.
//! It measures a service from outside: it depends on the link and
//! transport crates as any client does, and on the controller's admin
//! protocol to read per-node counts, never on the `vole` package.
//!
//! `vole bench` opens N links (or raw connections), keeps M calls in flight
//! on each, runs a warm-up and then a measured window, and reports calls/s,
//! an HDR latency histogram (p50/p99/p99.9) and, when told the server's pid,
//! the server's CPU time per call (of one process, or with `--server-tree`
//! of the process and its descendants: a controller and its nodes).
//!
//! With `--sessions` it measures new sessions instead of held links: N
//! workers each loop connect, VOP and TLS, the link handshake, resolving the
//! path, one call, close; sessions/s, the latency of the whole
//! session, and how many resumed their TLS session. With `--admin-socket`
//! it reads each node's counters from the service at the window's edges
//! and reports their fairness as Jain's index. Targets:
//!
//! * `vop://host:port/path/`: a Versile service; the path is resolved once
//!   per link and `method` is called on the object with a string payload;
//! * `raw-tls://host:port` and `raw-tcp://host:port`: the length-prefixed
//!   echo servers of `vole bench-server`, driven with the same links,
//!   in-flight depth, payload and window, so the figures compare directly.
//!
//! The public surface is what a command needs: the arguments
//! ([`BenchArgs`], [`ServerArgs`], clap), the two entry points ([`run`],
//! [`run_server`]) and what stopped a run ([`Error`], whose
//! [`kind`](Error::kind) a command maps to an exit code). Inside, `args`
//! are the arguments and `plan` checks them; `load` runs held links and
//! `sessions` new sessions, both recording with `record` and watched by
//! `watch`; `raw` is the baseline protocol (server and client), `cpu`
//! reads process CPU time, `nodes` the per-node counts, and `report`
//! prints the summary.
//!
//! ```no_run
//! # async fn run() -> Result<(), vole_bench::Error> {
//! use clap::Parser as _;
//! use vole_link::resolve::ClientConfig;
//!
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     bench: vole_bench::BenchArgs,
//! }
//! let cli = Cli::parse();
//! vole_bench::run(cli.bench, |_host| Ok(ClientConfig::plain())).await
//! # }
//! ```

#![warn(missing_docs)]

mod args;
mod cpu;
mod error;
mod failover;
mod load;
mod nodes;
mod plan;
mod raw;
mod record;
mod report;
mod sessions;
mod watch;

#[cfg(test)]
mod testing;

use vole_link::resolve::ClientConfig;
use vole_transport::tickets::{ticket_context, with_ticketer, SharedTicketer, TicketKey};

pub use args::{BenchArgs, ServerArgs};
pub use error::{BoxError, Error, ErrorKind};

use plan::{Mode, Plan, Target};

/// Runs the benchmark `args` describe and prints the summary on stdout.
///
/// `client` gives the client configuration for connecting to the target's
/// host (its trust and timeouts: the `vole` command builds it from its
/// connection flags, as for `vole call`). Its connect timeout also bounds
/// each call: a link on which no call finishes for that long is given up,
/// its calls counted as errors.
pub async fn run<F>(args: BenchArgs, client: F) -> Result<(), Error>
where
    F: FnOnce(&str) -> Result<ClientConfig, BoxError>,
{
    let host = Target::parse(&args.target)?.host()?;
    let config = client(&host).map_err(Error::ClientConfig)?;
    let plan = Plan::from_args(&args, config.transport.connect_timeout)?;
    let summary = match plan.mode {
        Mode::Held => load::run(&plan, &config).await?,
        Mode::Sessions => sessions::run(&plan, &config).await?,
        Mode::Failover => failover::run(&plan, &config).await?,
    };
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}

/// Lifetime of the baseline server's TLS tickets: that of `vole serve`'s
/// (`vole_node::process::TICKET_LIFETIME_SECS`; this crate does not depend
/// on the node).
const TICKET_LIFETIME_SECS: u32 = 6 * 3600;

/// Runs a baseline echo server until SIGTERM or SIGINT, printing
/// `listening on ADDR` on stdout once it listens.
pub async fn run_server(args: ServerArgs) -> Result<(), Error> {
    let tls = if args.tls {
        let state_dir = args
            .state_dir
            .clone()
            .unwrap_or_else(vole_transport::tls::default_state_dir);
        let identity = vole_transport::tls::ServerIdentity::Dev { state_dir };
        let server = vole_transport::tls::server_config(&identity).map_err(Error::ServerTls)?;
        // Resumption as `vole serve` has it: stateless tickets.
        let ticketer = SharedTicketer::new(TICKET_LIFETIME_SECS);
        let key = TicketKey::generate().map_err(Error::ServerTls)?;
        ticketer.set_keys(&key, &[]);
        Some(with_ticketer(
            &server.config,
            ticketer,
            ticket_context(None),
        ))
    } else {
        None
    };
    let listen_error = |source| Error::Listen {
        addr: args.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    tokio::select! {
        _ = raw::serve(listener, tls) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
