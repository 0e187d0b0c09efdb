//! [`Link`]: the handle to a running link, shared by the driver task, every
//! proxy and the application.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::info::LinkInfo;
use crate::model::Shared;
use crate::shared::{LinkStats, Signals};

/// A handle to a running link. Cheap to clone.
///
/// Dropping handles does not close the link: a link lives while either side
/// holds references to the other's objects (or until it is closed).
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Link { shared }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
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
        self.shared.signals.closed_reason().is_some()
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

    /// Closes at once: every pending call fails, with
    /// [`Error::Interrupted`](crate::Error::Interrupted) if it was sent (it
    /// may have run) or [`Error::Closed`](crate::Error::Closed) if not.
    pub fn abort(&self) {
        self.shared.signals.abort();
    }

    /// Waits until the link has closed and returns why.
    pub async fn closed(&self) -> Arc<str> {
        ClosedWait {
            signals: &self.shared.signals,
            key: None,
        }
        .await
    }
}

/// The future of [`Link::closed`]: its waker is kept in the link's signals
/// while it waits, and forgotten when it is dropped.
struct ClosedWait<'a> {
    signals: &'a Signals,
    key: Option<usize>,
}

impl Future for ClosedWait<'_> {
    type Output = Arc<str>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Arc<str>> {
        let this = self.get_mut();
        this.signals.poll_closed(cx, &mut this.key)
    }
}

impl Drop for ClosedWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.signals.forget_waiter(key);
        }
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
