//! The health endpoint (`--health ADDR`): HTTP probes for load balancers
//! and Kubernetes, served over HTTP/1.1 (hyper) on a socket this process
//! owns (handed to the new controller in a binary upgrade, as the metrics
//! socket is).
//!
//! * `GET /livez`: 200 when the controller's event loop answers a health
//!   request on the admin socket within [`LIVE_LIMIT`] (a stuck loop fails
//!   it), 503 otherwise.
//! * `GET /readyz`: 200 while some node serves and the service is not
//!   draining; **404** from the first instant of a shutdown delay or drain
//!   (HAProxy's `http-check disable-on-404` then stops sending new
//!   connections but keeps the existing ones); 503 when no node serves or
//!   the controller does not answer.
//!
//! Both ask the controller through its admin socket, so they see exactly
//! what `vole status` would, and need nothing shared with it.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use vole_controller::admin::{AdminRequest, HealthReport};

use super::http::{self, Answer, Socket};
use crate::cli::exit::Failure;

/// How long the controller has to answer a probe.
pub const LIVE_LIMIT: Duration = Duration::from_secs(1);

/// The health endpoint's socket.
#[derive(Debug)]
pub struct Endpoint {
    socket: Socket,
}

impl Endpoint {
    /// Binds `addr` (or adopts `inherited`, the upgraded controller's
    /// socket, if it is for the same address). Nothing is answered before
    /// [`Endpoint::start`].
    pub fn open(
        addr: Option<std::net::SocketAddr>,
        inherited: Option<std::net::TcpListener>,
    ) -> Result<Option<Endpoint>, Failure> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        Ok(Some(Endpoint {
            socket: Socket::open("health", addr, inherited)?,
        }))
    }

    /// The socket, for a binary upgrade to hand over.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.fd()
    }

    /// Starts answering probes about the service whose admin socket is
    /// `admin` (a no-op while it answers).
    pub fn start(&self, admin: &Path) -> Result<(), Failure> {
        let admin: Arc<PathBuf> = Arc::new(admin.to_owned());
        let answer: Answer = Arc::new(move |req| {
            let admin = admin.clone();
            Box::pin(async move {
                let path = req.uri().path();
                let health = match path {
                    "/livez" | "/readyz" => ask(&admin).await,
                    _ => Err(String::new()),
                };
                let (status, body) = verdict(path, &health);
                http::text(status, body)
            })
        });
        if self.socket.start(answer)? {
            let addr = self.socket.addr();
            tracing::info!(%addr, "health probes at http://{addr}/livez and /readyz");
        }
        Ok(())
    }

    /// Stops answering (the new controller of an upgrade answers now).
    pub fn stop(&self) {
        self.socket.stop();
    }
}

/// The controller's health, or why there is none.
async fn ask(admin: &Path) -> Result<HealthReport, String> {
    let response = vole_controller::admin::request(admin, &AdminRequest::Health, LIVE_LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    match (response.ok, response.health) {
        (true, Some(h)) => Ok(h),
        _ => Err(response
            .error
            .unwrap_or_else(|| "no health in the answer".to_owned())),
    }
}

/// The status and body a probe of `path` gets, given the controller's
/// answer: the policy, apart from the I/O.
pub fn verdict(path: &str, health: &Result<HealthReport, String>) -> (StatusCode, String) {
    match (path, health) {
        ("/livez", Ok(_)) => (StatusCode::OK, "ok\n".to_owned()),
        ("/livez" | "/readyz", Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the controller does not answer: {e}\n"),
        ),
        ("/readyz", Ok(h)) => {
            let status = match h.state.as_str() {
                "serving" => StatusCode::OK,
                "draining" => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (
                status,
                format!("{} ({} of {} nodes serving)\n", h.state, h.serving, h.nodes),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "no such probe (/livez, /readyz)\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: &str, serving: u32) -> Result<HealthReport, String> {
        Ok(HealthReport {
            state: state.to_owned(),
            serving,
            nodes: 2,
        })
    }

    #[test]
    fn readiness_follows_the_state_and_liveness_the_answer() {
        for (state, want) in [
            ("serving", StatusCode::OK),
            ("draining", StatusCode::NOT_FOUND),
            ("not_serving", StatusCode::SERVICE_UNAVAILABLE),
        ] {
            assert_eq!(verdict("/readyz", &report(state, 1)).0, want, "{state}");
            assert_eq!(verdict("/livez", &report(state, 1)).0, StatusCode::OK);
        }
        let silent = Err("timed out".to_owned());
        assert_eq!(
            verdict("/livez", &silent).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            verdict("/readyz", &silent).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(verdict("/", &report("serving", 1)).0, StatusCode::NOT_FOUND);
        assert!(verdict("/readyz", &report("draining", 1))
            .1
            .starts_with("draining (1 of 2"));
    }
}
