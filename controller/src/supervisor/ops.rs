//! Operations on a running controller: reload (replace every node one by
//! one with the configuration re-read), scale, reopen logs, binary upgrade;
//! and the hooks through which the embedding program (the `vole` command)
//! takes part: re-reading its settings, reopening its log file, starting
//! the new controller of an upgrade, telling systemd.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{ControllerConfig, Event, NodeId, Outcome, Phase, Slot, Supervisor};
use crate::admin::AdminResponse;

/// Moments of a controller's life that an init system wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Every node serves (the first time).
    Ready,
    /// A reload started.
    Reloading,
    /// A reload finished; serving again.
    Reloaded,
    /// Stopping.
    Stopping,
    /// A new controller (binary upgrade) is now the main process.
    MainPid(u32),
    /// The controller's loop is alive (systemd watchdog).
    Watchdog,
}

/// What a binary upgrade hands to the new controller.
#[derive(Debug)]
pub struct UpgradeRequest<'a> {
    /// The listening sockets (or port reservations in `reuseport` mode), in
    /// order.
    pub listeners: Vec<BorrowedFd<'a>>,
    /// The admin socket.
    pub admin: Option<BorrowedFd<'a>>,
}

/// A new controller started for a binary upgrade.
#[derive(Debug)]
pub struct UpgradeChild {
    /// Its pid.
    pub pid: u32,
    /// Resolves when its nodes serve (or why it failed).
    pub ready: oneshot::Receiver<Result<(), String>>,
}

type ReloadHook = Box<dyn Fn() -> Result<ControllerConfig, String> + Send>;
type UpgradeHook = Box<dyn Fn(UpgradeRequest<'_>) -> Result<UpgradeChild, String> + Send>;

/// How the embedding program takes part in the controller's operations.
pub struct Hooks {
    /// Called once when every node serves for the first time.
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// Told about lifecycle moments (systemd notifications).
    pub notify: Box<dyn Fn(Lifecycle) + Send + Sync>,
    /// If set, [`Lifecycle::Watchdog`] is sent at this period from the
    /// controller's own loop (a hung loop stops it).
    pub watchdog: Option<Duration>,
    /// Re-reads the configuration for a reload.
    pub reload: ReloadHook,
    /// Reopens log files.
    pub reopen_logs: Box<dyn Fn() -> Result<(), String> + Send>,
    /// Starts the new controller of a binary upgrade.
    pub upgrade: UpgradeHook,
}

impl Hooks {
    /// Hooks that do nothing; reload keeps the current configuration,
    /// upgrades are refused.
    pub fn none(config: ControllerConfig) -> Hooks {
        Hooks {
            on_ready: None,
            notify: Box::new(|_| {}),
            watchdog: None,
            reload: Box::new(move || Ok(config.clone())),
            reopen_logs: Box::new(|| Ok(())),
            upgrade: Box::new(|_| Err("binary upgrades are not available here".to_owned())),
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("watchdog", &self.watchdog)
            .finish_non_exhaustive()
    }
}

/// An operation, from a signal or the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Reload,
    Scale(u32),
    Grow,
    Shrink,
    ReopenLogs,
    Upgrade,
}

/// A rolling replacement in progress.
pub(crate) struct ReloadState {
    /// Old nodes still to replace.
    queue: VecDeque<NodeId>,
    /// The old node being replaced and its new replacement.
    current: Option<(NodeId, NodeId)>,
    replies: Vec<oneshot::Sender<AdminResponse>>,
}

impl ReloadState {
    pub(crate) fn fail(self, why: &str) {
        for r in self.replies {
            let _ = r.send(AdminResponse::error(why));
        }
    }
}

fn answer(reply: Option<oneshot::Sender<AdminResponse>>, response: AdminResponse) {
    if let Some(r) = reply {
        let _ = r.send(response);
    }
}

impl Supervisor {
    pub(super) fn op(&mut self, op: Op, reply: Option<oneshot::Sender<AdminResponse>>) {
        if self.stopping.is_some() {
            answer(reply, AdminResponse::error("the service is stopping"));
            return;
        }
        match op {
            Op::Reload => self.begin_reload(reply),
            Op::Scale(n) => self.scale(n, reply),
            Op::Grow => {
                let n = self.active_nodes() + 1;
                self.scale(n, reply);
            }
            Op::Shrink => {
                let n = self.active_nodes().saturating_sub(1).max(1);
                self.scale(n, reply);
            }
            Op::ReopenLogs => {
                let result = (self.hooks.reopen_logs)();
                // Nodes write through this process's stderr, so reopening
                // here covers them too.
                match result {
                    Ok(()) => answer(reply, AdminResponse::ok()),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reopen the log file");
                        answer(reply, AdminResponse::error(e));
                    }
                }
            }
            Op::Upgrade => self.begin_upgrade(reply),
        }
    }

    /// Nodes that are not being retired.
    fn active_nodes(&self) -> u32 {
        self.slots.values().filter(|s| !s.retiring).count() as u32
    }

    fn add_node(&mut self) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        self.slots.insert(id, Slot::new(id));
        self.start_node(id);
        id
    }

    /// Stops a node gracefully and forgets it once it exits.
    fn retire(&mut self, id: NodeId) {
        let grace = self.config().grace;
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.retiring = true;
        self.balancer.node_gone(id);
        match (&slot.control, slot.phase) {
            (Some(control), _) => super::send_stop(control, false, grace),
            // Not running (restart backoff): nothing to stop.
            (None, Phase::Backoff | Phase::Exited) => {
                slot.phase = Phase::Exited;
            }
            // Starting: it gets the stop when its link comes up... or is
            // killed if it never does.
            (None, _) => {
                if let Some(pid) = slot.pid {
                    crate::spawn::kill(pid);
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

    fn scale(&mut self, target: u32, reply: Option<oneshot::Sender<AdminResponse>>) {
        if target == 0 {
            answer(
                reply,
                AdminResponse::error("a controller needs at least one node"),
            );
            return;
        }
        let current = self.active_nodes();
        tracing::info!(from = current, to = target, "scaling");
        self.bound.config.nodes = target;
        if target > current {
            for _ in current..target {
                self.add_node();
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
                self.retire(id);
            }
        }
        answer(reply, AdminResponse::ok());
    }

    fn begin_reload(&mut self, reply: Option<oneshot::Sender<AdminResponse>>) {
        if let Some(reload) = &mut self.reload {
            // One reload at a time; this request is answered with it.
            if let Some(r) = reply {
                reload.replies.push(r);
            }
            return;
        }
        let new = match (self.hooks.reload)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the configuration is unusable; keeping the current one");
                answer(reply, AdminResponse::error(format!("reload refused: {e}")));
                return;
            }
        };
        (self.hooks.notify)(Lifecycle::Reloading);
        let old = &self.bound.config;
        if new.balance != old.balance || new.listen != old.listen || new.backlog != old.backlog {
            tracing::warn!("listen addresses, backlog and balance mode change only with a restart or binary upgrade; kept");
        }
        let mut new = new;
        new.balance = old.balance;
        new.listen = old.listen.clone();
        new.backlog = old.backlog;
        // Keep the current ticket keys: clients keep resuming.
        new.node.tickets = old.node.tickets.clone();
        let target = new.nodes;
        self.balancer.set_limits(new.limits);
        self.restarts.set_policy(new.restart);
        self.bound.config = new;
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
        self.reload = Some(ReloadState {
            queue,
            current: None,
            replies: reply.into_iter().collect(),
        });
        self.reload_progress();
    }

    /// Advances a reload: once the replacement of the current old node
    /// serves, retire the old one and start on the next.
    pub(super) fn reload_progress(&mut self) {
        let Some(mut reload) = self.reload.take() else {
            return;
        };
        loop {
            if let Some((old, new)) = reload.current {
                let new_serving = self
                    .slots
                    .get(&new)
                    .is_some_and(|s| s.phase == Phase::Serving);
                if !new_serving {
                    self.reload = Some(reload);
                    return;
                }
                self.retire(old);
                reload.current = None;
            }
            match reload.queue.pop_front() {
                Some(old) if self.slots.get(&old).is_some_and(|s| !s.retiring) => {
                    let new = self.add_node();
                    reload.current = Some((old, new));
                }
                Some(_) => continue,
                None => break,
            }
        }
        // Every old node is replaced; match the configured count.
        let target = self.bound.config.nodes;
        let active = self.active_nodes();
        if active != target {
            self.scale(target, None);
        }
        tracing::info!("reload complete: every node replaced");
        (self.hooks.notify)(Lifecycle::Reloaded);
        for r in reload.replies {
            let _ = r.send(AdminResponse::ok());
        }
    }

    fn begin_upgrade(&mut self, reply: Option<oneshot::Sender<AdminResponse>>) {
        if self.upgrading {
            answer(
                reply,
                AdminResponse::error("an upgrade is already in progress"),
            );
            return;
        }
        let request = UpgradeRequest {
            listeners: self.bound.sockets.iter().map(AsFd::as_fd).collect(),
            admin: self.admin_fd.as_ref().map(AsFd::as_fd),
        };
        let child = match (self.hooks.upgrade)(request) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "upgrade failed to start; still serving");
                answer(reply, AdminResponse::error(format!("upgrade failed: {e}")));
                return;
            }
        };
        self.upgrading = true;
        tracing::info!(
            pid = child.pid,
            "upgrade: new controller started; waiting for its nodes to serve"
        );
        let tx = self.tx.clone();
        let pid = child.pid;
        tokio::spawn(async move {
            let result = match tokio::time::timeout(Duration::from_secs(60), child.ready).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("the new controller exited before serving".to_owned()),
                Err(_) => Err("the new controller did not serve within 60 s".to_owned()),
            };
            let _ = tx.send(Event::UpgradeDone { pid, result });
        });
        answer(reply, AdminResponse::ok());
    }

    pub(super) fn upgrade_done(&mut self, pid: u32, result: Result<(), String>) {
        self.upgrading = false;
        match result {
            Ok(()) => {
                tracing::info!(
                    new_pid = pid,
                    "upgrade: the new controller serves; this one drains and exits"
                );
                (self.hooks.notify)(Lifecycle::MainPid(pid));
                if let Some(keep) = &self.admin_keep {
                    keep.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                self.outcome = Some(Outcome::Upgraded { pid });
                self.begin_stop(false, self.config().grace);
            }
            Err(e) => {
                tracing::error!(new_pid = pid, error = %e, "upgrade failed; still serving");
                crate::spawn::kill(pid);
            }
        }
    }
}
