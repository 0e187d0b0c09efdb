//! The node's side of the control link: its state, the control object
//! the controller calls, and the session reports it sends.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{watch, Notify, Semaphore};
use vole_link::publish::Published;
use vole_link::{CallError, Object, RemoteObject};

use crate::capacity::Capacity;
use crate::{Service, SessionObserver};
use vole_control::control::{NodeStatus, TicketKeys};
use vole_transport::tickets::SharedTicketer;

#[derive(Debug, Clone, Copy)]
pub(super) struct StopRequest {
    pub(super) graceful: bool,
    pub(super) grace: Duration,
}

pub(super) struct NodeState {
    pub(super) started: Instant,
    pub(super) service: OnceLock<Service>,
    /// Set when the node starts serving.
    pub(super) capacity: OnceLock<Arc<Capacity>>,
    pub(super) grants: Semaphore,
    pub(super) stop: watch::Sender<Option<StopRequest>>,
    /// TLS tickets, with keys from the controller.
    pub(super) ticketer: Arc<SharedTicketer>,
    /// The controller said a shutdown delay began (possibly before the
    /// service exists).
    pub(super) not_ready: std::sync::atomic::AtomicBool,
}

impl NodeState {
    pub(super) fn request_stop(&self, req: StopRequest) {
        self.stop.send_if_modified(|stop| match stop {
            // A forced stop overrides a graceful one, never the reverse.
            Some(prev) if !prev.graceful => false,
            _ => {
                *stop = Some(req);
                true
            }
        });
    }

    /// Waits for a stop request.
    pub(super) async fn stop_requested(&self) -> StopRequest {
        let mut rx = self.stop.subscribe();
        let req = match rx.wait_for(Option::is_some).await {
            Ok(r) => *r,
            Err(_) => None,
        };
        req.unwrap_or(StopRequest {
            graceful: true,
            grace: Duration::from_secs(1),
        })
    }

    /// Waits for a forced stop request.
    pub(super) async fn force_requested(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| s.is_some_and(|r| !r.graceful)).await;
    }

    pub(super) fn status(&self) -> NodeStatus {
        let snap = self
            .service
            .get()
            .map(Service::snapshot)
            .unwrap_or_default();
        let capacity = self.capacity.get();
        NodeStatus {
            pid: std::process::id(),
            sessions: snap.sessions,
            inflight: snap.inflight,
            calls: snap.calls,
            errors: snap.errors,
            accepted: snap.accepted,
            handshake_failures: snap.handshake_failures,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            handshake_failures_by_reason: snap.handshake_failures_by_reason,
            latency_counts: snap.latency_counts,
            latency_sum_us: snap.latency_sum_us,
            fd_limit: capacity.and_then(|c| c.budget().limit),
            capacity: capacity.and_then(|c| c.budget().capacity()),
            full: capacity.is_some_and(|c| c.is_full()),
            cancelled: snap.cancelled,
        }
    }
}

/// The node's control object (its gateway on the control link).
pub(super) fn control_object(state: Arc<NodeState>) -> Arc<dyn Object> {
    Published::with_state("VoleNode", state)
        .doc("vole node control object")
        .method(
            "grant",
            "grant(n): accept up to n more connections.",
            |s: Arc<Arc<NodeState>>, (n,): (u32,)| async move {
                // Bounded so a confused controller cannot overflow the semaphore.
                s.grants.add_permits(n.min(1 << 16) as usize);
                Ok::<_, CallError>(())
            },
        )
        .method(
            "stop",
            "stop(graceful, grace_ms): stop accepting, drain links, exit.",
            |s: Arc<Arc<NodeState>>, (graceful, grace_ms): (bool, u64)| async move {
                s.request_stop(StopRequest {
                    graceful,
                    grace: Duration::from_millis(grace_ms),
                });
                Ok::<_, CallError>(())
            },
        )
        .method(
            "status",
            "The node's counters.",
            |s: Arc<Arc<NodeState>>, (): ()| async move { Ok::<_, CallError>(s.status()) },
        )
        .method(
            "ticket_keys",
            "ticket_keys(json): new TLS session-ticket keys.",
            |s: Arc<Arc<NodeState>>, (json,): (String,)| async move {
                let keys: TicketKeys = serde_json::from_str(&json)
                    .map_err(|e| CallError::failed(format!("ticket keys: {e}")))?;
                if !keys.install(&s.ticketer) {
                    return Err(CallError::failed("malformed ticket keys"));
                }
                tracing::debug!("ticket keys rotated");
                Ok(())
            },
        )
        .method(
            "not_ready",
            "not_ready(): a shutdown delay began: meta.health() answers DRAINING.",
            |s: Arc<Arc<NodeState>>, (): ()| async move {
                s.not_ready.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(service) = s.service.get() {
                    service.set_not_ready();
                }
                Ok::<_, CallError>(())
            },
        )
        .method(
            "ping",
            "Heartbeat: answers the pid.",
            |_s: Arc<Arc<NodeState>>, (): ()| async move { Ok::<_, CallError>(std::process::id()) },
        )
        .into_object()
}

/// Connections opened and closed that the controller has not been told
/// about yet, and when to tell it.
///
/// Reports are coalesced: the first connection event after a report wakes
/// the reporter, which waits [`Balance::report_delay`] for more before it
/// sends one `sessions(opened, closed)` for all of them, so a burst of
/// connections costs one control message, not one each (each message wakes
/// the controller, a context switch on a shared core). A `grant` node that
/// has used its last grant asks for an immediate report
/// ([`Reports::flush_now`]): the controller grants again on reports.
#[derive(Default)]
pub(super) struct Reports {
    pub(super) opened: AtomicU64,
    pub(super) closed: AtomicU64,
    /// The reporter has been woken for the counts gathering now.
    pub(super) pending: AtomicBool,
    /// Report without waiting.
    pub(super) urgent: AtomicBool,
    pub(super) wake: Notify,
}

impl Reports {
    pub(super) fn poke(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Reports what is counted at once, without the coalescing delay.
    pub(super) fn flush_now(&self) {
        self.urgent.store(true, Ordering::SeqCst);
        self.pending.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Waits until a report is due and takes its counts.
    pub(super) async fn next(&self, delay: Duration) -> (u64, u64) {
        loop {
            self.wake.notified().await;
            let deadline = tokio::time::Instant::now() + delay;
            while !self.urgent.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = self.wake.notified() => {}
                }
            }
            // Cleared before the counts are taken: an event counted after
            // this wakes the reporter again.
            self.urgent.store(false, Ordering::SeqCst);
            self.pending.store(false, Ordering::SeqCst);
            let opened = self.opened.swap(0, Ordering::SeqCst);
            let closed = self.closed.swap(0, Ordering::SeqCst);
            if opened != 0 || closed != 0 {
                return (opened, closed);
            }
        }
    }
}

impl SessionObserver for Reports {
    fn opened(&self) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.poke();
    }

    fn closed(&self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
        self.poke();
    }
}

/// Sends the controller coalesced `sessions(opened, closed)` reports, off
/// the accept path.
pub(super) async fn report_sessions(
    reports: Arc<Reports>,
    controller: RemoteObject,
    delay: Duration,
) {
    loop {
        let (opened, closed) = reports.next(delay).await;
        if controller
            .call_oneway("sessions", (opened, closed))
            .await
            .is_err()
        {
            return; // control link gone; the main task notices too
        }
    }
}
