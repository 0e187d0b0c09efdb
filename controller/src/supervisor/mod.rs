//! The controller's runtime: one task that owns every node's state and
//! reacts to events, plus small tasks per node that run its process, its
//! control link, its heartbeat and (in `dispatch` mode) the hand-over of
//! connections.
//!
//! A node's death is seen three ways, whichever comes first: its control
//! link closes (EOF), its process exits (tokio reaps it through SIGCHLD), or
//! its heartbeat goes unanswered (a hung or stopped process, which is then
//! killed). Each death is handled once per process: its grants and counts
//! are dropped from the balancer at once, connections handed to it but not
//! yet taken go to another node, and a replacement is started after the
//! restart policy's backoff, unless the restart intensity says to give up.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use vole_control::control::{
    Balance, NodeConfig, NodeStatus, TicketKeys, EXIT_CONFIG, HANDOFF_DISPATCH, HANDOFF_LISTENERS,
};
use vole_control::fdpass;
use vole_control::quiet::QuietStream;
use vole_link::publish::Published;
use vole_link::{CallError, Link, LinkConfig, LinkInfo, LinkSetup, Object, RemoteObject};
use vole_transport::tickets::TicketKey;

use crate::admin::{
    AdminHandler, AdminRequest, AdminResponse, AdminSocket, NodeReport, StatusReport,
};
use crate::balance::{Balancer, Limits, NodeId};
use crate::restart::{Decision, RestartPolicy, Restarts};
use crate::spawn::{self, Executable, NodeCommand};
use crate::Error;

mod ops;

pub use ops::{Hooks, Lifecycle, UpgradeChild, UpgradeRequest};
use ops::{Op, ReloadState};

/// Everything the controller needs to know.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The hosted service's name: nodes run as `<name>-node-<id>`.
    pub name: String,
    /// Number of node processes.
    pub nodes: u32,
    /// How connections are spread.
    pub balance: Balance,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Listen backlog.
    pub backlog: i32,
    /// Connection limits (`grant` and `dispatch` modes).
    pub limits: Limits,
    /// Restart backoff and intensity.
    pub restart: RestartPolicy,
    /// How often each node is pinged.
    pub heartbeat_interval: Duration,
    /// How long a ping may take before the node is declared hung.
    pub heartbeat_timeout: Duration,
    /// Default grace period of a graceful stop.
    pub grace: Duration,
    /// The configuration every node gets (its `node_id` is filled in).
    pub node: NodeConfig,
    /// Extra arguments for `vole node` (threads, verbosity).
    pub node_args: Vec<String>,
    /// How often the shared TLS ticket key is replaced.
    pub ticket_rotation: Duration,
    /// Run nodes as this user and group (uid, gid).
    pub node_user: Option<(u32, u32)>,
    /// If set, node metrics are polled at this period and recorded through
    /// the `metrics` crate (an exporter must be installed).
    pub metrics_interval: Option<Duration>,
    /// Nodes log JSON lines (`node_args` say `--log-format json`): their
    /// output is forwarded as JSON objects, not with a text prefix.
    pub log_json: bool,
}

/// How the controller ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped and every node drained.
    Stopped,
    /// Stopped, but some nodes had to be forced or killed.
    StoppedUnclean,
    /// Nodes kept dying: more restarts than the intensity allows.
    Escalated {
        /// Restarts in the window.
        restarts: u32,
    },
    /// A node found the configuration unusable.
    ConfigError(String),
    /// A new controller took over (binary upgrade); this one drained and
    /// stepped down. The pid file and admin socket now belong to the new one.
    Upgraded {
        /// The new controller's pid.
        pid: u32,
    },
}

/// The sockets the controller serves, bound before any node starts.
#[derive(Debug)]
pub struct Bound {
    config: ControllerConfig,
    /// Listening sockets (all modes but `reuseport`), or port reservations
    /// (`reuseport`: bound, not listening).
    sockets: Vec<std::net::TcpListener>,
    addrs: Vec<SocketAddr>,
    exe: Executable,
}

impl Bound {
    /// Binds the listening sockets and opens the executable. Errors here
    /// (a port in use, say) happen before any process starts.
    pub fn new(config: ControllerConfig) -> Result<Bound, Error> {
        if config.nodes == 0 {
            return Err(Error::Config(
                "a controller needs at least one node".to_owned(),
            ));
        }
        let mut sockets = Vec::new();
        for addr in &config.listen {
            let s = match config.balance {
                Balance::Reuseport => vole_control::listen::bind_reuseport(*addr, None)?,
                _ => vole_control::listen::bind(*addr, config.backlog)?,
            };
            sockets.push(s);
        }
        let addrs = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Io)?;
        let exe = Executable::open_self().map_err(Error::Io)?;
        Ok(Bound {
            config,
            sockets,
            addrs,
            exe,
        })
    }

    /// Uses listening sockets made elsewhere (inherited from a controller
    /// being upgraded, or from systemd socket activation) instead of
    /// binding. In `reuseport` mode they are the port reservations.
    pub fn from_listeners(
        config: ControllerConfig,
        sockets: Vec<std::net::TcpListener>,
    ) -> Result<Bound, Error> {
        if config.nodes == 0 {
            return Err(Error::Config(
                "a controller needs at least one node".to_owned(),
            ));
        }
        if sockets.is_empty() {
            return Err(Error::Config("no listening socket".to_owned()));
        }
        for s in &sockets {
            s.set_nonblocking(true).map_err(Error::Io)?;
        }
        let addrs = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Io)?;
        let exe = Executable::open_self().map_err(Error::Io)?;
        Ok(Bound {
            config,
            sockets,
            addrs,
            exe,
        })
    }

    /// The listening sockets (or reservations), to hand to a new controller.
    pub fn sockets(&self) -> &[std::net::TcpListener] {
        &self.sockets
    }

    /// The addresses actually bound (ports filled in).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Runs the nodes until stopped. `on_ready` is called once every node
    /// serves for the first time. The calling process's threads are put
    /// under `SCHED_BATCH`, its nodes under `SCHED_OTHER` (see [`crate::sched`]).
    pub async fn run(self, admin: Option<AdminSocket>, mut hooks: Hooks) -> Result<Outcome, Error> {
        crate::sched::yield_to_nodes();
        let (tx, rx) = mpsc::unbounded_channel();
        let seed =
            u64::from(std::process::id()) ^ Instant::now().elapsed().as_nanos() as u64 ^ 0x5eed;
        let mut sup = Supervisor {
            balancer: Balancer::new(self.config.balance, self.config.limits),
            restarts: Restarts::new(self.config.restart, seed),
            slots: BTreeMap::new(),
            next_gen: 1,
            tx: tx.clone(),
            stopping: None,
            outcome: None,
            queued: VecDeque::new(),
            rebalance: false,
            on_ready: hooks.on_ready.take(),
            ever_ready: false,
            started: Instant::now(),
            ticket_keys: Vec::new(),
            next_id: self.config.nodes,
            reload: None,
            upgrading: false,
            admin_fd: admin.as_ref().and_then(|a| a.listener_fd().ok()),
            admin_keep: admin.as_ref().map(|a| a.keep_handle()),
            hooks,
            metrics: crate::metrics::Recorder::default(),
            bound: self,
        };
        let admin_task = admin.map(|sock| {
            let handler: Arc<dyn AdminHandler> = Arc::new(AdminBridge { tx: tx.clone() });
            tokio::spawn(async move { sock.serve(handler).await })
        });
        sup.rotate_tickets();
        let rotation = sup.bound.config.ticket_rotation.max(Duration::from_secs(1));
        let rotate_tx = tx.clone();
        let rotate_task = tokio::spawn(async move {
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + rotation, rotation);
            loop {
                every.tick().await;
                if rotate_tx.send(Event::RotateTickets).is_err() {
                    return;
                }
            }
        });
        for id in 0..sup.bound.config.nodes {
            sup.slots.insert(id, Slot::new(id));
            sup.start_node(id);
        }
        // The event loop runs as a task, not on the thread that called
        // `run` (`block_on`'s thread in `vole serve`): every event comes
        // from a task on the runtime's workers (control links, accepts),
        // and a loop on another thread costs a futex wake and a context
        // switch per event, and another to spawn each reply back.
        let outcome = match tokio::spawn(async move { sup.event_loop(rx).await }).await {
            Ok(outcome) => outcome,
            Err(e) => {
                return Err(Error::Io(std::io::Error::other(format!(
                    "the controller's event loop failed: {e}"
                ))))
            }
        };
        rotate_task.abort();
        if let Some(t) = admin_task {
            t.abort();
            let _ = t.await; // drops the socket, removing its file
        }
        Ok(outcome)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    Backoff,
    Exited,
}

impl Phase {
    fn name(self, stopping: bool) -> &'static str {
        match (self, stopping) {
            (Phase::Starting, _) => "starting",
            (Phase::Serving, false) => "serving",
            (Phase::Serving, true) => "stopping",
            (Phase::Backoff, _) => "restarting",
            (Phase::Exited, _) => "exited",
        }
    }
}

#[derive(Debug)]
struct Slot {
    id: NodeId,
    gen: u64,
    pid: Option<u32>,
    phase: Phase,
    started_at: Instant,
    restarts: u32,
    control: Option<RemoteObject>,
    link: Option<Link>,
    said_ready: bool,
    /// Where connections for this node go, in `dispatch` mode; dropped when
    /// the node dies, which tells its dispatcher.
    dispatch: Option<DispatchHandle>,
    /// Whether this generation's death has been handled.
    dead: bool,
    /// Whether the restart decision for this generation was made.
    decided: bool,
    /// Whether this generation's process has been reaped.
    reaped: bool,
    exit_code: Option<i32>,
    /// Being removed (scaled down or replaced by a reload): not restarted.
    retiring: bool,
}

impl Slot {
    fn new(id: NodeId) -> Self {
        Slot {
            id,
            gen: 0,
            pid: None,
            phase: Phase::Starting,
            started_at: Instant::now(),
            restarts: 0,
            control: None,
            link: None,
            said_ready: false,
            dispatch: None,
            dead: false,
            decided: false,
            reaped: true,
            exit_code: None,
            retiring: false,
        }
    }
}

enum Event {
    LinkUp {
        id: NodeId,
        gen: u64,
        control: RemoteObject,
        link: Link,
    },
    Ready {
        id: NodeId,
        gen: u64,
    },
    Sessions {
        id: NodeId,
        gen: u64,
        opened: u64,
        closed: u64,
    },
    Died {
        id: NodeId,
        gen: u64,
        why: String,
    },
    Exited {
        id: NodeId,
        gen: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    RestartDue {
        id: NodeId,
    },
    /// Connections accepted in `dispatch` mode (all that were waiting).
    Connections(Vec<OwnedFd>),
    /// A signal the controller acts on.
    Signal(Sig),
    Undelivered {
        id: NodeId,
        fds: Vec<OwnedFd>,
    },
    Admin(AdminRequest, oneshot::Sender<AdminResponse>),
    StopTimeout,
    KillIfAlive {
        id: NodeId,
        gen: u64,
    },
    RotateTickets,
    Metrics(Vec<(NodeId, NodeStatus)>),
    UpgradeDone {
        pid: u32,
        result: Result<(), String>,
    },
}

struct StopState {
    force: bool,
    grace: Duration,
}

struct Supervisor {
    bound: Bound,
    balancer: Balancer,
    restarts: Restarts,
    slots: BTreeMap<NodeId, Slot>,
    next_gen: u64,
    tx: mpsc::UnboundedSender<Event>,
    stopping: Option<StopState>,
    outcome: Option<Outcome>,
    queued: VecDeque<OwnedFd>,
    /// Reports or connections arrived: grant or dispatch once the events
    /// waiting now are handled.
    rebalance: bool,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
    ever_ready: bool,
    started: Instant,
    /// TLS ticket keys, newest first.
    ticket_keys: Vec<TicketKey>,
    /// The next id for a node added by scaling or reloading.
    next_id: NodeId,
    /// A rolling replacement in progress.
    reload: Option<ReloadState>,
    /// A binary upgrade in progress.
    upgrading: bool,
    /// The admin socket, for a binary upgrade to inherit.
    admin_fd: Option<OwnedFd>,
    /// Set to keep the admin socket file when this controller exits after
    /// an upgrade.
    admin_keep: Option<Arc<std::sync::atomic::AtomicBool>>,
    hooks: Hooks,
    metrics: crate::metrics::Recorder,
}

/// How long a node whose control link closed may take to exit by itself.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Connections waiting for a node in `dispatch` mode, at most.
const MAX_QUEUED: usize = 4096;

/// Events handled at most per wake-up of the event loop before it grants
/// and dispatches (and looks at signals again).
const EVENT_BATCH: usize = 256;

/// Connections accepted at most per wake-up in `dispatch` mode.
const ACCEPT_BATCH: usize = 64;

impl Supervisor {
    fn config(&self) -> &ControllerConfig {
        &self.bound.config
    }

    async fn event_loop(&mut self, mut rx: mpsc::UnboundedReceiver<Event>) -> Outcome {
        // Signals wait in a task of their own: eight receivers polled (and
        // their waiters re-registered) on every wake-up of this loop would
        // be paid per batch of connections in `dispatch` mode.
        let signals = tokio::spawn(forward_signals(self.tx.clone()));
        // In `dispatch` mode connections are accepted here, not in a task
        // that hands them over: one task woken per batch, not two.
        let acceptors = self.dispatch_acceptors();
        let mut accepted: Vec<std::net::TcpStream> = Vec::new();
        let mut accept_pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut watchdog = self.hooks.watchdog.map(tokio::time::interval);
        let mut metrics_tick = self.config().metrics_interval.map(tokio::time::interval);
        loop {
            if self.stopping.is_some()
                && self
                    .slots
                    .values()
                    .all(|s| s.phase == Phase::Exited && s.reaped)
            {
                break;
            }
            let accepting = !acceptors.is_empty() && accept_pause.is_none();
            tokio::select! {
                Some(ev) = rx.recv() => {
                    self.handle(ev);
                    self.handle_waiting(&mut rx);
                }
                got = std::future::poll_fn(|cx| poll_accept_any(&acceptors, cx, &mut accepted)), if accepting => {
                    match got {
                        Ok(()) => {
                            let fds = accepted.drain(..).map(OwnedFd::from).collect();
                            self.handle(Event::Connections(fds));
                            self.handle_waiting(&mut rx);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                            accept_pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                        }
                    }
                }
                _ = async { match &mut accept_pause { Some(p) => p.as_mut().await, None => std::future::pending().await } } => {
                    accept_pause = None;
                }
                _ = async { match &mut metrics_tick { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                    self.gather_metrics();
                }
                _ = async { match &mut watchdog { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                    (self.hooks.notify)(Lifecycle::Watchdog);
                }
            }
        }
        signals.abort();
        let clean = self.slots.values().all(|s| s.exit_code == Some(0));
        match self.outcome.take() {
            Some(o) => o,
            None if clean => Outcome::Stopped,
            None => Outcome::StoppedUnclean,
        }
    }

    /// Takes what else is waiting before granting or dispatching, so
    /// reports from several nodes, or a burst of connections, get one round
    /// of answers.
    fn handle_waiting(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>) {
        for _ in 0..EVENT_BATCH {
            match rx.try_recv() {
                Ok(ev) => self.handle(ev),
                Err(_) => break,
            }
        }
        if std::mem::take(&mut self.rebalance) {
            self.send_grants();
            self.flush_queue();
        }
    }

    fn os_signal(&mut self, sig: Sig) {
        match sig {
            Sig::Term => self.on_signal("SIGTERM"),
            Sig::Int => self.fast_stop("SIGINT"),
            Sig::Quit => self.fast_stop("SIGQUIT"),
            Sig::Hup => self.op(Op::Reload, None),
            Sig::Usr1 => self.op(Op::ReopenLogs, None),
            Sig::Usr2 => self.op(Op::Upgrade, None),
            Sig::Ttin => self.op(Op::Grow, None),
            Sig::Ttou => self.op(Op::Shrink, None),
        }
    }

    fn on_signal(&mut self, name: &str) {
        match &self.stopping {
            None => {
                tracing::info!(
                    signal = name,
                    "stopping gracefully (a second signal forces)"
                );
                self.begin_stop(false, self.config().grace);
            }
            Some(s) if !s.force => {
                tracing::warn!(signal = name, "second signal: forcing the stop");
                self.begin_stop(true, Duration::ZERO);
            }
            Some(_) => {}
        }
    }

    /// SIGINT, SIGQUIT: stop now, closing links without waiting.
    fn fast_stop(&mut self, name: &str) {
        if self.stopping.as_ref().is_some_and(|s| s.force) {
            return;
        }
        tracing::warn!(signal = name, "fast stop: closing every link now");
        self.begin_stop(true, Duration::ZERO);
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::LinkUp {
                id,
                gen,
                control,
                link,
            } => {
                let stopping = self.stopping.as_ref().map(|s| (s.force, s.grace));
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                slot.control = Some(control.clone());
                slot.link = Some(link);
                if let Some((force, grace)) = stopping {
                    send_stop(&control, force, grace);
                    return;
                }
                let hb = (
                    self.config().heartbeat_interval,
                    self.config().heartbeat_timeout,
                );
                tokio::spawn(heartbeat(self.tx.clone(), id, gen, control, hb.0, hb.1));
                self.maybe_serving(id);
            }
            Event::Ready { id, gen } => {
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                slot.said_ready = true;
                self.maybe_serving(id);
            }
            Event::Sessions {
                id,
                gen,
                opened,
                closed,
            } => {
                if self.current(id, gen).is_none() {
                    return;
                }
                self.balancer.sessions(id, opened, closed);
                self.rebalance = true;
            }
            Event::Died { id, gen, why } => self.node_died(id, gen, &why),
            Event::Exited {
                id,
                gen,
                code,
                signal,
            } => {
                let config_error = code == Some(EXIT_CONFIG) && self.stopping.is_none();
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                slot.reaped = true;
                slot.exit_code = code;
                // A node with an unusable configuration is not restarted: no
                // restart decision for it (that would log a restart and count
                // against the intensity).
                slot.decided |= config_error;
                let why = match (code, signal) {
                    (Some(c), _) => format!("exited with code {c}"),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    _ => "exited".to_owned(),
                };
                if config_error {
                    let msg =
                        format!("node {id} found the configuration unusable (see its log above)");
                    tracing::error!("{msg}; stopping instead of restarting it");
                    self.node_died(id, gen, &why);
                    self.outcome = Some(Outcome::ConfigError(msg));
                    self.begin_stop(false, self.config().grace);
                    return;
                }
                let retiring = slot.retiring;
                if !retiring && (code != Some(0) || self.stopping.is_none()) {
                    tracing::info!(node = id, %why, "node process ended");
                }
                if retiring {
                    self.node_died(id, gen, &why);
                    self.remove_if_retired(id);
                    return;
                }
                self.node_died(id, gen, &why);
                self.decide_restart(id, gen);
                if let Some(slot) = self.slots.get_mut(&id) {
                    if self.stopping.is_some() {
                        slot.phase = Phase::Exited;
                    }
                }
            }
            Event::RestartDue { id } => {
                if self.stopping.is_none()
                    && self
                        .slots
                        .get(&id)
                        .is_some_and(|s| s.phase == Phase::Backoff)
                {
                    self.start_node(id);
                }
            }
            Event::Connections(fds) => {
                if self.stopping.is_some() {
                    return; // dropped: closed
                }
                for fd in fds {
                    if self.queued.len() >= MAX_QUEUED {
                        tracing::warn!("no node can take connections; dropping the newest");
                        break;
                    }
                    self.queued.push_back(fd);
                }
                self.rebalance = true;
            }
            Event::Undelivered { id, fds } => {
                if !fds.is_empty() {
                    tracing::info!(
                        node = id,
                        count = fds.len(),
                        "re-dispatching connections the node never took"
                    );
                }
                for fd in fds.into_iter().rev() {
                    self.queued.push_front(fd);
                }
                self.flush_queue();
            }
            Event::Admin(req, reply) => self.admin(req, reply),
            Event::Signal(sig) => self.os_signal(sig),
            Event::RotateTickets => self.rotate_tickets(),
            Event::Metrics(statuses) => {
                for (id, status) in &statuses {
                    let restarts = self.slots.get(id).map_or(0, |s| s.restarts);
                    self.metrics.node(*id, status, restarts);
                }
                let alive: std::collections::HashSet<NodeId> = self.slots.keys().copied().collect();
                self.metrics.retain(|id| alive.contains(&id));
                metrics::gauge!("vole_nodes").set(self.active_serving() as f64);
            }
            Event::UpgradeDone { pid, result } => self.upgrade_done(pid, result),
            Event::KillIfAlive { id, gen } => {
                if let Some(slot) = self.current(id, gen) {
                    if let (false, Some(pid)) = (slot.reaped, slot.pid) {
                        tracing::warn!(
                            node = id,
                            pid,
                            "node did not exit after its control link closed; killing it"
                        );
                        spawn::kill(pid);
                    }
                }
            }
            Event::StopTimeout => {
                for slot in self.slots.values() {
                    if !slot.reaped {
                        if let Some(pid) = slot.pid {
                            tracing::warn!(
                                node = slot.id,
                                pid,
                                "node did not stop in time; killing it"
                            );
                            spawn::kill(pid);
                        }
                    }
                }
            }
        }
    }

    /// Replaces the shared ticket key (keeping the previous ones for tickets
    /// issued before) and hands the keys to every node.
    fn rotate_tickets(&mut self) {
        if self.bound.config.node.tls.is_none() {
            return;
        }
        let key = match TicketKey::generate() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot generate a ticket key; keeping the old one");
                return;
            }
        };
        self.ticket_keys.insert(0, key);
        self.ticket_keys.truncate(3);
        let keys = TicketKeys::new(&self.ticket_keys[0], &self.ticket_keys[1..]);
        let json = serde_json::to_string(&keys).unwrap_or_default();
        self.bound.config.node.tickets = Some(keys);
        for slot in self.slots.values() {
            if let Some(control) = slot.control.clone() {
                let json = json.clone();
                tokio::spawn(async move {
                    let _ = control.call_oneway("ticket_keys", (json,)).await;
                });
            }
        }
        tracing::debug!("tls ticket key rotated");
    }

    /// Serving nodes.
    fn active_serving(&self) -> usize {
        self.slots
            .values()
            .filter(|s| s.phase == Phase::Serving && !s.retiring)
            .count()
    }

    /// Polls every node's status off the event loop and records it.
    fn gather_metrics(&self) {
        let controls: Vec<(NodeId, RemoteObject)> = self
            .slots
            .values()
            .filter_map(|s| s.control.clone().map(|c| (s.id, c)))
            .collect();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let polls = controls.into_iter().map(|(id, c)| async move {
                let status = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.call_as::<NodeStatus>("status", ()),
                )
                .await;
                status.ok().and_then(Result::ok).map(|s| (id, s))
            });
            let statuses: Vec<(NodeId, NodeStatus)> = futures_util::future::join_all(polls)
                .await
                .into_iter()
                .flatten()
                .collect();
            let _ = tx.send(Event::Metrics(statuses));
        });
    }

    /// The slot if `gen` is its current generation.
    fn current(&mut self, id: NodeId, gen: u64) -> Option<&mut Slot> {
        self.slots.get_mut(&id).filter(|s| s.gen == gen)
    }

    fn maybe_serving(&mut self, id: NodeId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.phase != Phase::Starting || !slot.said_ready || slot.control.is_none() {
            return;
        }
        slot.phase = Phase::Serving;
        tracing::info!(node = id, pid = slot.pid.unwrap_or(0), "node serving");
        self.balancer.node_ready(id);
        self.send_grants();
        self.flush_queue();
        if !self.ever_ready && self.slots.values().all(|s| s.phase == Phase::Serving) {
            self.ever_ready = true;
            tracing::info!(nodes = self.slots.len(), "all nodes serving");
            (self.hooks.notify)(Lifecycle::Ready);
            if let Some(f) = self.on_ready.take() {
                f();
            }
        }
        self.reload_progress();
    }

    fn send_grants(&mut self) {
        for (id, n) in self.balancer.take_grants() {
            if let Some(control) = self.slots.get(&id).and_then(|s| s.control.clone()) {
                tokio::spawn(async move {
                    let _ = control.call_oneway("grant", (n,)).await;
                });
            }
        }
    }

    fn flush_queue(&mut self) {
        while !self.queued.is_empty() {
            let Some(id) = self.balancer.pick() else {
                return;
            };
            let Some(tx) = self
                .slots
                .get(&id)
                .and_then(|s| s.dispatch.as_ref())
                .map(|d| &d.tx)
            else {
                self.balancer.undispatch(id);
                return;
            };
            let Some(fd) = self.queued.pop_front() else {
                return;
            };
            if let Err(mpsc::error::SendError(fd)) = tx.send(fd) {
                self.balancer.undispatch(id);
                self.queued.push_front(fd);
                return;
            }
        }
    }

    fn node_died(&mut self, id: NodeId, gen: u64, why: &str) {
        let stopping = self.stopping.is_some();
        let Some(slot) = self.current(id, gen) else {
            return;
        };
        if slot.dead {
            return;
        }
        slot.dead = true;
        let uptime = slot.started_at.elapsed();
        let pid = slot.pid;
        slot.control = None;
        slot.dispatch = None;
        if let Some(link) = slot.link.take() {
            link.abort();
        }
        if !slot.reaped && !stopping {
            // Make sure it is gone: a hung node at once; one whose control
            // link closed gets a moment to exit on its own (nodes exit when
            // their link closes), so its exit code is not lost. (While
            // stopping, the stop deadline kills stragglers.)
            if let Some(pid) = pid {
                if why.contains("heartbeat") {
                    spawn::kill(pid);
                } else {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(EXIT_GRACE).await;
                        let _ = tx.send(Event::KillIfAlive { id, gen });
                    });
                }
            }
        }
        self.balancer.node_gone(id);
        self.send_grants();
        if self.slots.get(&id).is_some_and(|s| s.retiring) {
            tracing::info!(node = id, pid = pid.unwrap_or(0), %why, "retired node stopped");
            self.remove_if_retired(id);
            return;
        }
        if stopping {
            tracing::info!(node = id, pid = pid.unwrap_or(0), %why, "node stopped");
            if let Some(slot) = self.slots.get_mut(&id) {
                if slot.reaped {
                    slot.phase = Phase::Exited;
                }
            }
            return;
        }
        tracing::warn!(node = id, pid = pid.unwrap_or(0), %why, uptime_ms = uptime.as_millis() as u64, "node died");
        // Decide about a replacement once the process is reaped and its exit
        // code known (a node reporting a configuration error is not
        // restarted).
        if self.slots.get(&id).is_some_and(|s| s.reaped) {
            self.decide_restart(id, gen);
        }
    }

    fn decide_restart(&mut self, id: NodeId, gen: u64) {
        if self.stopping.is_some() {
            return;
        }
        let Some(slot) = self.current(id, gen) else {
            return;
        };
        if slot.decided {
            return;
        }
        slot.decided = true;
        let uptime = slot.started_at.elapsed();
        match self.restarts.on_exit(id, Instant::now(), uptime) {
            Decision::RestartAfter(delay) => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.phase = Phase::Backoff;
                }
                tracing::info!(
                    node = id,
                    delay_ms = delay.as_millis() as u64,
                    "restarting node after backoff"
                );
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Event::RestartDue { id });
                });
            }
            Decision::Escalate { restarts } => {
                let policy = *self.restarts.policy();
                tracing::error!(
                    restarts,
                    period_s = policy.period.as_secs(),
                    "nodes keep dying: more restarts than the intensity allows; stopping"
                );
                self.outcome = Some(Outcome::Escalated { restarts });
                self.begin_stop(false, self.config().grace);
            }
        }
    }

    fn begin_stop(&mut self, force: bool, grace: Duration) {
        // Not after an upgrade: systemd would stop the unit the new
        // controller now runs.
        if self.stopping.is_none() && !matches!(self.outcome, Some(Outcome::Upgraded { .. })) {
            (self.hooks.notify)(Lifecycle::Stopping);
        }
        self.stopping = Some(StopState { force, grace });
        if let Some(reload) = self.reload.take() {
            reload.fail("the service is stopping");
        }
        for slot in self.slots.values_mut() {
            match slot.phase {
                Phase::Backoff => slot.phase = Phase::Exited,
                _ if slot.reaped && slot.dead => slot.phase = Phase::Exited,
                _ => {
                    if let Some(control) = &slot.control {
                        send_stop(control, force, grace);
                    }
                }
            }
        }
        // Connections waiting for a node are closed.
        self.queued.clear();
        let tx = self.tx.clone();
        let limit = grace + Duration::from_secs(3);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            let _ = tx.send(Event::StopTimeout);
        });
    }

    fn start_node(&mut self, id: NodeId) {
        let gen = self.next_gen;
        self.next_gen += 1;
        let config = self.config();
        let balance = config.balance;
        let mut node_cfg = config.node.clone();
        node_cfg.node_id = id;
        let cmd = NodeCommand {
            id,
            name: config.name.clone(),
            extra_args: config.node_args.clone(),
            dispatch: balance == Balance::Dispatch,
            user: config.node_user,
            log_json: config.log_json,
        };
        let was_restart = self.slots.get(&id).is_some_and(|s| s.gen != 0);
        let spawned = spawn::spawn(&self.bound.exe, &cmd);
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.gen = gen;
        slot.dead = false;
        slot.decided = false;
        slot.said_ready = false;
        slot.control = None;
        slot.link = None;
        slot.exit_code = None;
        slot.started_at = Instant::now();
        slot.phase = Phase::Starting;
        if was_restart {
            slot.restarts += 1;
        }
        self.balancer.node_starting(id);
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                slot.reaped = true;
                tracing::error!(node = id, error = %e, "cannot start node");
                let _ = self.tx.send(Event::Died {
                    id,
                    gen,
                    why: format!("could not start: {e}"),
                });
                return;
            }
        };
        slot.pid = Some(spawned.pid);
        slot.reaped = false;
        tracing::info!(node = id, pid = spawned.pid, "node started");
        let handoff = match self.handoff_sockets() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(node = id, error = %e, "cannot prepare the node's sockets");
                spawn::kill(spawned.pid);
                Vec::new()
            }
        };
        let config_json = serde_json::to_string(&node_cfg).unwrap_or_default();
        let spawn::Spawned {
            child,
            control,
            conn,
            ..
        } = spawned;
        if let Some(conn) = conn {
            let (tx, rx) = mpsc::unbounded_channel();
            let (gone_tx, gone) = oneshot::channel();
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.dispatch = Some(DispatchHandle { tx, _gone: gone_tx });
            }
            tokio::spawn(dispatcher(self.tx.clone(), id, conn, rx, gone));
        }
        let tx = self.tx.clone();
        tokio::spawn(reap(tx.clone(), id, gen, child));
        tokio::spawn(run_control(
            tx,
            id,
            gen,
            control,
            handoff,
            balance,
            config_json,
        ));
    }

    /// The listening sockets a new node gets.
    fn handoff_sockets(&self) -> std::io::Result<Vec<OwnedFd>> {
        match self.config().balance {
            Balance::Dispatch => Ok(Vec::new()),
            Balance::Reuseport => self
                .bound
                .addrs
                .iter()
                .map(|addr| {
                    vole_control::listen::bind_reuseport(*addr, Some(self.config().backlog))
                        .map(OwnedFd::from)
                        .map_err(std::io::Error::other)
                })
                .collect(),
            Balance::Grant | Balance::Shared => self
                .bound
                .sockets
                .iter()
                .map(|s| s.as_fd().try_clone_to_owned())
                .collect(),
        }
    }

    /// The acceptors of `dispatch` mode (none in the other modes).
    fn dispatch_acceptors(&self) -> Vec<vole_control::listen::Acceptor> {
        if self.config().balance != Balance::Dispatch {
            return Vec::new();
        }
        let mut acceptors = Vec::new();
        for s in &self.bound.sockets {
            match s.try_clone().and_then(vole_control::listen::Acceptor::new) {
                Ok(a) => acceptors.push(a),
                Err(e) => tracing::error!(error = %e, "cannot accept in dispatch mode"),
            }
        }
        acceptors
    }

    fn admin(&mut self, req: AdminRequest, reply: oneshot::Sender<AdminResponse>) {
        match req {
            AdminRequest::Status => {
                let stopping = self.stopping.is_some();
                let nodes: Vec<(NodeReport, Option<RemoteObject>)> = self
                    .slots
                    .values()
                    .map(|s| {
                        let report = NodeReport {
                            id: s.id,
                            pid: if s.reaped { None } else { s.pid },
                            state: s.phase.name(stopping).to_owned(),
                            restarts: s.restarts,
                            uptime_ms: if s.reaped {
                                0
                            } else {
                                s.started_at.elapsed().as_millis() as u64
                            },
                            ..NodeReport::default()
                        };
                        (report, s.control.clone())
                    })
                    .collect();
                let base = StatusReport {
                    pid: std::process::id(),
                    mode: self.config().balance.name().to_owned(),
                    listen: self.bound.addrs.iter().map(ToString::to_string).collect(),
                    uptime_ms: self.started.elapsed().as_millis() as u64,
                    nodes: Vec::new(),
                };
                // Gather off the event loop, each node within a deadline, so
                // a hung node cannot block the answer.
                tokio::spawn(async move {
                    let mut status = base;
                    let gathered = futures_util::future::join_all(nodes.into_iter().map(
                        |(mut report, control)| async move {
                            if let Some(c) = control {
                                match tokio::time::timeout(
                                    Duration::from_secs(2),
                                    c.call_as::<NodeStatus>("status", ()),
                                )
                                .await
                                {
                                    Ok(Ok(s)) => report.fill(&s),
                                    _ => report.state = "unresponsive".to_owned(),
                                }
                            }
                            report
                        },
                    ))
                    .await;
                    status.nodes = gathered;
                    let _ = reply.send(AdminResponse {
                        ok: true,
                        error: None,
                        status: Some(status),
                    });
                });
            }
            AdminRequest::Stop { force, timeout_s } => {
                let grace = timeout_s
                    .and_then(|t| Duration::try_from_secs_f64(t).ok())
                    .unwrap_or(self.config().grace);
                if self.stopping.as_ref().is_some_and(|s| s.force || !force) {
                    let _ = reply.send(AdminResponse::ok());
                    return;
                }
                self.begin_stop(force, if force { Duration::ZERO } else { grace });
                let _ = reply.send(AdminResponse::ok());
            }
            AdminRequest::Reload => self.op(Op::Reload, Some(reply)),
            AdminRequest::Scale { nodes } => self.op(Op::Scale(nodes), Some(reply)),
            AdminRequest::ReopenLogs => self.op(Op::ReopenLogs, Some(reply)),
            AdminRequest::Upgrade => self.op(Op::Upgrade, Some(reply)),
        }
    }
}

fn send_stop(control: &RemoteObject, force: bool, grace: Duration) {
    let control = control.clone();
    let grace_ms = grace.as_millis() as u64;
    tokio::spawn(async move {
        let _ = control.call_oneway("stop", (!force, grace_ms)).await;
    });
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install a signal handler");
            None
        }
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The signals the controller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Term,
    Int,
    Quit,
    Hup,
    Usr1,
    Usr2,
    Ttin,
    Ttou,
}

/// Turns signals into supervisor events, until the supervisor is gone.
async fn forward_signals(tx: mpsc::UnboundedSender<Event>) {
    use tokio::signal::unix::SignalKind;
    let mut term = signal(SignalKind::terminate());
    let mut int = signal(SignalKind::interrupt());
    let mut quit = signal(SignalKind::quit());
    let mut hup = signal(SignalKind::hangup());
    let mut usr1 = signal(SignalKind::user_defined1());
    let mut usr2 = signal(SignalKind::user_defined2());
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN));
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU));
    loop {
        let sig = tokio::select! {
            _ = recv_signal(&mut term) => Sig::Term,
            _ = recv_signal(&mut int) => Sig::Int,
            _ = recv_signal(&mut quit) => Sig::Quit,
            _ = recv_signal(&mut hup) => Sig::Hup,
            _ = recv_signal(&mut usr1) => Sig::Usr1,
            _ = recv_signal(&mut usr2) => Sig::Usr2,
            _ = recv_signal(&mut ttin) => Sig::Ttin,
            _ = recv_signal(&mut ttou) => Sig::Ttou,
        };
        if tx.send(Event::Signal(sig)).is_err() {
            return;
        }
    }
}

/// Polls every acceptor in turn; the first with connections waiting adds
/// them to `batch`.
fn poll_accept_any(
    acceptors: &[vole_control::listen::Acceptor],
    cx: &mut std::task::Context<'_>,
    batch: &mut Vec<std::net::TcpStream>,
) -> std::task::Poll<std::io::Result<()>> {
    for a in acceptors {
        match a.poll_accept_batch(cx, ACCEPT_BATCH, batch) {
            std::task::Poll::Ready(Ok(_)) => return std::task::Poll::Ready(Ok(())),
            std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => {}
        }
    }
    std::task::Poll::Pending
}

/// Waits for the node process and reports its exit (reaping it).
async fn reap(
    tx: mpsc::UnboundedSender<Event>,
    id: NodeId,
    gen: u64,
    mut child: tokio::process::Child,
) {
    use std::os::unix::process::ExitStatusExt as _;
    let (code, signal) = match child.wait().await {
        Ok(status) => (status.code(), status.signal()),
        Err(e) => {
            tracing::error!(node = id, error = %e, "cannot wait for node");
            (None, None)
        }
    };
    let _ = tx.send(Event::Exited {
        id,
        gen,
        code,
        signal,
    });
}

/// The controller's control object for one node.
fn controller_object(
    tx: mpsc::UnboundedSender<Event>,
    id: NodeId,
    gen: u64,
    config_json: String,
) -> Arc<dyn Object> {
    struct State {
        tx: mpsc::UnboundedSender<Event>,
        id: NodeId,
        gen: u64,
        config_json: String,
    }
    Published::with_state(
        "VoleController",
        State {
            tx,
            id,
            gen,
            config_json,
        },
    )
    .method(
        "hello",
        "hello(pid): the node's configuration (JSON).",
        |s: Arc<State>, (_pid,): (u32,)| async move { Ok::<_, CallError>(s.config_json.clone()) },
    )
    .method(
        "sessions",
        "sessions(opened, closed): connections since the last report.",
        |s: Arc<State>, (opened, closed): (u64, u64)| async move {
            let _ = s.tx.send(Event::Sessions {
                id: s.id,
                gen: s.gen,
                opened,
                closed,
            });
            Ok::<_, CallError>(())
        },
    )
    .method(
        "ready",
        "The node serves.",
        |s: Arc<State>, (): ()| async move {
            let _ = s.tx.send(Event::Ready {
                id: s.id,
                gen: s.gen,
            });
            Ok::<_, CallError>(())
        },
    )
    .into_object()
}

/// Hands the sockets to the node and runs the control link until it
/// closes.
async fn run_control(
    tx: mpsc::UnboundedSender<Event>,
    id: NodeId,
    gen: u64,
    mut control: QuietStream,
    listeners: Vec<OwnedFd>,
    balance: Balance,
    config_json: String,
) {
    let tag = if balance == Balance::Dispatch {
        HANDOFF_DISPATCH
    } else {
        HANDOFF_LISTENERS
    };
    let borrowed: Vec<_> = listeners.iter().map(AsFd::as_fd).collect();
    if let Err(e) = fdpass::send(&mut control, &[tag], &borrowed).await {
        let _ = tx.send(Event::Died {
            id,
            gen,
            why: format!("socket handoff failed: {e}"),
        });
        return;
    }
    // Our copies of per-node sockets (reuseport) are closed here.
    drop(borrowed);
    drop(listeners);
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: true,
            handshake_timeout: Duration::from_secs(10),
            ..LinkConfig::default()
        },
        gateway: controller_object(tx.clone(), id, gen, config_json),
        info: LinkInfo {
            node_id: Some(id),
            ..LinkInfo::default()
        },
    };
    match vole_link::connect(control, setup).await {
        Ok((link, node)) => {
            let _ = tx.send(Event::LinkUp {
                id,
                gen,
                control: node,
                link: link.clone(),
            });
            let reason = link.closed().await;
            let _ = tx.send(Event::Died {
                id,
                gen,
                why: format!("control link closed: {reason}"),
            });
        }
        Err(e) => {
            let _ = tx.send(Event::Died {
                id,
                gen,
                why: format!("control link failed: {e}"),
            });
        }
    }
}

/// Pings the node; a missed answer means it is hung.
async fn heartbeat(
    tx: mpsc::UnboundedSender<Event>,
    id: NodeId,
    gen: u64,
    control: RemoteObject,
    interval: Duration,
    limit: Duration,
) {
    let link = control.link();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = link.closed() => return,
        }
        match tokio::time::timeout(limit, control.call("ping", ())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return, // the link is failing; that is reported separately
            Err(_) => {
                let _ = tx.send(Event::Died {
                    id,
                    gen,
                    why: format!("no heartbeat answer within {limit:?} (hung)"),
                });
                return;
            }
        }
    }
}

/// The supervisor's side of one node's dispatcher.
#[derive(Debug)]
struct DispatchHandle {
    /// Connections for the node.
    tx: mpsc::UnboundedSender<OwnedFd>,
    /// Dropped (with `tx`) when the node is gone: wakes a dispatcher that
    /// waits for room in a socket the dead node no longer reads.
    _gone: oneshot::Sender<()>,
}

/// `dispatch` mode: passes connections to one node, several per frame when
/// several are waiting, and closes its copies once a frame is sent.
///
/// The frame itself keeps each connection until the node receives it, and
/// the controller holds a copy of the node's end of the socket
/// ([`spawn::ConnSocket::node_end`]), so a node that dies leaves the frames
/// it never received where the controller can take them back
/// ([`fdpass::drain`]) for another node. A descriptor is received by
/// exactly one reader: nothing the node took comes back, and no
/// acknowledgment is needed. The node's death is learnt from the supervisor
/// (which drops the sender), or from a failed send.
async fn dispatcher(
    tx: mpsc::UnboundedSender<Event>,
    id: NodeId,
    conn: spawn::ConnSocket,
    mut rx: mpsc::UnboundedReceiver<OwnedFd>,
    mut gone: oneshot::Receiver<()>,
) {
    let spawn::ConnSocket {
        ours: mut sock,
        node_end,
    } = conn;
    let mut batch: Vec<OwnedFd> = Vec::with_capacity(fdpass::MAX_FDS);
    loop {
        // `gone` first: once the node is dead, what is still queued is not
        // sent. (Each branch on `gone` ends the loop: it is never polled
        // again once it has fired.)
        tokio::select! {
            biased;
            _ = &mut gone => break,
            n = rx.recv_many(&mut batch, fdpass::MAX_FDS) => {
                if n == 0 {
                    break; // the node died (as the supervisor saw it)
                }
            }
        }
        let frame = [batch.len() as u8];
        let sent = {
            let fds: Vec<_> = batch.iter().map(AsFd::as_fd).collect();
            tokio::select! {
                r = fdpass::send(&mut sock, &frame, &fds) => Some(r),
                // The socket is full and the node will never read it.
                _ = &mut gone => None,
            }
        };
        match sent {
            // The frame holds them now.
            Some(Ok(())) => batch.clear(),
            Some(Err(e)) => {
                tracing::warn!(node = id, error = %e, "cannot pass connections to the node");
                break;
            }
            None => break,
        }
    }
    rx.close();
    // In the order they were accepted: the frames the node never received,
    // a batch that could not be sent, then what was still queued.
    let mut fds = match fdpass::drain(node_end.as_fd()) {
        Ok(fds) => fds,
        Err(e) => {
            tracing::error!(node = id, error = %e, "cannot take back the connections the node never received");
            Vec::new()
        }
    };
    fds.append(&mut batch);
    while let Ok(fd) = rx.try_recv() {
        fds.push(fd);
    }
    drop(node_end);
    let _ = tx.send(Event::Undelivered { id, fds });
}

/// Turns admin requests into supervisor events.
struct AdminBridge {
    tx: mpsc::UnboundedSender<Event>,
}

impl AdminHandler for AdminBridge {
    fn handle(
        &self,
        request: AdminRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AdminResponse> + Send + '_>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            if self.tx.send(Event::Admin(request, reply)).is_err() {
                return AdminResponse::error("the service is shutting down");
            }
            rx.await
                .unwrap_or_else(|_| AdminResponse::error("the service is shutting down"))
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn devnull() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").expect("open"))
    }

    fn conn_socket() -> (spawn::ConnSocket, QuietStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let node_end = OwnedFd::from(theirs.try_clone().expect("dup"));
        let conn = spawn::ConnSocket {
            ours: QuietStream::dormant(ours).expect("dormant"),
            node_end,
        };
        (conn, QuietStream::new(theirs).expect("node end"))
    }

    fn port(fd: &OwnedFd) -> u16 {
        let l = std::net::TcpListener::from(fd.try_clone().expect("dup"));
        l.local_addr().expect("addr").port()
    }

    async fn undelivered(events: &mut mpsc::UnboundedReceiver<Event>) -> (NodeId, Vec<OwnedFd>) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("in time")
            .expect("an event");
        match event {
            Event::Undelivered { id, fds } => (id, fds),
            _ => panic!("expected Undelivered"),
        }
    }

    /// Connections travel several per frame; those the node received are
    /// not handed back when it dies, those still in its socket are, in the
    /// order they were accepted.
    #[tokio::test]
    async fn a_dead_node_s_unreceived_connections_come_back() {
        let (conn, node) = conn_socket();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (conns, rx) = mpsc::unbounded_channel();
        let (gone_tx, gone) = oneshot::channel();
        let listeners: Vec<std::net::TcpListener> = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        let mut listeners = listeners.into_iter().map(OwnedFd::from);
        for fd in listeners.by_ref().take(3) {
            conns.send(fd).expect("queue");
        }
        let task = tokio::spawn(dispatcher(events_tx, 7, conn, rx, gone));
        let mut got = Vec::new();
        let mut frames = 0;
        while got.len() < 3 {
            let mut count = [0u8; 1];
            let fds =
                tokio::time::timeout(Duration::from_secs(10), fdpass::recv(&node, &mut count))
                    .await
                    .expect("in time")
                    .expect("recv")
                    .expect("frame");
            assert_eq!(fds.len(), usize::from(count[0]));
            got.extend(fds);
            frames += 1;
        }
        assert!(
            frames < 3,
            "queued connections share frames ({frames} frames)"
        );
        assert_eq!(got.iter().map(port).collect::<Vec<_>>(), ports[..3]);
        // Three more; the node dies (as the supervisor sees it) without
        // reading them. The dispatcher sends what was queued before it saw
        // that, so all three come back out of the node's socket.
        for fd in listeners {
            conns.send(fd).expect("queue");
        }
        drop(conns);
        let (id, back) = undelivered(&mut events).await;
        assert_eq!(id, 7);
        assert_eq!(
            back.iter().map(port).collect::<Vec<_>>(),
            ports[3..],
            "exactly the three it never received, in order"
        );
        task.await.expect("dispatcher ends");
        drop((node, gone_tx));
    }

    /// A node that stops reading fills its socket; when it is found dead,
    /// the dispatcher waiting for room lets go and every connection comes
    /// back: those in the socket, the batch it could not send, the queue.
    #[tokio::test]
    async fn a_dispatcher_blocked_on_a_full_socket_lets_go_when_its_node_dies() {
        let (conn, node) = conn_socket();
        // The smallest send buffer: a few frames fill it.
        nix::sys::socket::setsockopt(&conn.ours, nix::sys::socket::sockopt::SndBuf, &1)
            .expect("SO_SNDBUF");
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (conns, rx) = mpsc::unbounded_channel();
        let (gone_tx, gone) = oneshot::channel();
        const N: usize = 200;
        let task = tokio::spawn(dispatcher(events_tx, 3, conn, rx, gone));
        for _ in 0..N {
            conns.send(devnull()).expect("queue");
            // One frame per connection while the socket has room.
            tokio::task::yield_now().await;
        }
        // The node's socket holds some frames, and the rest cannot follow.
        tokio::time::timeout(Duration::from_secs(10), node.readable())
            .await
            .expect("in time")
            .expect("readable");
        drop(node);
        drop((conns, gone_tx));
        let (id, back) = undelivered(&mut events).await;
        assert_eq!(id, 3);
        assert_eq!(back.len(), N, "every connection comes back");
        task.await.expect("dispatcher ends");
    }
}
