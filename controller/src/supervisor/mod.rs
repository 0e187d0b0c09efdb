//! The controller's driver: the tokio side of [`SupervisorCore`]. It runs
//! the processes, control links, heartbeats, dispatchers and signal
//! handlers (`tasks`), turns what they see into events for the core, and
//! carries out the core's commands. Every decision (who runs, who is
//! restarted and when, what is granted, where a connection goes, when a
//! stop is done and how it ended) is the core's.
//!
//! Performance: the loop runs as one task on the caller's runtime (a
//! current-thread runtime in `vole serve`); events waiting are handled as
//! one batch before granting and dispatching ([`Event::BatchDone`]); in
//! `dispatch` mode the loop accepts connections itself, up to
//! 64 per wake-up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use vole_control::control::NodeStatus;
use vole_link::{Link, RemoteObject};
use vole_transport::tickets::TicketKey;

use crate::admin::{AdminHandler, AdminResponse, AdminSocket, StatusReport};
use crate::balance::{Handoff, NodeId};
use crate::core::{Command, Event, NewTicketKey, NodeKey, RequestId, SupervisorCore};
use crate::error::Error;
use crate::spawn::{self, Executable};

mod hooks;
mod tasks;

pub use crate::config::ControllerConfig;
pub use crate::lifecycle::{Lifecycle, Outcome};
pub use hooks::{Hooks, UpgradeChild, UpgradeRequest};
use tasks::{DispatchHandle, Msg};

/// Events handled at most per wake-up of the event loop before it grants
/// and dispatches (and looks at signals again).
const EVENT_BATCH: usize = 256;

/// Connections accepted at most per wake-up in `dispatch` mode.
const ACCEPT_BATCH: usize = 64;

/// How long a node may take to answer a `status` or metrics poll.
const POLL_DEADLINE: Duration = Duration::from_secs(2);

fn io_error(step: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { step, source }
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
            let s = match Handoff::of(config.balance) {
                Handoff::Reuseport => vole_control::listen::bind_reuseport(*addr, None)?,
                _ => vole_control::listen::bind(*addr, config.backlog)?,
            };
            sockets.push(s);
        }
        let addrs = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_error("reading a listening socket's address"))?;
        let exe =
            Executable::open_self().map_err(io_error("opening the controller's executable"))?;
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
            s.set_nonblocking(true)
                .map_err(io_error("making an inherited listener non-blocking"))?;
        }
        let addrs = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_error("reading a listening socket's address"))?;
        let exe =
            Executable::open_self().map_err(io_error("opening the controller's executable"))?;
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
        let Bound {
            config,
            sockets,
            addrs,
            exe,
        } = self;
        let rotation = config.ticket_rotation.max(Duration::from_secs(1));
        let admin_fd = admin.as_ref().and_then(|a| a.listener_fd().ok());
        let admin_keep = admin.as_ref().map(|a| a.keep_handle());
        let admin_task = admin.map(|sock| {
            let handler: Arc<dyn AdminHandler> = Arc::new(tasks::AdminBridge { tx: tx.clone() });
            tokio::spawn(async move { sock.serve(handler).await })
        });
        let mut driver = Driver {
            core: SupervisorCore::new(config, seed, Instant::now()),
            sockets,
            addrs,
            exe,
            tx: tx.clone(),
            nodes: HashMap::new(),
            requests: HashMap::new(),
            next_request: 0,
            on_ready: hooks.on_ready.take(),
            admin_fd,
            admin_keep,
            admin_task: admin_task
                .as_ref()
                .map(tokio::task::JoinHandle::abort_handle),
            accepting: true,
            hooks,
            metrics: crate::metrics::Recorder::default(),
            outcome: None,
        };
        let rotate_tx = tx.clone();
        let rotate_task = tokio::spawn(async move {
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + rotation, rotation);
            loop {
                every.tick().await;
                if rotate_tx.send(Msg::RotateTickets).is_err() {
                    return;
                }
            }
        });
        // The event loop runs as a task, not on the thread that called
        // `run` (`block_on`'s thread in `vole serve`): every event comes
        // from a task on the runtime's workers (control links, accepts),
        // and a loop on another thread costs a futex wake and a context
        // switch per event, and another to spawn each reply back.
        let outcome = tokio::spawn(async move { driver.event_loop(rx).await })
            .await
            .map_err(|e| io_error("running the event loop")(std::io::Error::other(e)))?;
        rotate_task.abort();
        if let Some(t) = admin_task {
            t.abort();
            let _ = t.await; // drops the socket, removing its file
        }
        Ok(outcome)
    }
}

/// What the driver holds for one live node process: the means to reach it.
#[derive(Default)]
struct NodeIo {
    /// An external node's pid: it is stopped with SIGTERM, having no
    /// control link.
    external: Option<u32>,
    control: Option<RemoteObject>,
    link: Option<Link>,
    /// Where connections for this node go, in `dispatch` mode; dropped when
    /// the node dies, which tells its dispatcher.
    dispatch: Option<DispatchHandle>,
}

/// The tokio side: runs what the core asks for.
struct Driver {
    core: SupervisorCore<OwnedFd>,
    /// Listening sockets (all modes but `reuseport`), or port reservations
    /// (`reuseport`: bound, not listening).
    sockets: Vec<std::net::TcpListener>,
    addrs: Vec<SocketAddr>,
    exe: Executable,
    tx: mpsc::UnboundedSender<Msg>,
    nodes: HashMap<NodeKey, NodeIo>,
    /// Admin requests waiting for the core's answer.
    requests: HashMap<RequestId, oneshot::Sender<AdminResponse>>,
    next_request: RequestId,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// The admin socket, for a binary upgrade to inherit.
    admin_fd: Option<OwnedFd>,
    /// Set to keep the admin socket file when this controller exits after
    /// an upgrade.
    admin_keep: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The task serving the admin socket, ended by
    /// [`Command::ReleaseAdmin`].
    admin_task: Option<tokio::task::AbortHandle>,
    /// Cleared by [`Command::StopAccepting`]: the acceptors of `dispatch`
    /// mode are dropped.
    accepting: bool,
    hooks: Hooks,
    metrics: crate::metrics::Recorder,
    outcome: Option<Outcome>,
}

fn new_ticket_key() -> Option<NewTicketKey> {
    match TicketKey::generate() {
        Ok(k) => Some(NewTicketKey(k)),
        Err(e) => {
            tracing::error!(error = %e, "cannot generate a ticket key; keeping the old one");
            None
        }
    }
}

impl Driver {
    async fn event_loop(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>) -> Outcome {
        // Signals wait in a task of their own: eight receivers polled (and
        // their waiters re-registered) on every wake-up of this loop would
        // be paid per batch of connections in `dispatch` mode.
        let signals = tokio::spawn(tasks::forward_signals(self.tx.clone()));
        // (The core keeps a key only if TLS is on.)
        self.core.start(Instant::now(), new_ticket_key());
        self.run_commands();
        // In `dispatch` mode connections are accepted here, not in a task
        // that hands them over: one task woken per batch, not two.
        let mut acceptors = self.dispatch_acceptors();
        let mut accepted: Vec<std::net::TcpStream> = Vec::new();
        let mut accept_pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Accept errors are logged when they start and when they stop, not
        // every pause (at the descriptor limit that is ten lines a second).
        let mut accept_failing = false;
        let mut watchdog = self.hooks.watchdog.map(tokio::time::interval);
        let mut metrics_tick = self
            .core
            .config()
            .metrics_interval
            .map(tokio::time::interval);
        let outcome = loop {
            if let Some(outcome) = self.outcome.take() {
                break outcome;
            }
            if !self.accepting && !acceptors.is_empty() {
                // Whatever is not accepted yet stays in the listening
                // socket's queue for whoever else holds it (the new
                // controller of an upgrade, systemd); our copies close, so
                // where nobody does, connections are refused at once
                // rather than held until this controller exits. (No node
                // holds them in this mode, and nothing starts while
                // stopping.)
                acceptors.clear();
                self.sockets.clear();
            }
            // While connections wait for a node (every node is full), new
            // ones wait in the kernel's accept queue instead.
            let accepting =
                !acceptors.is_empty() && accept_pause.is_none() && self.core.wants_connections();
            tokio::select! {
                Some(msg) = rx.recv() => {
                    self.message(msg);
                    self.handle_waiting(&mut rx);
                }
                got = std::future::poll_fn(|cx| tasks::poll_accept_any(&acceptors, cx, ACCEPT_BATCH, &mut accepted)), if accepting => {
                    match got {
                        Ok(()) => {
                            if std::mem::take(&mut accept_failing) {
                                tracing::info!("accepting again");
                            }
                            let fds = accepted.drain(..).map(OwnedFd::from).collect();
                            self.event(Event::Connections(fds));
                            self.handle_waiting(&mut rx);
                        }
                        Err(e) => {
                            if !std::mem::replace(&mut accept_failing, true) {
                                tracing::warn!(error = %e, "accept failed; pausing 100 ms and retrying until it works");
                            }
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
        };
        signals.abort();
        outcome
    }

    /// Takes what else is waiting before granting or dispatching, so
    /// reports from several nodes, or a burst of connections, get one round
    /// of answers.
    fn handle_waiting(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        for _ in 0..EVENT_BATCH {
            match rx.try_recv() {
                Ok(msg) => self.message(msg),
                Err(_) => break,
            }
        }
        self.event(Event::BatchDone);
    }

    /// Feeds the core one event and carries out what it asks.
    fn event(&mut self, event: Event<OwnedFd>) {
        self.core.handle(Instant::now(), event);
        self.run_commands();
    }

    fn message(&mut self, msg: Msg) {
        match msg {
            Msg::Core(event) => self.event(event),
            Msg::LinkUp {
                node,
                control,
                link,
            } => match self.nodes.get_mut(&node) {
                Some(io) => {
                    io.control = Some(control);
                    io.link = Some(link);
                    self.event(Event::LinkUp(node));
                }
                // Released meanwhile: the node is dead to the core.
                None => link.abort(),
            },
            Msg::Admin(request, reply) => {
                let req = self.next_request;
                self.next_request += 1;
                self.requests.insert(req, reply);
                self.event(Event::Admin { req, request });
            }
            Msg::Metrics(statuses) => {
                for (id, status) in &statuses {
                    self.metrics.node(*id, status, self.core.restarts_of(*id));
                }
                let alive: std::collections::HashSet<NodeId> = self.core.node_ids().collect();
                self.metrics.retain(|id| alive.contains(&id));
                metrics::gauge!("vole_nodes").set(self.core.serving() as f64);
            }
            Msg::RotateTickets => {
                if let Some(key) = new_ticket_key() {
                    self.event(Event::RotateTickets(key));
                }
            }
        }
    }

    fn control(&self, node: NodeKey) -> Option<&RemoteObject> {
        self.nodes.get(&node).and_then(|io| io.control.as_ref())
    }

    /// Carries out every command the core has for now. A command answered
    /// at once (a spawn, a hook) feeds its answer back, whose commands join
    /// the queue.
    fn run_commands(&mut self) {
        while let Some(command) = self.core.poll_command() {
            self.execute(command);
        }
    }

    fn execute(&mut self, command: Command<OwnedFd>) {
        let now = Instant::now;
        match command {
            Command::Spawn {
                node,
                command,
                config,
                handoff,
            } => self.spawn(node, &command, &config, handoff),
            Command::Kill { pid } => spawn::kill(pid),
            Command::Release(node) => {
                if let Some(io) = self.nodes.remove(&node) {
                    if let Some(link) = io.link {
                        link.abort();
                    }
                }
            }
            Command::StartHeartbeat {
                node,
                interval,
                timeout,
            } => {
                if let Some(control) = self.control(node) {
                    tokio::spawn(tasks::heartbeat(
                        self.tx.clone(),
                        node,
                        control.clone(),
                        interval,
                        timeout,
                    ));
                }
            }
            Command::Grant { node, n } => {
                if let Some(control) = self.control(node) {
                    tasks::call_oneway(control, "grant", (n,));
                }
            }
            Command::NotReady { node } => {
                if let Some(control) = self.control(node) {
                    tasks::call_oneway(control, "not_ready", ());
                }
            }
            Command::Probe { node, timeout } => match self.control(node) {
                Some(control) => {
                    tokio::spawn(tasks::probe(
                        self.tx.clone(),
                        node,
                        control.clone(),
                        timeout,
                    ));
                }
                None => {
                    let _ = self
                        .tx
                        .send(Msg::Core(Event::Probed { node, alive: false }));
                }
            },
            Command::Stop {
                node,
                graceful,
                grace,
            } => {
                let io = self.nodes.get(&node);
                let args = (graceful, grace.as_millis() as u64);
                if let Some(control) = io.and_then(|io| io.control.as_ref()) {
                    match io.and_then(|io| io.dispatch.as_ref()) {
                        // After the connections dispatched to it so far.
                        Some(d) if graceful => tasks::stop_after_received(d, control, args),
                        _ => tasks::call_oneway(control, "stop", args),
                    }
                } else if let Some(pid) = self.nodes.get(&node).and_then(|io| io.external) {
                    // SIGTERM whether graceful or not: how fast it closes
                    // its links is the program's own business; the stop
                    // deadline kills it if it takes too long.
                    spawn::terminate(pid);
                }
            }
            Command::TicketKeys { node, keys } => {
                if let Some(control) = self.control(node) {
                    let json = serde_json::to_string(&keys).unwrap_or_default();
                    tasks::call_oneway(control, "ticket_keys", (json,));
                }
            }
            Command::Dispatch { node, conn } => {
                let sent = match self.nodes.get(&node).and_then(|io| io.dispatch.as_ref()) {
                    Some(d) => d.tx.send(conn).map_err(|e| e.0),
                    None => Err(conn),
                };
                if let Err(conn) = sent {
                    self.core.handle(
                        now(),
                        Event::Undelivered {
                            node,
                            conns: vec![conn],
                        },
                    );
                }
            }
            Command::Close { conns, why } => {
                tracing::debug!(count = conns.len(), why, "closing connections");
                drop(conns);
            }
            Command::Timer { at, timer } => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    let _ = tx.send(Msg::Core(Event::Timer(timer)));
                });
            }
            Command::Notify(lifecycle) => {
                (self.hooks.notify)(lifecycle);
                if lifecycle == Lifecycle::Ready {
                    if let Some(f) = self.on_ready.take() {
                        f();
                    }
                }
            }
            Command::Reply { req, response } => {
                if let Some(reply) = self.requests.remove(&req) {
                    let _ = reply.send(response);
                }
            }
            Command::GatherStatus { req, uptime, nodes } => self.gather_status(req, uptime, nodes),
            Command::ReadConfig => {
                let result = (self.hooks.reload)().map(Box::new);
                self.core.handle(now(), Event::ConfigRead(result));
            }
            Command::ReopenLogs { req } => {
                let result = (self.hooks.reopen_logs)();
                self.core.handle(now(), Event::LogsReopened { req, result });
            }
            Command::StartUpgrade => {
                let request = UpgradeRequest {
                    listeners: self.sockets.iter().map(AsFd::as_fd).collect(),
                    admin: self.admin_fd.as_ref().map(AsFd::as_fd),
                };
                let result = (self.hooks.upgrade)(request).map(|child| {
                    let (pid, ready) = (child.pid, child.ready);
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let result = ready.await.unwrap_or_else(|_| {
                            Err("the new controller exited before serving".to_owned())
                        });
                        let _ = tx.send(Msg::Core(Event::UpgradeDone { pid, result }));
                    });
                    pid
                });
                self.core.handle(now(), Event::UpgradeStarted(result));
            }
            Command::KeepAdminSocket => {
                if let Some(keep) = &self.admin_keep {
                    keep.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Command::StopAccepting => self.accepting = false,
            Command::ReleaseAdmin => {
                // Ending the task drops the socket (its file is kept: see
                // `KeepAdminSocket`); our copy for an upgrade goes too.
                if let Some(task) = self.admin_task.take() {
                    task.abort();
                }
                self.admin_fd = None;
            }
            Command::Finish(outcome) => self.outcome = Some(outcome),
        }
    }

    /// Starts a node process and its tasks.
    fn spawn(
        &mut self,
        node: NodeKey,
        command: &spawn::NodeCommand,
        config: &vole_control::control::NodeConfig,
        handoff: Handoff,
    ) {
        if let Some(argv) = &command.external {
            self.spawn_external(node, command, argv, handoff);
            return;
        }
        let spawned = match spawn::spawn(&self.exe, command) {
            Ok(s) => s,
            Err(e) => {
                let cause = crate::core::DeathCause::Spawn(e.to_string());
                self.core
                    .handle(Instant::now(), Event::Died { node, cause });
                return;
            }
        };
        let pid = spawned.pid;
        self.core
            .handle(Instant::now(), Event::Spawned { node, pid });
        let handoff_fds = match self.handoff_sockets(handoff) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(node = node.id, error = %e, "cannot prepare the node's sockets");
                let cause = crate::core::DeathCause::Handoff(e.to_string());
                self.core
                    .handle(Instant::now(), Event::Died { node, cause });
                Vec::new()
            }
        };
        let config_json = serde_json::to_string(config).unwrap_or_default();
        let spawn::Spawned {
            child,
            control,
            conn,
            ..
        } = spawned;
        let mut io = NodeIo::default();
        if let Some(conn) = conn {
            let (tx, rx) = mpsc::unbounded_channel();
            let (flush, flush_rx) = mpsc::unbounded_channel();
            let (gone_tx, gone) = oneshot::channel();
            io.dispatch = Some(DispatchHandle {
                tx,
                flush,
                _gone: gone_tx,
            });
            tokio::spawn(tasks::dispatcher(
                self.tx.clone(),
                node,
                conn,
                rx,
                flush_rx,
                gone,
            ));
        }
        // (A failed handoff queued its release, which comes after this.)
        self.nodes.insert(node, io);
        tokio::spawn(tasks::reap(self.tx.clone(), node, child));
        tokio::spawn(tasks::run_control(
            self.tx.clone(),
            node,
            control,
            handoff_fds,
            handoff,
            config_json,
        ));
    }

    /// Starts an external node: its listening sockets go with the exec.
    fn spawn_external(
        &mut self,
        node: NodeKey,
        command: &spawn::NodeCommand,
        argv: &[String],
        handoff: Handoff,
    ) {
        let started = self.handoff_sockets(handoff).and_then(|fds| {
            let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            // Our copies (reuseport sockets made for this node) close when
            // `fds` goes out of scope; the node has its own.
            spawn::spawn_external(&self.exe, command, argv, &borrowed)
        });
        let spawned = match started {
            Ok(s) => s,
            Err(e) => {
                let cause = crate::core::DeathCause::Spawn(e.to_string());
                self.core
                    .handle(Instant::now(), Event::Died { node, cause });
                return;
            }
        };
        let pid = spawned.pid;
        self.nodes.insert(
            node,
            NodeIo {
                external: Some(pid),
                ..NodeIo::default()
            },
        );
        tokio::spawn(tasks::reap(self.tx.clone(), node, spawned.child));
        self.core
            .handle(Instant::now(), Event::Spawned { node, pid });
    }

    /// The listening sockets a new node gets.
    fn handoff_sockets(&self, handoff: Handoff) -> std::io::Result<Vec<OwnedFd>> {
        match handoff {
            Handoff::Dispatch => Ok(Vec::new()),
            Handoff::Reuseport => self
                .addrs
                .iter()
                .map(|addr| {
                    vole_control::listen::bind_reuseport(*addr, Some(self.core.config().backlog))
                        .map(OwnedFd::from)
                        .map_err(std::io::Error::other)
                })
                .collect(),
            Handoff::Listeners => self
                .sockets
                .iter()
                .map(|s| s.as_fd().try_clone_to_owned())
                .collect(),
        }
    }

    /// The acceptors of `dispatch` mode (none in the other modes).
    fn dispatch_acceptors(&self) -> Vec<vole_control::listen::Acceptor> {
        if !Handoff::of(self.core.config().balance).controller_accepts() {
            return Vec::new();
        }
        let mut acceptors = Vec::new();
        for s in &self.sockets {
            match s.try_clone().and_then(vole_control::listen::Acceptor::new) {
                Ok(a) => acceptors.push(a),
                Err(e) => tracing::error!(error = %e, "cannot accept in dispatch mode"),
            }
        }
        acceptors
    }

    /// Polls every node's status off the event loop and records it.
    fn gather_metrics(&self) {
        let controls: Vec<(NodeId, RemoteObject)> = self
            .nodes
            .iter()
            .filter_map(|(node, io)| io.control.clone().map(|c| (node.id, c)))
            .collect();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let polls = controls.into_iter().map(|(id, c)| async move {
                let status =
                    tokio::time::timeout(POLL_DEADLINE, c.call_as::<NodeStatus>("status", ()))
                        .await;
                status.ok().and_then(Result::ok).map(|s| (id, s))
            });
            let statuses: Vec<(NodeId, NodeStatus)> = futures_util::future::join_all(polls)
                .await
                .into_iter()
                .flatten()
                .collect();
            let _ = tx.send(Msg::Metrics(statuses));
        });
    }

    /// Answers `status`: each node is asked off the event loop, within a
    /// deadline, so a hung node cannot block the answer.
    fn gather_status(
        &mut self,
        req: RequestId,
        uptime: Duration,
        nodes: Vec<(crate::admin::NodeReport, Option<NodeKey>)>,
    ) {
        let Some(reply) = self.requests.remove(&req) else {
            return;
        };
        let nodes: Vec<_> = nodes
            .into_iter()
            .map(|(report, node)| (report, node.and_then(|n| self.control(n).cloned())))
            .collect();
        let mut status = StatusReport {
            pid: std::process::id(),
            mode: self.core.config().balance.name().to_owned(),
            listen: self.addrs.iter().map(ToString::to_string).collect(),
            uptime_ms: uptime.as_millis() as u64,
            nodes: Vec::new(),
            grace_ms: self.core.config().grace.as_millis() as u64,
        };
        tokio::spawn(async move {
            let gathered = futures_util::future::join_all(nodes.into_iter().map(
                |(mut report, control)| async move {
                    if let Some(c) = control {
                        match tokio::time::timeout(
                            POLL_DEADLINE,
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
                health: None,
            });
        });
    }
}
