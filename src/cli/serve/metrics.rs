//! The Prometheus endpoint (`--metrics ADDR`): the recorder, and `GET
//! /metrics` served over HTTP/1.1 (hyper) on a listening socket this
//! process owns, so that a binary upgrade can hand the socket to the new
//! controller like the service's own sockets (the exporter's built-in
//! listener binds by itself, and the new controller could not bind the
//! port the old one still held).
//!
//! A controller started by an upgrade adopts the socket and starts
//! answering once it serves; the old one stops answering as soon as the
//! new one is the main process, so scrapes go to the controller that
//! serves (the socket's queue is shared: no scrape is refused).

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

use super::http::{self, Answer, Socket};
use crate::cli::exit::Failure;
use crate::settings::Settings;

/// How often the recorder's upkeep runs (as the exporter does by default).
const UPKEEP: Duration = Duration::from_secs(5);

/// The Prometheus endpoint: the installed recorder and its socket.
#[derive(Debug)]
pub struct Endpoint {
    socket: Socket,
    handle: PrometheusHandle,
}

impl Endpoint {
    /// Installs the recorder and binds (or adopts `inherited`), if
    /// `metrics` is configured. Every series carries the label `service`.
    /// Nothing is answered before [`Endpoint::start`]. Must run on the
    /// runtime.
    pub fn open(
        s: &Settings,
        service: &str,
        inherited: Option<std::net::TcpListener>,
    ) -> Result<Option<Endpoint>, Failure> {
        let Some(addr) = s.metrics else {
            return Ok(None);
        };
        let socket = Socket::open("metrics", addr, inherited)?;
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .add_global_label("service", service)
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    vole_controller::metrics::CALL_DURATION.to_owned(),
                ),
                &vole_link::metrics::BUCKETS,
            )
            .and_then(|b| b.install_recorder())
            .map_err(|e| http::failure("metrics", socket.addr(), e))?;
        vole_controller::metrics::describe();
        metrics::describe_gauge!(
            "vole_build_info",
            "Always 1; the labels say which vole serves."
        );
        metrics::gauge!("vole_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let upkeep = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP).await;
                upkeep.run_upkeep();
            }
        });
        Ok(Some(Endpoint { socket, handle }))
    }

    /// The socket, for a binary upgrade to hand over.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.fd()
    }

    /// Starts answering scrapes (again a no-op while it answers).
    pub fn start(&self) -> Result<(), Failure> {
        let handle = self.handle.clone();
        // Any path but `/health` renders the metrics, as the exporter's own
        // listener did; `/health` answers `OK`.
        let answer: Answer = Arc::new(move |req| {
            let handle = handle.clone();
            Box::pin(async move {
                if req.uri().path() == "/health" {
                    return http::text(StatusCode::OK, "OK");
                }
                let text = tokio::task::spawn_blocking(move || handle.render())
                    .await
                    .unwrap_or_default();
                http::text(StatusCode::OK, text)
            })
        });
        if self.socket.start(answer)? {
            let addr = self.socket.addr();
            tracing::info!(%addr, "prometheus metrics at http://{addr}/metrics");
        }
        Ok(())
    }

    /// Stops answering (this process keeps the socket open for an upgrade
    /// that already took it; scrapes wait in its queue for the new
    /// controller). Scrapes being answered finish.
    pub fn stop(&self) {
        self.socket.stop();
    }
}
