//! Which node gets the next connection: a pure policy, no I/O.
//!
//! The controller feeds it what happens (nodes come up and go away,
//! connections open and close) and it answers with grants to send
//! ([`Balancer::take_grants`]) or the node to hand a connection to
//! ([`Balancer::pick`]).
//!
//! **`grant`**: a node accepts only while it holds a grant. Grants go to the
//! nodes with the fewest open connections: a node may hold grants up to one
//! above the lowest count of the other nodes (at most [`GRANT_WINDOW`]), so
//! whichever nodes use their grants, the counts the nodes end up with
//! differ by at most one. Nodes level with each other hold one grant each
//! (N outstanding, so accepting is not serialized on one control round
//! trip), a node behind the others gets enough to catch up at once, and a
//! node alone the whole window. `max_clients` (all nodes) and
//! `max_node_clients` (each node) stop granting while reached; the kernel
//! backlog holds new connections meanwhile. A node that dies takes its
//! grants and its counts with it: nothing waits on a dead node.
//!
//! A node's **capacity** (how many connections its descriptor limit lets
//! it hold, [`Balancer::set_capacity`]) is a per-node limit like
//! `max_node_clients`: a node at it gets no grant and no connection, and
//! connections wait (in the kernel's accept queue) until it reports closes.
//!
//! **Stale grants**: a node that holds grants and does not report may be
//! hung (then its grants hold the others back while connections wait) or
//! merely idle; reports alone cannot tell, as they lag the accepts. So a
//! node that holds grants becomes *suspect* [`GRANT_STALE`] after another
//! node reported taking a connection, or after its own last report or
//! answer (a quiet spell that doubles with each answer, up to
//! [`MAX_QUIET`], so an idle service is not chatty), and the core asks it
//! whether it still answers ([`Balancer::take_probes`], at
//! [`Balancer::next_probe`]). A node that answers is idle and nothing
//! changes; a node that does not answer within [`PROBE_TIMEOUT`] is
//! *stale* until it reports again, and does not hold back the others: the
//! window of every fresh node is computed as if the stale one had used all
//! its grants already, and the emptiest fresh node may always take one
//! more. A stale node gets no new grants while some node is fresh (when
//! all are stale, granting is as without staleness). So a hung node holds
//! the others back for [`GRANT_STALE`] plus [`PROBE_TIMEOUT`] once
//! connections come (at most [`MAX_QUIET`] plus [`PROBE_TIMEOUT`] if it
//! hung while the others were already held back), and an idle one never
//! loses its share, however long it holds its grants.
//! Its grants are not revoked (there is no message for that) and still
//! count against `max_clients` and its `max_node_clients`, so the limits
//! hold exactly; what staleness costs is evenness: while a node is stale
//! the others' counts may end up to its outstanding grants (at most
//! [`GRANT_WINDOW`]) above the stale node's, instead of one. Without a
//! clock ([`Balancer::at`] never called) no grant goes stale.
//!
//! **`dispatch`**: the controller accepts and picks the node with the fewest
//! open connections (ties rotate), counting the connection at once.
//!
//! **`shared`**, **`reuseport`**: the kernel chooses; nodes report counts
//! lazily (once a second) and nothing balances on them (`status` asks the
//! nodes directly).
//!
//! Counts come from coalesced node reports (`vole_control::control`), so they
//! lag the nodes by a few milliseconds; what the bounds above promise holds
//! against the real counts all the same (a node's opens not yet reported
//! are still counted as grants it holds).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vole_control::control::Balance;

/// A node slot id.
pub type NodeId = u32;

/// Most grants a node holds at once in `grant` mode.
pub const GRANT_WINDOW: u64 = 16;

/// How long a node may hold grants without reporting, after another node
/// took a connection, before the core asks whether it still answers (see
/// the [module](self) documentation).
pub const GRANT_STALE: Duration = Duration::from_millis(100);

/// How long a suspect node has to answer before its grants are stale.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest quiet spell after which a node holding grants is asked
/// whether it answers.
pub const MAX_QUIET: Duration = Duration::from_millis(1600);

/// How a node gets its connections, which follows from the balance mode:
/// the one place (with [`Balancer`]) that knows what each mode means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// The controller accepts and passes connections over a per-node
    /// socket (`dispatch`).
    Dispatch,
    /// Every node gets a copy of the controller's listening sockets
    /// (`grant`, `shared`).
    Listeners,
    /// Every node gets listening sockets of its own, bound with
    /// `SO_REUSEPORT` to the controller's addresses (`reuseport`).
    Reuseport,
}

impl Handoff {
    /// The hand-over for `mode`.
    pub fn of(mode: Balance) -> Handoff {
        match mode {
            Balance::Dispatch => Handoff::Dispatch,
            Balance::Reuseport => Handoff::Reuseport,
            Balance::Grant | Balance::Shared => Handoff::Listeners,
        }
    }

    /// Whether the controller accepts connections itself.
    pub fn controller_accepts(self) -> bool {
        self == Handoff::Dispatch
    }
}

/// Connection limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most open connections over all nodes.
    pub max_clients: Option<u64>,
    /// Most open connections per node.
    pub max_node_clients: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Load {
    /// Open connections, as reported (plus dispatched).
    open: u64,
    /// Grants sent and not yet used.
    granted: u64,
    /// Whether the node serves (it said `ready`); a node that does not yet
    /// is starting.
    ready: bool,
    /// Most connections the node can hold (its descriptor limit), if it
    /// said.
    capacity: Option<u64>,
    /// Its last report or answer, or when it got grants while holding
    /// none.
    quiet_since: Option<Instant>,
    /// How long it may stay quiet before it is asked whether it answers:
    /// [`GRANT_STALE`], doubled by each answer (up to [`MAX_QUIET`]).
    quiet_limit: Duration,
    /// The first time, since its last report or answer, that another node
    /// reported taking a connection (which it might have taken).
    passed_over: Option<Instant>,
    /// Asked whether it still answers, and not answered yet.
    probing: bool,
    /// Did not answer in time: its grants are stale until it reports.
    stale: bool,
}

/// The balancing state of a controller.
#[derive(Debug, Clone)]
pub struct Balancer {
    mode: Balance,
    limits: Limits,
    nodes: BTreeMap<NodeId, Load>,
    rotate: u64,
    /// The time of the event being handled ([`Balancer::at`]).
    now: Option<Instant>,
}

impl Balancer {
    /// A balancer for `mode` with `limits`.
    pub fn new(mode: Balance, limits: Limits) -> Self {
        Balancer {
            mode,
            limits,
            nodes: BTreeMap::new(),
            rotate: 0,
            now: None,
        }
    }

    /// The time now: what follows happens at `now` (probes fall due by
    /// it). Without it no node is ever probed, so none is ever stale.
    pub fn at(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// Whether a node's grants are stale now.
    fn stale(&self, load: &Load) -> bool {
        load.granted > 0 && load.stale
    }

    /// When a node holding grants becomes suspect, unless it reports or
    /// answers first; `None` if it holds none, or is being asked or stale.
    fn suspect_at(load: &Load) -> Option<Instant> {
        if load.granted == 0 || load.stale || load.probing {
            return None;
        }
        let quiet = load
            .quiet_since
            .map(|since| since + load.quiet_limit.max(GRANT_STALE));
        let passed = load.passed_over.map(|since| since + GRANT_STALE);
        match (quiet, passed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next node holding grants becomes suspect (and should be
    /// asked whether it answers), if any may.
    pub fn next_probe(&self) -> Option<Instant> {
        let at = self.nodes.values().filter_map(Self::suspect_at).min()?;
        // Already due (passed over while it held no grants): now.
        Some(self.now.map_or(at, |now| at.max(now)))
    }

    /// The nodes to ask now whether they still answer (each is asked
    /// once; answer with [`Balancer::probe_answered`]).
    pub fn take_probes(&mut self) -> Vec<NodeId> {
        let Some(now) = self.now else {
            return Vec::new();
        };
        let mut due = Vec::new();
        for (id, load) in self.nodes.iter_mut() {
            if Self::suspect_at(load).is_some_and(|at| at <= now) {
                load.probing = true;
                due.push(*id);
            }
        }
        due
    }

    /// A probed node answered (`alive`) or did not in time: an answer
    /// clears the suspicion, silence makes its grants stale. Whether it
    /// reported meanwhile takes precedence (a report clears both).
    pub fn probe_answered(&mut self, id: NodeId, alive: bool) {
        if let Some(load) = self.nodes.get_mut(&id) {
            if !load.probing {
                return;
            }
            load.probing = false;
            if alive {
                load.quiet_since = self.now;
                load.quiet_limit = (load.quiet_limit.max(GRANT_STALE) * 2).min(MAX_QUIET);
                load.passed_over = None;
            } else {
                load.stale = true;
            }
        }
    }

    /// Whether `id` holds stale grants now.
    pub fn is_stale(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|l| self.stale(l))
    }

    /// A node says how many connections it can hold at once (its
    /// descriptor limit): it gets no grant and no connection beyond that.
    pub fn set_capacity(&mut self, id: NodeId, connections: u64) {
        if let Some(load) = self.nodes.get_mut(&id) {
            load.capacity = Some(connections);
        }
    }

    /// Whether a node holds (or has been granted) as many connections as
    /// it can: at its capacity or at `max_node_clients`.
    pub fn is_full(&self, id: NodeId) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|l| self.node_max(l).is_some_and(|m| l.open + l.granted >= m))
    }

    /// Most connections a node may hold: the smaller of its capacity and
    /// `max_node_clients`.
    fn node_max(&self, load: &Load) -> Option<u64> {
        match (load.capacity, self.limits.max_node_clients) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Changes the limits (a reload).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The mode.
    pub fn mode(&self) -> Balance {
        self.mode
    }

    /// How nodes get their connections in this mode.
    pub fn handoff(&self) -> Handoff {
        Handoff::of(self.mode)
    }

    /// A node is starting: it does not serve yet, but in `grant` mode the
    /// others' grant windows leave room for it.
    pub fn node_starting(&mut self, id: NodeId) {
        self.nodes.insert(id, Load::default());
    }

    /// A node is serving.
    pub fn node_ready(&mut self, id: NodeId) {
        let load = self.nodes.entry(id).or_default();
        load.ready = true;
    }

    /// A node is gone: its grants and counts are dropped.
    pub fn node_gone(&mut self, id: NodeId) {
        self.nodes.remove(&id);
    }

    /// A node reports connections opened and closed since its last report.
    pub fn sessions(&mut self, id: NodeId, opened: u64, closed: u64) {
        let dispatch = self.mode == Balance::Dispatch;
        let now = self.now;
        if opened > 0 {
            // Connections came: nodes holding grants may have been passed
            // over, and should report soon.
            for (other, load) in self.nodes.iter_mut() {
                if *other != id && load.passed_over.is_none() {
                    load.passed_over = now;
                }
            }
        }
        if let Some(load) = self.nodes.get_mut(&id) {
            // A report: the node is not stuck (its grants are fresh again).
            load.quiet_since = now;
            load.quiet_limit = GRANT_STALE;
            load.passed_over = None;
            load.probing = false;
            load.stale = false;
            if dispatch {
                // Counted when dispatched; `opened` only confirms.
            } else {
                load.open += opened;
            }
            load.granted = load.granted.saturating_sub(opened);
            load.open = load.open.saturating_sub(closed);
        }
    }

    /// A dispatched connection did not reach its node (the node died):
    /// uncount it.
    pub fn undispatch(&mut self, id: NodeId) {
        if let Some(load) = self.nodes.get_mut(&id) {
            load.open = load.open.saturating_sub(1);
        }
    }

    /// Open connections on a node.
    pub fn open(&self, id: NodeId) -> u64 {
        self.nodes.get(&id).map_or(0, |l| l.open)
    }

    /// Outstanding grants of a node.
    pub fn granted(&self, id: NodeId) -> u64 {
        self.nodes.get(&id).map_or(0, |l| l.granted)
    }

    /// Open connections over all nodes.
    pub fn total_open(&self) -> u64 {
        self.nodes.values().map(|l| l.open).sum()
    }

    fn under_limits(&self, load: &Load, extra_total: u64) -> bool {
        let total: u64 = self.nodes.values().map(|l| l.open + l.granted).sum::<u64>() + extra_total;
        self.limits.max_clients.is_none_or(|max| total < max)
            && self
                .node_max(load)
                .is_none_or(|max| load.open + load.granted < max)
    }

    /// `grant` mode: the grants to send now, as (node, how many); each is
    /// recorded as held. Empty in other modes.
    ///
    /// A node may hold grants up to one above the lowest open count among
    /// the *other* nodes (serving or starting), and at most
    /// [`GRANT_WINDOW`]: so even if it used every grant and no other node
    /// accepted at all, no two counts would differ by more than one. Nodes
    /// level with the others get one grant each (the emptiest serving node
    /// always may hold one); a node behind them gets enough to catch up in
    /// one go; a node alone gets the whole window, so its accepts are not
    /// each a control round trip.
    pub fn take_grants(&mut self) -> Vec<(NodeId, u32)> {
        if self.mode != Balance::Grant {
            return Vec::new();
        }
        // Emptiest first: under `max_clients` they get the room first.
        // While some serving node is fresh, stale nodes get nothing (they
        // are not using what they hold) and are not the emptiest serving
        // node for the others; when all are stale (idle), nothing changes.
        let any_fresh = self.nodes.values().any(|l| l.ready && !self.stale(l));
        let mut order: Vec<(u64, NodeId)> = self
            .nodes
            .iter()
            .filter(|(_, l)| l.ready && !(any_fresh && self.stale(l)))
            .map(|(id, l)| (l.open, *id))
            .collect();
        order.sort_unstable();
        let Some(&(ready_min, _)) = order.first() else {
            return Vec::new();
        };
        let mut total: u64 = self.nodes.values().map(|l| l.open + l.granted).sum();
        let mut grants = Vec::new();
        for (open, id) in order.iter().copied() {
            // Nodes still starting count too (with what they have), so the
            // first node up does not take a whole window before the others
            // are serving.
            // A stale node counts as if it had used its grants.
            let others_min = self
                .nodes
                .iter()
                .filter(|(other, _)| **other != id)
                .map(|(_, l)| {
                    if any_fresh && self.stale(l) {
                        l.open + l.granted
                    } else {
                        l.open
                    }
                })
                .min();
            let Some(load) = self.nodes.get(&id).copied() else {
                continue;
            };
            let mut cap = others_min.map_or(GRANT_WINDOW, |m| (m + 1).saturating_sub(open));
            if open == ready_min {
                // The emptiest serving node can always take one more.
                cap = cap.max(1);
            }
            let cap = cap.min(GRANT_WINDOW);
            let mut room = cap.saturating_sub(load.granted);
            if let Some(max) = self.node_max(&load) {
                room = room.min(max.saturating_sub(load.open + load.granted));
            }
            if let Some(max) = self.limits.max_clients {
                room = room.min(max.saturating_sub(total));
            }
            let Ok(n) = u32::try_from(room) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            let now = self.now;
            if let Some(l) = self.nodes.get_mut(&id) {
                if l.granted == 0 {
                    l.quiet_since = now;
                }
                l.granted += room;
            }
            total += room;
            grants.push((id, n));
        }
        grants
    }

    /// `dispatch` mode, at a graceful stop: the least-loaded serving node
    /// whatever the limits (counted at once), or `None` if none serves.
    /// Connections already accepted are better served late than closed: a
    /// full node takes them as its draining links close (its own gate
    /// keeps its reserve of descriptors).
    pub fn pick_any(&mut self) -> Option<NodeId> {
        let id = self
            .nodes
            .iter()
            .filter(|(_, l)| l.ready)
            .min_by_key(|(_, l)| l.open)
            .map(|(id, _)| *id)?;
        if let Some(l) = self.nodes.get_mut(&id) {
            l.open += 1;
        }
        Some(id)
    }

    /// `dispatch` mode: the node for the next connection (counted at once),
    /// or `None` if no node is ready or the limits are reached.
    pub fn pick(&mut self) -> Option<NodeId> {
        let min = self
            .nodes
            .values()
            .filter(|l| l.ready && self.under_limits(l, 0))
            .map(|l| l.open)
            .min()?;
        // Called per dispatched connection: the ties are counted and the
        // chosen one found in a second pass, not collected.
        let is_tie = |l: &&Load| l.ready && l.open == min && self.under_limits(l, 0);
        let ties = self.nodes.values().filter(is_tie).count() as u64;
        if ties == 0 {
            return None;
        }
        let nth = (self.rotate % ties) as usize;
        let id = self
            .nodes
            .iter()
            .filter(|(_, l)| is_tie(l))
            .nth(nth)
            .map(|(id, _)| *id)?;
        self.rotate = self.rotate.wrapping_add(1);
        if let Some(l) = self.nodes.get_mut(&id) {
            l.open += 1;
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A tiny deterministic generator for the simulation.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn ready(mode: Balance, n: u32, limits: Limits) -> Balancer {
        let mut b = Balancer::new(mode, limits);
        for id in 0..n {
            b.node_ready(id);
        }
        b
    }

    /// Grants as (node, n) pairs.
    fn grants(b: &mut Balancer) -> Vec<(NodeId, u32)> {
        b.take_grants()
    }

    #[test]
    fn grants_go_to_the_least_connected_one_each() {
        let mut b = ready(Balance::Grant, 3, Limits::default());
        assert_eq!(grants(&mut b), vec![(0, 1), (1, 1), (2, 1)]);
        assert!(grants(&mut b).is_empty(), "level nodes hold one grant each");
        b.sessions(1, 1, 0);
        assert!(grants(&mut b).is_empty(), "node 1 is above the minimum now");
        b.sessions(0, 1, 0);
        b.sessions(2, 1, 0);
        assert_eq!(grants(&mut b), vec![(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn a_node_behind_the_others_gets_enough_to_catch_up() {
        let mut b = Balancer::new(Balance::Grant, Limits::default());
        b.node_ready(0);
        assert_eq!(b.take_grants(), vec![(0, GRANT_WINDOW as u32)]);
        b.sessions(0, 5, 0);
        // A second node comes up (a restart, a scale-up): 5 behind, it may
        // go to 6, one above node 0; node 0, ahead, gets nothing.
        b.node_starting(1);
        b.node_ready(1);
        assert_eq!(b.take_grants(), vec![(1, 6)]);
        b.sessions(1, 6, 0);
        assert!(b.take_grants().is_empty(), "node 0 still holds grants");
        b.sessions(0, 11, 0);
        // 16 and 6 open: node 1 catches up to 17.
        assert_eq!(b.take_grants(), vec![(1, 11)]);
    }

    #[test]
    fn starting_nodes_keep_the_first_node_up_from_a_whole_window() {
        let mut b = Balancer::new(Balance::Grant, Limits::default());
        for id in 0..3 {
            b.node_starting(id);
        }
        assert!(b.take_grants().is_empty(), "nobody serves yet");
        b.node_ready(0);
        assert_eq!(b.take_grants(), vec![(0, 1)], "the others will start at 0");
        b.sessions(0, 1, 0);
        assert_eq!(
            b.take_grants(),
            vec![(0, 1)],
            "the only serving node may always take one"
        );
        b.node_ready(1);
        b.node_ready(2);
        assert_eq!(b.take_grants(), vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn a_node_alone_holds_the_whole_window() {
        let mut b = ready(Balance::Grant, 1, Limits::default());
        assert_eq!(grants(&mut b), vec![(0, GRANT_WINDOW as u32)]);
        b.sessions(0, 3, 0);
        assert_eq!(grants(&mut b), vec![(0, 3)], "topped up to the window");
        assert_eq!(b.granted(0), GRANT_WINDOW);
    }

    #[test]
    fn a_dead_node_gives_back_its_grant_at_once() {
        let mut b = ready(Balance::Grant, 2, Limits::default());
        assert_eq!(grants(&mut b), vec![(0, 1), (1, 1)]);
        b.sessions(1, 1, 0);
        b.node_gone(0);
        assert_eq!(
            grants(&mut b),
            vec![(1, GRANT_WINDOW as u32)],
            "the survivor is alone now"
        );
    }

    #[test]
    fn max_clients_pauses_granting() {
        let limits = Limits {
            max_clients: Some(3),
            max_node_clients: None,
        };
        let mut b = ready(Balance::Grant, 2, limits);
        assert_eq!(grants(&mut b), vec![(0, 1), (1, 1)]);
        b.sessions(0, 1, 0);
        b.sessions(1, 1, 0);
        assert_eq!(
            grants(&mut b),
            vec![(0, 1)],
            "a second grant would allow a 4th client"
        );
        b.sessions(0, 1, 0);
        assert!(grants(&mut b).is_empty(), "3 open: max_clients reached");
        b.sessions(1, 0, 1);
        assert_eq!(
            grants(&mut b),
            vec![(1, 1)],
            "room again, for the emptiest node"
        );
        let mut alone = ready(Balance::Grant, 1, limits);
        assert_eq!(
            grants(&mut alone),
            vec![(0, 3)],
            "the window stops at the limit"
        );
    }

    #[test]
    fn max_node_clients_skips_full_nodes() {
        let limits = Limits {
            max_clients: None,
            max_node_clients: Some(1),
        };
        let mut b = ready(Balance::Grant, 2, limits);
        assert_eq!(grants(&mut b), vec![(0, 1), (1, 1)]);
        b.sessions(0, 1, 0);
        b.sessions(1, 1, 0);
        assert!(grants(&mut b).is_empty(), "both nodes are full");
        b.sessions(1, 0, 1);
        assert_eq!(grants(&mut b), vec![(1, 1)]);
        let mut d = ready(Balance::Dispatch, 1, limits);
        assert_eq!(d.pick(), Some(0));
        assert_eq!(d.pick(), None, "dispatch respects the per-node limit too");
    }

    #[test]
    fn dispatch_picks_the_least_loaded_and_rotates_ties() {
        let mut b = ready(Balance::Dispatch, 3, Limits::default());
        let picks: Vec<NodeId> = (0..6).map(|_| b.pick().expect("a node")).collect();
        let mut counts = [0; 3];
        for p in &picks {
            counts[*p as usize] += 1;
        }
        assert_eq!(counts, [2, 2, 2]);
        b.sessions(2, 0, 2);
        assert_eq!(b.pick(), Some(2));
        assert_eq!(b.pick(), Some(2));
        b.node_gone(2);
        assert!(matches!(b.pick(), Some(0 | 1)));
    }

    #[test]
    fn no_ready_node_means_no_grant_and_no_pick() {
        let mut b = Balancer::new(Balance::Dispatch, Limits::default());
        assert_eq!(b.pick(), None);
        let mut g = Balancer::new(Balance::Grant, Limits::default());
        assert!(g.take_grants().is_empty());
    }

    #[test]
    fn capacity_bounds_grants_and_picks_like_max_node_clients() {
        let mut b = ready(Balance::Grant, 1, Limits::default());
        b.set_capacity(0, 3);
        assert_eq!(grants(&mut b), vec![(0, 3)], "the window stops at capacity");
        assert!(b.is_full(0), "granted up to capacity");
        b.sessions(0, 3, 0);
        assert!(grants(&mut b).is_empty(), "at capacity: no grant");
        assert!(b.is_full(0));
        b.sessions(0, 0, 2);
        assert_eq!(grants(&mut b), vec![(0, 2)], "closes make room");
        // The smaller of capacity and max_node_clients counts.
        let limits = Limits {
            max_clients: None,
            max_node_clients: Some(2),
        };
        let mut d = ready(Balance::Dispatch, 2, limits);
        d.set_capacity(0, 1);
        d.set_capacity(1, 5);
        let picks: Vec<_> = std::iter::from_fn(|| d.pick()).take(10).collect();
        let mut per = [0; 2];
        for p in &picks {
            per[*p as usize] += 1;
        }
        assert_eq!(
            per,
            [1, 2],
            "node 0 at capacity, node 1 at max_node_clients"
        );
        assert!(d.is_full(0) && d.is_full(1));
        d.sessions(0, 1, 1);
        assert_eq!(d.pick(), Some(0), "room again after a close");
        // A restarted node starts without a capacity until it says.
        d.node_gone(0);
        d.node_starting(0);
        d.node_ready(0);
        assert!(!d.is_full(0));
    }

    const TICK: std::time::Duration = std::time::Duration::from_millis(10);

    /// A node that holds grants and does not report (stopped) is asked
    /// whether it answers once another node takes a connection; silent, it
    /// stops holding the other back: the other is granted one at a time,
    /// as if the stale node had used its grants.
    #[test]
    fn stale_grants_stop_holding_the_others_back() {
        let t0 = Instant::now();
        let mut b = ready(Balance::Grant, 2, Limits::default());
        b.at(t0);
        assert_eq!(grants(&mut b), vec![(0, 1), (1, 1)]);
        assert_eq!(b.next_probe(), Some(t0 + GRANT_STALE), "a quiet spell");
        // Node 1 takes a connection; node 0 is stopped (it may catch up).
        b.at(t0 + TICK);
        b.sessions(1, 1, 0);
        assert_eq!(grants(&mut b), vec![(0, 1)], "node 1 waits for node 0");
        assert_eq!(b.next_probe(), Some(t0 + GRANT_STALE));
        b.at(t0 + GRANT_STALE - TICK / 10);
        assert!(b.take_probes().is_empty());
        b.at(t0 + GRANT_STALE);
        assert_eq!(b.take_probes(), vec![0], "node 1 holds no grants");
        assert!(b.take_probes().is_empty(), "asked once");
        assert!(!b.is_stale(0), "not before it fails to answer");
        assert!(grants(&mut b).is_empty(), "node 1 still waits");
        b.at(t0 + GRANT_STALE + PROBE_TIMEOUT);
        b.probe_answered(0, false);
        assert!(b.is_stale(0));
        assert_eq!(b.next_probe(), None, "stale: nothing more to ask");
        // Node 1 takes connections, using every grant it gets.
        let mut open = 1;
        for n in 0..20 {
            let got = grants(&mut b);
            assert!(
                matches!(got[..], [(1, k)] if k >= 1),
                "connection {n}: node 1 is granted: {got:?}"
            );
            b.at(t0 + GRANT_STALE + PROBE_TIMEOUT + TICK * n);
            let used = b.granted(1);
            open += used;
            b.sessions(1, used, 0);
        }
        assert_eq!(b.open(1), open);
        assert_eq!(b.granted(0), 2, "the stale node got nothing more");
        // Node 0 comes back and reports: it is fresh, and behind.
        b.at(t0 + GRANT_STALE * 5);
        b.probe_answered(0, true);
        assert!(
            b.is_stale(0),
            "a late answer to no question changes nothing"
        );
        b.sessions(0, 1, 0);
        assert!(!b.is_stale(0));
        assert_eq!(
            grants(&mut b),
            vec![(0, GRANT_WINDOW as u32 - 1)],
            "fresh and far behind: the whole window"
        );
    }

    /// Idle nodes that answer never go stale, however long they hold their
    /// grants, and are asked less and less often; a report that lags an
    /// accept (the connection came before the other node got its grants,
    /// as after a burst) costs the other node a question, not its share.
    /// Without a clock nobody is ever asked.
    #[test]
    fn idle_nodes_answer_and_keep_their_share() {
        let t0 = Instant::now();
        let mut b = ready(Balance::Grant, 2, Limits::default());
        b.at(t0);
        assert_eq!(grants(&mut b), vec![(0, 1), (1, 1)]);
        let mut asked = Vec::new();
        let mut now = t0;
        while now < t0 + MAX_QUIET * 4 {
            let Some(at) = b.next_probe() else {
                panic!("nodes holding grants are asked at some point");
            };
            assert!(at >= now);
            now = at;
            b.at(now);
            let probes = b.take_probes();
            assert_eq!(probes, vec![0, 1]);
            for id in probes {
                b.probe_answered(id, true);
            }
            asked.push(now.duration_since(t0).as_millis());
            assert!(grants(&mut b).is_empty(), "nothing changes");
        }
        assert_eq!(asked[..6], [100, 300, 700, 1500, 3100, 4700], "{asked:?}");
        assert!((0..2).all(|id| !b.is_stale(id)));
        // Level at 4 each, node 1's last accept reported late: node 0's
        // clients leave and it gets grants first.
        let t1 = now + TICK;
        b.at(t1);
        b.sessions(0, 4, 0);
        b.sessions(1, 3, 0);
        grants(&mut b);
        b.sessions(0, 0, 4);
        grants(&mut b);
        assert!(b.granted(0) >= 4, "node 0 may catch up: {b:?}");
        assert!(b.granted(1) >= 1, "node 1 holds grants: {b:?}");
        b.at(t1 + TICK / 5);
        b.sessions(1, 1, 0);
        let got = grants(&mut b);
        assert!(got.iter().all(|(id, _)| *id == 0), "node 1 waits: {got:?}");
        assert_eq!(b.next_probe(), Some(t1 + GRANT_STALE));
        b.at(t1 + GRANT_STALE);
        assert_eq!(b.take_probes(), vec![0]);
        b.probe_answered(0, true);
        assert!(!b.is_stale(0), "idle, not stuck");
        let got = grants(&mut b);
        assert!(
            got.iter().all(|(id, _)| *id == 0),
            "node 1 still waits: {got:?}"
        );
        let mut clockless = ready(Balance::Grant, 2, Limits::default());
        assert_eq!(grants(&mut clockless), vec![(0, 1), (1, 1)]);
        clockless.sessions(1, 1, 0);
        assert_eq!(grants(&mut clockless), vec![(0, 1)], "node 0 may catch up");
        assert!(clockless.take_probes().is_empty());
        assert_eq!(clockless.next_probe(), None);
    }

    /// Stale grants still count against the limits: a stopped node's
    /// grants never let the service exceed `max_clients` or a node its
    /// `max_node_clients`, whatever it does when it wakes up.
    #[test]
    fn stale_grants_keep_the_limits_exact() {
        let seed = std::env::var("VOLE_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_u64);
        let mut rng = Rng(seed);
        let limits = Limits {
            max_clients: Some(20),
            max_node_clients: Some(8),
        };
        let t0 = Instant::now();
        let mut b = ready(Balance::Grant, 3, limits);
        let mut real: BTreeMap<NodeId, Real> = (0..3)
            .map(|i| {
                (
                    i,
                    Real {
                        ready: true,
                        ..Real::default()
                    },
                )
            })
            .collect();
        let mut stopped: Option<NodeId> = None;
        let mut stuck_since: Option<u32> = None;
        // Unanswered questions, and when they time out.
        let mut asked: Vec<(NodeId, Instant)> = Vec::new();
        let stale_steps = ((MAX_QUIET + PROBE_TIMEOUT).as_millis() / TICK.as_millis()) as u32 + 2;
        for step in 0..20_000u32 {
            let now = t0 + TICK * step;
            b.at(now);
            for id in b.take_probes() {
                if Some(id) == stopped {
                    asked.push((id, now + PROBE_TIMEOUT));
                } else {
                    b.probe_answered(id, true);
                }
            }
            asked.retain(|&(id, due)| {
                if due > now {
                    return true;
                }
                b.probe_answered(id, Some(id) != stopped);
                false
            });
            for (id, n) in b.take_grants() {
                let r = real.get_mut(&id).expect("granted nodes exist");
                r.grants += u64::from(n);
            }
            let total: u64 = real.values().map(|r| r.open + r.grants).sum();
            assert!(total <= 20, "seed {seed} step {step}: {real:?}");
            for (id, r) in &real {
                assert!(r.open + r.grants <= 8, "seed {seed} step {step}: node {id}");
            }
            // Some node not stopped can always accept, unless the limits
            // are reached.
            let room = total < 20;
            let can = real
                .iter()
                .any(|(id, r)| Some(*id) != stopped && r.grants > 0 && r.open < 8);
            let full = real
                .iter()
                .filter(|(id, _)| Some(**id) != stopped)
                .all(|(_, r)| r.open + r.grants >= 8);
            // Stuck for no longer than it takes grants to go stale.
            if can || !room || full {
                stuck_since = None;
            } else {
                let since = *stuck_since.get_or_insert(step);
                assert!(
                    step - since <= stale_steps,
                    "seed {seed} step {step}: nobody can accept since step {since}: {real:?}, stopped {stopped:?}"
                );
            }
            match rng.below(10) {
                0..=4 => {
                    let holders: Vec<NodeId> = real
                        .iter()
                        .filter(|(id, r)| r.grants > 0 && Some(**id) != stopped)
                        .map(|(id, _)| *id)
                        .collect();
                    if let Some(&id) = holders.get(rng.below(holders.len().max(1) as u64) as usize)
                    {
                        let r = real.get_mut(&id).expect("holder");
                        r.open += 1;
                        r.grants -= 1;
                        b.sessions(id, 1, 0);
                    }
                }
                5..=7 => {
                    let busy: Vec<NodeId> = real
                        .iter()
                        .filter(|(id, r)| r.open > 0 && Some(**id) != stopped)
                        .map(|(id, _)| *id)
                        .collect();
                    if let Some(&id) = busy.get(rng.below(busy.len().max(1) as u64) as usize) {
                        real.get_mut(&id).expect("busy").open -= 1;
                        b.sessions(id, 0, 1);
                    }
                }
                8 => {
                    // A node stops (or wakes up, using every grant it held).
                    match stopped.take() {
                        Some(id) => {
                            let r = real.get_mut(&id).expect("stopped");
                            let used = r.grants;
                            r.open += used;
                            r.grants = 0;
                            b.sessions(id, used, 0);
                        }
                        None => stopped = Some(rng.below(3) as NodeId),
                    }
                }
                _ => {}
            }
        }
    }

    /// What a simulated node really has.
    #[derive(Debug, Clone, Copy, Default)]
    struct Real {
        open: u64,
        grants: u64,
        ready: bool,
    }

    /// Checks a round of grants: every node that got some may, using them
    /// all, end at most one above every other serving node as it is now,
    /// holds no more than the window, and some serving node can accept.
    fn check_grants(
        b: &mut Balancer,
        real: &mut BTreeMap<NodeId, Real>,
        what: &dyn Fn() -> String,
    ) {
        for (id, n) in b.take_grants() {
            let r = real.get_mut(&id).expect("granted nodes exist");
            assert!(r.ready, "{}: grant to starting node {id}", what());
            r.grants += u64::from(n);
            let (open, grants) = (r.open, r.grants);
            assert!(
                grants <= GRANT_WINDOW,
                "{}: node {id} holds {grants}",
                what()
            );
            assert_eq!(b.granted(id), grants, "{}: node {id}", what());
            let ready_min = real.values().filter(|r| r.ready).map(|r| r.open).min();
            for (other, o) in real.iter().filter(|(o, r)| **o != id && r.ready) {
                assert!(
                    open + grants <= o.open + 1 || (grants == 1 && Some(open) == ready_min),
                    "{}: node {id} ({open} open, {grants} grants) could get 2 above node {other} ({} open)",
                    what(),
                    o.open
                );
            }
        }
        if real.values().any(|r| r.ready) {
            assert!(
                real.values().any(|r| r.ready && r.grants > 0),
                "{}: no node can accept",
                what()
            );
        }
    }

    /// Random arrivals, departures, deaths, restarts and slow starts: every
    /// grant keeps the node within one of every other serving node whatever
    /// happens next, no node holds more than the window, and some serving
    /// node can always accept (VPy stalls when a node dies holding the
    /// token).
    #[test]
    fn simulation_keeps_grant_counts_within_one() {
        let seed = std::env::var("VOLE_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
        let mut rng = Rng(seed);
        for nodes in [1u32, 2, 4] {
            let mut b = ready(Balance::Grant, nodes, Limits::default());
            let mut real: BTreeMap<NodeId, Real> = (0..nodes)
                .map(|i| {
                    (
                        i,
                        Real {
                            ready: true,
                            ..Real::default()
                        },
                    )
                })
                .collect();
            for step in 0..20_000 {
                let what = || format!("seed {seed} nodes {nodes} step {step}");
                check_grants(&mut b, &mut real, &what);
                match rng.below(20) {
                    // A client connects: a node holding grants accepts
                    // (reports come in batches of whatever it accepted).
                    0..=9 => {
                        let holders: Vec<NodeId> = real
                            .iter()
                            .filter(|(_, r)| r.grants > 0)
                            .map(|(id, _)| *id)
                            .collect();
                        if let Some(&id) =
                            holders.get(rng.below(holders.len().max(1) as u64) as usize)
                        {
                            let r = real.get_mut(&id).expect("holder exists");
                            let used = 1 + rng.below(r.grants);
                            r.open += used;
                            r.grants -= used;
                            b.sessions(id, used, 0);
                        }
                    }
                    // A client leaves.
                    10..=17 => {
                        let busy: Vec<NodeId> = real
                            .iter()
                            .filter(|(_, r)| r.open > 0)
                            .map(|(id, _)| *id)
                            .collect();
                        if let Some(&id) = busy.get(rng.below(busy.len().max(1) as u64) as usize) {
                            real.get_mut(&id).expect("busy exists").open -= 1;
                            b.sessions(id, 0, 1);
                        }
                    }
                    // A node dies; its replacement starts.
                    18 => {
                        let id = rng.below(u64::from(nodes)) as NodeId;
                        b.node_gone(id);
                        b.node_starting(id);
                        real.insert(id, Real::default());
                    }
                    // A starting node serves.
                    _ => {
                        if let Some((&id, r)) = real.iter_mut().find(|(_, r)| !r.ready) {
                            r.ready = true;
                            b.node_ready(id);
                        }
                    }
                }
            }
        }
    }

    /// With only arrivals (clients that hold their sessions), the final
    /// counts differ by at most one, whatever the order nodes accept in and
    /// however many of their grants they use at once, also when the nodes
    /// come up one by one.
    #[test]
    fn held_sessions_end_within_one() {
        for seed in 1..50u64 {
            let mut rng = Rng(seed * 7919);
            let mut b = Balancer::new(Balance::Grant, Limits::default());
            for id in 0..3 {
                b.node_starting(id);
            }
            let mut real = [0u64; 3];
            let mut holding = [0u64; 3];
            let mut serving = 0;
            let mut clients = 0;
            while clients < 60 {
                if serving < 3 && rng.below(4) == 0 {
                    b.node_ready(serving as NodeId);
                    serving += 1;
                }
                for (id, n) in b.take_grants() {
                    holding[id as usize] += u64::from(n);
                }
                let holders: Vec<usize> = (0..3).filter(|i| holding[*i] > 0).collect();
                if holders.is_empty() {
                    assert_eq!(serving, 0, "seed {seed}: serving nodes but no grant");
                    continue;
                }
                let id = holders[rng.below(holders.len() as u64) as usize];
                let used = (1 + rng.below(holding[id])).min(60 - clients);
                holding[id] -= used;
                real[id] += used;
                clients += used;
                b.sessions(id as NodeId, used, 0);
            }
            let (min, max) = (real.iter().min().copied(), real.iter().max().copied());
            assert!(
                max.unwrap_or(0) - min.unwrap_or(0) <= 1,
                "seed {seed}: {real:?}"
            );
        }
    }
}
