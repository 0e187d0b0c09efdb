//! Taking connections, as the balance mode says: with grants, freely, or
//! as the controller passes them.

use std::sync::Arc;

use tokio::net::TcpListener;
use vole_link::RemoteObject;

use super::control::{NodeState, Reports};
use crate::capacity::Capacity;
use crate::{Service, SessionObserver};
use vole_control::fdpass;
use vole_control::quiet::QuietStream;

/// Samples the descriptor budget every [`RESAMPLE_EVERY`] and tells the
/// controller a changed capacity (a limit without one is sent as
/// `u64::MAX`). Ends with the control link.
pub(super) async fn resample_budget(capacity: Arc<Capacity>, controller: RemoteObject) {
    loop {
        tokio::time::sleep(crate::capacity::RESAMPLE_EVERY).await;
        let Some(budget) = capacity.resample() else {
            continue;
        };
        let n = budget.capacity().unwrap_or(u64::MAX);
        tracing::info!(
            fd_limit = budget.limit,
            open = budget.baseline,
            connections = n,
            "descriptor budget changed"
        );
        if controller.call_oneway("capacity", (n,)).await.is_err() {
            return;
        }
    }
}

/// Tells both the reporter and the capacity gate of each connection.
pub(super) struct Observers(pub(super) Arc<Reports>, pub(super) Arc<Capacity>);

impl SessionObserver for Observers {
    fn opened(&self) {
        self.1.opened();
        self.0.opened();
    }

    fn closed(&self) {
        self.1.closed();
        self.0.closed();
    }
}

/// `grant` mode: accept one connection per grant, while the node has room
/// for it. Using the last grant reports at once, so that the controller
/// can grant again. An accept error keeps the grant, pauses and retries.
pub(super) async fn accept_with_grants(
    service: Service,
    state: Arc<NodeState>,
    reports: Arc<Reports>,
    capacity: Arc<Capacity>,
    listeners: Vec<TcpListener>,
) {
    loop {
        let permit = tokio::select! {
            p = async {
                capacity.wait_room().await;
                state.grants.acquire().await
            } => p,
            _ = service.stopping() => return,
        };
        match permit {
            Ok(p) => p.forget(),
            Err(_) => return, // semaphore closed
        }
        let accepted = tokio::select! {
            a = accept_any(&listeners) => a,
            _ = service.stopping() => return,
        };
        match accepted {
            Ok(tcp) => {
                service.serve_connection(tcp);
                if state.grants.available_permits() == 0 {
                    reports.flush_now();
                }
            }
            Err(e) => {
                // The grant was not used: keep it.
                state.grants.add_permits(1);
                if crate::capacity::is_exhaustion(&e) {
                    capacity.backoff("accept", &e).await;
                } else {
                    crate::service::accept_error(e).await;
                }
            }
        }
    }
}

/// `shared` and `reuseport` modes: accept whenever the node has room; at
/// capacity connections wait in the kernel's queue (for another node, in
/// `shared` mode). Errors pause and retry.
pub(super) async fn accept_freely(
    service: Service,
    capacity: Arc<Capacity>,
    listener: TcpListener,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = service.stopping() => return,
            a = async {
                capacity.wait_room().await;
                listener.accept().await
            } => a,
        };
        match accepted {
            Ok((tcp, _)) => service.serve_connection(tcp),
            Err(e) if crate::capacity::is_exhaustion(&e) => capacity.backoff("accept", &e).await,
            Err(e) => crate::service::accept_error(e).await,
        }
    }
}

pub(super) async fn accept_any(
    listeners: &[TcpListener],
) -> std::io::Result<tokio::net::TcpStream> {
    match listeners {
        [one] => one.accept().await.map(|(s, _)| s),
        many => {
            let futures = many.iter().map(|l| Box::pin(l.accept()));
            let (result, _, _) = futures_util::future::select_all(futures).await;
            result.map(|(s, _)| s)
        }
    }
}

/// `dispatch` mode: connections arrive over the connection socket in
/// frames of one byte, the number of descriptors attached (see
/// [`vole_control::control`]), and are served as they come. Nothing goes back: a
/// connection is this node's once received, and if the node dies, the
/// controller takes those it never received out of the socket itself.
///
/// A frame is received only while the node has room for a whole one (the
/// controller dispatches no more than the node's capacity, so this only
/// waits when something else filled the table); frames wait in the socket
/// meanwhile. An error pauses and retries: only the controller's going
/// away (end of stream) ends the loop.
pub(super) async fn take_dispatched(service: Service, capacity: Arc<Capacity>, sock: QuietStream) {
    loop {
        let mut count = [0u8; 1];
        let frame = tokio::select! {
            biased;
            _ = service.stopping() => return,
            r = async {
                capacity.wait_room().await;
                fdpass::recv_frame(&sock, &mut count).await
            } => r,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return, // controller gone
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::error!(error = %e, "connection socket closed inside a frame: the controller is gone");
                return;
            }
            Err(e) => {
                capacity.backoff("receiving connections", &e).await;
                continue;
            }
        };
        if frame.truncated {
            capacity.exhausted();
            crate::capacity::log_error(
                "receiving connections",
                &std::io::Error::other(format!(
                    "descriptor table full: the kernel closed {} connection(s) of a frame",
                    usize::from(count[0]).saturating_sub(frame.fds.len())
                )),
            );
        } else if frame.fds.len() != usize::from(count[0]) {
            tracing::error!(
                said = count[0],
                fds = frame.fds.len(),
                "dispatch frame with a wrong number of connections"
            );
        }
        for fd in frame.fds {
            let std = std::net::TcpStream::from(fd);
            match std
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(std))
            {
                Ok(tcp) => service.serve_connection(tcp),
                Err(e) => tracing::error!(error = %e, "dispatched connection unusable"),
            }
        }
    }
}
