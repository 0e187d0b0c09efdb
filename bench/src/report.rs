//! The summary of a run, as text for people and as one JSON line for
//! scripts (`benches/run.sh` reads the JSON).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::nodes::Fairness;
use crate::plan::{Mode, Plan};

/// CPU time used during the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// Wall time between the two readings.
    pub wall: Duration,
    /// This process (the load generator).
    pub client: Option<Duration>,
    /// The server (its process, or its process tree), if its pid was given
    /// and readable.
    pub server: Option<Duration>,
    /// The server's root process alone (of a tree: the controller).
    pub server_root: Option<Duration>,
    /// The server processes read at the end of the window.
    pub server_procs: Option<usize>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds.
    pub fn from_histogram(hist: &Histogram<u64>) -> Latency {
        if hist.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    }
}

/// Failed new sessions by the step that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageErrors {
    /// TCP connect, VOP, TLS or the link handshake.
    pub connect: u64,
    /// Resolving the path (`urlget`).
    pub resolve: u64,
    /// The call, or a wrong echo.
    pub call: u64,
    /// The whole session took longer than its bound.
    pub timeout: u64,
}

/// The outcomes of the calls of a [`Mode::Failover`] run, in the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverCounts {
    /// Answered right at the first try.
    pub ok: u64,
    /// Answered right after being tried again (on a new link).
    pub retried: u64,
    /// Cut off in flight or past their deadline, and not tried again.
    pub interrupted: u64,
    /// Every other failure (a wrong answer included).
    pub failed: u64,
    /// Tries beyond the first, in all.
    pub retries: u64,
    /// The calls per second asked for.
    pub rate: Option<f64>,
    /// When the first and the last counted failure (interrupted or failed)
    /// ended, in seconds since the load began.
    pub failures_between: Option<(f64, f64)>,
    /// The longest any call took (all its tries), whatever its outcome.
    pub longest_call: Duration,
    /// Per host: links made to it, and failed connections.
    pub hosts: Vec<vole_link::pool::HostStats>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Held links, or new sessions.
    pub mode: Mode,
    /// New sessions: whether TLS resumption was allowed.
    pub resume: bool,
    /// New sessions: one TLS session cache per worker.
    pub cache_per_worker: bool,
    /// New sessions counted whose TLS session was resumed.
    pub resumed: u64,
    /// New sessions: the failures by step.
    pub stages: StageErrors,
    /// Per-node counts over the window (from the admin socket).
    pub fairness: Option<Fairness>,
    /// The target as given.
    pub target: String,
    /// The label, if any.
    pub label: Option<String>,
    /// The method (vop targets).
    pub method: String,
    /// Links.
    pub links: usize,
    /// Calls in flight per link.
    pub inflight: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Warm-up.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Successful calls completed in the window.
    pub calls: u64,
    /// Failed calls after the window began.
    pub errors: u64,
    /// Links that were lost or did not finish.
    pub links_lost: usize,
    /// Latency of the calls counted.
    pub latency: Latency,
    /// CPU use over the window.
    pub cpu: CpuUse,
    /// A failover run's outcomes.
    pub failover: Option<FailoverCounts>,
}

impl Summary {
    /// Builds the summary of a run.
    pub fn new(
        plan: &Plan,
        hist: &Histogram<u64>,
        calls: u64,
        errors: u64,
        links_lost: usize,
        cpu: CpuUse,
    ) -> Summary {
        Summary {
            mode: plan.mode,
            resume: plan.resume,
            cache_per_worker: plan.cache_per_worker,
            resumed: 0,
            stages: StageErrors::default(),
            fairness: None,
            target: plan.target_text.clone(),
            label: plan.label.clone(),
            method: plan.method.clone(),
            links: plan.links,
            inflight: plan.inflight,
            payload: plan.payload,
            warmup: plan.warmup,
            duration: plan.duration,
            calls,
            errors,
            links_lost,
            latency: Latency::from_histogram(hist),
            cpu,
            failover: None,
        }
    }

    /// Successful calls per second of the window.
    pub fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.duration.as_secs_f64()
    }

    fn cores(&self, used: Option<Duration>) -> Option<f64> {
        let wall = self.cpu.wall.as_secs_f64();
        used.filter(|_| wall > 0.0).map(|u| u.as_secs_f64() / wall)
    }

    /// CPU microseconds per successful call.
    fn us_per_call(&self, used: Option<Duration>) -> Option<f64> {
        used.filter(|_| self.calls > 0)
            .map(|u| u.as_secs_f64() * 1e6 / self.calls as f64)
    }

    /// The fraction of counted sessions that resumed TLS.
    fn resumed_fraction(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.resumed as f64 / self.calls as f64)
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        let l = &self.latency;
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let opt = |x: Option<f64>| x.map(|v| (v * 1000.0).round() / 1000.0);
        let fairness = self.fairness.as_ref();
        let mut json = serde_json::json!({
            "mode": self.mode.name(),
            "target": self.target,
            "label": self.label,
            "method": self.method,
            "links": self.links,
            "inflight": self.inflight,
            "payload": self.payload,
            "warmup_s": self.warmup.as_secs_f64(),
            "duration_s": self.duration.as_secs_f64(),
            "calls": self.calls,
            "errors": self.errors,
            "links_lost": self.links_lost,
            "calls_per_s": round(self.calls_per_s()),
            "latency_us": {
                "p50": round(l.p50),
                "p90": round(l.p90),
                "p99": round(l.p99),
                "p999": round(l.p999),
                "max": round(l.max),
                "mean": round(l.mean),
            },
            "client_cores": opt(self.cores(self.cpu.client)),
            "server_cores": opt(self.cores(self.cpu.server)),
            "client_us_per_call": opt(self.us_per_call(self.cpu.client)),
            "server_us_per_call": opt(self.us_per_call(self.cpu.server)),
            "server_procs": self.cpu.server_procs,
            "server_root_cores": opt(self.cores(self.cpu.server_root)),
            "server_root_us_per_call": opt(self.us_per_call(self.cpu.server_root)),
            "nodes": fairness.map(|f| &f.nodes),
            "jain": opt(fairness.and_then(|f| f.jain)),
            "jain_of": fairness.map(|f| f.basis.name()),
            "node_sessions_min": fairness.and_then(|f| f.sessions_min),
            "node_sessions_max": fairness.and_then(|f| f.sessions_max),
        });
        if self.mode == Mode::Sessions {
            let extra = serde_json::json!({
                "sessions": self.calls,
                "sessions_per_s": round(self.calls_per_s()),
                "resume": self.resume,
                "session_cache": match (self.resume, self.cache_per_worker) {
                    (false, _) => "off",
                    (true, false) => "shared",
                    (true, true) => "per-worker",
                },
                "resumed": self.resumed,
                "resumed_fraction": opt(self.resumed_fraction()),
                "errors_by_stage": {
                    "connect": self.stages.connect,
                    "resolve": self.stages.resolve,
                    "call": self.stages.call,
                    "timeout": self.stages.timeout,
                },
                "client_us_per_session": opt(self.us_per_call(self.cpu.client)),
                "server_us_per_session": opt(self.us_per_call(self.cpu.server)),
                "server_root_us_per_session": opt(self.us_per_call(self.cpu.server_root)),
            });
            if let (Some(map), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
                map.extend(extra);
            }
        }
        if let (Some(f), Some(map)) = (&self.failover, json.as_object_mut()) {
            let hosts: Vec<serde_json::Value> = f
                .hosts
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "addr": h.addr.to_string(),
                        "links": h.links,
                        "failed": h.failed,
                    })
                })
                .collect();
            map.insert(
                "failover".to_owned(),
                serde_json::json!({
                    "ok": f.ok,
                    "retried": f.retried,
                    "interrupted": f.interrupted,
                    "failed": f.failed,
                    "retries": f.retries,
                    "rate": f.rate,
                    "first_failure_s": f.failures_between.map(|b| b.0),
                    "last_failure_s": f.failures_between.map(|b| b.1),
                    "longest_call_s": f.longest_call.as_secs_f64(),
                    "hosts": hosts,
                }),
            );
        }
        json.to_string()
    }

    /// The summary as a few lines of text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let l = &self.latency;
        // Writing to a String cannot fail.
        let _ = writeln!(s, "target      {}", self.target);
        let unit = match self.mode {
            Mode::Held => {
                let _ = writeln!(
                    s,
                    "load        {} link(s) x {} in flight, {}-byte payload, {:.1} s measured after {:.1} s warm-up",
                    self.links,
                    self.inflight,
                    self.payload,
                    self.duration.as_secs_f64(),
                    self.warmup.as_secs_f64()
                );
                let _ = writeln!(
                    s,
                    "calls       {} ({:.0} calls/s), {} errors, {} link(s) lost",
                    self.calls,
                    self.calls_per_s(),
                    self.errors,
                    self.links_lost
                );
                "call"
            }
            Mode::Failover => {
                let rate = self
                    .failover
                    .as_ref()
                    .and_then(|f| f.rate)
                    .map_or("back to back".to_owned(), |r| format!("at {r:.0} calls/s"));
                let _ = writeln!(
                    s,
                    "load        {} link(s) x {} in flight through the failover client, {rate}, {}-byte payload, {:.1} s measured after {:.1} s warm-up",
                    self.links,
                    self.inflight,
                    self.payload,
                    self.duration.as_secs_f64(),
                    self.warmup.as_secs_f64()
                );
                if let Some(f) = &self.failover {
                    let _ = writeln!(
                        s,
                        "calls       {} ok, {} retried, {} interrupted, {} failed ({:.0} calls/s; {} tries again in all)",
                        f.ok,
                        f.retried,
                        f.interrupted,
                        f.failed,
                        self.calls_per_s(),
                        f.retries
                    );
                    let when = match f.failures_between {
                        Some((a, b)) => format!("failures between {a:.3} s and {b:.3} s"),
                        None => "no failures".to_owned(),
                    };
                    let _ = writeln!(
                        s,
                        "timing      {when} into the load; the longest call took {:.3} s",
                        f.longest_call.as_secs_f64()
                    );
                    for h in &f.hosts {
                        let _ = writeln!(
                            s,
                            "host        {}: {} link(s), {} failed connection(s)",
                            h.addr, h.links, h.failed
                        );
                    }
                }
                "call"
            }
            Mode::Sessions => {
                let _ = writeln!(
                    s,
                    "load        {} worker(s) of new sessions (connect, handshake, resolve, one call, close), {}-byte payload, {:.1} s measured after {:.1} s warm-up",
                    self.links,
                    self.payload,
                    self.duration.as_secs_f64(),
                    self.warmup.as_secs_f64()
                );
                let st = &self.stages;
                let _ = writeln!(
                    s,
                    "sessions    {} ({:.0} sessions/s), {} errors (connect {}, resolve {}, call {}, timeout {}), {} worker(s) stuck",
                    self.calls,
                    self.calls_per_s(),
                    self.errors,
                    st.connect,
                    st.resolve,
                    st.call,
                    st.timeout,
                    self.links_lost
                );
                let resumed = match (self.resume, self.resumed_fraction()) {
                    (false, _) => "off (--no-resume)".to_owned(),
                    (true, Some(f)) => format!(
                        "{} ({:.1}%), {} TLS session cache",
                        self.resumed,
                        f * 100.0,
                        if self.cache_per_worker {
                            "a per-worker"
                        } else {
                            "one shared"
                        }
                    ),
                    (true, None) => "-".to_owned(),
                };
                let _ = writeln!(s, "resumed     {resumed}");
                "session"
            }
        };
        let _ = writeln!(
            s,
            "latency us  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        let mut cpu = |who: &str, used: Option<Duration>, procs: Option<usize>| {
            if let (Some(cores), Some(per)) = (self.cores(used), self.us_per_call(used)) {
                let procs = match procs {
                    Some(n) if n > 1 => format!(" ({n} processes)"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    s,
                    "cpu {who:<7} {cores:.2} cores, {per:.2} us/{unit}{procs}"
                );
            }
        };
        cpu("client", self.cpu.client, None);
        cpu("server", self.cpu.server, self.cpu.server_procs);
        if self.cpu.server_procs.is_some_and(|n| n > 1) {
            cpu("root", self.cpu.server_root, None);
        }
        if let Some(f) = &self.fairness {
            let per_node: Vec<String> = f
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: {} calls, {} accepted, {} open",
                        n.id, n.calls, n.accepted, n.sessions
                    )
                })
                .collect();
            let _ = writeln!(s, "nodes       {}", per_node.join("; "));
            let jain = f.jain.map_or("-".to_owned(), |j| format!("{j:.4}"));
            let _ = writeln!(
                s,
                "fairness    Jain's index {jain} over {} per node",
                f.basis.name()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Target;

    fn plan() -> Plan {
        Plan {
            target: Target::Raw {
                host: "h".into(),
                port: 1,
                tls: false,
            },
            target_text: "raw-tcp://h:1".into(),
            method: "echo".into(),
            links: 2,
            inflight: 3,
            payload: 64,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            server: None,
            admin_socket: None,
            mode: Mode::Held,
            resume: true,
            cache_per_worker: false,
            label: Some("x".into()),
            failover: None,
        }
    }

    #[test]
    fn summary_figures() {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("hist");
        for us in 1..=1000u64 {
            hist.record(us * 1000).expect("record");
        }
        let cpu = CpuUse {
            wall: Duration::from_secs(2),
            client: Some(Duration::from_secs(1)),
            server: None,
            server_root: None,
            server_procs: None,
        };
        let s = Summary::new(&plan(), &hist, 1000, 2, 0, cpu);
        assert_eq!(s.calls_per_s(), 500.0);
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("json");
        assert_eq!(json["calls"], 1000);
        assert_eq!(json["errors"], 2);
        assert_eq!(json["label"], "x");
        assert_eq!(json["calls_per_s"], 500.0);
        assert_eq!(json["client_cores"], 0.5);
        assert_eq!(json["client_us_per_call"], 1000.0);
        assert!(json["server_cores"].is_null());
        let p50 = json["latency_us"]["p50"].as_f64().expect("p50");
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        let p999 = json["latency_us"]["p999"].as_f64().expect("p999");
        assert!((998.0..=1001.0).contains(&p999), "{p999}");
        let text = s.to_text();
        assert!(text.contains("1000 (500 calls/s), 2 errors"), "{text}");
        assert!(
            text.contains("cpu client  0.50 cores, 1000.00 us/call"),
            "{text}"
        );
        assert!(!text.contains("cpu server"), "{text}");
    }

    #[test]
    fn empty_run() {
        let hist = Histogram::<u64>::new(3).expect("hist");
        let s = Summary::new(&plan(), &hist, 0, 5, 2, CpuUse::default());
        assert_eq!(s.latency, Latency::default());
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("json");
        assert_eq!(json["calls_per_s"], 0.0);
        assert_eq!(json["links_lost"], 2);
        assert!(json["client_us_per_call"].is_null());
    }
}
