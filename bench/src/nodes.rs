//! Per-node counts of a multi-process server over the measured window, from
//! its admin socket (`vole status`), and their fairness as Jain's index.
//!
//! `vole bench --admin-socket PATH` asks the service for its status when the
//! window begins and when it ends; the difference per node id is what each
//! node did during the window: calls served, connections accepted. Jain's
//! index J = (Σx)² / (n·Σx²) over those per-node figures is 1 when every
//! node did the same and 1/n when one node did everything.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use vole_controller::admin::{self, AdminRequest, NodeReport, StatusReport};

/// How long one status request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSample {
    /// Node id.
    pub id: u32,
    /// Its process, if running.
    pub pid: Option<u32>,
    /// Calls served so far.
    pub calls: u64,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Open sessions now.
    pub sessions: u64,
}

impl From<&NodeReport> for NodeSample {
    fn from(n: &NodeReport) -> NodeSample {
        NodeSample {
            id: n.id,
            pid: n.pid,
            calls: n.calls,
            accepted: n.accepted,
            sessions: n.sessions,
        }
    }
}

/// Every node of a status report.
pub fn samples(status: &StatusReport) -> Vec<NodeSample> {
    status.nodes.iter().map(NodeSample::from).collect()
}

/// Asks the service at `socket` for its nodes' counters.
pub async fn fetch(socket: &Path) -> anyhow::Result<Vec<NodeSample>> {
    let response = admin::request(socket, &AdminRequest::Status, STATUS_TIMEOUT).await?;
    if !response.ok {
        anyhow::bail!(
            "the service refused status: {}",
            response.error.unwrap_or_default()
        );
    }
    let status = response
        .status
        .ok_or_else(|| anyhow::anyhow!("the service sent no status"))?;
    Ok(samples(&status))
}

/// What one node did over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeDelta {
    /// Node id.
    pub id: u32,
    /// Its process at the end of the window.
    pub pid: Option<u32>,
    /// Calls served during the window.
    pub calls: u64,
    /// Connections accepted during the window.
    pub accepted: u64,
    /// Sessions open at the end of the window.
    pub sessions: u64,
    /// Whether the node's process changed during the window (its counters
    /// restarted, so its figures are since the new process started).
    pub replaced: bool,
}

/// Per node of `end` (nodes without a process are left out), its counts
/// less those of the same node in `start`.
pub fn deltas(start: &[NodeSample], end: &[NodeSample]) -> Vec<NodeDelta> {
    end.iter()
        .filter(|e| e.pid.is_some())
        .map(|e| {
            let before = start.iter().find(|s| s.id == e.id && s.pid == e.pid);
            let (calls0, accepted0) = before.map_or((0, 0), |s| (s.calls, s.accepted));
            NodeDelta {
                id: e.id,
                pid: e.pid,
                calls: e.calls.saturating_sub(calls0),
                accepted: e.accepted.saturating_sub(accepted0),
                sessions: e.sessions,
                replaced: before.is_none(),
            }
        })
        .collect()
}

/// Jain's fairness index (Σx)² / (n·Σx²) of `xs`; `None` when there is
/// nothing to judge (no values, all zero, or not finite).
pub fn jain(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return None;
    }
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares <= 0.0 {
        return None;
    }
    Some(sum * sum / (xs.len() as f64 * squares))
}

/// Which per-node count fairness is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Calls served (held links).
    Calls,
    /// Connections accepted (new sessions).
    Accepted,
}

impl Basis {
    /// Its name in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Calls => "calls",
            Basis::Accepted => "accepted",
        }
    }
}

/// The per-node figures of a run and their fairness.
#[derive(Debug, Clone, PartialEq)]
pub struct Fairness {
    /// Per node.
    pub nodes: Vec<NodeDelta>,
    /// What `jain` is over.
    pub basis: Basis,
    /// Jain's index over `basis` per node.
    pub jain: Option<f64>,
    /// Fewest and most sessions open on a node at the end.
    pub sessions_min: Option<u64>,
    /// See `sessions_min`.
    pub sessions_max: Option<u64>,
}

impl Fairness {
    /// Judges `nodes` on `basis`.
    pub fn new(nodes: Vec<NodeDelta>, basis: Basis) -> Fairness {
        let xs: Vec<f64> = nodes
            .iter()
            .map(|n| match basis {
                Basis::Calls => n.calls as f64,
                Basis::Accepted => n.accepted as f64,
            })
            .collect();
        Fairness {
            jain: jain(&xs),
            basis,
            sessions_min: nodes.iter().map(|n| n.sessions).min(),
            sessions_max: nodes.iter().map(|n| n.sessions).max(),
            nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn jains_index() {
        assert_eq!(jain(&[5.0, 5.0, 5.0]), Some(1.0));
        assert_eq!(jain(&[7.0]), Some(1.0));
        // One node of n does everything: 1/n.
        assert!(close(jain(&[10.0, 0.0]).expect("j"), 0.5));
        assert!(close(jain(&[0.0, 9.0, 0.0, 0.0]).expect("j"), 0.25));
        // (1+2+3)^2 / (3 * (1+4+9)) = 36/42.
        assert!(close(jain(&[1.0, 2.0, 3.0]).expect("j"), 36.0 / 42.0));
        // 100 vs 90: 190^2 / (2 * 18100).
        assert!(close(jain(&[100.0, 90.0]).expect("j"), 36100.0 / 36200.0));
        assert_eq!(jain(&[]), None);
        assert_eq!(jain(&[0.0, 0.0]), None);
        assert_eq!(jain(&[1.0, f64::NAN]), None);
        assert_eq!(jain(&[1.0, f64::INFINITY]), None);
        assert_eq!(jain(&[1.0, -1.0]), None);
    }

    fn sample(id: u32, pid: u32, calls: u64, accepted: u64, sessions: u64) -> NodeSample {
        NodeSample {
            id,
            pid: Some(pid),
            calls,
            accepted,
            sessions,
        }
    }

    #[test]
    fn deltas_per_node() {
        let start = [sample(1, 100, 10, 3, 32), sample(2, 200, 20, 4, 32)];
        let mut gone = sample(3, 300, 0, 0, 0);
        gone.pid = None;
        let end = [
            sample(2, 200, 120, 10, 30),
            sample(1, 100, 110, 5, 34),
            gone,
            // A node whose process changed: counted since it started.
            sample(4, 401, 7, 1, 1),
        ];
        let d = deltas(&start, &end);
        assert_eq!(d.len(), 3);
        assert_eq!(
            (d[0].id, d[0].calls, d[0].accepted, d[0].sessions),
            (2, 100, 6, 30)
        );
        assert_eq!((d[1].id, d[1].calls, d[1].accepted), (1, 100, 2));
        assert!(!d[0].replaced && !d[1].replaced);
        assert!(d[2].replaced);
        assert_eq!(d[2].calls, 7);
        // Counters that went back (cannot happen) give zero, not a panic.
        let back = deltas(&[sample(1, 1, 9, 9, 0)], &[sample(1, 1, 1, 1, 0)]);
        assert_eq!((back[0].calls, back[0].accepted), (0, 0));
    }

    #[test]
    fn fairness_on_a_basis() {
        let d = deltas(&[], &[sample(1, 1, 100, 10, 31), sample(2, 2, 100, 30, 33)]);
        let by_calls = Fairness::new(d.clone(), Basis::Calls);
        assert_eq!(by_calls.jain, Some(1.0));
        assert_eq!(
            (by_calls.sessions_min, by_calls.sessions_max),
            (Some(31), Some(33))
        );
        let by_accepted = Fairness::new(d, Basis::Accepted);
        assert!(close(by_accepted.jain.expect("j"), 1600.0 / 2000.0));
        let empty = Fairness::new(Vec::new(), Basis::Calls);
        assert_eq!((empty.jain, empty.sessions_min), (None, None));
    }

    #[test]
    fn samples_from_a_status_report() {
        let status = StatusReport {
            nodes: vec![NodeReport {
                id: 3,
                pid: Some(9),
                calls: 5,
                accepted: 2,
                sessions: 1,
                ..NodeReport::default()
            }],
            ..StatusReport::default()
        };
        assert_eq!(samples(&status), vec![sample(3, 9, 5, 2, 1)]);
    }
}
