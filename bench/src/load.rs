//! Running the load on held links: connecting them, keeping calls in
//! flight on each, recording latencies and counting calls, for both vop://
//! and the raw baseline targets.
//!
//! Every link runs on its own task with its own [`Recorder`], so recording
//! takes no lock; the recorders are merged at the end.
//!
//! A call counts in the measured window if it *completes* inside it; a
//! failure counts if it happens after the window has begun. No new call
//! starts after the window ends; the calls still in flight then are waited
//! for and not counted. Waiting is bounded by one [`Watchdog`] per link
//! rather than a timer per call (which would add a timer-wheel insertion
//! and removal to every call of the load generator): a link on which
//! nothing finishes for the timeout is given up and its calls in flight
//! count as errors.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use vole_link::resolve::{self, ClientConfig};
use vole_link::seqmap::SeqMap;
use vole_link::{Entity, Error as LinkError, Link, ObjectRef, RemoteObject, Value};

use crate::error::{Error, ErrorKind};
use crate::nodes::Basis;
use crate::plan::{Plan, Target};
use crate::raw::{self, RawStream};
use crate::record::{new_histogram, Counters, Progress, Recorder, Watchdog, Window};
use crate::report::Summary;
use crate::watch::{join_until, Watch};

/// Links connected at the same time while setting up.
const CONNECT_CONCURRENCY: usize = 16;

/// One connected link of either kind.
enum Conn {
    Vop {
        link: Link,
        target: RemoteObject,
        // Held so the gateway stays referenced for the link's life.
        _gateway: RemoteObject,
    },
    Raw(RawStream),
}

async fn connect_one(plan: &Plan, config: &ClientConfig) -> Result<Conn, Error> {
    match &plan.target {
        Target::Vop(uri) => {
            // Resolving ends with a call the transport timeouts do not
            // bound; bound the whole of it.
            let limit = plan.timeout * 3;
            let resolved = tokio::time::timeout(limit, resolve::resolve(uri, config))
                .await
                .map_err(|_| Error::Connect {
                    target: uri.clone(),
                    source: format!("resolving timed out after {limit:?}").into(),
                })?
                .map_err(|e| Error::setting_up(uri, e.into(), ErrorKind::Connection))?;
            match resolved.value {
                Entity::Ref(ObjectRef::Remote(target)) => Ok(Conn::Vop {
                    link: resolved.link,
                    target,
                    _gateway: resolved.gateway,
                }),
                other => {
                    resolved.link.abort();
                    Err(Error::usage(format!(
                        "{uri} resolves to a {} (a query result), not an object",
                        other.kind()
                    )))
                }
            }
        }
        Target::Raw { host, port, tls } => {
            let tls_config = if *tls {
                Some(
                    config
                        .transport
                        .tls
                        .clone()
                        .ok_or_else(|| Error::usage("raw-tls target with --plain"))?,
                )
            } else {
                None
            };
            let stream = raw::connect(host, *port, tls_config, plan.timeout)
                .await
                .map_err(|e| Error::setting_up(&plan.target_text, e, ErrorKind::Connection))?;
            Ok(Conn::Raw(stream))
        }
    }
}

/// Keeps `inflight` calls going on one link until `stop_at`. Returns
/// whether the link was lost (closed, or no call finished within the
/// timeout: then the calls in flight count as errors).
///
/// One call in flight is one call after another; more go through a
/// pipeline ([`drive_pipelined`]).
async fn drive_link(
    link: &Link,
    target: &RemoteObject,
    plan: &Plan,
    payload: &str,
    rec: &mut Recorder,
    stop_at: Instant,
) -> bool {
    if plan.inflight > 1 {
        return drive_pipelined(link, target, plan, payload, rec, stop_at).await;
    }
    let progress = Progress::new();
    let mut lost = false;
    let stuck = {
        let run = async {
            let mut sent = Instant::now();
            loop {
                let result = target.call(&plan.method, call_args(payload)).await;
                let now = Instant::now();
                progress.note(now);
                rec.record(sent, now, answered_right(&result, plan, payload));
                note_lost(link, &result, &mut lost);
                if now >= stop_at || lost {
                    return;
                }
                // The next call goes out now: its clock reading is this one.
                sent = now;
            }
        };
        let mut watchdog = Watchdog::new(plan.timeout);
        tokio::select! {
            biased;
            () = run => false,
            () = watchdog.expired(&progress) => true,
        }
    };
    if stuck {
        // The watchdog fires only while the one call is unanswered.
        tracing::warn!(
            link = link.id(),
            in_flight = 1,
            "no answer within the timeout"
        );
        let now = Instant::now();
        rec.record(now, now, false);
        return true;
    }
    lost
}

/// Whether a call's outcome is a success (for `echo`, the payload back).
fn answered_right(result: &Result<Value, LinkError>, plan: &Plan, payload: &str) -> bool {
    let check = plan.method == "echo";
    match result {
        Ok(Entity::Str(s)) if check => s == payload,
        Ok(_) => !check,
        Err(_) => false,
    }
}

/// Sets `lost` (logging it once) if a failed call says the link is gone.
fn note_lost(link: &Link, result: &Result<Value, LinkError>, lost: &mut bool) {
    if let Err(e) = result {
        if (link.is_closed() || matches!(e, LinkError::Closed(_) | LinkError::Interrupted(_)))
            && !*lost
        {
            tracing::warn!(link = link.id(), error = %e, "link lost");
            *lost = true;
        }
    }
}

/// The argument list of one call, with room for the method name the call
/// puts in front (so that costs no second allocation).
fn call_args(payload: &str) -> Vec<Value> {
    let mut args = Vec::with_capacity(2);
    args.push(Value::Str(payload.to_owned()));
    args
}

/// [`drive_link`] with several calls in flight: one [`vole_link::Pipeline`]
/// keeps `inflight` calls going and takes their outcomes as they arrive,
/// as the raw baseline's client keeps its frames going on one connection.
async fn drive_pipelined(
    link: &Link,
    target: &RemoteObject,
    plan: &Plan,
    payload: &str,
    rec: &mut Recorder,
    stop_at: Instant,
) -> bool {
    let mut pipe = target.pipeline();
    // When each call in flight was sent, by ticket.
    // When each call in flight was sent, by ticket (tickets count up).
    let mut sent: SeqMap<Instant> = SeqMap::default();
    let progress = Progress::new();
    let mut lost = false;
    let stuck = {
        let run = async {
            // Queues the next call, recording `now` as its sending time.
            async fn send(
                pipe: &mut vole_link::Pipeline,
                sent: &mut SeqMap<Instant>,
                method: &str,
                payload: &str,
                now: Instant,
            ) -> Result<(), LinkError> {
                let ticket = pipe.call(method, call_args(payload)).await?;
                sent.insert(ticket, now);
                Ok(())
            }
            let now = Instant::now();
            for _ in 0..plan.inflight {
                if let Err(e) = send(&mut pipe, &mut sent, &plan.method, payload, now).await {
                    tracing::warn!(link = link.id(), error = %e, "link lost");
                    lost = true;
                    break;
                }
            }
            while let Some(first) = pipe.next().await {
                // One clock reading for the outcomes that arrived together
                // (as the raw client reads the clock once per read).
                let now = Instant::now();
                progress.note(now);
                let mut answered = 0;
                let mut outcome = Some(first);
                while let Some((ticket, result)) = outcome {
                    let started = sent.remove(ticket).unwrap_or(now);
                    rec.record(started, now, answered_right(&result, plan, payload));
                    note_lost(link, &result, &mut lost);
                    answered += 1;
                    outcome = pipe.try_next();
                }
                if now >= stop_at || lost {
                    continue;
                }
                // The next calls go out now: their clock reading is this one.
                for _ in 0..answered {
                    if let Err(e) = send(&mut pipe, &mut sent, &plan.method, payload, now).await {
                        tracing::warn!(link = link.id(), error = %e, "link lost");
                        lost = true;
                        break;
                    }
                }
            }
        };
        let mut watchdog = Watchdog::new(plan.timeout);
        tokio::select! {
            biased;
            () = run => false,
            () = watchdog.expired(&progress) => true,
        }
    };
    if stuck {
        // Every call still outstanding had no answer in time.
        let in_flight = pipe.outstanding();
        tracing::warn!(link = link.id(), in_flight, "no answer within the timeout");
        let now = Instant::now();
        for _ in 0..in_flight {
            rec.record(now, now, false);
        }
        return true;
    }
    lost
}

/// The outcome of one link's task.
struct LinkOutcome {
    rec: Recorder,
    lost: bool,
}

/// A vop link kept until the run closes it, with the objects it holds: the
/// service may close a link on which the client holds no reference any
/// more, and the sessions open at the window's end are counted after the
/// link tasks have ended.
struct Held {
    link: Link,
    _objects: (RemoteObject, RemoteObject),
}

async fn run_link(
    conn: Conn,
    plan: Arc<Plan>,
    mut rec: Recorder,
    stop_at: Instant,
) -> (LinkOutcome, Option<Held>) {
    let payload = "x".repeat(plan.payload);
    match conn {
        Conn::Vop {
            link,
            target,
            _gateway,
        } => {
            let lost = drive_link(&link, &target, &plan, &payload, &mut rec, stop_at).await;
            let held = Held {
                link,
                _objects: (target, _gateway),
            };
            (LinkOutcome { rec, lost }, Some(held))
        }
        Conn::Raw(stream) => {
            let result = raw::drive_stream(
                stream,
                payload.as_bytes(),
                plan.inflight,
                &mut rec,
                stop_at,
                plan.timeout,
            )
            .await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "connection lost");
            }
            (
                LinkOutcome {
                    rec,
                    lost: result.is_err(),
                },
                None,
            )
        }
    }
}

/// Connects, runs the load and returns the summary.
pub async fn run(plan: &Plan, config: &ClientConfig) -> Result<Summary, Error> {
    eprintln!(
        "bench: connecting {} link(s) to {}",
        plan.links, plan.target_text
    );
    let connecting = futures_util::stream::iter(0..plan.links)
        .map(|_| connect_one(plan, config))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut conns = Vec::with_capacity(plan.links);
    for c in connecting {
        match c {
            Ok(conn) => conns.push(conn),
            Err(e) => {
                close_all(conns.into_iter().filter_map(|c| match c {
                    Conn::Vop { link, .. } => Some(link),
                    Conn::Raw(_) => None,
                }))
                .await;
                return Err(e);
            }
        }
    }

    let begun = Instant::now();
    let window = Window {
        start: begun + plan.warmup,
        end: begun + plan.warmup + plan.duration,
    };
    let counters = Arc::new(Counters::default());
    let shared_plan = Arc::new(plan.clone());
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let rec = Recorder::new(window, counters.clone());
            tokio::spawn(run_link(conn, shared_plan.clone(), rec, window.end))
        })
        .collect();
    let watch = Watch::start(
        &counters,
        begun,
        window,
        &shared_plan,
        Basis::Calls,
        "calls",
    );

    // Each call is bounded by the timeout, so every task ends by then.
    let give_up = window.end + plan.timeout + Duration::from_secs(2);
    let mut hist = new_histogram();
    let (mut calls, mut errors, mut lost) = (0u64, 0u64, 0usize);
    let mut links = Vec::new();
    let stuck = join_until(tasks, give_up, "link task", |(outcome, link)| {
        // Both histograms have the same bounds, so adding cannot fail; if
        // it did, the latencies would be short by one link.
        let _ = hist.add(&outcome.rec.hist);
        calls += outcome.rec.calls;
        errors += outcome.rec.errors;
        lost += usize::from(outcome.lost);
        links.extend(link);
    })
    .await;
    let sampled = watch.finish().await;
    close_all(links.iter().map(|h| h.link.clone())).await;
    drop(links);
    let mut summary = Summary::new(plan, &hist, calls, errors, lost + stuck, sampled.cpu);
    summary.fairness = sampled.fairness;
    Ok(summary)
}

/// Closes vole links gracefully, giving up after a second.
pub async fn close_all(links: impl Iterator<Item = Link>) {
    let closing: FuturesUnordered<_> = links.map(|l| async move { l.close().await }).collect();
    let _ = tokio::time::timeout(Duration::from_secs(1), closing.collect::<Vec<_>>()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;
    use crate::plan::Mode;
    use crate::testing::{bounded, echo_service, serve_plain};

    fn plan(target: &str, method: &str) -> Plan {
        Plan {
            target: Target::parse(target).expect("target"),
            target_text: target.to_owned(),
            method: method.to_owned(),
            links: 2,
            inflight: 3,
            payload: 10,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
            server: Some(cpu::Server::Pid(std::process::id())),
            admin_socket: None,
            mode: Mode::Held,
            resume: true,
            cache_per_worker: false,
            label: None,
            failover: None,
        }
    }

    #[tokio::test]
    async fn loads_a_vole_service() {
        bounded(async {
            let (_service, port) = echo_service().await;
            for inflight in [1, 3] {
                let mut plan = plan(&format!("vop://127.0.0.1:{port}/text/echo/"), "echo");
                plan.inflight = inflight;
                let summary = run(&plan, &ClientConfig::plain()).await.expect("run");
                assert!(summary.calls > 0);
                assert_eq!((summary.errors, summary.links_lost), (0, 0));
                assert!(summary.latency.p50 > 0.0);
            }
            let plan = plan(&format!("vop://127.0.0.1:{port}/text/echo/"), "echo");
            let summary = run(&plan, &ClientConfig::plain()).await.expect("run");
            assert!(summary.cpu.server.is_some() && summary.cpu.client.is_some());
        })
        .await;
    }

    #[tokio::test]
    async fn failed_calls_are_counted_not_fatal() {
        bounded(async {
            let (_service, port) = echo_service().await;
            let plan = plan(
                &format!("vop://127.0.0.1:{port}/text/echo/"),
                "no_such_method",
            );
            let summary = run(&plan, &ClientConfig::plain()).await.expect("run");
            assert_eq!(summary.calls, 0);
            assert!(summary.errors > 0);
            assert_eq!(summary.links_lost, 0);
        })
        .await;
    }

    #[tokio::test]
    async fn lost_links_are_counted() {
        bounded(async {
            let (service, port) = echo_service().await;
            let mut plan = plan(&format!("vop://127.0.0.1:{port}/text/echo/"), "echo");
            plan.duration = Duration::from_secs(20);
            let killer = async {
                // Once calls flow, close every link from the server side.
                while service.snapshot().calls < 10 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for link in service.links() {
                    link.abort();
                }
            };
            let config = ClientConfig::plain();
            let (summary, ()) = tokio::join!(run(&plan, &config), killer);
            let summary = summary.expect("run");
            assert_eq!(summary.links_lost, 2);
        })
        .await;
    }

    #[tokio::test]
    async fn unanswered_calls_time_out_as_errors() {
        bounded(async {
            async fn never((_x,): (Value,)) -> Result<Value, vole_link::CallError> {
                std::future::pending().await
            }
            let (_service, port) = serve_plain(Arc::new(|_| {
                vole_link::publish::Published::new("Stuck")
                    .method("echo", "", never)
                    .into_object()
            }))
            .await;
            // One call in flight runs the slot alone; more go through a set.
            for inflight in [1, 3] {
                let mut plan = plan(&format!("vop://127.0.0.1:{port}/"), "echo");
                plan.timeout = Duration::from_millis(200);
                plan.inflight = inflight;
                let summary = run(&plan, &ClientConfig::plain()).await.expect("run");
                assert_eq!(summary.calls, 0);
                assert_eq!(summary.errors, 2 * inflight as u64);
                assert_eq!(summary.links_lost, 2);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn loads_a_raw_server() {
        bounded(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            tokio::spawn(raw::serve(listener, None));
            let plan = plan(&format!("raw-tcp://127.0.0.1:{port}"), "echo");
            let summary = run(&plan, &ClientConfig::plain()).await.expect("run");
            assert!(summary.calls > 0);
            assert_eq!((summary.errors, summary.links_lost), (0, 0));
        })
        .await;
    }

    #[tokio::test]
    async fn connection_failure_is_fatal() {
        bounded(async {
            // Bind and drop to find a port nobody listens on.
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            for target in [
                format!("raw-tcp://127.0.0.1:{port}"),
                format!("vop://127.0.0.1:{port}/"),
            ] {
                let err = run(&plan(&target, "echo"), &ClientConfig::plain())
                    .await
                    .expect_err("refused");
                assert_eq!(err.kind(), ErrorKind::Connection, "{target}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn raw_tls_needs_tls() {
        let err = connect_one(
            &plan("raw-tls://127.0.0.1:1", "echo"),
            &ClientConfig::plain(),
        )
        .await
        .err()
        .expect("refused");
        assert!(err.to_string().contains("--plain"), "{err}");
    }

    #[tokio::test]
    async fn a_query_is_not_a_target() {
        bounded(async {
            let (_service, port) = echo_service().await;
            let target = format!("vop://127.0.0.1:{port}/text/echo/echo?hi");
            let err = connect_one(&plan(&target, "echo"), &ClientConfig::plain())
                .await
                .err()
                .expect("refused");
            assert!(err.to_string().contains("not an object"), "{err}");
        })
        .await;
    }
}
