//! Running the load: connecting the links, keeping calls in flight on
//! each, recording latencies and counting calls, for both vop:// and the
//! raw baseline targets.
//!
//! Every link runs on its own task with its own [`Recorder`] (an HDR
//! histogram and counters), so recording takes no lock; the recorders are
//! merged at the end. Shared atomic [`Counters`] feed the progress line.
//!
//! A call counts in the measured window if it *completes* inside it; a
//! failure counts if it happens after the window has begun. No new call
//! starts after the window ends; the calls still in flight then are waited
//! for and not counted. Waiting is bounded by one [`Watchdog`] per link
//! rather than a timer per call (which would add a timer-wheel insertion
//! and removal to every call of the load generator): a link on which
//! nothing finishes for the timeout is given up and its calls in flight
//! count as errors.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use vole_link::resolve::{self, ClientConfig};
use vole_link::seqmap::SeqMap;
use vole_link::{Entity, Error as LinkError, Link, ObjectRef, RemoteObject, Value};

use super::cpu::{self, Process};
use super::nodes::{self, Basis, Fairness};
use super::raw::{self, RawStream};
use super::report::{CpuUse, Summary};
use super::{Plan, Target};
use vole::cli::exit::Failure;

/// Latencies above this (nanoseconds) are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Links connected at the same time while setting up.
const CONNECT_CONCURRENCY: usize = 16;

/// Totals over every link, for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls that succeeded, warm-up included.
    pub calls: AtomicU64,
    /// Calls that failed, warm-up included.
    pub errors: AtomicU64,
}

/// The measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When measuring begins (the warm-up ends).
    pub start: Instant,
    /// When measuring ends; no call starts after this.
    pub end: Instant,
}

impl Window {
    /// Whether something that completed at `done` counts.
    pub fn contains(&self, done: Instant) -> bool {
        done >= self.start && done <= self.end
    }
}

/// What one link measured.
#[derive(Debug)]
pub struct Recorder {
    /// Latencies of the calls counted, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Successful calls completed inside the window.
    pub calls: u64,
    /// Failed calls since the window began.
    pub errors: u64,
    window: Window,
    counters: Arc<Counters>,
}

impl Recorder {
    /// An empty recorder for `window`.
    pub fn new(window: Window, counters: Arc<Counters>) -> Recorder {
        Recorder {
            hist: new_histogram(),
            calls: 0,
            errors: 0,
            window,
            counters,
        }
    }

    /// Records a call sent at `sent` and finished at `done`.
    pub fn record(&mut self, sent: Instant, done: Instant, ok: bool) {
        if ok {
            self.counters.calls.fetch_add(1, Ordering::Relaxed);
            if self.window.contains(done) {
                self.calls += 1;
                let ns = u64::try_from(done.duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
                self.hist.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
            }
        } else {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if done >= self.window.start {
                self.errors += 1;
            }
        }
    }
}

/// An empty latency histogram (nanoseconds).
pub fn new_histogram() -> Histogram<u64> {
    // Bounds and precision are constants that `new_with_bounds` accepts
    // (low >= 1, high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

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

async fn connect_one(plan: &Plan, config: &ClientConfig) -> anyhow::Result<Conn> {
    match &plan.target {
        Target::Vop(uri) => {
            // Resolving ends with a call the transport timeouts do not
            // bound; bound the whole of it.
            let resolved = tokio::time::timeout(plan.timeout * 3, resolve::resolve(uri, config))
                .await
                .map_err(|_| anyhow::anyhow!("resolving {uri} timed out"))?
                .with_context(|| format!("cannot resolve {uri}"))?;
            match resolved.value {
                Entity::Ref(ObjectRef::Remote(target)) => Ok(Conn::Vop {
                    link: resolved.link,
                    target,
                    _gateway: resolved.gateway,
                }),
                other => {
                    resolved.link.abort();
                    anyhow::bail!(
                        "{uri} resolves to a {} (a query result), not an object",
                        other.kind()
                    )
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
                        .ok_or_else(|| anyhow::anyhow!("raw-tls target with --plain"))?,
                )
            } else {
                None
            };
            Ok(Conn::Raw(
                raw::connect(host, *port, tls_config, plan.timeout).await?,
            ))
        }
    }
}

/// When a link (or connection) last made progress, shared by everything
/// working on it.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last_ns: AtomicU64,
}

impl Progress {
    /// Progress as of now.
    pub fn new() -> Progress {
        Progress {
            origin: Instant::now(),
            last_ns: AtomicU64::new(0),
        }
    }

    /// Notes progress at `now`.
    pub fn note(&self, now: Instant) {
        let ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        self.last_ns.store(ns, Ordering::Relaxed);
    }

    /// The last progress noted.
    pub fn last(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Bounds waiting without a timer per call: one timer per link that is
/// re-armed only when it fires, from the time of the last progress.
pub struct Watchdog {
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Watchdog {
    /// A watchdog that fires `limit` after the last progress.
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }

    /// Resolves once `limit` has passed without `progress`.
    pub async fn expired(&mut self, progress: &Progress) {
        loop {
            self.sleep.as_mut().await;
            let due = progress.last() + self.limit;
            if Instant::now() >= due {
                return;
            }
            self.sleep.as_mut().reset(due);
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
        if (link.is_closed() || matches!(e, LinkError::Closed(_))) && !*lost {
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

/// Prints a progress line to stderr every second until aborted; `unit`
/// names what `counters.calls` counts ("calls", "sessions").
pub async fn progress(counters: Arc<Counters>, begun: Instant, window: Window, unit: &str) {
    let mut tick = tokio::time::interval_at(begun + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_calls, mut last_errors, mut last_at) = (0u64, 0u64, begun);
    loop {
        let now = tick.tick().await;
        let calls = counters.calls.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let phase = if now <= window.start {
            "warm-up"
        } else {
            "measure"
        };
        eprintln!(
            "bench: {:>5.1}s {phase}  {:>10.0} {unit}/s  {:>6} errors/s  ({calls} {unit}, {errors} errors in total)",
            now.duration_since(begun).as_secs_f64(),
            (calls - last_calls) as f64 / secs,
            ((errors - last_errors) as f64 / secs).round(),
        );
        (last_calls, last_errors, last_at) = (calls, errors, now);
    }
}

/// What is read at the edges of the measured window.
#[derive(Debug, Default)]
pub struct Sampled {
    /// CPU use over the window.
    pub cpu: CpuUse,
    /// Per-node counts over the window, if an admin socket was given and
    /// answered.
    pub fairness: Option<Fairness>,
}

/// CPU time of this process and the server, and (given the service's admin
/// socket) each node's counters, over the window, or over the part of it
/// before `early` fires (every link ended early). Fairness is judged on
/// `basis`.
pub async fn sample_window(
    window: Window,
    plan: &Plan,
    basis: Basis,
    early: oneshot::Receiver<()>,
) -> Sampled {
    let server = plan.server;
    let own = || cpu::cpu_time(Process::This);
    let theirs = || server.and_then(cpu::Server::read);
    let status = || async {
        let socket = plan.admin_socket.as_deref()?;
        match nodes::fetch(socket).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = %socket.display(), error = %e, "no node counts from the admin socket");
                None
            }
        }
    };
    tokio::pin!(early);
    tokio::select! {
        _ = tokio::time::sleep_until(window.start) => {}
        _ = &mut early => return Sampled::default(),
    }
    // Listing a process tree may scan /proc: do it outside the client's
    // window (before it starts and after it ends). The status requests are
    // inside it, a few hundred microseconds in a window of seconds.
    let server0 = theirs();
    let client0 = own();
    let t0 = Instant::now();
    let nodes0 = status().await;
    tokio::select! {
        _ = tokio::time::sleep_until(window.end) => {}
        _ = &mut early => {}
    }
    let client1 = own();
    let wall = t0.elapsed();
    let server1 = theirs();
    let nodes1 = status().await;
    let diff = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let (server_used, server_root, server_procs) = match (&server0, &server1) {
        (Some(a), Some(b)) => (
            Some(cpu::used(a, b)),
            cpu::used_by_root(a, b),
            Some(b.processes()),
        ),
        _ => (None, None, None),
    };
    let fairness = match (nodes0, nodes1) {
        (Some(a), Some(b)) => Some(Fairness::new(nodes::deltas(&a, &b), basis)),
        _ => None,
    };
    Sampled {
        cpu: CpuUse {
            wall,
            client: diff(client0, client1),
            server: server_used,
            server_root,
            server_procs,
        },
        fairness,
    }
}

/// Connects, runs the load and returns the summary.
pub async fn run(plan: &Plan, config: &ClientConfig) -> Result<Summary, Failure> {
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
                return Err(Failure::from(e));
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

/// What runs beside the workers of a run: the progress line and the
/// sampler of CPU and per-node counts over the window.
pub struct Watch {
    progress: tokio::task::JoinHandle<()>,
    early: oneshot::Sender<()>,
    sampler: tokio::task::JoinHandle<Sampled>,
}

impl Watch {
    /// Starts both; `unit` names what the progress line counts.
    pub fn start(
        counters: &Arc<Counters>,
        begun: Instant,
        window: Window,
        plan: &Arc<Plan>,
        basis: Basis,
        unit: &'static str,
    ) -> Watch {
        let progress = tokio::spawn(progress(counters.clone(), begun, window, unit));
        let (early, early_rx) = oneshot::channel();
        let plan = plan.clone();
        let sampler =
            tokio::spawn(async move { sample_window(window, &plan, basis, early_rx).await });
        Watch {
            progress,
            early,
            sampler,
        }
    }

    /// Stops the progress line and takes the samples (early, if the
    /// workers ended before the window did).
    pub async fn finish(self) -> Sampled {
        self.progress.abort();
        let _ = self.early.send(());
        self.sampler.await.unwrap_or_default()
    }
}

/// Awaits worker tasks until `give_up`, handing each result to `take`.
/// Returns how many failed or had not finished (those are aborted).
pub async fn join_until<T: 'static>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
    give_up: Instant,
    what: &str,
    mut take: impl FnMut(T),
) -> usize {
    let mut stuck = 0;
    for mut task in tasks {
        match tokio::time::timeout_at(give_up, &mut task).await {
            Ok(Ok(result)) => take(result),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "{what} failed");
                stuck += 1;
            }
            Err(_) => {
                task.abort();
                stuck += 1;
            }
        }
    }
    stuck
}

/// Closes vole links gracefully, giving up after a second.
pub async fn close_all(links: impl Iterator<Item = Link>) {
    let closing: FuturesUnordered<_> = links.map(|l| async move { l.close().await }).collect();
    let _ = tokio::time::timeout(Duration::from_secs(1), closing.collect::<Vec<_>>()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start_in_ms: u64, len_ms: u64) -> (Instant, Window) {
        let now = Instant::now();
        let start = now + Duration::from_millis(start_in_ms);
        (
            now,
            Window {
                start,
                end: start + Duration::from_millis(len_ms),
            },
        )
    }

    #[test]
    fn records_only_inside_the_window() {
        let counters = Arc::new(Counters::default());
        let (now, w) = window(100, 100);
        let ms = Duration::from_millis;
        let mut rec = Recorder::new(w, counters.clone());
        rec.record(now, now + ms(50), true); // warm-up
        rec.record(now, now + ms(50), false); // warm-up error
        rec.record(now + ms(90), now + ms(120), true); // counted
        rec.record(now + ms(150), now + ms(250), true); // after the end
        rec.record(now + ms(150), now + ms(250), false); // error after start
        assert_eq!((rec.calls, rec.errors), (1, 1));
        assert_eq!(rec.hist.len(), 1);
        let v = rec.hist.value_at_quantile(0.5);
        assert!(rec.hist.equivalent(v, 30_000_000), "{v}");
        assert_eq!(counters.calls.load(Ordering::Relaxed), 3);
        assert_eq!(counters.errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn huge_latencies_are_clamped() {
        let counters = Arc::new(Counters::default());
        let (now, w) = window(0, 200_000);
        let mut rec = Recorder::new(w, counters);
        rec.record(now, now + Duration::from_secs(100), true);
        rec.record(now, now, true);
        assert_eq!(rec.hist.len(), 2);
        assert!(rec.hist.max() >= MAX_LATENCY_NS);
        assert_eq!(rec.hist.min(), 1);
    }

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
            mode: crate::bench::Mode::Held,
            resume: true,
            cache_per_worker: false,
            label: None,
        }
    }

    async fn vole_service() -> (vole::node::Service, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let service = vole::serve_plain(Arc::new(|_| vole::demo::gateway()));
        let s = service.clone();
        tokio::spawn(async move { s.run(listener).await });
        (service, port)
    }

    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("in time")
    }

    #[tokio::test]
    async fn loads_a_vole_service() {
        bounded(async {
            let (_service, port) = vole_service().await;
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
            let (_service, port) = vole_service().await;
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
            let (service, port) = vole_service().await;
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
    async fn watchdog_fires_after_the_last_progress() {
        bounded(async {
            let limit = Duration::from_millis(40);
            let start = Instant::now();
            let progress = Progress::new();
            let mut w = Watchdog::new(limit);
            tokio::time::sleep(Duration::from_millis(25)).await;
            progress.note(Instant::now());
            w.expired(&progress).await;
            assert!(
                start.elapsed() >= Duration::from_millis(65),
                "{:?}",
                start.elapsed()
            );
        })
        .await;
    }

    #[tokio::test]
    async fn unanswered_calls_time_out_as_errors() {
        bounded(async {
            async fn never((_x,): (Value,)) -> Result<Value, vole::link::CallError> {
                std::future::pending().await
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let service = vole::serve_plain(Arc::new(|_| {
                vole::link::publish::Published::new("Stuck")
                    .method("echo", "", never)
                    .into_object()
            }));
            let s = service.clone();
            tokio::spawn(async move { s.run(listener).await });
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
                assert_eq!(err.code, vole::cli::exit::CONNECTION, "{target}");
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
            let (_service, port) = vole_service().await;
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
