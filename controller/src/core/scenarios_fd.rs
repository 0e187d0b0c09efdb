//! The core with nodes at their descriptor limit, and with a node that
//! holds grants it does not use (issue #13).

use std::time::{Duration, Instant};

use vole_control::control::Balance;

use super::event::{Command, Event, NodeKey, Timer};
use super::scenarios::{commands, config, serving};
use super::SupervisorCore;
use crate::balance::{GRANT_STALE, PROBE_TIMEOUT};

fn dispatched(out: &[Command<u32>]) -> Vec<(NodeKey, u32)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Dispatch { node, conn } => Some((*node, *conn)),
            _ => None,
        })
        .collect()
}

/// Nodes that said their capacity get no more than that; the rest wait in
/// the core's queue, and the driver is told to stop accepting (the kernel
/// queue holds the rest) until a node reports closes. Nothing is closed.
#[test]
fn dispatch_holds_connections_while_every_node_is_full() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(2, Balance::Dispatch), 1, t0);
    let nodes = serving(&mut core, t0, 2);
    for (node, _) in &nodes {
        core.handle(
            t0,
            Event::Capacity {
                node: *node,
                connections: 2,
            },
        );
    }
    assert!(core.wants_connections());
    core.handle(t0, Event::Connections(vec![1, 2, 3, 4, 5, 6]));
    core.handle(t0, Event::BatchDone);
    let out = commands(&mut core);
    assert!(
        !out.iter().any(|c| matches!(c, Command::Close { .. })),
        "nothing is dropped: {out:?}"
    );
    let first = dispatched(&out);
    assert_eq!(first.len(), 4, "two each: {first:?}");
    for (node, _) in &nodes {
        assert_eq!(first.iter().filter(|(n, _)| n == node).count(), 2);
        assert!(core.is_full(node.id));
    }
    assert_eq!(core.queued(), 2);
    assert!(
        !core.wants_connections(),
        "every node is full: stop accepting"
    );
    // Node 1 closes one: the oldest waiting connection goes to it.
    core.handle(
        t0,
        Event::Sessions {
            node: nodes[1].0,
            opened: 2,
            closed: 1,
        },
    );
    core.handle(t0, Event::BatchDone);
    assert_eq!(dispatched(&commands(&mut core)), vec![(nodes[1].0, 5)]);
    assert!(!core.wants_connections(), "one still waits");
    core.handle(
        t0,
        Event::Sessions {
            node: nodes[0].0,
            opened: 2,
            closed: 2,
        },
    );
    core.handle(t0, Event::BatchDone);
    assert_eq!(dispatched(&commands(&mut core)), vec![(nodes[0].0, 6)]);
    assert!(core.wants_connections(), "room again: accept");
    assert!(!core.is_full(nodes[0].0.id));
}

/// A capacity from a node that is gone (an old generation) changes
/// nothing; a restarted node is unbounded until it says.
#[test]
fn a_capacity_counts_for_its_own_node_only() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(1, Balance::Dispatch), 1, t0);
    let nodes = serving(&mut core, t0, 1);
    let stale = NodeKey {
        id: nodes[0].0.id,
        gen: nodes[0].0.gen + 100,
    };
    core.handle(
        t0,
        Event::Capacity {
            node: stale,
            connections: 0,
        },
    );
    core.handle(t0, Event::Connections(vec![1]));
    core.handle(t0, Event::BatchDone);
    assert_eq!(dispatched(&commands(&mut core)), vec![(nodes[0].0, 1)]);
}

fn probe_timers(out: &[Command<u32>]) -> Vec<Instant> {
    out.iter()
        .filter_map(|c| match c {
            Command::Timer {
                at,
                timer: Timer::Probe,
            } => Some(*at),
            _ => None,
        })
        .collect()
}

fn probed(out: &[Command<u32>]) -> Vec<NodeKey> {
    out.iter()
        .filter_map(|c| match c {
            Command::Probe { node, timeout } => {
                assert_eq!(*timeout, PROBE_TIMEOUT);
                Some(*node)
            }
            _ => None,
        })
        .collect()
}

fn granted_to(out: &[Command<u32>], who: NodeKey) -> bool {
    out.iter()
        .any(|c| matches!(c, Command::Grant { node, n } if *node == who && *n >= 1))
}

/// `grant` mode: a node that holds a grant and does not use it (stopped)
/// is asked whether it answers when its quiet spell ends; silent, it holds
/// the other back no longer. One that answers keeps its share.
#[test]
fn silent_nodes_grants_go_stale_and_the_others_are_granted() {
    for answers in [false, true] {
        let t0 = Instant::now();
        let mut core = SupervisorCore::new(config(2, Balance::Grant), 1, t0);
        let nodes = serving(&mut core, t0, 2);
        let (quiet, running) = (nodes[0].0, nodes[1].0);
        core.handle(t0, Event::BatchDone);
        commands(&mut core);
        // The running node uses its grant and reports; the quiet one does
        // not. The running node waits for the other to catch up: no grant.
        let t1 = t0 + Duration::from_millis(10);
        core.handle(
            t1,
            Event::Sessions {
                node: running,
                opened: 1,
                closed: 0,
            },
        );
        core.handle(t1, Event::BatchDone);
        let out = commands(&mut core);
        assert!(!granted_to(&out, running), "{out:?}");
        // (The timer was asked for with the first grants: see the next
        // test.)
        let due = t0 + GRANT_STALE;
        core.handle(due, Event::Timer(Timer::Probe));
        let out = commands(&mut core);
        assert_eq!(probed(&out), vec![quiet], "{out:?}");
        assert!(!granted_to(&out, running), "not before it fails to answer");
        let t2 = due + PROBE_TIMEOUT;
        core.handle(
            t2,
            Event::Probed {
                node: quiet,
                alive: answers,
            },
        );
        core.handle(t2, Event::BatchDone);
        let out = commands(&mut core);
        assert_eq!(
            granted_to(&out, running),
            !answers,
            "answered {answers}: {out:?}"
        );
        assert!(!granted_to(&out, quiet), "{out:?}");
    }
}

/// The first grants ask for a timer at the end of the first quiet spell;
/// an answer asks for one twice as far.
#[test]
fn grants_ask_for_a_probe_timer() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(2, Balance::Grant), 1, t0);
    core.start(t0, None);
    let spawned: Vec<NodeKey> = commands(&mut core)
        .into_iter()
        .filter_map(|c| match c {
            Command::Spawn { node, .. } => Some(node),
            _ => None,
        })
        .collect();
    for (i, node) in spawned.iter().enumerate() {
        core.handle(
            t0,
            Event::Spawned {
                node: *node,
                pid: 10 + i as u32,
            },
        );
        core.handle(t0, Event::LinkUp(*node));
        core.handle(t0, Event::Ready(*node));
    }
    let out = commands(&mut core);
    assert!(
        out.iter().any(|c| matches!(c, Command::Grant { .. })),
        "{out:?}"
    );
    assert_eq!(probe_timers(&out), vec![t0 + GRANT_STALE], "{out:?}");
    let t1 = t0 + GRANT_STALE;
    core.handle(t1, Event::Timer(Timer::Probe));
    let out = commands(&mut core);
    assert_eq!(probed(&out), spawned, "{out:?}");
    assert!(
        probe_timers(&out).is_empty(),
        "nothing to time while asking"
    );
    for node in &spawned {
        core.handle(
            t1,
            Event::Probed {
                node: *node,
                alive: true,
            },
        );
    }
    core.handle(t1, Event::BatchDone);
    let out = commands(&mut core);
    assert_eq!(probe_timers(&out), vec![t1 + GRANT_STALE * 2], "{out:?}");
}

/// At a graceful stop, connections waiting for a full node go to it all
/// the same (it takes them as its draining links close) rather than being
/// closed.
#[test]
fn a_graceful_stop_hands_waiting_connections_to_full_nodes() {
    let t0 = Instant::now();
    let mut core = SupervisorCore::new(config(1, Balance::Dispatch), 1, t0);
    let nodes = serving(&mut core, t0, 1);
    let node = nodes[0].0;
    core.handle(
        t0,
        Event::Capacity {
            node,
            connections: 1,
        },
    );
    core.handle(t0, Event::Connections(vec![1, 2, 3]));
    core.handle(t0, Event::BatchDone);
    assert_eq!(dispatched(&commands(&mut core)), vec![(node, 1)]);
    assert_eq!(core.queued(), 2);
    core.handle(t0, Event::Signal(super::event::Sig::Term));
    let out = commands(&mut core);
    assert_eq!(dispatched(&out), vec![(node, 2), (node, 3)], "{out:?}");
    assert!(
        !out.iter().any(|c| matches!(c, Command::Close { .. })),
        "{out:?}"
    );
    let stop = out
        .iter()
        .position(|c| matches!(c, Command::Stop { .. }))
        .expect("the node is told to stop");
    let last_dispatch = out
        .iter()
        .rposition(|c| matches!(c, Command::Dispatch { .. }))
        .expect("dispatched");
    assert!(last_dispatch < stop, "dispatched before the stop: {out:?}");
}
