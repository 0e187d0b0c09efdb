//! The controller's decisions, without I/O: [`SupervisorCore`] takes
//! [`Event`]s (with the time they happened) and answers with [`Command`]s,
//! which the driver (the `supervisor` module) carries out. It is the
//! controller what `LinkCore` is to a link.
//!
//! It decides who runs (starts, restarts with backoff, gives up past the
//! restart intensity), who gets connections ([`Balancer`]), when a node is
//! dead (its control link closes, its process exits, or its heartbeat goes
//! unanswered: whichever comes first; each death is handled once per
//! process), and how stop, reload, scale and binary upgrade proceed.
//!
//! Order of use: [`SupervisorCore::start`], then for each event
//! [`SupervisorCore::handle`], and after each call take every command with
//! [`SupervisorCore::poll_command`] before the next event. A command that
//! the driver answers at once (a spawn, a hook) is answered with an event
//! fed back in the same way. When no more events wait, the driver sends
//! [`Event::BatchDone`] so that grants and dispatches are computed once per
//! burst.
//!
//! Nothing here reads a clock (`now` comes with every event), does I/O, or
//! spawns tasks. The connection type `C` is opaque: the driver passes file
//! descriptors, the tests numbers.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use vole_control::control::EXIT_CONFIG;
use vole_transport::tickets::TicketKey;

use crate::balance::{Balancer, NodeId};
use crate::config::ControllerConfig;
use crate::restart::{Decision, Restarts};
use crate::spawn::NodeCommand;

mod drain;
mod event;
mod ops;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod scenarios_fd;
#[cfg(test)]
mod sim;
mod state;

pub use crate::lifecycle::{Lifecycle, Outcome};
pub use event::{Command, DeathCause, Event, NewTicketKey, NodeKey, RequestId, Sig, Timer};
use state::{NotReady, Phase, ReloadState, Slot, StopState, Upgrade};

/// How long a node whose control link closed may take to exit by itself
/// before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How long past its grace a stop may take before every node still running
/// is killed.
pub const STOP_MARGIN: Duration = Duration::from_secs(3);

/// How long the new controller of a binary upgrade has to serve.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a reload's external replacement must have run before the old
/// node it replaces retires. An external node counts as serving once it
/// is started (nothing tells more); one that exits within this time
/// abandons the reload, and the old nodes serve on.
pub const EXTERNAL_SETTLE: Duration = Duration::from_secs(1);

/// The signal an external node is stopped with.
const SIGTERM: i32 = 15;

/// Connections waiting for a node in `dispatch` mode, at most.
pub const MAX_QUEUED: usize = 4096;

/// The controller's state machine (see the [module](self) documentation).
pub struct SupervisorCore<C> {
    config: ControllerConfig,
    balancer: Balancer,
    restarts: Restarts,
    slots: BTreeMap<NodeId, Slot>,
    next_gen: u64,
    /// The next id for a node added by scaling or reloading.
    next_id: NodeId,
    stopping: Option<StopState>,
    outcome: Option<Outcome>,
    finished: bool,
    /// Connections waiting for a node (`dispatch` mode).
    queued: VecDeque<C>,
    /// When a [`Timer::Probe`] is due, if one is.
    probe_at: Option<Instant>,
    /// Reports or connections arrived: grant or dispatch at the end of the
    /// batch.
    rebalance: bool,
    ever_ready: bool,
    started: Instant,
    /// TLS ticket keys, newest first.
    ticket_keys: Vec<TicketKey>,
    reload: Option<ReloadState>,
    upgrade: Option<Upgrade>,
    /// The not-ready period before a drain, while it runs.
    not_ready: Option<NotReady>,
    /// The stop was asked by `vole drain`: a later SIGTERM (the
    /// orchestrator's, after its preStop hook) does not force it.
    drain_asked: bool,
    commands: VecDeque<Command<C>>,
}

impl<C> std::fmt::Debug for SupervisorCore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorCore")
            .field("slots", &self.slots)
            .field("stopping", &self.stopping)
            .field("outcome", &self.outcome)
            .field("queued", &self.queued.len())
            .field("reload", &self.reload)
            .field("upgrade", &self.upgrade)
            .finish_non_exhaustive()
    }
}

impl<C> SupervisorCore<C> {
    /// A core for `config`, created at `now`; `seed` drives the restart
    /// backoff's jitter. Nothing starts before [`SupervisorCore::start`].
    pub fn new(config: ControllerConfig, seed: u64, now: Instant) -> Self {
        SupervisorCore {
            balancer: Balancer::new(config.balance, config.limits),
            restarts: Restarts::new(config.restart, seed),
            slots: BTreeMap::new(),
            next_gen: 1,
            next_id: config.nodes,
            config,
            stopping: None,
            outcome: None,
            finished: false,
            queued: VecDeque::new(),
            probe_at: None,
            rebalance: false,
            ever_ready: false,
            started: now,
            ticket_keys: Vec::new(),
            reload: None,
            upgrade: None,
            not_ready: None,
            drain_asked: false,
            commands: VecDeque::new(),
        }
    }

    /// Starts the configured nodes, with `key` as the first TLS ticket key
    /// (if the driver could make one).
    pub fn start(&mut self, now: Instant, key: Option<NewTicketKey>) {
        match (self.config.shared_ticket_keys.clone(), key) {
            (Some(shared), _) => self.install_ticket_keys(shared),
            (None, Some(key)) => self.rotate_tickets(key),
            (None, None) => {}
        }
        for id in 0..self.config.nodes {
            self.slots.insert(id, Slot::new(id, now));
            self.start_node(now, id);
        }
    }

    /// The next command to carry out, in order.
    pub fn poll_command(&mut self) -> Option<Command<C>> {
        self.commands.pop_front()
    }

    /// The configuration as it is now (reloads and scaling change it).
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The slots that exist (not yet retired), in order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.slots.keys().copied()
    }

    /// Restarts of a slot.
    pub fn restarts_of(&self, id: NodeId) -> u32 {
        self.slots.get(&id).map_or(0, |s| s.restarts)
    }

    /// Nodes serving and not being retired.
    pub fn serving(&self) -> usize {
        self.slots
            .values()
            .filter(|s| s.phase == Phase::Serving && !s.retiring)
            .count()
    }

    /// Connections waiting for a node.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Whether the driver should accept connections now (`dispatch`
    /// mode): only while none waits for a node. Connections wait for a
    /// node only when every node is full (at its capacity or
    /// `max-node-clients`), at `max-clients`, or while none serves; the
    /// kernel's accept queue holds the rest meanwhile, instead of this
    /// process's descriptor table (which the limit that filled the nodes
    /// may fill too).
    pub fn wants_connections(&self) -> bool {
        self.queued.is_empty()
    }

    /// Whether a node holds as many connections as it can (its capacity
    /// or `max-node-clients`) as the balancer counts them.
    pub fn is_full(&self, id: NodeId) -> bool {
        self.balancer.is_full(id)
    }

    /// Whether [`Command::Finish`] was given.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Handles one event that happened at `now`.
    pub fn handle(&mut self, now: Instant, event: Event<C>) {
        self.balancer.at(now);
        match event {
            Event::Spawned { node, pid } => {
                let overdue = self.stopping.is_some_and(|s| s.overdue);
                if let Some(slot) = self.current(node) {
                    slot.pid = Some(pid);
                    tracing::info!(node = node.id, pid, "node started");
                    if overdue {
                        self.commands.push_back(Command::Kill { pid });
                    }
                }
                if self.config.node_command.is_some() {
                    self.external_up(now, node);
                }
            }
            Event::LinkUp(node) => self.link_up(now, node),
            Event::Ready(node) => {
                if let Some(slot) = self.current(node) {
                    slot.said_ready = true;
                    self.maybe_serving(now, node.id);
                }
            }
            Event::Probed { node, alive } => {
                if self.current(node).is_some_and(|s| !s.dead) {
                    if !alive {
                        tracing::warn!(
                            node = node.id,
                            "node holds grants and did not answer in {:?}: granting the others",
                            crate::balance::PROBE_TIMEOUT
                        );
                    }
                    self.balancer.probe_answered(node.id, alive);
                    self.rebalance = true;
                }
            }
            Event::Sessions {
                node,
                opened,
                closed,
            } => {
                if self.current(node).is_some_and(|s| !s.dead) {
                    self.balancer.sessions(node.id, opened, closed);
                    self.rebalance = true;
                }
            }
            Event::Capacity { node, connections } => {
                if self.current(node).is_some_and(|s| !s.dead) {
                    tracing::info!(
                        node = node.id,
                        connections,
                        "node's descriptor limit bounds its connections"
                    );
                    self.balancer.set_capacity(node.id, connections);
                    self.rebalance = true;
                }
            }
            Event::Died { node, cause } => {
                let kill_now = matches!(cause, DeathCause::Hung | DeathCause::Handoff(_));
                if let DeathCause::Spawn(why) = &cause {
                    tracing::error!(node = node.id, error = %why, "cannot start node");
                    if let Some(slot) = self.current(node) {
                        slot.reaped = true;
                    }
                }
                self.node_died(now, node, &cause, kill_now);
            }
            Event::Exited { node, code, signal } => self.exited(now, node, code, signal),
            Event::Timer(timer) => self.timer(now, timer),
            Event::Connections(conns) => {
                if self.stopping.is_some() {
                    // (The driver stopped accepting at the stop: this is
                    // not expected.)
                    self.close(conns, "accepted after the controller stopped accepting");
                    return;
                }
                let room = MAX_QUEUED.saturating_sub(self.queued.len());
                let mut conns = conns;
                if conns.len() > room {
                    tracing::warn!("no node can take connections; dropping the newest");
                    let over = conns.split_off(room);
                    self.close(over, "no node can take them");
                }
                self.queued.extend(conns);
                self.rebalance = true;
            }
            Event::Undelivered { node, conns } => self.undelivered(now, node, conns),
            Event::BatchDone => {
                if std::mem::take(&mut self.rebalance) {
                    self.send_grants();
                    self.flush_queue();
                }
            }
            Event::Admin { req, request } => self.admin(now, req, request),
            Event::Signal(sig) => self.signal(now, sig),
            Event::RotateTickets(key) => self.rotate_tickets(key),
            Event::ConfigRead(result) => self.config_read(now, result),
            Event::LogsReopened { req, result } => self.logs_reopened(req, result),
            Event::UpgradeStarted(result) => self.upgrade_started(now, result),
            Event::UpgradeDone { pid, result } => self.upgrade_done(now, pid, result),
        }
        self.check_finished();
    }

    /// Ends the controller once stopping and every node is gone.
    fn check_finished(&mut self) {
        if self.finished || self.stopping.is_none() {
            return;
        }
        if !self
            .slots
            .values()
            .all(|s| s.phase == Phase::Exited && s.reaped)
        {
            return;
        }
        self.finished = true;
        let clean = self.slots.values().all(|s| s.exit_code == Some(0));
        let outcome = match self.outcome.take() {
            Some(o) => o,
            None if clean => Outcome::Stopped,
            None => Outcome::StoppedUnclean,
        };
        let queued: Vec<C> = self.queued.drain(..).collect();
        self.close(queued, "stopping");
        self.commands.push_back(Command::Finish(outcome));
    }

    fn close(&mut self, conns: Vec<C>, why: &'static str) {
        if !conns.is_empty() {
            self.commands.push_back(Command::Close { conns, why });
        }
    }

    /// The slot if `node` is its current process.
    fn current(&mut self, node: NodeKey) -> Option<&mut Slot> {
        self.slots.get_mut(&node.id).filter(|s| s.gen == node.gen)
    }

    fn link_up(&mut self, now: Instant, node: NodeKey) {
        self.came_up(now, node, false);
    }

    /// An external node has no control link: it serves once started (its
    /// listening socket queues connections until it accepts), gets no
    /// heartbeat, and stops on SIGTERM ([`Command::Stop`] to a node without
    /// a link).
    fn external_up(&mut self, now: Instant, node: NodeKey) {
        self.came_up(now, node, true);
    }

    /// A node can be told things: its control link is up, or (`external`)
    /// its process started. It is stopped if the service is stopping or it
    /// was retired meanwhile; otherwise it is watched and may serve.
    fn came_up(&mut self, now: Instant, node: NodeKey, external: bool) {
        let stopping = self.stopping;
        let (interval, timeout) = (
            self.config.heartbeat_interval,
            self.config.heartbeat_timeout,
        );
        let Some(slot) = self.current(node) else {
            return;
        };
        if slot.dead {
            return;
        }
        slot.linked = true;
        slot.said_ready |= external;
        let retiring = slot.retiring;
        if let Some(s) = stopping {
            self.commands.push_back(Command::Stop {
                node,
                graceful: !s.force,
                grace: s.grace,
            });
            return;
        }
        if !external {
            self.commands.push_back(Command::StartHeartbeat {
                node,
                interval,
                timeout,
            });
            if self.not_ready.is_some() {
                // Started during a shutdown delay (a restart).
                self.commands.push_back(Command::NotReady { node });
            }
        }
        if retiring {
            // Retired while it started: it never serves.
            self.stop_retiring(now, node);
            return;
        }
        self.maybe_serving(now, node.id);
    }

    /// Tells a retiring node to stop gracefully; one still running grace +
    /// [`STOP_MARGIN`] later is killed (a hung node, or an external node
    /// that ignores SIGTERM, must not hold up a reload or a scale-down).
    fn stop_retiring(&mut self, now: Instant, node: NodeKey) {
        let grace = self.config.grace;
        self.commands.push_back(Command::Stop {
            node,
            graceful: true,
            grace,
        });
        self.commands.push_back(Command::Timer {
            at: now + grace + STOP_MARGIN,
            timer: Timer::RetireDeadline(node),
        });
    }

    fn maybe_serving(&mut self, now: Instant, id: NodeId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.phase != Phase::Starting
            || !slot.said_ready
            || !slot.linked
            || slot.dead
            || slot.retiring
            || self.stopping.is_some()
        {
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
            self.commands.push_back(Command::Notify(Lifecycle::Ready));
        }
        self.reload_progress(now);
    }

    fn send_grants(&mut self) {
        for (id, n) in self.balancer.take_grants() {
            if let Some(slot) = self.slots.get(&id).filter(|s| s.linked) {
                self.commands.push_back(Command::Grant {
                    node: slot.key(),
                    n,
                });
            }
        }
        // Grants that go unused (a hung node's) must not hold the others
        // back for long: ask the node whether it answers then.
        if let Some(at) = self.balancer.next_probe() {
            if self.probe_at.is_none_or(|due| at < due) {
                self.probe_at = Some(at);
                self.commands.push_back(Command::Timer {
                    at,
                    timer: Timer::Probe,
                });
            }
        }
    }

    pub(super) fn flush_queue(&mut self) {
        self.flush_queue_with(Balancer::pick);
    }

    /// At a graceful stop: every connection accepted goes to a serving
    /// node, full or not (see [`Balancer::pick_any`]).
    pub(super) fn flush_queue_over_limits(&mut self) {
        self.flush_queue();
        self.flush_queue_with(Balancer::pick_any);
    }

    fn flush_queue_with(&mut self, pick: fn(&mut Balancer) -> Option<NodeId>) {
        while !self.queued.is_empty() {
            let Some(id) = pick(&mut self.balancer) else {
                return;
            };
            let Some(node) = self.slots.get(&id).filter(|s| !s.dead).map(Slot::key) else {
                self.balancer.undispatch(id);
                return;
            };
            let Some(conn) = self.queued.pop_front() else {
                return;
            };
            self.commands.push_back(Command::Dispatch { node, conn });
        }
    }

    fn undelivered(&mut self, now: Instant, node: NodeKey, conns: Vec<C>) {
        if conns.is_empty() {
            return;
        }
        tracing::info!(
            node = node.id,
            count = conns.len(),
            "re-dispatching connections the node never took"
        );
        if self.current(node).is_some_and(|s| !s.dead) {
            // Its dispatcher gave up while the node seemed alive: it cannot
            // take connections any more (its counts go with it).
            self.node_died(now, node, &DeathCause::Dispatch, false);
        }
        if self.stopping.is_some() {
            self.close(conns, "stopping; their node is gone");
            return;
        }
        for conn in conns.into_iter().rev() {
            self.queued.push_front(conn);
        }
        self.flush_queue();
    }

    fn timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::ReloadSettled => self.reload_progress(now),
            Timer::ShutdownDelay => self.shutdown_delay_over(now),
            Timer::Probe => {
                if self.probe_at.is_some_and(|due| due <= now) {
                    self.probe_at = None;
                }
                if self.stopping.is_none() {
                    for id in self.balancer.take_probes() {
                        if let Some(slot) = self.slots.get(&id).filter(|s| s.linked) {
                            self.commands.push_back(Command::Probe {
                                node: slot.key(),
                                timeout: crate::balance::PROBE_TIMEOUT,
                            });
                        } else {
                            // Not linked: it cannot answer.
                            self.balancer.probe_answered(id, false);
                        }
                    }
                    self.send_grants();
                }
            }
            Timer::RestartDue(node) => {
                if self.stopping.is_none()
                    && self
                        .slots
                        .get(&node.id)
                        .is_some_and(|s| s.gen == node.gen && s.phase == Phase::Backoff)
                {
                    self.start_node(now, node.id);
                }
            }
            Timer::KillIfAlive(node) => {
                if let Some(slot) = self.current(node) {
                    if let (false, Some(pid)) = (slot.reaped, slot.pid) {
                        tracing::warn!(
                            node = node.id,
                            pid,
                            "node did not exit after its control link closed; killing it"
                        );
                        self.commands.push_back(Command::Kill { pid });
                    }
                }
            }
            Timer::StopDeadline => {
                let Some(stop) = &mut self.stopping else {
                    return;
                };
                stop.overdue = true;
                for slot in self.slots.values() {
                    if let (false, Some(pid)) = (slot.reaped, slot.pid) {
                        tracing::warn!(
                            node = slot.id,
                            pid,
                            "node did not stop in time; killing it"
                        );
                        self.commands.push_back(Command::Kill { pid });
                    }
                }
            }
            Timer::RetireDeadline(node) => {
                if let Some(slot) = self.current(node) {
                    if let (true, false, Some(pid)) = (slot.retiring, slot.reaped, slot.pid) {
                        tracing::warn!(
                            node = node.id,
                            pid,
                            "retired node did not stop in time; killing it"
                        );
                        self.commands.push_back(Command::Kill { pid });
                    }
                }
            }
            Timer::UpgradeDeadline { pid } => {
                if matches!(self.upgrade, Some(Upgrade::Waiting { pid: p, .. }) if p == pid) {
                    self.upgrade_done(
                        now,
                        pid,
                        Err("the new controller did not serve within 60 s".to_owned()),
                    );
                }
            }
        }
    }

    fn exited(&mut self, now: Instant, node: NodeKey, code: Option<i32>, signal: Option<i32>) {
        let config_error = code == Some(EXIT_CONFIG) && self.stopping.is_none();
        let stopping = self.stopping.is_some();
        let external = self.config.node_command.is_some();
        let Some(slot) = self.current(node) else {
            return;
        };
        slot.reaped = true;
        // An external node is stopped with SIGTERM: a program that does
        // not handle it (or was still starting) ends by it, which is a
        // clean stop, as systemd counts it.
        let asked_to_stop = stopping || slot.retiring;
        slot.exit_code = match (code, signal) {
            (None, Some(SIGTERM)) if external && asked_to_stop => Some(0),
            _ => code,
        };
        // A node with an unusable configuration is not restarted: no
        // restart decision for it (that would log a restart and count
        // against the intensity).
        slot.decided |= config_error;
        let retiring = slot.retiring;
        let why = match (code, signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "exited".to_owned(),
        };
        if config_error {
            let msg = format!(
                "node {} found the configuration unusable (see its log above)",
                node.id
            );
            tracing::error!("{msg}; stopping instead of restarting it");
            self.node_died(now, node, &why, false);
            self.outcome = Some(Outcome::ConfigError(msg));
            self.begin_stop(now, false, self.config.grace);
            return;
        }
        if !retiring && (code != Some(0) || !stopping) {
            tracing::info!(node = node.id, %why, "node process ended");
        }
        self.node_died(now, node, &why, false);
        if retiring {
            self.remove_if_retired(node.id);
            return;
        }
        self.decide_restart(now, node);
        if self.stopping.is_some() {
            if let Some(slot) = self.current(node) {
                slot.phase = Phase::Exited;
            }
        }
    }

    /// Handles a node's death once: it gets no more grants or connections,
    /// its driver-side tasks are released, it is made sure to be gone, and
    /// (once reaped) a restart is decided.
    fn node_died(
        &mut self,
        now: Instant,
        node: NodeKey,
        why: &dyn std::fmt::Display,
        kill_now: bool,
    ) {
        let stopping = self.stopping.is_some();
        let Some(slot) = self.current(node) else {
            return;
        };
        if slot.dead {
            return;
        }
        slot.dead = true;
        slot.linked = false;
        let uptime = now.saturating_duration_since(slot.started_at);
        let (pid, reaped, retiring) = (slot.pid, slot.reaped, slot.retiring);
        self.commands.push_back(Command::Release(node));
        if !reaped && !stopping {
            // Make sure it is gone: a hung node at once; one whose control
            // link closed gets a moment to exit on its own (nodes exit when
            // their link closes), so its exit code is not lost. (While
            // stopping, the stop deadline kills stragglers.)
            if let Some(pid) = pid {
                if kill_now {
                    self.commands.push_back(Command::Kill { pid });
                } else {
                    self.commands.push_back(Command::Timer {
                        at: now + EXIT_GRACE,
                        timer: Timer::KillIfAlive(node),
                    });
                }
            }
        }
        self.balancer.node_gone(node.id);
        self.send_grants();
        let pid = pid.unwrap_or(0);
        if retiring {
            tracing::info!(node = node.id, pid, %why, "retired node stopped");
            self.remove_if_retired(node.id);
            return;
        }
        if stopping {
            tracing::info!(node = node.id, pid, %why, "node stopped");
            if let Some(slot) = self.current(node) {
                if slot.reaped {
                    slot.phase = Phase::Exited;
                }
            }
            return;
        }
        tracing::warn!(node = node.id, pid, %why, uptime_ms = uptime.as_millis() as u64, "node died");
        // Decide about a replacement once the process is reaped and its exit
        // code known (a node reporting a configuration error is not
        // restarted).
        if reaped {
            self.decide_restart(now, node);
        }
    }

    fn decide_restart(&mut self, now: Instant, node: NodeKey) {
        if self.stopping.is_some() {
            return;
        }
        let Some(slot) = self.current(node) else {
            return;
        };
        if slot.decided {
            return;
        }
        if self.reload_replacement_failed(now, node.id) {
            return;
        }
        let Some(slot) = self.current(node) else {
            return;
        };
        slot.decided = true;
        let uptime = now.saturating_duration_since(slot.started_at);
        match self.restarts.on_exit(node.id, now, uptime) {
            Decision::RestartAfter(delay) => {
                if let Some(slot) = self.current(node) {
                    slot.phase = Phase::Backoff;
                }
                tracing::info!(
                    node = node.id,
                    delay_ms = delay.as_millis() as u64,
                    "restarting node after backoff"
                );
                self.commands.push_back(Command::Timer {
                    at: now + delay,
                    timer: Timer::RestartDue(node),
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
                self.begin_stop(now, false, self.config.grace);
            }
        }
    }

    fn start_node(&mut self, now: Instant, id: NodeId) {
        let gen = self.next_gen;
        self.next_gen += 1;
        let handoff = self.balancer.handoff();
        let mut config = self.config.node.clone();
        config.node_id = id;
        let command = NodeCommand {
            id,
            name: self.config.name.clone(),
            extra_args: self.config.node_args.clone(),
            dispatch: handoff.controller_accepts(),
            user: self.config.node_user,
            log_json: self.config.log_json,
            external: self.config.node_command.clone(),
        };
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.gen != 0 {
            slot.restarts += 1;
        }
        slot.gen = gen;
        slot.pid = None;
        slot.dead = false;
        slot.decided = false;
        slot.said_ready = false;
        slot.linked = false;
        slot.reaped = false;
        slot.exit_code = None;
        slot.started_at = now;
        slot.phase = Phase::Starting;
        self.balancer.node_starting(id);
        self.commands.push_back(Command::Spawn {
            node: NodeKey { id, gen },
            command,
            config: Box::new(config),
            handoff,
        });
    }
}
