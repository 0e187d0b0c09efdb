//! The admin socket: a local unix socket (mode 0600) on which `vole status`
//! and friends talk to a running service, one JSON object per line each
//! way.
//!
//! Only the user the service runs as (or root) may connect: the peer's
//! credentials are checked on every connection, and every command is
//! logged with the peer's pid and uid.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// A command sent to a running service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// Per-node state and counters.
    Status,
    /// Stop the service: gracefully (draining links for up to `timeout_s`),
    /// or at once with `force`.
    Stop {
        /// Close links at once.
        #[serde(default)]
        force: bool,
        /// Grace period override, seconds.
        #[serde(default)]
        timeout_s: Option<f64>,
    },
    /// Re-read the configuration and replace the nodes one by one.
    Reload,
    /// Run this many nodes.
    Scale {
        /// The new node count (at least 1).
        nodes: u32,
    },
    /// Reopen the log file (after logrotate moved it).
    ReopenLogs,
    /// Start a new controller from the executable on disk, hand it the
    /// listening sockets, and step down once its nodes serve.
    Upgrade,
    /// Whether the service serves and is ready for new connections,
    /// answered at once (nothing is asked of the nodes).
    Health,
    /// Stop being ready for new connections, serve on for the shutdown
    /// delay, then drain and stop gracefully (a preStop hook's `vole
    /// drain`). Idempotent; answered when the delay is over.
    Drain,
}

/// The service's health, as load balancers and orchestrators probe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `serving` (ready for new connections), `draining` (a shutdown
    /// delay or a drain: no new connections wanted, existing ones served),
    /// or `not_serving` (no node serves).
    pub state: String,
    /// Nodes serving now.
    pub serving: u32,
    /// Nodes the service runs when all is well.
    pub nodes: u32,
}

impl HealthReport {
    /// Whether new connections are welcome.
    pub fn ready(&self) -> bool {
        self.state == "serving"
    }
}

/// One node, as `status` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Node id (0 in one-process mode).
    pub id: u32,
    /// Process id, if running.
    pub pid: Option<u32>,
    /// `starting`, `serving`, `retiring` (being removed by a reload or a
    /// scale-down: finishing its links, then exiting), `draining` (the
    /// service stops gracefully: finishing its links), `stopping` (a forced
    /// stop), `restarting`, `exited`, `unresponsive`, `full` (serving, but
    /// not taking connections: it holds as many as its descriptor limit
    /// allows, or ran out of descriptors a moment ago).
    pub state: String,
    /// Open sessions.
    pub sessions: u64,
    /// Calls running now.
    pub inflight: u64,
    /// Calls served.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Connections accepted by the current process, in total (the
    /// cumulative count behind per-node fairness of new sessions).
    #[serde(default)]
    pub accepted: u64,
    /// Times this slot's node was restarted.
    pub restarts: u32,
    /// Milliseconds the current process has been up.
    pub uptime_ms: u64,
    /// Median served-call latency, microseconds (bucket upper bound).
    #[serde(default)]
    pub p50_us: Option<u64>,
    /// 99th percentile served-call latency, microseconds (bucket upper bound).
    #[serde(default)]
    pub p99_us: Option<u64>,
    /// The node's descriptor limit, if it has one.
    #[serde(default)]
    pub fd_limit: Option<u64>,
    /// Connections the node can hold within its descriptor limit, if
    /// limited.
    #[serde(default)]
    pub capacity: Option<u64>,
}

impl NodeReport {
    /// Takes the counters and latency quantiles from a node's status.
    pub fn fill(&mut self, s: &vole_control::control::NodeStatus) {
        self.sessions = s.sessions;
        self.inflight = s.inflight;
        self.calls = s.calls;
        self.errors = s.errors;
        self.accepted = s.accepted;
        let q = |q| {
            vole_link::metrics::CallMetrics::quantile(&s.latency_counts, q)
                .map(|d| d.as_micros() as u64)
        };
        self.p50_us = q(0.5);
        self.p99_us = q(0.99);
        self.fd_limit = s.fd_limit;
        self.capacity = s.capacity;
        if s.full && self.state == "serving" {
            self.state = "full".to_owned();
        }
    }
}

/// What `status` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The controller's (or the single process's) pid.
    pub pid: u32,
    /// The balance mode, or `single` in one-process mode.
    pub mode: String,
    /// Addresses served.
    pub listen: Vec<String>,
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// The nodes.
    pub nodes: Vec<NodeReport>,
    /// The grace period a graceful stop gives running calls,
    /// milliseconds (0 if the service did not say): how long `vole stop`
    /// waits, plus a margin.
    #[serde(default)]
    pub grace_ms: u64,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminResponse {
    /// Whether the command was carried out.
    pub ok: bool,
    /// Why not, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    /// The health, for `health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
}

impl AdminResponse {
    /// Success with nothing to report.
    pub fn ok() -> Self {
        AdminResponse {
            ok: true,
            error: None,
            status: None,
            health: None,
        }
    }

    /// A health report.
    pub fn health(report: HealthReport) -> Self {
        AdminResponse {
            health: Some(report),
            ..AdminResponse::ok()
        }
    }

    /// Failure.
    pub fn error(e: impl Into<String>) -> Self {
        AdminResponse {
            ok: false,
            error: Some(e.into()),
            status: None,
            health: None,
        }
    }
}

/// Carries out admin requests.
pub trait AdminHandler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(
        &self,
        request: AdminRequest,
    ) -> Pin<Box<dyn Future<Output = AdminResponse> + Send + '_>>;
}

/// Errors of the admin socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Another live service already owns the socket path.
    #[error("another vole is running with admin socket {0}")]
    InUse(PathBuf),
    /// The socket could not be set up or reached.
    #[error("admin socket {path}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The service answered something unreadable.
    #[error("bad answer from the admin socket: {0}")]
    Protocol(String),
}

/// A bound admin socket; the socket file is removed when this is dropped.
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    keep: Arc<AtomicBool>,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AdminSocket {
    /// Binds `path` with mode 0600. A stale socket file left by a dead
    /// service is replaced; a live one is an error.
    pub async fn bind(path: &Path) -> Result<AdminSocket, AdminError> {
        let io_err = |source| AdminError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        if path.exists() {
            match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
                Ok(Ok(_)) => return Err(AdminError::InUse(path.to_owned())),
                _ => std::fs::remove_file(path).map_err(io_err)?,
            }
        }
        // Create it unreadable to others from the first instant.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(AdminSocket {
            listener,
            path: path.to_owned(),
            keep: Arc::default(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adopts a listening admin socket inherited from the controller being
    /// upgraded.
    pub fn from_fd(fd: OwnedFd, path: &Path) -> io::Result<AdminSocket> {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(AdminSocket {
            listener: UnixListener::from_std(std)?,
            path: path.to_owned(),
            keep: Arc::default(),
        })
    }

    /// A duplicate of the listening descriptor, for a new controller to
    /// inherit.
    pub fn listener_fd(&self) -> io::Result<OwnedFd> {
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Set it to keep the socket file when this is dropped (a new
    /// controller serves it now).
    pub fn keep_handle(&self) -> Arc<AtomicBool> {
        self.keep.clone()
    }

    /// Serves requests until the returned future is dropped.
    pub async fn serve(&self, handler: Arc<dyn AdminHandler>) {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move { serve_client(stream, handler).await });
        }
    }
}

async fn serve_client(stream: UnixStream, handler: Arc<dyn AdminHandler>) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "admin client credentials unavailable; refused");
            return;
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    let (read, mut write) = stream.into_split();
    if cred.uid() != me && cred.uid() != 0 {
        tracing::warn!(
            uid = cred.uid(),
            pid = cred.pid().unwrap_or(0),
            "admin client of another user refused"
        );
        let _ = write_response(&mut write, &AdminResponse::error("permission denied")).await;
        return;
    }
    let mut lines = BufReader::new(read.take(MAX_REQUEST)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(request) => {
                tracing::info!(
                    ?request,
                    uid = cred.uid(),
                    pid = cred.pid().unwrap_or(0),
                    "admin command"
                );
                handler.handle(request).await
            }
            Err(e) => {
                tracing::warn!(error = %e, uid = cred.uid(), "bad admin request");
                AdminResponse::error(format!("bad request: {e}"))
            }
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}

async fn write_response(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    r: &AdminResponse,
) -> io::Result<()> {
    let mut text = serde_json::to_vec(r).map_err(io::Error::other)?;
    text.push(b'\n');
    w.write_all(&text).await
}

/// Sends one request to the service at `path` and returns its answer.
pub async fn request(
    path: &Path,
    req: &AdminRequest,
    timeout: Duration,
) -> Result<AdminResponse, AdminError> {
    let io_err = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let work = async {
        let stream = UnixStream::connect(path).await.map_err(io_err)?;
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_vec(req).map_err(|e| AdminError::Protocol(e.to_string()))?;
        text.push(b'\n');
        write.write_all(&text).await.map_err(io_err)?;
        let mut lines = BufReader::new(read.take(16 * 1024 * 1024)).lines();
        let line = lines.next_line().await.map_err(io_err)?.ok_or_else(|| {
            AdminError::Protocol("connection closed without an answer".to_owned())
        })?;
        serde_json::from_str(&line).map_err(|e| AdminError::Protocol(e.to_string()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| AdminError::Io {
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::TimedOut),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl AdminHandler for Echo {
        fn handle(
            &self,
            request: AdminRequest,
        ) -> Pin<Box<dyn Future<Output = AdminResponse> + Send + '_>> {
            Box::pin(async move {
                match request {
                    AdminRequest::Status => AdminResponse {
                        ok: true,
                        error: None,
                        status: Some(StatusReport {
                            pid: 1,
                            mode: "single".into(),
                            ..StatusReport::default()
                        }),
                        health: None,
                    },
                    _ => AdminResponse::error("not here"),
                }
            })
        }
    }

    #[tokio::test]
    async fn requests_round_trip_and_the_socket_is_private() {
        let dir = std::env::temp_dir().join(format!("vole-admin-test-{}", std::process::id()));
        let path = dir.join("admin.sock");
        let sock = AdminSocket::bind(&path).await.expect("bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let server = tokio::spawn(async move {
            sock.serve(Arc::new(Echo)).await;
        });
        let r = request(&path, &AdminRequest::Status, Duration::from_secs(5))
            .await
            .expect("status");
        assert_eq!(r.status.map(|s| s.mode), Some("single".to_owned()));
        let r = request(
            &path,
            &AdminRequest::Stop {
                force: true,
                timeout_s: None,
            },
            Duration::from_secs(5),
        )
        .await
        .expect("stop");
        assert!(!r.ok);
        // A second service on the same path is refused while the first lives.
        match AdminSocket::bind(&path).await {
            Err(AdminError::InUse(p)) => assert_eq!(p, path),
            other => panic!("expected in-use, got {other:?}"),
        }
        server.abort();
        let _ = server.await;
        // The AdminSocket moved into the aborted task is dropped: file gone.
        assert!(!path.exists(), "socket file removed on drop");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn node_reports_carry_accepted_connections() {
        let mut report = NodeReport::default();
        report.fill(&vole_control::control::NodeStatus {
            sessions: 2,
            calls: 30,
            accepted: 7,
            ..vole_control::control::NodeStatus::default()
        });
        assert_eq!((report.sessions, report.calls, report.accepted), (2, 30, 7));
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["accepted"], 7);
        // A report from a service without the field still reads.
        let old: NodeReport = serde_json::from_str(
            r#"{"id":1,"pid":2,"state":"serving","sessions":0,"inflight":0,"calls":0,"errors":0,"restarts":0,"uptime_ms":0}"#,
        )
        .expect("old report");
        assert_eq!(old.accepted, 0);
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_and_bad_requests_answered() {
        let dir = std::env::temp_dir().join(format!("vole-admin-stale-{}", std::process::id()));
        let path = dir.join("admin.sock");
        std::fs::create_dir_all(&dir).expect("dir");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        assert!(path.exists());
        let sock = AdminSocket::bind(&path)
            .await
            .expect("stale socket replaced");
        let server = tokio::spawn(async move { sock.serve(Arc::new(Echo)).await });
        let mut s = UnixStream::connect(&path).await.expect("connect");
        s.write_all(b"{\"cmd\":\"dance\"}\n").await.expect("write");
        let mut lines = BufReader::new(s).lines();
        let line = lines.next_line().await.expect("read").expect("line");
        let r: AdminResponse = serde_json::from_str(&line).expect("json");
        assert!(!r.ok && r.error.is_some_and(|e| e.contains("bad request")));
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
