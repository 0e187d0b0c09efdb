//! Prometheus metrics, through the `metrics` crate family: the embedding
//! program installs an exporter; the controller polls its nodes' status and
//! records per-node series.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vole_sessions` | gauge | node |
//! | `vole_calls_inflight` | gauge | node |
//! | `vole_calls_total` | counter | node |
//! | `vole_call_errors_total` | counter | node |
//! | `vole_calls_cancelled_total` | counter | node |
//! | `vole_accepts_total` | counter | node |
//! | `vole_handshake_failures_total` | counter | node, reason |
//! | `vole_node_restarts_total` | counter | node |
//! | `vole_call_duration_seconds` | histogram | node |
//! | `vole_nodes` | gauge | — |
//!
//! [`describe`] gives each its `# HELP` text (and unit); the embedding
//! program adds `vole_build_info`.

use std::collections::HashMap;

use vole_control::control::NodeStatus;
use vole_link::metrics::BUCKETS;

/// Name of the call latency histogram (the exporter needs its buckets).
pub const CALL_DURATION: &str = "vole_call_duration_seconds";

/// Every metric above with its help text (the exporter writes it as
/// `# HELP`): call once the exporter is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("vole_sessions", "Open links (sessions) on the node.");
    describe_gauge!(
        "vole_calls_inflight",
        "Calls the node is running now for its peers."
    );
    describe_counter!("vole_calls_total", "Calls the node answered.");
    describe_counter!(
        "vole_call_errors_total",
        "Calls the node answered with an error or exception."
    );
    describe_counter!(
        "vole_calls_cancelled_total",
        "Calls cancelled before they finished (the caller's deadline or cancel, or max-call-time)."
    );
    describe_counter!(
        "vole_accepts_total",
        "Connections the node took (accepted or was handed)."
    );
    describe_counter!(
        "vole_handshake_failures_total",
        "Connections closed before the link was up, by reason."
    );
    describe_counter!(
        "vole_node_restarts_total",
        "Times the controller restarted the node in this slot."
    );
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "How long the node took to answer calls."
    );
    describe_gauge!("vole_nodes", "Nodes serving now.");
}

/// Remembers the last histogram counts per node, to record only what is new.
#[derive(Debug, Default)]
pub struct Recorder {
    last_counts: HashMap<u32, Vec<u64>>,
}

/// A value inside bucket `i`, so the exporter files it under the same bucket.
fn bucket_value(i: usize) -> f64 {
    match i {
        0 => BUCKETS[0] / 2.0,
        i if i < BUCKETS.len() => (BUCKETS[i - 1] + BUCKETS[i]) / 2.0,
        _ => BUCKETS[BUCKETS.len() - 1] * 2.0,
    }
}

impl Recorder {
    /// Records one node's status.
    pub fn node(&mut self, id: u32, status: &NodeStatus, restarts: u32) {
        let node = id.to_string();
        metrics::gauge!("vole_sessions", "node" => node.clone()).set(status.sessions as f64);
        metrics::gauge!("vole_calls_inflight", "node" => node.clone()).set(status.inflight as f64);
        metrics::counter!("vole_calls_total", "node" => node.clone()).absolute(status.calls);
        metrics::counter!("vole_call_errors_total", "node" => node.clone()).absolute(status.errors);
        metrics::counter!("vole_calls_cancelled_total", "node" => node.clone())
            .absolute(status.cancelled);
        metrics::counter!("vole_accepts_total", "node" => node.clone()).absolute(status.accepted);
        metrics::counter!("vole_node_restarts_total", "node" => node.clone())
            .absolute(u64::from(restarts));
        for (reason, n) in &status.handshake_failures_by_reason {
            metrics::counter!("vole_handshake_failures_total", "node" => node.clone(), "reason" => reason.clone())
                .absolute(*n);
        }
        let last = self.last_counts.entry(id).or_default();
        let histogram = metrics::histogram!(CALL_DURATION, "node" => node);
        for (i, now) in status.latency_counts.iter().enumerate() {
            let before = last.get(i).copied().unwrap_or(0);
            // A restarted node starts from zero again.
            let delta = if *now >= before { now - before } else { *now };
            if delta > 0 {
                histogram.record_many(bucket_value(i), delta as usize);
            }
        }
        *last = status.latency_counts.clone();
    }

    /// Forgets nodes that are gone.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.last_counts.retain(|id, _| alive(*id));
    }
}
