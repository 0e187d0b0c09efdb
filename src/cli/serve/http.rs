//! The small HTTP/1.1 endpoints `serve` runs beside the service (metrics,
//! health probes): a listening socket this process owns (bound, or adopted
//! from the controller a binary upgrade replaces, so no request is refused
//! across the upgrade), and an accept loop (hyper) that can be started and
//! stopped while the socket stays open.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::cli::exit::Failure;

/// What answers a request (only `GET` and `HEAD` get here).
pub type Answer = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// How long one connection may take (a client that stops reading must not
/// hold a task for ever).
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// An endpoint's socket, and its accept loop while it answers.
#[derive(Debug)]
pub struct Socket {
    /// What it serves, for logs and errors (`"metrics"`, `"health"`).
    what: &'static str,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    serving: Mutex<Option<tokio::task::AbortHandle>>,
}

/// Whether `inherited` (from the controller being upgraded) is the socket
/// for `addr`: the same address, or the same IP when `addr` asks for any
/// port.
fn fits(inherited: &std::net::TcpListener, addr: SocketAddr) -> bool {
    inherited.local_addr().is_ok_and(|have| {
        have.ip() == addr.ip() && (addr.port() == 0 || have.port() == addr.port())
    })
}

/// A failure of the `what` endpoint at `addr`.
pub fn failure(what: &str, addr: SocketAddr, e: impl std::fmt::Display) -> Failure {
    Failure {
        code: crate::cli::exit::CONNECTION,
        error: anyhow::anyhow!("{what} endpoint {addr}: {e}"),
    }
}

impl Socket {
    /// Binds `addr`, or adopts `inherited` if it is the socket for it.
    pub fn open(
        what: &'static str,
        addr: SocketAddr,
        inherited: Option<std::net::TcpListener>,
    ) -> Result<Socket, Failure> {
        let listener = match inherited {
            Some(l) if fits(&l, addr) => l,
            other => {
                if let Some(l) = other {
                    tracing::warn!(
                        inherited = ?l.local_addr().ok(),
                        %addr,
                        "{what}: the address changed; binding the new one"
                    );
                }
                vole_control::listen::bind(addr, 128)
                    .map_err(|e| failure(what, addr, format!("{e:#}")))?
            }
        };
        let addr = listener.local_addr().map_err(|e| failure(what, addr, e))?;
        Ok(Socket {
            what,
            listener,
            addr,
            serving: Mutex::new(None),
        })
    }

    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket, for a binary upgrade to hand over.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Starts answering with `answer`. Returns whether it started now
    /// (false while it already answers). Must run on the runtime.
    pub fn start(&self, answer: Answer) -> Result<bool, Failure> {
        let Ok(mut serving) = self.serving.lock() else {
            return Ok(false);
        };
        if serving.is_some() {
            return Ok(false);
        }
        let listener = self
            .listener
            .try_clone()
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(|e| failure(self.what, self.addr, e))?;
        *serving = Some(tokio::spawn(accept_loop(listener, self.what, answer)).abort_handle());
        Ok(true)
    }

    /// Stops answering (the socket stays open: requests wait in its queue
    /// for whoever answers next, the new controller of an upgrade).
    /// Requests being answered finish.
    pub fn stop(&self) {
        if let Some(task) = self.serving.lock().ok().and_then(|mut s| s.take()) {
            task.abort();
            tracing::debug!("{} endpoint handed over", self.what);
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, what: &'static str, answer: Answer) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off, keep going.
                tracing::warn!(error = %e, "{what} endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = answer.clone();
                async move {
                    if req.method() != Method::GET && req.method() != Method::HEAD {
                        return Ok::<_, std::convert::Infallible>(text(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "method not allowed\n",
                        ));
                    }
                    Ok(answer(req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIMIT, conn).await {
                tracing::debug!(error = %e, "{what} endpoint: connection");
            }
        });
    }
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
