//! `vole serve`: the demo gateway as a one-process service.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use vole_link::LinkConfig;
use vole_node::{Service, ServiceConfig};
use vole_transport::stream::ServerSettings;
use vole_transport::tls::{self, ServerIdentity};
use vole_transport::vop::ServerPolicy;

use super::exit::Failure;
use super::ServeArgs;

fn seconds(value: f64, flag: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{flag} must be a positive number of seconds"
            ))
        })
}

/// The service configuration the flags ask for.
pub fn service_config(args: &ServeArgs) -> Result<ServiceConfig, Failure> {
    let handshake_timeout = seconds(args.handshake_timeout, "--handshake-timeout")?;
    let write_timeout = seconds(args.write_timeout, "--write-timeout")?;
    if args.max_message < 1024 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--max-message must be at least 1024 bytes"
        )));
    }
    let tls = if args.no_tls {
        None
    } else {
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => ServerIdentity::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => ServerIdentity::Dev {
                state_dir: args
                    .state_dir
                    .clone()
                    .unwrap_or_else(tls::default_state_dir),
            },
        };
        let server = tls::server_config(&identity).context("tls")?;
        tracing::info!(fingerprint = %tls::fingerprint_hex(&server.fingerprint), "tls certificate (sha256)");
        Some(server.config)
    };
    Ok(ServiceConfig {
        transport: ServerSettings {
            transports: ServerPolicy::new(tls.is_some(), args.plain),
            tls,
            handshake_timeout,
        },
        link: LinkConfig {
            hold_peer: false,
            max_message: args.max_message,
            write_timeout,
            handshake_timeout,
            ..LinkConfig::default()
        },
        node_id: None,
    })
}

/// Runs the service until SIGTERM or SIGINT, then stops gracefully; a
/// second signal closes every link at once.
pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let grace = seconds(args.grace, "--grace")?;
    let config = service_config(&args)?;
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let std_listener =
            vole_node::listen::bind(*addr, args.backlog).map_err(anyhow::Error::from)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).context("listener")?;
        listeners.push(listener);
    }
    let transports: Vec<String> = config
        .transport
        .transports
        .preference
        .iter()
        .map(|t| t.to_string())
        .collect();
    let service = Service::new(config, Arc::new(|_| vole::demo::gateway()));
    let mut stdout = std::io::stdout().lock();
    for l in &listeners {
        let addr = l.local_addr().context("listener address")?;
        tracing::info!(%addr, transports = %transports.join(","), "serving the demo gateway");
        // Tests and scripts read this line to learn the port.
        let _ = writeln!(stdout, "listening on {addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    let mut tasks = Vec::new();
    for l in listeners {
        let s = service.clone();
        tasks.push(tokio::spawn(async move { s.run(l).await }));
    }
    let mut term = signal(SignalKind::terminate()).context("signal handler")?;
    let mut int = signal(SignalKind::interrupt()).context("signal handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping gracefully"),
        _ = int.recv() => tracing::info!("SIGINT: stopping gracefully (again to force)"),
    }
    let shutdown = service.shutdown(grace);
    tokio::pin!(shutdown);
    let forced = tokio::select! {
        forced = &mut shutdown => forced,
        _ = async { tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} } } => {
            tracing::warn!("second signal: closing every link now");
            for link in service.links() {
                link.abort();
            }
            shutdown.await
        }
    };
    for t in tasks {
        let _ = t.await;
    }
    if forced > 0 {
        tracing::warn!(
            links = forced,
            "links closed by force after the grace period"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
