//! What goes into the [`SupervisorCore`](super::SupervisorCore) (events) and
//! what comes out of it (commands), and the small types both name.

use std::time::{Duration, Instant};

use vole_control::control::{NodeConfig, TicketKeys};
use vole_transport::tickets::TicketKey;

use crate::admin::{AdminRequest, AdminResponse, NodeReport};
use crate::balance::{Handoff, NodeId};
use crate::config::ControllerConfig;
use crate::lifecycle::{Lifecycle, Outcome};
use crate::spawn::NodeCommand;

/// One process of one node slot: the slot's id and the generation (unique
/// over all slots) of the process started in it. Events about an old
/// generation are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// The slot.
    pub id: NodeId,
    /// The process started in it.
    pub gen: u64,
}

/// An admin request waiting for its answer ([`Command::Reply`]); the driver
/// chooses the numbers.
pub type RequestId = u64;

/// The signals the controller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// Stop gracefully; a second one forces.
    Term,
    /// Stop now.
    Int,
    /// Stop now.
    Quit,
    /// Reload.
    Hup,
    /// Reopen logs.
    Usr1,
    /// Binary upgrade.
    Usr2,
    /// One node more.
    Ttin,
    /// One node fewer.
    Ttou,
}

/// Why a node is considered dead before its process is reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeathCause {
    /// It did not answer a heartbeat in time: hung (killed at once).
    Hung,
    /// Its control link closed or could not be set up.
    Link(String),
    /// Its sockets could not be prepared or handed over (killed at once).
    Handoff(String),
    /// Its process could not be started.
    Spawn(String),
    /// Its dispatcher could not pass it connections.
    Dispatch,
}

impl std::fmt::Display for DeathCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeathCause::Hung => f.write_str("no heartbeat answer in time (hung)"),
            DeathCause::Link(why) => write!(f, "control link: {why}"),
            DeathCause::Handoff(why) => write!(f, "socket handoff failed: {why}"),
            DeathCause::Spawn(why) => write!(f, "could not start: {why}"),
            DeathCause::Dispatch => f.write_str("cannot pass connections to it"),
        }
    }
}

/// A moment the core asked to be woken at ([`Command::Timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A slot's restart backoff is over.
    RestartDue(NodeKey),
    /// A node whose control link closed had [`EXIT_GRACE`](super::EXIT_GRACE)
    /// to exit by itself.
    KillIfAlive(NodeKey),
    /// The stop's deadline (grace + [`STOP_MARGIN`](super::STOP_MARGIN)).
    StopDeadline,
    /// A retired node's deadline (grace + [`STOP_MARGIN`](super::STOP_MARGIN)
    /// after it was told to stop).
    RetireDeadline(NodeKey),
    /// A binary upgrade's new controller had
    /// [`UPGRADE_TIMEOUT`](super::UPGRADE_TIMEOUT) to serve.
    UpgradeDeadline {
        /// The new controller.
        pid: u32,
    },
    /// A node holding grants may be stuck (`grant` mode): ask it whether
    /// it answers (see [`crate::balance`]).
    Probe,
    /// A reload's external replacement has run for
    /// [`EXTERNAL_SETTLE`](super::EXTERNAL_SETTLE): the reload goes on.
    ReloadSettled,
    /// The not-ready period before a drain (`shutdown_delay`) is over.
    ShutdownDelay,
}

/// A new TLS ticket key (made by the driver: it needs the OS's random
/// numbers).
#[derive(Clone)]
pub struct NewTicketKey(pub TicketKey);

impl std::fmt::Debug for NewTicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewTicketKey(..)")
    }
}

/// What happened, as the driver tells the core. `C` is a connection (an
/// `OwnedFd` in the driver, a number in tests).
#[derive(Debug)]
pub enum Event<C> {
    /// The process of [`Command::Spawn`] started.
    Spawned {
        /// Which.
        node: NodeKey,
        /// Its pid.
        pid: u32,
    },
    /// The control link to a node is up.
    LinkUp(NodeKey),
    /// The node said it serves.
    Ready(NodeKey),
    /// The answer to [`Command::Probe`]: the node answered in time
    /// (`alive`) or did not.
    Probed {
        /// Which.
        node: NodeKey,
        /// Answered in time.
        alive: bool,
    },
    /// The node reports connections opened and closed since its last report.
    Sessions {
        /// Which.
        node: NodeKey,
        /// Opened.
        opened: u64,
        /// Closed.
        closed: u64,
    },
    /// The node says how many connections it can hold at once (its
    /// descriptor limit).
    Capacity {
        /// Which.
        node: NodeKey,
        /// Connections.
        connections: u64,
    },
    /// The node is dead (or must be) although its process may still run.
    Died {
        /// Which.
        node: NodeKey,
        /// Why.
        cause: DeathCause,
    },
    /// The node's process was reaped.
    Exited {
        /// Which.
        node: NodeKey,
        /// Exit code.
        code: Option<i32>,
        /// Terminating signal.
        signal: Option<i32>,
    },
    /// A timer the core asked for is due.
    Timer(Timer),
    /// Connections accepted in `dispatch` mode.
    Connections(Vec<C>),
    /// Connections dispatched to a node that it never received (it died,
    /// or its dispatcher could not pass them), in the order accepted.
    Undelivered {
        /// The node they were for.
        node: NodeKey,
        /// The connections.
        conns: Vec<C>,
    },
    /// The driver handled every event waiting now: time to grant and
    /// dispatch (one round of answers for a burst of events).
    BatchDone,
    /// A request on the admin socket.
    Admin {
        /// Answer with this id.
        req: RequestId,
        /// The request.
        request: AdminRequest,
    },
    /// A signal.
    Signal(Sig),
    /// Time to replace the TLS ticket key: here is a new one.
    RotateTickets(NewTicketKey),
    /// The reload hook's answer to [`Command::ReadConfig`].
    ConfigRead(Result<Box<ControllerConfig>, String>),
    /// The log-reopen hook's answer to [`Command::ReopenLogs`].
    LogsReopened {
        /// The request that asked, if any.
        req: Option<RequestId>,
        /// What happened.
        result: Result<(), String>,
    },
    /// The upgrade hook's answer to [`Command::StartUpgrade`]: the new
    /// controller's pid.
    UpgradeStarted(Result<u32, String>),
    /// The new controller of an upgrade serves (or failed to).
    UpgradeDone {
        /// Its pid.
        pid: u32,
        /// Whether it serves.
        result: Result<(), String>,
    },
}

/// What the core asks the driver to do, in order.
#[derive(Debug)]
pub enum Command<C> {
    /// Start a node process and its control link (and, for
    /// [`Handoff::Dispatch`], its dispatcher); answer with
    /// [`Event::Spawned`] or [`Event::Died`] ([`DeathCause::Spawn`]).
    Spawn {
        /// Which.
        node: NodeKey,
        /// The process to start.
        command: NodeCommand,
        /// What the node gets when it says `hello`.
        config: Box<NodeConfig>,
        /// Which sockets it gets.
        handoff: Handoff,
    },
    /// Send SIGKILL.
    Kill {
        /// The process.
        pid: u32,
    },
    /// The node is dead: drop its control link, heartbeat and dispatcher
    /// (which hands back what the node never received).
    Release(NodeKey),
    /// Ping the node at `interval`; report [`DeathCause::Hung`] if an
    /// answer takes longer than `timeout`.
    StartHeartbeat {
        /// Which.
        node: NodeKey,
        /// Ping period.
        interval: Duration,
        /// Answer deadline.
        timeout: Duration,
    },
    /// Let the node accept `n` more connections (`grant` mode).
    Grant {
        /// Which.
        node: NodeKey,
        /// How many.
        n: u32,
    },
    /// Tell the node a shutdown delay began (`meta.health()` answers
    /// `DRAINING` on its links).
    NotReady {
        /// Which.
        node: NodeKey,
    },
    /// Ask the node whether it answers within `timeout` (it holds grants
    /// and may be stuck); answer with [`Event::Probed`].
    Probe {
        /// Which.
        node: NodeKey,
        /// How long it has.
        timeout: Duration,
    },
    /// Ask the node to stop.
    Stop {
        /// Which.
        node: NodeKey,
        /// Drain (true) or close every link at once.
        graceful: bool,
        /// How long a drain may take.
        grace: Duration,
    },
    /// Send the TLS ticket keys to the node.
    TicketKeys {
        /// Which.
        node: NodeKey,
        /// The keys.
        keys: TicketKeys,
    },
    /// Pass a connection to the node (`dispatch` mode); if its dispatcher
    /// is gone, answer with [`Event::Undelivered`].
    Dispatch {
        /// Which.
        node: NodeKey,
        /// The connection.
        conn: C,
    },
    /// Close connections no node will take.
    Close {
        /// The connections.
        conns: Vec<C>,
        /// Why (for the log).
        why: &'static str,
    },
    /// Send [`Event::Timer`] at `at`.
    Timer {
        /// When.
        at: Instant,
        /// What.
        timer: Timer,
    },
    /// Tell the init system (and, for [`Lifecycle::Ready`], the `on_ready`
    /// hook).
    Notify(Lifecycle),
    /// Answer an admin request.
    Reply {
        /// Which.
        req: RequestId,
        /// The answer.
        response: AdminResponse,
    },
    /// Answer a `status` request: ask each listed node for its counters
    /// (within a deadline, off the event loop) and fill them in.
    GatherStatus {
        /// Which request.
        req: RequestId,
        /// How long the controller has run.
        uptime: Duration,
        /// Every node, with the process to ask if it has a control link.
        nodes: Vec<(NodeReport, Option<NodeKey>)>,
    },
    /// Call the reload hook; answer with [`Event::ConfigRead`].
    ReadConfig,
    /// Call the log-reopen hook; answer with [`Event::LogsReopened`].
    ReopenLogs {
        /// The request that asked, if any.
        req: Option<RequestId>,
    },
    /// Call the upgrade hook; answer with [`Event::UpgradeStarted`], then
    /// [`Event::UpgradeDone`] once the new controller serves or fails.
    StartUpgrade,
    /// Leave the admin socket's file in place on exit (a new controller
    /// owns it now).
    KeepAdminSocket,
    /// Stop accepting connections for good (`dispatch` mode: the
    /// controller's own accepts; nothing in other modes, where nodes accept
    /// and are told by [`Command::Stop`]). Connections not yet accepted
    /// stay in the listening socket's queue for whoever accepts next (the
    /// new controller of an upgrade), or are refused when it closes. No
    /// [`Event::Connections`] follows. Given once, at the start of a stop,
    /// before any [`Command::Stop`].
    StopAccepting,
    /// Stop answering the admin socket (a binary upgrade's new controller
    /// serves it now): end the task that accepts on it, without removing
    /// its file ([`Command::KeepAdminSocket`] comes first). Requests
    /// already received are still answered.
    ReleaseAdmin,
    /// Every node is gone: the controller ends with this outcome.
    Finish(Outcome),
}
