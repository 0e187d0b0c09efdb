//! Operations on a running controller, as the core sequences them: stop
//! (graceful, forced), reload (replace every node one by one with the
//! configuration re-read), scale, reopen logs, binary upgrade, TLS ticket
//! rotation and `status`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use vole_control::control::TicketKeys;
use vole_transport::tickets::TicketKey;

use super::event::{Command, NewTicketKey, RequestId, Sig, Timer};
use super::state::{Phase, ReloadState, Slot, StopState, Upgrade};
use super::{SupervisorCore, STOP_MARGIN, UPGRADE_TIMEOUT};
use crate::admin::{AdminRequest, AdminResponse, NodeReport};
use crate::balance::NodeId;
use crate::config::ControllerConfig;
use crate::lifecycle::{Lifecycle, Outcome};

/// An operation, from a signal or the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Reload,
    Scale(u32),
    Grow,
    Shrink,
    ReopenLogs,
    Upgrade,
}

impl<C> SupervisorCore<C> {
    pub(super) fn reply(&mut self, req: Option<RequestId>, response: AdminResponse) {
        if let Some(req) = req {
            self.commands.push_back(Command::Reply { req, response });
        }
    }

    pub(super) fn signal(&mut self, now: Instant, sig: Sig) {
        match sig {
            Sig::Term => match self.stopping {
                None => self.drain(now, None, false),
                Some(_) if self.drain_asked => {
                    tracing::info!(signal = "SIGTERM", "already draining (vole drain)");
                }
                Some(s) if !s.force => {
                    tracing::warn!(signal = "SIGTERM", "second signal: forcing the stop");
                    self.begin_stop(now, true, Duration::ZERO);
                }
                Some(_) => {}
            },
            Sig::Int | Sig::Quit => {
                if !self.stopping.is_some_and(|s| s.force) {
                    tracing::warn!(signal = ?sig, "fast stop: closing every link now");
                    self.begin_stop(now, true, Duration::ZERO);
                }
            }
            Sig::Hup => self.op(now, Op::Reload, None),
            Sig::Usr1 => self.op(now, Op::ReopenLogs, None),
            Sig::Usr2 => self.op(now, Op::Upgrade, None),
            Sig::Ttin => self.op(now, Op::Grow, None),
            Sig::Ttou => self.op(now, Op::Shrink, None),
        }
    }

    pub(super) fn admin(&mut self, now: Instant, req: RequestId, request: AdminRequest) {
        match request {
            AdminRequest::Status => self.status(now, req),
            AdminRequest::Stop { force, timeout_s } => {
                let grace = timeout_s
                    .and_then(|t| Duration::try_from_secs_f64(t).ok())
                    .unwrap_or(self.config.grace);
                if !self.stopping.is_some_and(|s| s.force || !force) {
                    self.begin_stop(now, force, if force { Duration::ZERO } else { grace });
                }
                self.reply(Some(req), AdminResponse::ok());
            }
            AdminRequest::Reload => self.op(now, Op::Reload, Some(req)),
            AdminRequest::Scale { nodes } => self.op(now, Op::Scale(nodes), Some(req)),
            AdminRequest::ReopenLogs => self.op(now, Op::ReopenLogs, Some(req)),
            AdminRequest::Upgrade => self.op(now, Op::Upgrade, Some(req)),
            AdminRequest::Health => {
                let report = self.health();
                self.reply(Some(req), AdminResponse::health(report));
            }
            AdminRequest::Drain => self.drain(now, Some(req), true),
        }
    }

    fn status(&mut self, now: Instant, req: RequestId) {
        let stop = self.stopping;
        let nodes = self
            .slots
            .values()
            .map(|s| {
                let running = !s.reaped;
                let report = NodeReport {
                    id: s.id,
                    pid: if running { s.pid } else { None },
                    state: s.state_name(stop.as_ref()).to_owned(),
                    restarts: s.restarts,
                    uptime_ms: if running {
                        now.saturating_duration_since(s.started_at).as_millis() as u64
                    } else {
                        0
                    },
                    ..NodeReport::default()
                };
                (report, s.linked.then(|| s.key()))
            })
            .collect();
        self.commands.push_back(Command::GatherStatus {
            req,
            uptime: now.saturating_duration_since(self.started),
            nodes,
        });
    }

    fn op(&mut self, now: Instant, op: Op, req: Option<RequestId>) {
        if self.stopping.is_some() {
            self.reply(req, AdminResponse::error("the service is stopping"));
            return;
        }
        match op {
            Op::Reload => self.begin_reload(req),
            Op::Scale(n) => self.scale(now, n, req),
            // Relative to the wanted count, not to the nodes running: a
            // reload's replacement in flight is not one more wanted.
            Op::Grow => {
                let n = self.config.nodes.saturating_add(1);
                self.scale(now, n, req);
            }
            Op::Shrink => {
                let n = self.config.nodes.saturating_sub(1).max(1);
                self.scale(now, n, req);
            }
            // Nodes write through this process's stderr, so reopening here
            // covers them too.
            Op::ReopenLogs => self.commands.push_back(Command::ReopenLogs { req }),
            Op::Upgrade => self.begin_upgrade(req),
        }
    }

    pub(super) fn logs_reopened(&mut self, req: Option<RequestId>, result: Result<(), String>) {
        match result {
            Ok(()) => self.reply(req, AdminResponse::ok()),
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the log file");
                self.reply(req, AdminResponse::error(e));
            }
        }
    }

    /// Stops every node: gracefully within `grace`, or at once (`force`).
    /// Whatever still runs `grace` + [`STOP_MARGIN`] later is killed.
    pub(super) fn begin_stop(&mut self, now: Instant, force: bool, grace: Duration) {
        // Not after an upgrade: systemd would stop the unit the new
        // controller now runs.
        if self.stopping.is_none() && !matches!(self.outcome, Some(Outcome::Upgraded { .. })) {
            self.commands
                .push_back(Command::Notify(Lifecycle::Stopping));
        }
        // No connection is accepted from here on: those not yet accepted
        // stay queued in the listening socket for whoever accepts next (the
        // new controller of an upgrade), rather than accepted and closed.
        if self.stopping.is_none() {
            self.commands.push_back(Command::StopAccepting);
        }
        // A drain waiting out its delay is overtaken: it has begun.
        if let Some(not_ready) = self.not_ready.take() {
            for req in not_ready.replies {
                self.reply(Some(req), AdminResponse::ok());
            }
        }
        let overdue = self.stopping.is_some_and(|s| s.overdue);
        self.stopping = Some(StopState {
            force,
            grace,
            overdue,
        });
        if let Some(reload) = self.reload.take() {
            for req in reload.replies {
                self.reply(Some(req), AdminResponse::error("the service is stopping"));
            }
        }
        // Connections already accepted go to a serving node before any
        // node is told to stop, so that they are served as any other (a
        // node drains what it took before its stop like its other links),
        // also to a full node, which takes them as its links close.
        if !force {
            self.flush_queue_over_limits();
        }
        for slot in self.slots.values_mut() {
            match slot.phase {
                Phase::Backoff => slot.phase = Phase::Exited,
                _ if slot.reaped && slot.dead => slot.phase = Phase::Exited,
                _ if slot.linked => self.commands.push_back(Command::Stop {
                    node: slot.key(),
                    graceful: !force,
                    grace,
                }),
                _ => {}
            }
        }
        // Connections no node could take are closed.
        let queued: Vec<C> = self.queued.drain(..).collect();
        self.close(queued, "stopping");
        self.commands.push_back(Command::Timer {
            at: now + grace + STOP_MARGIN,
            timer: Timer::StopDeadline,
        });
    }

    /// Replaces the shared ticket key (keeping the previous ones for
    /// tickets issued before) and hands the keys to every node.
    pub(super) fn rotate_tickets(&mut self, key: NewTicketKey) {
        if self.config.node.tls.is_none() || self.config.shared_ticket_keys.is_some() {
            return;
        }
        self.ticket_keys.insert(0, key.0);
        self.ticket_keys.truncate(3);
        self.send_ticket_keys();
        tracing::debug!("tls ticket key rotated");
    }

    /// Uses `keys` (a ticket-key file's, newest first) as the ticket keys.
    pub(super) fn install_ticket_keys(&mut self, keys: Vec<TicketKey>) {
        if self.config.node.tls.is_none() || keys.is_empty() {
            return;
        }
        self.ticket_keys = keys;
        self.send_ticket_keys();
        tracing::info!(
            keys = self.ticket_keys.len(),
            "tls ticket keys from the ticket-key file"
        );
    }

    /// Sends the ticket keys to every node (and to the ones that start).
    fn send_ticket_keys(&mut self) {
        let Some((current, previous)) = self.ticket_keys.split_first() else {
            return;
        };
        let keys = TicketKeys::new(current, previous);
        self.config.node.tickets = Some(keys.clone());
        for slot in self.slots.values().filter(|s| s.linked) {
            self.commands.push_back(Command::TicketKeys {
                node: slot.key(),
                keys: keys.clone(),
            });
        }
    }

    /// Nodes that are not being retired.
    fn active_nodes(&self) -> u32 {
        self.slots.values().filter(|s| !s.retiring).count() as u32
    }

    fn add_node(&mut self, now: Instant) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        self.slots.insert(id, Slot::new(id, now));
        self.start_node(now, id);
        id
    }

    /// Stops a node gracefully ([`SupervisorCore::stop_retiring`]) and
    /// forgets it once it exits.
    fn retire(&mut self, now: Instant, id: NodeId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.retiring = true;
        self.balancer.node_gone(id);
        match (slot.linked, slot.phase) {
            (true, _) => {
                let node = slot.key();
                self.stop_retiring(now, node);
            }
            // Not running (restart backoff): nothing to stop.
            (false, Phase::Backoff | Phase::Exited) => slot.phase = Phase::Exited,
            // Dead already, waiting to be reaped: it will be.
            (false, _) if slot.dead => {}
            // Starting: killed (a link that comes up meanwhile gets a stop).
            (false, _) => {
                if let Some(pid) = slot.pid {
                    self.commands.push_back(Command::Kill { pid });
                }
            }
        }
        self.remove_if_retired(id);
        self.send_grants();
    }

    /// Removes a retiring slot once its process is gone.
    pub(super) fn remove_if_retired(&mut self, id: NodeId) {
        let gone = self
            .slots
            .get(&id)
            .is_some_and(|s| s.retiring && (s.reaped || s.phase == Phase::Exited));
        if gone {
            self.slots.remove(&id);
            tracing::info!(node = id, "node retired");
        }
    }

    fn scale(&mut self, now: Instant, target: u32, req: Option<RequestId>) {
        if target == 0 {
            self.reply(
                req,
                AdminResponse::error("a controller needs at least one node"),
            );
            return;
        }
        let current = self.active_nodes();
        tracing::info!(from = current, to = target, "scaling");
        self.config.nodes = target;
        if target > current {
            for _ in current..target {
                self.add_node(now);
            }
        } else {
            // Retire the newest nodes first.
            let victims: Vec<NodeId> = self
                .slots
                .values()
                .filter(|s| !s.retiring)
                .map(|s| s.id)
                .rev()
                .take((current - target) as usize)
                .collect();
            for id in victims {
                self.retire(now, id);
            }
        }
        self.reply(req, AdminResponse::ok());
        // A reload may wait for a node just retired.
        self.reload_progress(now);
    }

    fn begin_reload(&mut self, req: Option<RequestId>) {
        if let Some(reload) = &mut self.reload {
            // One reload at a time; this request is answered with it.
            reload.replies.extend(req);
            return;
        }
        self.reload = Some(ReloadState {
            reading: true,
            replies: req.into_iter().collect(),
            ..ReloadState::default()
        });
        self.commands.push_back(Command::ReadConfig);
    }

    pub(super) fn config_read(
        &mut self,
        now: Instant,
        result: Result<Box<ControllerConfig>, String>,
    ) {
        let Some(reload) = self.reload.as_mut().filter(|r| r.reading) else {
            return; // stopped meanwhile
        };
        let mut new = match result {
            Ok(c) => *c,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the configuration is unusable; keeping the current one");
                let replies = std::mem::take(&mut reload.replies);
                self.reload = None;
                for req in replies {
                    self.reply(
                        Some(req),
                        AdminResponse::error(format!("reload refused: {e}")),
                    );
                }
                return;
            }
        };
        self.commands
            .push_back(Command::Notify(Lifecycle::Reloading));
        let old = &self.config;
        if new.balance != old.balance || new.listen != old.listen || new.backlog != old.backlog {
            tracing::warn!("listen addresses, backlog and balance mode change only with a restart or binary upgrade; kept");
        }
        new.balance = old.balance;
        new.listen = old.listen.clone();
        new.backlog = old.backlog;
        // Keep the current ticket keys (clients keep resuming), unless the
        // ticket-key file gives new ones.
        new.node.tickets = old.node.tickets.clone();
        let shared = new.shared_ticket_keys.clone();
        if let Some((current, previous)) = shared.as_deref().and_then(<[_]>::split_first) {
            new.node.tickets = Some(TicketKeys::new(current, previous));
        }
        let target = new.nodes;
        self.balancer.set_limits(new.limits);
        self.restarts.set_policy(new.restart);
        reload.previous = Some(Box::new(std::mem::replace(&mut self.config, new)));
        let queue: VecDeque<NodeId> = self
            .slots
            .values()
            .filter(|s| !s.retiring)
            .map(|s| s.id)
            .collect();
        tracing::info!(
            nodes = queue.len(),
            target,
            "reloading: replacing nodes one by one"
        );
        reload.reading = false;
        reload.old = queue.iter().copied().collect();
        reload.queue = queue;
        // The nodes still serving take the file's keys too: a ticket one
        // host seals opens everywhere.
        if let Some(keys) = shared {
            self.install_ticket_keys(keys);
        }
        self.reload_progress(now);
    }

    /// A reload's replacement `node` ended before it served (its program
    /// or its new settings are broken, as often as not): the reload is
    /// abandoned rather than the replacement restarted until the restart
    /// intensity stops the whole service. The old node it was to replace,
    /// and every other not yet replaced, keep serving, and the settings
    /// before the reload are put back but for the node count (so a restart
    /// of an old node runs what it ran). Answers the
    /// reload's requests with the reason. Returns whether `node` was such
    /// a replacement (and is now gone).
    pub(super) fn reload_replacement_failed(&mut self, now: Instant, node: NodeId) -> bool {
        let replacing = self
            .reload
            .as_ref()
            .and_then(|r| r.current)
            .is_some_and(|(_, new)| new == node);
        if !replacing {
            return false;
        }
        let Some(reload) = self.reload.take() else {
            return false;
        };
        let why = match self.slots.get(&node).and_then(|s| s.exit_code) {
            Some(code) => format!("exited with code {code}"),
            None => "ended".to_owned(),
        };
        // The current old node is not counted: it was not replaced.
        let replaced = reload.old.len().saturating_sub(reload.queue.len() + 1);
        if let Some(previous) = reload.previous {
            // The node count stays (a scale during the reload set it), and
            // so do the ticket keys (rotated meanwhile, perhaps).
            let nodes = self.config.nodes;
            let tickets = self.config.node.tickets.take();
            self.balancer.set_limits(previous.limits);
            self.restarts.set_policy(previous.restart);
            self.config = *previous;
            self.config.nodes = nodes;
            self.config.node.tickets = tickets;
        }
        let kept = if replaced == 0 {
            "the settings before the reload are back in force"
        } else {
            "the settings before the reload are back in force; the nodes already replaced run the new ones until they are next replaced"
        };
        let message = format!(
            "reload failed: the new node {node} {why} before it served; the old nodes keep serving \
             ({replaced} of {} replaced; {kept})",
            reload.old.len()
        );
        tracing::error!("{message}");
        if let Some(slot) = self.slots.get_mut(&node) {
            slot.retiring = true;
            slot.decided = true;
        }
        self.remove_if_retired(node);
        // Out of the reloading state (systemd's READY=1 after RELOADING=1).
        self.commands
            .push_back(Command::Notify(Lifecycle::ReloadFailed));
        for req in reload.replies {
            self.reply(Some(req), AdminResponse::error(message.clone()));
        }
        // The failed replacement may have been one a scale counted on.
        if self.active_nodes() != self.config.nodes {
            self.scale(now, self.config.nodes, None);
        }
        true
    }

    /// Advances a reload: once the replacement of the current old node
    /// serves, retire the old one and start on the next.
    pub(super) fn reload_progress(&mut self, now: Instant) {
        let Some(mut reload) = self.reload.take() else {
            return;
        };
        if reload.reading {
            self.reload = Some(reload);
            return;
        }
        loop {
            if let Some((old, new)) = reload.current {
                let new_slot = self.slots.get(&new).filter(|s| !s.retiring);
                let settled_at = new_slot
                    .filter(|_| self.config.node_command.is_some())
                    .map(|s| s.started_at + super::EXTERNAL_SETTLE)
                    .filter(|at| now < *at);
                match new_slot {
                    Some(s) if s.phase != Phase::Serving => {
                        self.reload = Some(reload);
                        return;
                    }
                    // An external replacement serves once started: the old
                    // node waits until it has run a while.
                    Some(_) if settled_at.is_some() => {
                        if let Some(at) = settled_at {
                            self.commands.push_back(Command::Timer {
                                at,
                                timer: Timer::ReloadSettled,
                            });
                        }
                        self.reload = Some(reload);
                        return;
                    }
                    Some(_) => self.retire(now, old),
                    // The replacement was retired (scaled down): the old
                    // node still needs one.
                    None => reload.queue.push_front(old),
                }
                reload.current = None;
            }
            match reload.queue.pop_front() {
                Some(old) if self.slots.get(&old).is_some_and(|s| !s.retiring) => {
                    let new = self.add_node(now);
                    reload.current = Some((old, new));
                }
                Some(_) => continue,
                None => break,
            }
        }
        // Every old node is replaced; match the configured count.
        let target = self.config.nodes;
        if self.active_nodes() != target {
            self.scale(now, target, None);
        }
        tracing::info!("reload complete: every node replaced");
        self.commands
            .push_back(Command::Notify(Lifecycle::Reloaded));
        for req in reload.replies {
            self.reply(Some(req), AdminResponse::ok());
        }
    }

    fn begin_upgrade(&mut self, req: Option<RequestId>) {
        if self.upgrade.is_some() {
            self.reply(
                req,
                AdminResponse::error("an upgrade is already in progress"),
            );
            return;
        }
        self.upgrade = Some(Upgrade::Starting { req });
        self.commands.push_back(Command::StartUpgrade);
    }

    pub(super) fn upgrade_started(&mut self, now: Instant, result: Result<u32, String>) {
        let Some(Upgrade::Starting { req }) = self.upgrade else {
            return;
        };
        match result {
            Ok(pid) => {
                tracing::info!(
                    pid,
                    "upgrade: new controller started; waiting for its nodes to serve"
                );
                // The request is answered when the upgrade ends, so that
                // `vole upgrade` reports whether it worked.
                self.upgrade = Some(Upgrade::Waiting { pid, req });
                self.commands.push_back(Command::Timer {
                    at: now + UPGRADE_TIMEOUT,
                    timer: Timer::UpgradeDeadline { pid },
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "upgrade failed to start; still serving");
                self.upgrade = None;
                self.reply(req, AdminResponse::error(format!("upgrade failed: {e}")));
            }
        }
    }

    /// The upgrade ends: the new controller serves, or failed (reported a
    /// failure, exited, or did not serve in time). The request that asked
    /// is answered now.
    pub(super) fn upgrade_done(&mut self, now: Instant, pid: u32, result: Result<(), String>) {
        let req = match self.upgrade {
            Some(Upgrade::Waiting { pid: p, req }) if p == pid => req,
            _ => return,
        };
        self.upgrade = None;
        let reply = match &result {
            Ok(()) => AdminResponse::ok(),
            Err(e) if self.stopping.is_some() => {
                AdminResponse::error(format!("upgrade failed: {e}"))
            }
            Err(e) => AdminResponse::error(format!(
                "upgrade failed: {e}; the old controller still serves"
            )),
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    new_pid = pid,
                    "upgrade: the new controller serves; this one drains and exits"
                );
                self.commands
                    .push_back(Command::Notify(Lifecycle::MainPid(pid)));
                // The admin socket is the new controller's from now on.
                self.commands.push_back(Command::KeepAdminSocket);
                self.commands.push_back(Command::ReleaseAdmin);
                self.outcome = Some(Outcome::Upgraded { pid });
                // Stopping already (a signal, an escalation): that stop
                // goes on as it is (a forced one stays forced).
                if self.stopping.is_none() {
                    self.begin_stop(now, false, self.config.grace);
                }
            }
            Err(e) => {
                tracing::error!(new_pid = pid, error = %e, "upgrade failed; still serving");
                self.commands.push_back(Command::Kill { pid });
            }
        }
        // After the hand-over's commands: once `vole upgrade` returns, the
        // new controller is the one that serves.
        self.reply(req, reply);
    }
}
