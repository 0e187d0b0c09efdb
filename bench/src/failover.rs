//! Load through the failover client ([`vole_link::failover`]): links
//! spread over several hosts, each call tried again on another link where
//! that is safe, optionally at a fixed rate; the outcome of every call in
//! the window is counted as ok, retried, interrupted or failed.
//!
//! Each link is one [`Failover`] with `inflight` call loops on it. At a
//! fixed rate every loop has its own schedule (`links × inflight` loops
//! share the rate, their first calls spread over one interval); a loop
//! that falls behind (its host failed and the call waited for a new link)
//! sends its next call at once but does not burst to catch up.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use vole_link::failover::{Failover, FailoverConfig, Retry};
use vole_link::pool::Pool;
use vole_link::resolve::ClientConfig;
use vole_link::uri::Vri;
use vole_link::{Entity, Error as LinkError, Value};

use crate::error::{Error, ErrorKind};
use crate::nodes::Basis;
use crate::plan::{FailoverPlan, Plan, Target};
use crate::record::{new_histogram, Counters, Recorder, Window};
use crate::report::{FailoverCounts, Summary};
use crate::watch::{join_until, Watch};

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Retried,
    Interrupted,
    Failed,
}

fn classify(result: &Result<Value, LinkError>, retries: u32, payload: &str, check: bool) -> Kind {
    match result {
        Ok(Entity::Str(s)) if check && s != payload => Kind::Failed,
        Ok(_) if retries == 0 => Kind::Ok,
        Ok(_) => Kind::Retried,
        Err(LinkError::Interrupted(_) | LinkError::DeadlineExceeded { .. }) => Kind::Interrupted,
        Err(_) => Kind::Failed,
    }
}

/// The run's clock: when the load began, and its window.
#[derive(Debug, Clone, Copy)]
struct When {
    begun: Instant,
    window: Window,
}

/// One call loop's tally.
struct Tally {
    rec: Recorder,
    counts: FailoverCounts,
}

impl Tally {
    fn note(&mut self, when: When, sent: Instant, done: Instant, kind: Kind, retries: u32) {
        let window = when.window;
        let ok = matches!(kind, Kind::Ok | Kind::Retried);
        self.rec.record(sent, done, ok);
        self.counts.longest_call = self.counts.longest_call.max(done - sent);
        // As the recorder counts: a success if it completed in the window, a
        // failure if it happened after the window began.
        let counted = if ok {
            window.contains(done)
        } else {
            done >= window.start
        };
        if !counted {
            return;
        }
        self.counts.retries += u64::from(retries);
        if !ok {
            let at = (done - when.begun).as_secs_f64();
            let (first, last) = self.counts.failures_between.unwrap_or((at, at));
            self.counts.failures_between = Some((first.min(at), last.max(at)));
        }
        match kind {
            Kind::Ok => self.counts.ok += 1,
            Kind::Retried => self.counts.retried += 1,
            Kind::Interrupted => self.counts.interrupted += 1,
            Kind::Failed => self.counts.failed += 1,
        }
    }
}

/// What a call loop needs.
struct Loop {
    link: Arc<Failover>,
    plan: Arc<Plan>,
    retry: Retry,
    /// Between its calls at a fixed rate.
    interval: Option<Duration>,
    /// When its first call goes.
    first: Instant,
    when: When,
}

async fn call_loop(l: Loop, mut tally: Tally) -> Tally {
    let payload = "x".repeat(l.plan.payload);
    let check = l.plan.method == "echo";
    let mut next = l.first;
    loop {
        if let Some(interval) = l.interval {
            tokio::time::sleep_until(next).await;
            // Behind schedule by more than one interval: start again from
            // now rather than send a burst.
            next = (next + interval).max(Instant::now());
        }
        let sent = Instant::now();
        if sent >= l.when.window.end {
            return tally;
        }
        let args = vec![Value::Str(payload.clone())];
        let outcome = l.link.call(&l.plan.method, args, l.retry).await;
        let done = Instant::now();
        let kind = classify(&outcome.result, outcome.retries, &payload, check);
        if kind == Kind::Failed || kind == Kind::Interrupted {
            if let Err(e) = &outcome.result {
                tracing::debug!(error = %e, "call failed");
            }
        }
        tally.note(l.when, sent, done, kind, outcome.retries);
    }
}

/// Runs the load and returns the summary.
pub async fn run(plan: &Plan, config: &ClientConfig) -> Result<Summary, Error> {
    let (Target::Vop(uri), Some(how)) = (&plan.target, &plan.failover) else {
        return Err(Error::usage("the failover client needs a vop:// target"));
    };
    let vri: Vri = uri.parse().map_err(|e| Error::Usage {
        message: format!("bad target uri {uri:?}"),
        source: Some(Box::new(e)),
    })?;
    if vri.query.is_some() {
        return Err(Error::usage(format!(
            "{uri} has a query: the failover client calls an object"
        )));
    }
    let host = vri.host.to_string();
    let pool = pool(&host, vri.port, how, config)
        .await
        .map_err(|e| Error::setting_up(uri, e.into(), ErrorKind::Connection))?;
    let pool = Arc::new(pool);
    eprintln!(
        "bench: {} link(s) over {} host(s) of {}",
        plan.links,
        pool.addrs().len(),
        plan.target_text
    );
    let fconfig = FailoverConfig {
        path: vri.path.clone(),
        call_timeout: how.call_timeout,
        connect_patience: plan.timeout,
        ..FailoverConfig::default()
    };
    let links: Vec<Arc<Failover>> = (0..plan.links)
        .map(|_| Arc::new(Failover::new(pool.clone(), fconfig.clone())))
        .collect();
    // Every link made before the clock starts, so the warm-up measures
    // calls, not connecting; a service that cannot be reached fails here.
    for link in &links {
        let probe = link
            .call(&plan.method, vec![Value::str("")], Retry::NeverRan)
            .await;
        if let Err(e) = probe.result {
            if !e.is_remote() {
                return Err(Error::setting_up(uri, e.into(), ErrorKind::Connection));
            }
        }
    }

    let begun = Instant::now();
    // Scripts that time an event by the load wait for this line.
    eprintln!("bench: load begins");
    let window = Window {
        start: begun + plan.warmup,
        end: begun + plan.warmup + plan.duration,
    };
    let loops = plan.links * plan.inflight;
    let interval = how
        .rate
        .map(|r| Duration::from_secs_f64(loops as f64 / r).max(Duration::from_micros(1)));
    let counters = Arc::new(Counters::default());
    let shared_plan = Arc::new(plan.clone());
    let retry = if how.idempotent {
        Retry::Idempotent
    } else {
        Retry::NeverRan
    };
    let mut tasks = Vec::with_capacity(loops);
    for i in 0..loops {
        let first = match interval {
            Some(iv) => begun + iv.mul_f64(i as f64 / loops as f64),
            None => begun,
        };
        let l = Loop {
            link: links[i % plan.links].clone(),
            plan: shared_plan.clone(),
            retry,
            interval,
            first,
            when: When { begun, window },
        };
        let tally = Tally {
            rec: Recorder::new(window, counters.clone()),
            counts: FailoverCounts::default(),
        };
        tasks.push(tokio::spawn(call_loop(l, tally)));
    }
    let watch = Watch::start(
        &counters,
        begun,
        window,
        &shared_plan,
        Basis::Calls,
        "calls",
    );
    // Each try is bounded (the call timeout, or the link's keepalive) and
    // the tries of one call are few, so every loop ends soon after.
    let per_call = how.call_timeout.unwrap_or(plan.timeout) + plan.timeout;
    let give_up = window.end + per_call * fconfig.attempts + Duration::from_secs(2);
    let mut hist = new_histogram();
    let (mut calls, mut errors) = (0u64, 0u64);
    let mut counts = FailoverCounts {
        rate: how.rate,
        ..FailoverCounts::default()
    };
    let stuck = join_until(tasks, give_up, "call loop", |t: Tally| {
        // Same bounds, so adding cannot fail.
        let _ = hist.add(&t.rec.hist);
        calls += t.rec.calls;
        errors += t.rec.errors;
        counts.ok += t.counts.ok;
        counts.retried += t.counts.retried;
        counts.interrupted += t.counts.interrupted;
        counts.failed += t.counts.failed;
        counts.retries += t.counts.retries;
        counts.longest_call = counts.longest_call.max(t.counts.longest_call);
        if let Some((first, last)) = t.counts.failures_between {
            let (f0, l0) = counts.failures_between.unwrap_or((first, last));
            counts.failures_between = Some((f0.min(first), l0.max(last)));
        }
    })
    .await;
    let sampled = watch.finish().await;
    for link in &links {
        let _ = tokio::time::timeout(Duration::from_secs(1), link.close()).await;
    }
    counts.hosts = pool.stats();
    // A loop still stuck at the end has a call that never ended.
    counts.failed += stuck as u64;
    let mut summary = Summary::new(plan, &hist, calls, errors, stuck, sampled.cpu);
    summary.fairness = sampled.fairness;
    summary.failover = Some(counts);
    Ok(summary)
}

async fn pool(
    host: &str,
    port: u16,
    how: &FailoverPlan,
    config: &ClientConfig,
) -> Result<Pool, LinkError> {
    if how.srv {
        Pool::resolve_srv(host, config.clone()).await
    } else if how.endpoints.is_empty() {
        Pool::resolve(host, port, config.clone()).await
    } else {
        Ok(Pool::with_addrs(
            host,
            how.endpoints.iter().copied(),
            config.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Mode;
    use crate::testing::{bounded, echo_service};

    fn plan(port: u16, how: FailoverPlan) -> Plan {
        Plan {
            target: Target::Vop(format!("vop://127.0.0.1:{port}/text/echo/")),
            target_text: format!("vop://127.0.0.1:{port}/text/echo/"),
            method: "echo".to_owned(),
            links: 3,
            inflight: 2,
            payload: 8,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            server: None,
            admin_socket: None,
            mode: Mode::Failover,
            resume: true,
            cache_per_worker: false,
            label: None,
            failover: Some(how),
        }
    }

    #[test]
    fn outcomes_are_classified() {
        let ok: Result<Value, LinkError> = Ok(Value::str("xx"));
        assert_eq!(classify(&ok, 0, "xx", true), Kind::Ok);
        assert_eq!(classify(&ok, 2, "xx", true), Kind::Retried);
        assert_eq!(classify(&ok, 0, "yy", true), Kind::Failed);
        assert_eq!(classify(&ok, 0, "yy", false), Kind::Ok);
        let cut = Err(LinkError::Interrupted("x".into()));
        assert_eq!(classify(&cut, 0, "", true), Kind::Interrupted);
        let late = Err(LinkError::DeadlineExceeded {
            method: "echo".into(),
            timeout: Duration::from_secs(1),
        });
        assert_eq!(classify(&late, 1, "", true), Kind::Interrupted);
        let closing = Err(LinkError::Closing("x".into()));
        assert_eq!(classify(&closing, 3, "", true), Kind::Failed);
    }

    /// At a fixed rate the calls made match the rate (within scheduling
    /// slack), over two hosts of which one is down from the start.
    #[tokio::test]
    async fn a_fixed_rate_over_hosts_one_down() {
        bounded(async {
            let (_service, port) = echo_service().await;
            let dead = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr")
            };
            let live = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let how = FailoverPlan {
                srv: false,
                endpoints: vec![dead, live],
                rate: Some(400.0),
                idempotent: false,
                call_timeout: Some(Duration::from_secs(1)),
            };
            let summary = run(&plan(port, how), &ClientConfig::plain())
                .await
                .expect("run");
            let f = summary.failover.clone().expect("counts");
            assert_eq!((f.interrupted, f.failed), (0, 0), "{f:?}");
            let done = f.ok + f.retried;
            // 400 calls/s for 0.5 s: 200.
            assert!((150..=230).contains(&done), "{done} calls");
            let by_addr = |a| f.hosts.iter().find(|h| h.addr == a).expect("host");
            assert_eq!(by_addr(live).links, 3);
            assert_eq!(by_addr(dead).links, 0);
            assert!(by_addr(dead).failed >= 1);
            let json: serde_json::Value = serde_json::from_str(&summary.to_json()).expect("json");
            assert_eq!(json["mode"], "failover");
            assert_eq!(json["failover"]["failed"], 0);
        })
        .await;
    }

    /// No host answers: the run fails as a connection error, not a hang.
    #[tokio::test]
    async fn no_host_is_a_connection_error() {
        bounded(async {
            let dead = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr")
            };
            let how = FailoverPlan {
                srv: false,
                endpoints: vec![dead],
                rate: None,
                idempotent: true,
                call_timeout: None,
            };
            let mut p = plan(dead.port(), how);
            p.timeout = Duration::from_millis(300);
            let err = run(&p, &ClientConfig::plain()).await.expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        })
        .await;
    }
}
