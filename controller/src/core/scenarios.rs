//! The core's behaviour in a few plain scenarios, step by step: how a
//! driver talks to it.

use std::time::{Duration, Instant};

use vole_control::control::{Balance, NodeConfig};

use super::event::{Command, DeathCause, Event, NodeKey, Sig, Timer};
use super::{SupervisorCore, EXIT_GRACE, STOP_MARGIN};
use crate::balance::Limits;
use crate::config::ControllerConfig;
use crate::lifecycle::{Lifecycle, Outcome};
use crate::restart::RestartPolicy;

pub(super) fn config(nodes: u32, balance: Balance) -> ControllerConfig {
    ControllerConfig {
        name: "vole".to_owned(),
        nodes,
        balance,
        listen: Vec::new(),
        backlog: 128,
        limits: Limits::default(),
        restart: RestartPolicy::default(),
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(2),
        grace: Duration::from_secs(5),
        shutdown_delay: Duration::ZERO,
        node: NodeConfig {
            node_id: 0,
            balance,
            tls: None,
            plain: true,
            vts: None,
            handshake_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            keep_alive_ms: None,
            idle_timeout_ms: None,
            max_call_time_ms: None,
            max_message: 1 << 20,
            grace_ms: 5000,
            tickets: None,
            service: None,
            budgets: Default::default(),
            access: None,
            proxy_from: None,
        },
        node_args: Vec::new(),
        ticket_rotation: Duration::from_secs(3600),
        shared_ticket_keys: None,
        node_user: None,
        metrics_interval: None,
        log_json: false,
        node_command: None,
    }
}

pub(super) fn commands(core: &mut SupervisorCore<u32>) -> Vec<Command<u32>> {
    std::iter::from_fn(|| core.poll_command()).collect()
}

/// Starts `n` nodes and brings them all to serving; their keys and pids.
pub(super) fn serving(core: &mut SupervisorCore<u32>, now: Instant, n: u32) -> Vec<(NodeKey, u32)> {
    core.start(now, None);
    let spawned: Vec<NodeKey> = commands(core)
        .into_iter()
        .map(|c| match c {
            Command::Spawn { node, .. } => node,
            other => panic!("expected spawns, got {other:?}"),
        })
        .collect();
    assert_eq!(spawned.len(), n as usize);
    let mut nodes = Vec::new();
    for (i, node) in spawned.into_iter().enumerate() {
        let pid = 100 + i as u32;
        core.handle(now, Event::Spawned { node, pid });
        core.handle(now, Event::LinkUp(node));
        core.handle(now, Event::Ready(node));
        nodes.push((node, pid));
    }
    let out = commands(core);
    let heartbeats = out
        .iter()
        .filter(|c| matches!(c, Command::StartHeartbeat { .. }))
        .count();
    assert_eq!(heartbeats, n as usize);
    assert!(
        matches!(out.last(), Some(Command::Notify(Lifecycle::Ready))),
        "ready once all serve: {out:?}"
    );
    nodes
}

#[test]
fn a_hung_node_is_killed_at_once_and_restarted_after_backoff() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(2, Balance::Grant), 1, t0);
    let nodes = serving(&mut core, t0, 2);
    let (node, pid) = nodes[0];
    let t1 = t0 + Duration::from_secs(3);
    core.handle(
        t1,
        Event::Died {
            node,
            cause: DeathCause::Hung,
        },
    );
    let out = commands(&mut core);
    assert!(
        matches!(out[0], Command::Release(n) if n == node),
        "{out:?}"
    );
    assert!(
        matches!(out[1], Command::Kill { pid: p } if p == pid),
        "{out:?}"
    );
    // The survivor is alone now: it gets the whole grant window.
    assert!(out
        .iter()
        .any(|c| matches!(c, Command::Grant { node: n, .. } if *n == nodes[1].0)));
    core.handle(
        t1,
        Event::Exited {
            node,
            code: None,
            signal: Some(9),
        },
    );
    let out = commands(&mut core);
    let Some(Command::Timer {
        at,
        timer: Timer::RestartDue(due),
    }) = out.first()
    else {
        panic!("expected a restart timer: {out:?}");
    };
    assert_eq!(*due, node);
    assert!(*at > t1 && *at <= t1 + Duration::from_millis(125));
    core.handle(*at, Event::Timer(Timer::RestartDue(node)));
    let out = commands(&mut core);
    assert!(
        matches!(&out[..], [Command::Spawn { node: n, .. }] if n.id == node.id && n.gen > node.gen),
        "{out:?}"
    );
}

#[test]
fn a_node_whose_link_closed_gets_a_moment_to_exit() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(1, Balance::Shared), 1, t0);
    let nodes = serving(&mut core, t0, 1);
    let (node, pid) = nodes[0];
    let cause = DeathCause::Link("closed".to_owned());
    core.handle(t0, Event::Died { node, cause });
    let out = commands(&mut core);
    assert!(
        matches!(&out[..], [Command::Release(_), Command::Timer { at, timer: Timer::KillIfAlive(n) }]
            if *at == t0 + EXIT_GRACE && *n == node),
        "{out:?}"
    );
    core.handle(t0 + EXIT_GRACE, Event::Timer(Timer::KillIfAlive(node)));
    let out = commands(&mut core);
    assert!(
        matches!(&out[..], [Command::Kill { pid: p }] if *p == pid),
        "{out:?}"
    );
}

#[test]
fn a_stop_asks_then_kills_at_grace_plus_margin_then_finishes() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(2, Balance::Grant), 1, t0);
    let nodes = serving(&mut core, t0, 2);
    core.handle(t0, Event::Signal(Sig::Term));
    let out = commands(&mut core);
    assert!(matches!(out[0], Command::Notify(Lifecycle::Stopping)));
    let stops = out
        .iter()
        .filter(|c| matches!(c, Command::Stop { graceful: true, grace, .. } if *grace == Duration::from_secs(5)))
        .count();
    assert_eq!(stops, 2);
    let deadline = t0 + Duration::from_secs(5) + STOP_MARGIN;
    assert!(matches!(
        out.last(),
        Some(Command::Timer { at, timer: Timer::StopDeadline }) if *at == deadline
    ));
    // One node drains and exits; the other does not.
    let (drained, _) = nodes[0];
    core.handle(
        t0,
        Event::Exited {
            node: drained,
            code: Some(0),
            signal: None,
        },
    );
    commands(&mut core);
    core.handle(deadline, Event::Timer(Timer::StopDeadline));
    let out = commands(&mut core);
    assert!(
        matches!(&out[..], [Command::Kill { pid }] if *pid == nodes[1].1),
        "{out:?}"
    );
    core.handle(
        deadline,
        Event::Exited {
            node: nodes[1].0,
            code: None,
            signal: Some(9),
        },
    );
    let out = commands(&mut core);
    assert!(
        matches!(out.last(), Some(Command::Finish(Outcome::StoppedUnclean))),
        "{out:?}"
    );
    assert!(core.is_finished());
}

#[test]
fn connections_a_dead_node_never_received_go_to_another() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(2, Balance::Dispatch), 1, t0);
    let nodes = serving(&mut core, t0, 2);
    core.handle(t0, Event::Connections(vec![1, 2, 3, 4]));
    assert!(
        commands(&mut core).is_empty(),
        "dispatched at the batch's end"
    );
    core.handle(t0, Event::BatchDone);
    let mut to_first = Vec::new();
    for c in commands(&mut core) {
        match c {
            Command::Dispatch { node, conn } if node == nodes[0].0 => to_first.push(conn),
            Command::Dispatch { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(to_first.len(), 2, "ties rotate");
    let (dead, _) = nodes[0];
    let cause = DeathCause::Link("closed".to_owned());
    core.handle(t0, Event::Died { node: dead, cause });
    commands(&mut core);
    core.handle(
        t0,
        Event::Undelivered {
            node: dead,
            conns: to_first.clone(),
        },
    );
    let again: Vec<(NodeKey, u32)> = commands(&mut core)
        .into_iter()
        .filter_map(|c| match c {
            Command::Dispatch { node, conn } => Some((node, conn)),
            _ => None,
        })
        .collect();
    assert_eq!(
        again,
        to_first
            .iter()
            .map(|c| (nodes[1].0, *c))
            .collect::<Vec<_>>()
    );
}

/// External nodes (`node-command`) have no control link: they serve once
/// started, get no heartbeat, are stopped like any node (the driver sends
/// SIGTERM), and ending by that SIGTERM is a clean stop.
#[test]
fn external_nodes_serve_once_started_and_stop_cleanly_on_sigterm() {
    let t0 = Instant::now();
    let mut config = config(2, Balance::Shared);
    config.node_command = Some(vec!["python3".to_owned(), "svc.py".to_owned()]);
    let mut core = SupervisorCore::new(config, 1, t0);
    core.start(t0, None);
    let spawned: Vec<NodeKey> = commands(&mut core)
        .into_iter()
        .map(|c| match c {
            Command::Spawn { node, command, .. } => {
                assert_eq!(
                    command.external.as_deref(),
                    Some(&["python3".to_owned(), "svc.py".to_owned()][..])
                );
                node
            }
            other => panic!("expected spawns, got {other:?}"),
        })
        .collect();
    for (i, node) in spawned.iter().enumerate() {
        core.handle(
            t0,
            Event::Spawned {
                node: *node,
                pid: 200 + i as u32,
            },
        );
    }
    let out = commands(&mut core);
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::StartHeartbeat { .. })),
        "no heartbeat without a control link: {out:?}"
    );
    assert!(
        matches!(out.last(), Some(Command::Notify(Lifecycle::Ready))),
        "serving once started: {out:?}"
    );
    assert_eq!(core.serving(), 2);

    core.handle(t0, Event::Signal(Sig::Term));
    let stops = commands(&mut core)
        .into_iter()
        .filter(|c| matches!(c, Command::Stop { graceful: true, .. }))
        .count();
    assert_eq!(stops, 2, "each node is told to stop");
    // One handles SIGTERM and exits 0, the other dies by it.
    core.handle(
        t0,
        Event::Exited {
            node: spawned[0],
            code: Some(0),
            signal: None,
        },
    );
    core.handle(
        t0,
        Event::Exited {
            node: spawned[1],
            code: None,
            signal: Some(15),
        },
    );
    let out = commands(&mut core);
    assert!(
        matches!(out.last(), Some(Command::Finish(Outcome::Stopped))),
        "a clean stop: {out:?}"
    );
}

/// An external node that dies by SIGTERM when nobody asked it to stop is a
/// crash like any other: it is restarted.
#[test]
fn an_external_node_killed_by_someone_else_is_restarted() {
    let t0 = Instant::now();
    let mut config = config(1, Balance::Shared);
    config.node_command = Some(vec!["svc".to_owned()]);
    let mut core = SupervisorCore::new(config, 1, t0);
    core.start(t0, None);
    let Some(Command::Spawn { node, .. }) = core.poll_command() else {
        panic!("a spawn");
    };
    core.handle(t0, Event::Spawned { node, pid: 300 });
    let _ = commands(&mut core);
    core.handle(
        t0,
        Event::Exited {
            node,
            code: None,
            signal: Some(15),
        },
    );
    let out = commands(&mut core);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Timer {
                timer: Timer::RestartDue(n),
                ..
            } if *n == node
        )),
        "{out:?}"
    );
}

/// `status`'s state of each node, by id.
fn states(core: &mut SupervisorCore<u32>, now: Instant) -> Vec<(u32, String)> {
    commands(core);
    core.handle(
        now,
        Event::Admin {
            req: 7,
            request: crate::admin::AdminRequest::Status,
        },
    );
    let out = commands(core);
    let [Command::GatherStatus { nodes, .. }] = &out[..] else {
        panic!("expected a status to gather: {out:?}");
    };
    nodes.iter().map(|(r, _)| (r.id, r.state.clone())).collect()
}

fn named(states: &[(u32, &str)]) -> Vec<(u32, String)> {
    states.iter().map(|(i, s)| (*i, (*s).to_owned())).collect()
}

/// A node removed by a scale-down or replaced by a reload shows as
/// `retiring` until it exits, not `serving`; a graceful stop's nodes show
/// as `draining`, a forced stop's as `stopping`.
#[test]
fn status_shows_retiring_draining_and_stopping_nodes() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(3, Balance::Grant), 1, t0);
    let nodes = serving(&mut core, t0, 3);
    let ids: Vec<u32> = nodes.iter().map(|(n, _)| n.id).collect();
    assert_eq!(
        states(&mut core, t0),
        named(&[
            (ids[0], "serving"),
            (ids[1], "serving"),
            (ids[2], "serving")
        ])
    );

    // Scale-down: the newest is told to stop and retires until it exits.
    core.handle(
        t0,
        Event::Admin {
            req: 1,
            request: crate::admin::AdminRequest::Scale { nodes: 2 },
        },
    );
    assert_eq!(
        states(&mut core, t0),
        named(&[
            (ids[0], "serving"),
            (ids[1], "serving"),
            (ids[2], "retiring")
        ])
    );
    let exited = |core: &mut SupervisorCore<u32>, node: NodeKey| {
        core.handle(
            t0,
            Event::Exited {
                node,
                code: Some(0),
                signal: None,
            },
        )
    };
    exited(&mut core, nodes[2].0);
    assert_eq!(
        states(&mut core, t0),
        named(&[(ids[0], "serving"), (ids[1], "serving")])
    );

    // Reload: each old node retires once its replacement serves.
    core.handle(
        t0,
        Event::Admin {
            req: 2,
            request: crate::admin::AdminRequest::Reload,
        },
    );
    commands(&mut core);
    core.handle(
        t0,
        Event::ConfigRead(Ok(Box::new(config(2, Balance::Grant)))),
    );
    let spawned: Vec<NodeKey> = commands(&mut core)
        .into_iter()
        .filter_map(|c| match c {
            Command::Spawn { node, .. } => Some(node),
            _ => None,
        })
        .collect();
    let [new] = spawned[..] else {
        panic!("one replacement at a time: {spawned:?}");
    };
    assert_eq!(
        states(&mut core, t0),
        named(&[
            (ids[0], "serving"),
            (ids[1], "serving"),
            (new.id, "starting")
        ])
    );
    core.handle(
        t0,
        Event::Spawned {
            node: new,
            pid: 200,
        },
    );
    core.handle(t0, Event::LinkUp(new));
    core.handle(t0, Event::Ready(new));
    assert_eq!(
        states(&mut core, t0),
        named(&[
            (ids[0], "retiring"),
            (ids[1], "serving"),
            (new.id, "serving"),
            (new.id + 1, "starting")
        ])
    );

    // A graceful stop: the nodes told to finish their links drain (a
    // retiring one too); a forced one stops.
    core.handle(t0, Event::Signal(Sig::Term));
    assert_eq!(
        states(&mut core, t0),
        named(&[
            (ids[0], "draining"),
            (ids[1], "draining"),
            (new.id, "draining"),
            (new.id + 1, "starting")
        ])
    );
    core.handle(t0, Event::Signal(Sig::Term));
    let all: Vec<String> = states(&mut core, t0).into_iter().map(|(_, s)| s).collect();
    assert_eq!(all, ["stopping"; 4]);
}

/// The reply to an admin request, if `out` has one for `req`.
fn reply_to(out: &[Command<u32>], req: u64) -> Option<&crate::admin::AdminResponse> {
    out.iter().find_map(|c| match c {
        Command::Reply { req: r, response } if *r == req => Some(response),
        _ => None,
    })
}

/// Asks for an upgrade on the admin socket as request `req`; the hook
/// starts the new controller as `pid`. Nothing is answered yet.
fn upgrade_started(core: &mut SupervisorCore<u32>, now: Instant, req: u64, pid: u32) {
    core.handle(
        now,
        Event::Admin {
            req,
            request: crate::admin::AdminRequest::Upgrade,
        },
    );
    let out = commands(core);
    assert!(
        matches!(out[..], [Command::StartUpgrade]),
        "the hook is called: {out:?}"
    );
    core.handle(now, Event::UpgradeStarted(Ok(pid)));
    let out = commands(core);
    assert!(
        reply_to(&out, req).is_none(),
        "not answered while the new controller starts: {out:?}"
    );
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Timer { timer: Timer::UpgradeDeadline { pid: p }, .. } if *p == pid
        )),
        "{out:?}"
    );
}

#[test]
fn an_upgrade_is_answered_when_it_ends_with_its_outcome() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(1, Balance::Grant), 1, t0);
    serving(&mut core, t0, 1);

    // The new controller exits before serving: an error, and it is killed;
    // this controller goes on.
    upgrade_started(&mut core, t0, 7, 4242);
    core.handle(
        t0,
        Event::UpgradeDone {
            pid: 4242,
            result: Err("the new controller exited before serving".to_owned()),
        },
    );
    let out = commands(&mut core);
    let reply = reply_to(&out, 7).expect("answered when it failed");
    assert!(!reply.ok, "{reply:?}");
    let error = reply.error.as_deref().unwrap_or("");
    assert!(
        error.contains("exited before serving") && error.contains("still serves"),
        "{error}"
    );
    assert!(
        out.iter().any(|c| matches!(c, Command::Kill { pid: 4242 })),
        "{out:?}"
    );
    assert!(!core.is_finished() && core.stopping.is_none());

    // One that never serves: answered at the deadline.
    upgrade_started(&mut core, t0, 8, 4343);
    core.handle(t0, Event::Timer(Timer::UpgradeDeadline { pid: 4343 }));
    let out = commands(&mut core);
    let reply = reply_to(&out, 8).expect("answered at the deadline");
    assert!(
        !reply.ok
            && reply
                .error
                .as_deref()
                .unwrap_or("")
                .contains("did not serve"),
        "{reply:?}"
    );

    // One that serves: ok, after the hand-over's commands.
    upgrade_started(&mut core, t0, 9, 4444);
    core.handle(
        t0,
        Event::UpgradeDone {
            pid: 4444,
            result: Ok(()),
        },
    );
    let out = commands(&mut core);
    let reply = reply_to(&out, 9).expect("answered once the new one serves");
    assert!(reply.ok, "{reply:?}");
    let at = |f: &dyn Fn(&Command<u32>) -> bool| out.iter().position(f);
    let main_pid = at(&|c| matches!(c, Command::Notify(Lifecycle::MainPid(4444))));
    let replied = at(&|c| matches!(c, Command::Reply { req: 9, .. }));
    assert!(main_pid.is_some() && main_pid < replied, "{out:?}");
    assert!(core.stopping.is_some(), "the old controller drains");
}

/// Where the first command matching `f` is in `out`.
fn position(out: &[Command<u32>], f: impl Fn(&Command<u32>) -> bool) -> Option<usize> {
    out.iter().position(f)
}

/// A binary upgrade's hand-over in `dispatch` mode: once the new controller
/// serves, this one stops accepting first (the new one takes what is still
/// in the listening socket), passes what it already took to its serving
/// nodes, lets go of the admin socket (keeping its file), and only then
/// tells its nodes to drain. Nothing it took is closed.
#[test]
fn an_upgrade_hands_over_accepting_and_the_admin_socket_before_nodes_drain() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(2, Balance::Dispatch), 1, t0);
    let nodes = serving(&mut core, t0, 2);
    core.handle(t0, Event::Signal(Sig::Usr2));
    let out = commands(&mut core);
    assert!(matches!(&out[..], [Command::StartUpgrade]), "{out:?}");
    core.handle(t0, Event::UpgradeStarted(Ok(900)));
    commands(&mut core);
    // Accepted in the same wake-up as the new controller's readiness: not
    // dispatched yet when the hand-over comes.
    core.handle(t0, Event::Connections(vec![1, 2, 3]));
    assert!(commands(&mut core).is_empty());
    assert_eq!(core.queued(), 3);
    core.handle(
        t0,
        Event::UpgradeDone {
            pid: 900,
            result: Ok(()),
        },
    );
    let out = commands(&mut core);
    let stop_accepting = position(&out, |c| matches!(c, Command::StopAccepting))
        .unwrap_or_else(|| panic!("no StopAccepting: {out:?}"));
    let first_stop = position(&out, |c| matches!(c, Command::Stop { .. }))
        .unwrap_or_else(|| panic!("no Stop: {out:?}"));
    let keep = position(&out, |c| matches!(c, Command::KeepAdminSocket))
        .unwrap_or_else(|| panic!("no KeepAdminSocket: {out:?}"));
    let release = position(&out, |c| matches!(c, Command::ReleaseAdmin))
        .unwrap_or_else(|| panic!("no ReleaseAdmin: {out:?}"));
    assert!(
        keep < release,
        "the file is kept before the socket is let go: {out:?}"
    );
    assert!(release < first_stop, "{out:?}");
    assert!(stop_accepting < first_stop, "{out:?}");
    let dispatched: Vec<(usize, u32)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Command::Dispatch { node, conn } => {
                assert!(nodes.iter().any(|(n, _)| n == node));
                Some((i, *conn))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        dispatched.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [1, 2, 3],
        "what was taken goes to the nodes: {out:?}"
    );
    assert!(
        dispatched
            .iter()
            .all(|(i, _)| *i > stop_accepting && *i < first_stop),
        "dispatched after accepting stopped and before any node drains: {out:?}"
    );
    assert!(
        !out.iter().any(|c| matches!(c, Command::Close { .. })),
        "nothing it took is closed: {out:?}"
    );
    let stops = out
        .iter()
        .filter(|c| matches!(c, Command::Stop { graceful: true, .. }))
        .count();
    assert_eq!(stops, 2, "{out:?}");
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::Notify(Lifecycle::Stopping))),
        "systemd is not told the unit stops: {out:?}"
    );
}

/// Any stop: the controller stops accepting at once (what is not accepted
/// stays in the listening socket, or is refused when it closes), before
/// any node is told to stop; what it took already is passed on first. A
/// forced stop closes what it took.
#[test]
fn a_stop_stops_accepting_before_anything_else() {
    for (sig, graceful) in [(Sig::Term, true), (Sig::Int, false)] {
        let t0 = Instant::now();
        let mut core = SupervisorCore::new(config(2, Balance::Dispatch), 1, t0);
        serving(&mut core, t0, 2);
        core.handle(t0, Event::Connections(vec![7, 8]));
        commands(&mut core);
        core.handle(t0, Event::Signal(sig));
        let out = commands(&mut core);
        assert!(
            matches!(
                &out[..2],
                [Command::Notify(Lifecycle::Stopping), Command::StopAccepting]
            ),
            "{sig:?}: {out:?}"
        );
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Command::StopAccepting))
                .count(),
            1
        );
        let first_stop = position(&out, |c| matches!(c, Command::Stop { .. }))
            .unwrap_or_else(|| panic!("no Stop: {out:?}"));
        let dispatched: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Command::Dispatch { .. }))
            .map(|(i, _)| i)
            .collect();
        if graceful {
            assert_eq!(dispatched.len(), 2, "{out:?}");
            assert!(dispatched.iter().all(|i| *i < first_stop), "{out:?}");
            assert!(!out.iter().any(|c| matches!(c, Command::Close { .. })));
        } else {
            assert!(dispatched.is_empty(), "{out:?}");
            assert!(out
                .iter()
                .any(|c| matches!(c, Command::Close { conns, .. } if conns == &[7, 8])));
        }
        // No admin hand-over in a plain stop.
        assert!(!out.iter().any(|c| matches!(c, Command::ReleaseAdmin)));
        // A second signal does not stop accepting again.
        core.handle(t0, Event::Signal(Sig::Quit));
        assert!(!commands(&mut core)
            .iter()
            .any(|c| matches!(c, Command::StopAccepting)));
    }
}

/// A reload whose replacement exits before it serves (a broken program or
/// settings) is abandoned: the old nodes keep serving, the replacement is
/// not restarted (no restart loop, no escalation), the settings before the
/// reload are back, and `vole reload` gets the reason.
#[test]
fn a_reload_whose_new_node_exits_at_once_keeps_the_old_nodes() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(2, Balance::Grant), 1, t0);
    let nodes = serving(&mut core, t0, 2);
    let ids: Vec<u32> = nodes.iter().map(|(n, _)| n.id).collect();
    let before = core.config().grace;

    core.handle(
        t0,
        Event::Admin {
            req: 7,
            request: crate::admin::AdminRequest::Reload,
        },
    );
    commands(&mut core);
    let mut reloaded = config(2, Balance::Grant);
    reloaded.grace = before * 2;
    core.handle(t0, Event::ConfigRead(Ok(Box::new(reloaded))));
    assert_eq!(core.config().grace, before * 2, "the new settings apply");
    let spawned: Vec<NodeKey> = commands(&mut core)
        .into_iter()
        .filter_map(|c| match c {
            Command::Spawn { node, .. } => Some(node),
            _ => None,
        })
        .collect();
    let [new] = spawned[..] else {
        panic!("one replacement at a time: {spawned:?}");
    };
    core.handle(
        t0,
        Event::Spawned {
            node: new,
            pid: 300,
        },
    );
    let t1 = t0 + Duration::from_millis(20);
    core.handle(
        t1,
        Event::Exited {
            node: new,
            code: Some(1),
            signal: None,
        },
    );
    let out = commands(&mut core);
    let reply = reply_to(&out, 7).expect("the reload is answered");
    let text = format!("{reply:?}");
    assert!(
        text.contains("reload failed") && text.contains("exited with code 1"),
        "{text}"
    );
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::Notify(Lifecycle::ReloadFailed))),
        "systemd is told the reload is over: {out:?}"
    );
    assert!(
        !out.iter().any(|c| matches!(
            c,
            Command::Timer {
                timer: Timer::RestartDue(_),
                ..
            } | Command::Spawn { .. }
        )),
        "the failed replacement is not restarted: {out:?}"
    );
    assert_eq!(core.config().grace, before, "the old settings are back");
    assert_eq!(
        states(&mut core, t1),
        named(&[(ids[0], "serving"), (ids[1], "serving")])
    );
    assert!(core.outcome.is_none(), "the service goes on");

    // A later reload that works replaces both.
    core.handle(
        t1,
        Event::Admin {
            req: 8,
            request: crate::admin::AdminRequest::Reload,
        },
    );
    commands(&mut core);
    core.handle(
        t1,
        Event::ConfigRead(Ok(Box::new(config(2, Balance::Grant)))),
    );
    for round in 0..2 {
        let spawned: Vec<NodeKey> = commands(&mut core)
            .into_iter()
            .filter_map(|c| match c {
                Command::Spawn { node, .. } => Some(node),
                _ => None,
            })
            .collect();
        let [new] = spawned[..] else {
            panic!("round {round}: one replacement at a time: {spawned:?}");
        };
        core.handle(
            t1,
            Event::Spawned {
                node: new,
                pid: 400 + round,
            },
        );
        core.handle(t1, Event::LinkUp(new));
        core.handle(t1, Event::Ready(new));
    }
    let out = commands(&mut core);
    assert!(
        reply_to(&out, 8).is_some_and(|r| !format!("{r:?}").contains("fail")),
        "{out:?}"
    );
}

/// External nodes count as serving once started, so a reload's external
/// replacement must run for [`EXTERNAL_SETTLE`](super::EXTERNAL_SETTLE)
/// before the old node retires: one that exits sooner (a broken program)
/// abandons the reload and the old nodes serve on; one that keeps running
/// lets the reload go on when the settle timer fires.
#[test]
fn an_external_replacement_must_settle_before_the_old_node_retires() {
    let t0 = Instant::now();
    let mut config = config(1, Balance::Shared);
    config.node_command = Some(vec!["svc".to_owned()]);
    let mut core = SupervisorCore::new(config.clone(), 1, t0);
    core.start(t0, None);
    let [old] = spawns(&mut core)[..] else {
        panic!("one node");
    };
    core.handle(
        t0,
        Event::Spawned {
            node: old,
            pid: 200,
        },
    );
    commands(&mut core);

    let reload = |core: &mut SupervisorCore<u32>, at: Instant, req: u64| -> NodeKey {
        core.handle(
            at,
            Event::Admin {
                req,
                request: crate::admin::AdminRequest::Reload,
            },
        );
        commands(core);
        core.handle(at, Event::ConfigRead(Ok(Box::new(config.clone()))));
        let [new] = spawns(core)[..] else {
            panic!("one replacement");
        };
        core.handle(
            at,
            Event::Spawned {
                node: new,
                pid: 300 + req as u32,
            },
        );
        new
    };

    // A replacement that exits 100 ms after it started.
    let new = reload(&mut core, t0, 1);
    assert_eq!(
        states(&mut core, t0),
        named(&[(old.id, "serving"), (new.id, "serving")]),
        "the old node keeps serving while the new one settles"
    );
    let t1 = t0 + Duration::from_millis(100);
    core.handle(
        t1,
        Event::Exited {
            node: new,
            code: Some(1),
            signal: None,
        },
    );
    let out = commands(&mut core);
    assert!(
        reply_to(&out, 1).is_some_and(|r| format!("{r:?}").contains("reload failed")),
        "{out:?}"
    );
    assert_eq!(states(&mut core, t1), named(&[(old.id, "serving")]));

    // One that keeps running: the old node retires when it has settled.
    let new = reload(&mut core, t1, 2);
    let out = commands(&mut core);
    let settle = out
        .iter()
        .find_map(|c| match c {
            Command::Timer {
                at,
                timer: Timer::ReloadSettled,
            } => Some(*at),
            _ => None,
        })
        .expect("a settle timer");
    assert_eq!(settle, t1 + super::EXTERNAL_SETTLE);
    core.handle(settle, Event::Timer(Timer::ReloadSettled));
    let out = commands(&mut core);
    assert!(
        reply_to(&out, 2).is_some_and(|r| !format!("{r:?}").contains("fail")),
        "{out:?}"
    );
    assert_eq!(
        states(&mut core, settle),
        named(&[(old.id, "retiring"), (new.id, "serving")])
    );
}

fn spawns(core: &mut SupervisorCore<u32>) -> Vec<NodeKey> {
    commands(core)
        .into_iter()
        .filter_map(|c| match c {
            Command::Spawn { node, .. } => Some(node),
            _ => None,
        })
        .collect()
}
