//! [`Link`]: the handle to a running link, shared by the driver task, every
//! proxy and the application.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::calls::Calls;
use crate::object::LinkInfo;

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// A new process-unique link id.
pub(crate) fn next_link_id() -> u64 {
    NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed)
}

/// State shared by the driver, the [`Link`] handles and every proxy.
pub(crate) struct LinkShared {
    pub(crate) id: u64,
    pub(crate) info: Arc<LinkInfo>,
    /// Calls made through the link's proxies, and their outcomes.
    pub(crate) calls: Calls,
    pub(crate) deref_tx: mpsc::UnboundedSender<i64>,
    /// Cancelled to close the link at once.
    pub(crate) abort: CancellationToken,
    /// `Some(reason)` once the link has closed.
    pub(crate) closed: watch::Sender<Option<Arc<str>>>,
    pub(crate) stats: LinkStats,
}

impl LinkStats {
    /// Calls from the peer running now.
    pub fn inflight(&self) -> u64 {
        let done = self.completed_in.load(Ordering::Relaxed);
        self.calls_in.load(Ordering::Relaxed).saturating_sub(done)
    }
}

/// Counters of one link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Calls received from the peer.
    pub calls_in: AtomicU64,
    /// Calls received from the peer that have finished.
    pub completed_in: AtomicU64,
    /// Calls received from the peer that ended in an exception or error.
    pub errors_in: AtomicU64,
    /// Calls made to the peer.
    pub calls_out: AtomicU64,
}

/// A handle to a running link. Cheap to clone.
///
/// Dropping handles does not close the link: a link lives while either side
/// holds references to the other's objects (or until it is closed).
#[derive(Clone)]
pub struct Link {
    shared: Arc<LinkShared>,
}

impl Link {
    pub(crate) fn from_shared(shared: Arc<LinkShared>) -> Self {
        Link { shared }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<LinkShared> {
        &self.shared
    }

    /// The process-unique id of this link.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// What is known about the connection.
    pub fn info(&self) -> &LinkInfo {
        &self.shared.info
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.shared.stats
    }

    /// Whether the link has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Closes gracefully: calls from the peer are refused from now on,
    /// calls already running finish and their results are sent, calls this
    /// side made get their results, then the connection is closed. After the
    /// link's grace period the close is forced. Returns when closed.
    pub async fn close(&self) {
        // If the driver is gone the link is already closed.
        self.shared.calls.request_drain();
        self.closed().await;
    }

    /// Closes at once: every pending call fails with [`Error::Closed`].
    pub fn abort(&self) {
        self.shared.abort.cancel();
    }

    /// Waits until the link has closed and returns why.
    pub async fn closed(&self) -> Arc<str> {
        let mut rx = self.shared.closed.subscribe();
        let result = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_else(|| Arc::from("closed")),
            // The sender lives in `shared`, which we hold: cannot happen.
            Err(_) => Arc::from("closed"),
        };
        result
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.shared.id)
            .field("peer", &self.shared.info.peer_addr)
            .finish()
    }
}
