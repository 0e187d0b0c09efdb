//! What the core remembers about each node slot and about the operation
//! in progress.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::event::{NodeKey, RequestId};
use crate::balance::NodeId;

/// Where a slot's node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started; not serving yet.
    Starting,
    /// Serving (it said `ready` and its control link is up).
    Serving,
    /// Dead; waiting out the restart backoff.
    Backoff,
    /// Dead and not coming back (stopping).
    Exited,
}

/// One node slot and the process currently in it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: NodeId,
    /// The current process's generation (0: none started yet).
    pub(crate) gen: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) phase: Phase,
    pub(crate) started_at: Instant,
    /// Restarts of this slot.
    pub(crate) restarts: u32,
    /// The control link is up (and the node not dead).
    pub(crate) linked: bool,
    pub(crate) said_ready: bool,
    /// Whether this generation's death has been handled.
    pub(crate) dead: bool,
    /// Whether the restart decision for this generation was made.
    pub(crate) decided: bool,
    /// Whether this generation's process has been reaped (or never ran).
    pub(crate) reaped: bool,
    pub(crate) exit_code: Option<i32>,
    /// Being removed (scaled down or replaced by a reload): not restarted.
    pub(crate) retiring: bool,
}

impl Slot {
    pub(crate) fn new(id: NodeId, now: Instant) -> Self {
        Slot {
            id,
            gen: 0,
            pid: None,
            phase: Phase::Starting,
            started_at: now,
            restarts: 0,
            linked: false,
            said_ready: false,
            dead: false,
            decided: false,
            reaped: true,
            exit_code: None,
            retiring: false,
        }
    }

    /// The state `status` shows, given the service's stop in progress:
    /// `retiring` for a node being removed by a reload or a scale-down
    /// (told to finish its links and exit, not replaced), `draining` for a
    /// node of a service stopping gracefully (told to finish its links and
    /// exit), `stopping` when the stop is forced.
    pub(crate) fn state_name(&self, stop: Option<&StopState>) -> &'static str {
        match (self.phase, stop) {
            (Phase::Starting | Phase::Serving, Some(s)) if s.force => "stopping",
            (Phase::Serving, Some(_)) => "draining",
            (Phase::Starting | Phase::Serving, None) if self.retiring => "retiring",
            (Phase::Starting, _) => "starting",
            (Phase::Serving, None) => "serving",
            (Phase::Backoff, _) => "restarting",
            (Phase::Exited, _) => "exited",
        }
    }

    pub(crate) fn key(&self) -> NodeKey {
        NodeKey {
            id: self.id,
            gen: self.gen,
        }
    }
}

/// A stop in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopState {
    pub(crate) force: bool,
    pub(crate) grace: Duration,
    /// The deadline passed: whatever still runs is killed.
    pub(crate) overdue: bool,
}

/// A rolling replacement in progress.
#[derive(Debug, Default)]
pub(crate) struct ReloadState {
    /// Waiting for the reload hook's configuration.
    pub(crate) reading: bool,
    /// Old nodes still to replace.
    pub(crate) queue: VecDeque<NodeId>,
    /// The old node being replaced and its new replacement.
    pub(crate) current: Option<(NodeId, NodeId)>,
    /// Requests answered when it ends.
    pub(crate) replies: Vec<RequestId>,
    /// The slots that served when it began (to check that every one is
    /// replaced).
    pub(crate) old: Vec<NodeId>,
    /// The configuration before the reload, put back if a replacement
    /// ends before it serves.
    pub(crate) previous: Option<Box<crate::config::ControllerConfig>>,
}

/// A binary upgrade in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// The hook is starting the new controller.
    Starting {
        /// The request that asked, answered once the hook has.
        req: Option<RequestId>,
    },
    /// The new controller runs; waiting for it to serve.
    Waiting {
        /// Its pid.
        pid: u32,
        /// The request that asked, answered when the upgrade ends (the
        /// new controller serves, fails, exits or times out).
        req: Option<RequestId>,
    },
}

/// A not-ready period before a drain, in progress.
#[derive(Debug)]
pub(crate) struct NotReady {
    /// `vole drain` requests, answered when the drain begins.
    pub(crate) replies: Vec<RequestId>,
}
