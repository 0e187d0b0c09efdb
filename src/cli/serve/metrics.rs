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

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::cli::exit::Failure;
use crate::settings::Settings;

/// How often the recorder's upkeep runs (as the exporter does by default).
const UPKEEP: Duration = Duration::from_secs(5);

/// The Prometheus endpoint: the installed recorder and its socket.
#[derive(Debug)]
pub struct Endpoint {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    handle: PrometheusHandle,
    /// The accept loop, while it answers.
    serving: Mutex<Option<tokio::task::AbortHandle>>,
}

/// Whether `inherited` (from the controller being upgraded) is the socket
/// for `addr`: the same address, or the same IP when `addr` asks for any
/// port.
pub(super) fn fits(inherited: &std::net::TcpListener, addr: SocketAddr) -> bool {
    inherited.local_addr().is_ok_and(|have| {
        have.ip() == addr.ip() && (addr.port() == 0 || have.port() == addr.port())
    })
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
        let failure = |e: String| Failure {
            code: crate::cli::exit::CONNECTION,
            error: anyhow::anyhow!("metrics endpoint {addr}: {e}"),
        };
        let listener = match inherited {
            Some(l) if fits(&l, addr) => l,
            other => {
                if let Some(l) = other {
                    tracing::warn!(
                        inherited = ?l.local_addr().ok(),
                        %addr,
                        "metrics: the address changed; binding the new one"
                    );
                }
                vole_control::listen::bind(addr, 128).map_err(|e| failure(format!("{e:#}")))?
            }
        };
        let addr = listener.local_addr().map_err(|e| failure(e.to_string()))?;
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .add_global_label("service", service)
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    vole_controller::metrics::CALL_DURATION.to_owned(),
                ),
                &vole_link::metrics::BUCKETS,
            )
            .and_then(|b| b.install_recorder())
            .map_err(|e| failure(e.to_string()))?;
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
        Ok(Some(Endpoint {
            listener,
            addr,
            handle,
            serving: Mutex::new(None),
        }))
    }

    /// The socket, for a binary upgrade to hand over.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Starts answering scrapes (again a no-op while it answers).
    pub fn start(&self) -> Result<(), Failure> {
        let Ok(mut serving) = self.serving.lock() else {
            return Ok(());
        };
        if serving.is_some() {
            return Ok(());
        }
        let listener = self
            .listener
            .try_clone()
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(|e| Failure {
                code: crate::cli::exit::CONNECTION,
                error: anyhow::anyhow!("metrics endpoint {}: {e}", self.addr),
            })?;
        let handle = self.handle.clone();
        *serving = Some(tokio::spawn(accept_loop(listener, handle)).abort_handle());
        let addr = self.addr;
        tracing::info!(%addr, "prometheus metrics at http://{addr}/metrics");
        Ok(())
    }

    /// Stops answering (this process keeps the socket open for an upgrade
    /// that already took it; scrapes wait in its queue for the new
    /// controller). Scrapes being answered finish.
    pub fn stop(&self) {
        if let Some(task) = self.serving.lock().ok().and_then(|mut s| s.take()) {
            task.abort();
            tracing::debug!("metrics endpoint handed over");
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off, keep going.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, handle.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scraper that stops reading must not hold a task for ever.
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(30), conn).await {
                tracing::debug!(error = %e, "metrics endpoint: connection");
            }
        });
    }
}

/// `GET` (or `HEAD`) of any path but `/health` renders the metrics, as the
/// exporter's own listener did; `/health` answers `OK`.
async fn answer(
    req: Request<Incoming>,
    handle: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let response = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(response(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"method not allowed\n"),
        ));
    }
    if req.uri().path() == "/health" {
        return Ok(response(StatusCode::OK, Bytes::from_static(b"OK")));
    }
    let text = tokio::task::spawn_blocking(move || handle.render())
        .await
        .unwrap_or_default();
    Ok(response(StatusCode::OK, Bytes::from(text.into_bytes())))
}
