//! New sessions: `vole bench --sessions`.
//!
//! Each of `links` workers loops over whole sessions, one after another:
//! connect, VOP and TLS, the VOL handshake, resolving the target's path
//! (`urlget`), one call of `method` with the payload (an `echo` answer is
//! checked), and a graceful close that waits for the server's side to
//! close. A session counts if it completes inside the measured window; its
//! latency, from the connect to the end of the close, goes into the HDR
//! histogram. A failed session counts as one error, by the step that
//! failed, if it fails after the window began; nothing is retried.
//!
//! TLS resumption: every worker uses the one client configuration, so one
//! session cache, as a real client reconnecting again and again does; a
//! session counts as resumed when its TLS handshake was. `--no-resume`
//! turns the cache off, so every session is a full handshake. rustls keeps
//! at most 8 TLS 1.3 tickets per server in a cache, so with many more
//! workers than that some sessions find the shared cache empty; with
//! `--cache-per-worker` each worker has its own cache, as many separate
//! clients each reconnecting do.
//!
//! Against a `raw-tls://` or `raw-tcp://` target (a `vole bench-server`)
//! a session is the baseline's: connect (and the TLS handshake), one echo
//! of the payload (checked), and the same graceful close
//! ([`raw::session`]), so new vole sessions compare with new raw TLS
//! connections in one run.
//!
//! Each session is bounded, as a whole, by three times `--timeout` (the
//! connect, the handshakes and the calls are each bounded by it); past
//! that it counts as a timeout and its link is aborted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use vole_link::resolve::{self, ClientConfig};
use vole_link::uri::Vri;
use vole_link::{Entity, Error as LinkError, Value};

use crate::error::{Error, ErrorKind};
use crate::nodes::Basis;
use crate::plan::{Plan, Target};
use crate::raw::{self, SessionError};
use crate::record::{new_histogram, Counters, Recorder, Window};
use crate::report::{StageErrors, Summary};
use crate::watch::{join_until, Watch};

/// Pause after a failed connect, so a worker facing a dead server does not
/// spin.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Where sessions go.
#[derive(Debug, Clone)]
pub struct SessionTarget {
    /// Host to connect to (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path segments resolved on the gateway.
    pub path: Vec<String>,
    /// A baseline server instead (`raw-tls://`, `raw-tcp://`): whether it
    /// speaks TLS.
    pub raw: Option<bool>,
}

impl SessionTarget {
    /// The target of a plan: a vop:// URI naming an object (no query), or
    /// a baseline server.
    pub fn of(plan: &Plan) -> Result<SessionTarget, Error> {
        let uri = match &plan.target {
            Target::Vop(uri) => uri,
            Target::Raw { host, port, tls } => {
                return Ok(SessionTarget {
                    host: host.clone(),
                    port: *port,
                    path: Vec::new(),
                    raw: Some(*tls),
                })
            }
        };
        let vri: Vri = uri.parse().map_err(|e| Error::Usage {
            message: format!("bad target uri {uri:?}"),
            source: Some(Box::new(e)),
        })?;
        if vri.query.is_some() {
            return Err(Error::usage(format!("{uri} names a query, not an object")));
        }
        let host = vri.host.to_string();
        Ok(SessionTarget {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: vri.port,
            path: vri.path,
            raw: None,
        })
    }
}

/// The step at which a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect, VOP, TLS or the link handshake.
    Connect,
    /// Resolving the path.
    Resolve,
    /// The call failed or answered wrongly.
    Call,
    /// The session took longer than its bound.
    Timeout,
}

/// A failed session: the step, and the error if there was one.
#[derive(Debug)]
pub struct Failed {
    /// Where it failed.
    pub stage: Stage,
    /// Why, if the link said.
    pub error: Option<LinkError>,
    /// Why, for a baseline session.
    pub raw_error: Option<anyhow::Error>,
}

impl Failed {
    fn new(stage: Stage, error: Option<LinkError>) -> Failed {
        Failed {
            stage,
            error,
            raw_error: None,
        }
    }

    fn raw(e: SessionError) -> Failed {
        let (stage, error) = match e {
            SessionError::Connect(e) => (Stage::Connect, Some(e)),
            SessionError::Call(e) => (Stage::Call, Some(anyhow::Error::new(e))),
            SessionError::Timeout => (Stage::Timeout, None),
        };
        Failed {
            stage,
            error: None,
            raw_error: error,
        }
    }

    fn stage_name(&self) -> &'static str {
        match self.stage {
            Stage::Connect => "connect",
            Stage::Resolve => "resolve",
            Stage::Call => "call",
            Stage::Timeout => "timeout",
        }
    }

    fn describe(&self) -> String {
        let stage = self.stage_name();
        if let Some(e) = &self.raw_error {
            return format!("{stage}: {e:#}");
        }
        match &self.error {
            Some(e) => format!("{stage}: {}", vole_link::object::error_chain(e)),
            None if self.stage == Stage::Call => "call: wrong answer".to_owned(),
            None => stage.to_owned(),
        }
    }

    /// The error of a run whose first session with `target` failed so: by
    /// the link's error if there is one, else a wrong answer is the
    /// remote's and a timeout the connection's.
    fn into_error(self, target: &str) -> Error {
        let stage = self.stage_name();
        if let Some(e) = self.raw_error {
            return Error::setting_up(target, e.context(stage), ErrorKind::Connection);
        }
        let (error, otherwise) = match self.error {
            Some(e) => (anyhow::Error::new(e).context(stage), ErrorKind::Connection),
            None if self.stage == Stage::Call => {
                (anyhow::anyhow!("call: wrong answer"), ErrorKind::Remote)
            }
            None => (anyhow::anyhow!("{stage}"), ErrorKind::Connection),
        };
        Error::setting_up(target, error, otherwise)
    }
}

/// What one worker measured.
#[derive(Debug)]
pub struct SessionRecorder {
    /// Sessions (as calls), latencies and errors.
    pub rec: Recorder,
    /// Sessions counted whose TLS session was resumed.
    pub resumed: u64,
    /// Errors counted, by step.
    pub stages: StageErrors,
    window: Window,
}

impl SessionRecorder {
    /// An empty recorder for `window`.
    pub fn new(window: Window, counters: Arc<Counters>) -> SessionRecorder {
        SessionRecorder {
            rec: Recorder::new(window, counters),
            resumed: 0,
            stages: StageErrors::default(),
            window,
        }
    }

    /// Records a session begun at `start` and ended at `done`: `Ok(resumed)`
    /// or the step that failed.
    pub fn record(&mut self, start: Instant, done: Instant, outcome: Result<bool, Stage>) {
        self.rec.record(start, done, outcome.is_ok());
        match outcome {
            Ok(resumed) => {
                if resumed && self.window.contains(done) {
                    self.resumed += 1;
                }
            }
            // As the recorder counts errors: once the window has begun.
            Err(stage) if done >= self.window.start => {
                let s = &mut self.stages;
                match stage {
                    Stage::Connect => s.connect += 1,
                    Stage::Resolve => s.resolve += 1,
                    Stage::Call => s.call += 1,
                    Stage::Timeout => s.timeout += 1,
                }
            }
            Err(_) => {}
        }
    }
}

/// One whole session, bounded by `deadline`. Returns whether its TLS
/// session was resumed.
pub async fn session(
    target: &SessionTarget,
    config: &ClientConfig,
    method: &str,
    payload: &str,
    deadline: Instant,
) -> Result<bool, Failed> {
    if let Some(tls) = target.raw {
        let tls = match (tls, &config.transport.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => {
                return Err(Failed::raw(SessionError::Connect(anyhow::anyhow!(
                    "raw-tls target with --plain"
                ))))
            }
        };
        let limit = deadline.saturating_duration_since(Instant::now());
        return raw::session(&target.host, target.port, tls, payload.as_bytes(), limit)
            .await
            .map_err(Failed::raw);
    }
    // Resolving goes out with the link's hellos where the server agrees
    // (the direct handshake between vole peers).
    let connecting = resolve::connect_resolving(&target.host, target.port, &target.path, config);
    let (link, gateway, object) = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e @ LinkError::Resolve { .. })) => return Err(Failed::new(Stage::Resolve, Some(e))),
        Ok(Err(e)) => return Err(Failed::new(Stage::Connect, Some(e))),
        Err(_) => return Err(Failed::new(Stage::Timeout, None)),
    };
    let resumed = link.info().tls.as_ref().is_some_and(|t| t.resumed);
    let work = async {
        let answer = object
            .call(method, vec![Value::Str(payload.to_owned())])
            .await
            .map_err(|e| Failed::new(Stage::Call, Some(e)))?;
        let right = match answer {
            Entity::Str(s) if method == "echo" => s == payload,
            _ => method != "echo",
        };
        if !right {
            return Err(Failed::new(Stage::Call, None));
        }
        // Kept until the link is closed: releasing it first would only add a
        // message to every session.
        Ok(object)
    };
    let object = match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(object)) => object,
        Ok(Err(failed)) => {
            link.abort();
            return Err(failed);
        }
        Err(_) => {
            link.abort();
            return Err(Failed::new(Stage::Timeout, None));
        }
    };
    let closed = tokio::time::timeout_at(deadline, link.close()).await;
    drop((object, gateway));
    if closed.is_err() {
        link.abort();
        return Err(Failed::new(Stage::Timeout, None));
    }
    Ok(resumed)
}

/// The bound on one session.
fn session_limit(plan: &Plan) -> Duration {
    plan.timeout.saturating_mul(3)
}

/// One worker: sessions one after another until `stop_at`.
async fn worker(
    target: Arc<SessionTarget>,
    config: Arc<ClientConfig>,
    plan: Arc<Plan>,
    mut rec: SessionRecorder,
    stop_at: Instant,
    logged: Arc<AtomicBool>,
) -> SessionRecorder {
    let payload = "x".repeat(plan.payload);
    let limit = session_limit(&plan);
    let mut start = Instant::now();
    while start < stop_at {
        let outcome = session(&target, &config, &plan.method, &payload, start + limit).await;
        let mut done = Instant::now();
        let outcome = outcome.map_err(|failed| {
            if !logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %failed.describe(), "a session failed (only the first is logged)");
            }
            failed.stage
        });
        rec.record(start, done, outcome);
        if outcome == Err(Stage::Connect) {
            tokio::time::sleep(CONNECT_BACKOFF).await;
            done = Instant::now();
        }
        // The next session begins now: its clock reading is this one.
        start = done;
    }
    rec
}

/// Tickets a worker's own cache keeps (`--cache-per-worker`).
const WORKER_CACHE: usize = 4;

/// Which session cache a configuration gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// The one of the configuration given, shared.
    Shared,
    /// A new one, of its own.
    Own,
    /// None: every handshake is full.
    Off,
}

/// The client configuration for sessions: a copy of `config` with the
/// session cache `cache` says.
pub fn session_config(config: &ClientConfig, cache: Cache) -> ClientConfig {
    let mut config = config.clone();
    let resumption = match cache {
        Cache::Shared => return config,
        Cache::Own => rustls::client::Resumption::in_memory_sessions(WORKER_CACHE),
        Cache::Off => rustls::client::Resumption::disabled(),
    };
    if let Some(tls) = &config.transport.tls {
        let mut tls = (**tls).clone();
        tls.resumption = resumption;
        config.transport.tls = Some(Arc::new(tls));
    }
    config
}

/// Runs new sessions and returns the summary.
pub async fn run(plan: &Plan, config: &ClientConfig) -> Result<Summary, Error> {
    let target = Arc::new(SessionTarget::of(plan)?);
    let cache = match (plan.resume, plan.cache_per_worker) {
        (false, _) => Cache::Off,
        (true, false) => Cache::Shared,
        (true, true) => Cache::Own,
    };
    let config = Arc::new(session_config(config, cache));
    eprintln!(
        "bench: {} worker(s) of new sessions to {}{}",
        plan.links,
        plan.target_text,
        match cache {
            Cache::Shared => " (one shared TLS session cache)",
            Cache::Own => " (a TLS session cache per worker)",
            Cache::Off => " (no TLS resumption)",
        }
    );
    // One session first: a target that cannot be reached is an error of
    // the run, not a stream of failed sessions.
    let payload = "x".repeat(plan.payload);
    let probe_deadline = Instant::now() + session_limit(plan);
    if let Err(failed) = session(&target, &config, &plan.method, &payload, probe_deadline).await {
        return Err(failed.into_error(&plan.target_text));
    }

    let begun = Instant::now();
    let window = Window {
        start: begun + plan.warmup,
        end: begun + plan.warmup + plan.duration,
    };
    let counters = Arc::new(Counters::default());
    let shared_plan = Arc::new(plan.clone());
    let logged = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..plan.links)
        .map(|_| {
            let rec = SessionRecorder::new(window, counters.clone());
            let config = match cache {
                Cache::Own => Arc::new(session_config(&config, Cache::Own)),
                Cache::Shared | Cache::Off => config.clone(),
            };
            tokio::spawn(worker(
                target.clone(),
                config,
                shared_plan.clone(),
                rec,
                window.end,
                logged.clone(),
            ))
        })
        .collect();
    let watch = Watch::start(
        &counters,
        begun,
        window,
        &shared_plan,
        Basis::Accepted,
        "sessions",
    );

    // Every session is bounded, so every worker ends by then.
    let give_up = window.end + session_limit(plan) + Duration::from_secs(2);
    let mut hist = new_histogram();
    let (mut sessions, mut errors, mut resumed) = (0u64, 0u64, 0u64);
    let mut stages = StageErrors::default();
    let stuck = join_until(tasks, give_up, "session worker", |r| {
        // Same bounds: adding cannot fail (see load::run).
        let _ = hist.add(&r.rec.hist);
        sessions += r.rec.calls;
        errors += r.rec.errors;
        resumed += r.resumed;
        stages.connect += r.stages.connect;
        stages.resolve += r.stages.resolve;
        stages.call += r.stages.call;
        stages.timeout += r.stages.timeout;
    })
    .await;
    let sampled = watch.finish().await;
    let mut summary = Summary::new(plan, &hist, sessions, errors, stuck, sampled.cpu);
    summary.resumed = resumed;
    summary.stages = stages;
    summary.fairness = sampled.fairness;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;
    use crate::plan::Mode;
    use crate::testing::{bounded, echo_gateway, echo_service, serve, service_config};

    fn plan(target: &str, method: &str) -> Plan {
        Plan {
            target: Target::parse(target).expect("target"),
            target_text: target.to_owned(),
            method: method.to_owned(),
            links: 3,
            inflight: 1,
            payload: 10,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
            server: Some(cpu::Server::Tree(std::process::id())),
            admin_socket: None,
            mode: Mode::Sessions,
            resume: true,
            cache_per_worker: false,
            label: None,
            failover: None,
        }
    }

    #[test]
    fn records_sessions_inside_the_window() {
        let counters = Arc::new(Counters::default());
        let now = Instant::now();
        let ms = Duration::from_millis;
        let w = Window {
            start: now + ms(100),
            end: now + ms(200),
        };
        let mut rec = SessionRecorder::new(w, counters.clone());
        rec.record(now, now + ms(50), Ok(true)); // warm-up
        rec.record(now, now + ms(50), Err(Stage::Connect)); // warm-up error
        rec.record(now + ms(90), now + ms(120), Ok(true)); // counted, resumed
        rec.record(now + ms(120), now + ms(130), Ok(false)); // counted, full
        rec.record(now + ms(150), now + ms(250), Ok(true)); // after the end
        rec.record(now + ms(150), now + ms(160), Err(Stage::Call));
        rec.record(now + ms(150), now + ms(260), Err(Stage::Timeout));
        assert_eq!((rec.rec.calls, rec.rec.errors, rec.resumed), (2, 2, 1));
        assert_eq!(
            rec.stages,
            StageErrors {
                call: 1,
                timeout: 1,
                ..StageErrors::default()
            }
        );
        assert_eq!(counters.calls.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn session_targets() {
        let t = SessionTarget::of(&plan("vop://[::1]:9/text/echo/", "echo")).expect("target");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(t.path, vec!["text".to_owned(), "echo".to_owned()]);
        let t = SessionTarget::of(&plan("vop://127.0.0.1:9/", "echo")).expect("target");
        assert!(t.path.is_empty());
        assert!(SessionTarget::of(&plan("vop://127.0.0.1:9/text/echo/echo?hi", "echo")).is_err());
        let t = SessionTarget::of(&plan("raw-tls://127.0.0.1:9", "echo")).expect("target");
        assert_eq!(
            (t.host.as_str(), t.port, t.raw),
            ("127.0.0.1", 9, Some(true))
        );
        assert!(t.path.is_empty());
    }

    #[tokio::test]
    async fn counts_sessions() {
        bounded(async {
            let (service, port) = echo_service().await;
            let plan = plan(&format!("vop://127.0.0.1:{port}/text/echo/"), "echo");
            let before = service.snapshot().accepted;
            let summary = run(&plan, &ClientConfig::plain()).await.expect("run");
            assert!(summary.calls > 0, "{}", summary.to_text());
            assert_eq!((summary.errors, summary.links_lost), (0, 0));
            // PLAIN: nothing to resume.
            assert_eq!(summary.resumed, 0);
            assert!(summary.latency.p50 > 0.0);
            // The server saw at least every session counted, plus the probe.
            let accepted = service.snapshot().accepted - before;
            assert!(accepted > summary.calls, "{accepted} vs {}", summary.calls);
            let json: serde_json::Value = serde_json::from_str(&summary.to_json()).expect("json");
            assert_eq!(json["mode"], "sessions");
            assert_eq!(json["sessions"], summary.calls);
            assert_eq!(json["resumed_fraction"], 0.0);
            assert!(json["server_us_per_session"].as_f64().is_some());
            assert!(json["server_procs"].as_u64().is_some_and(|n| n >= 1));
            assert!(json["server_root_us_per_call"].as_f64().is_some());
            // The sessions have all ended.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(service.snapshot().sessions, 0);
        })
        .await;
    }

    #[tokio::test]
    async fn a_failing_first_session_is_fatal() {
        bounded(async {
            let (_service, port) = echo_service().await;
            let p = plan(
                &format!("vop://127.0.0.1:{port}/text/echo/"),
                "no_such_method",
            );
            let err = run(&p, &ClientConfig::plain())
                .await
                .expect_err("call fails");
            assert_eq!(err.kind(), ErrorKind::Remote);
            let p = plan(&format!("vop://127.0.0.1:{port}/no/such/"), "echo");
            let err = run(&p, &ClientConfig::plain())
                .await
                .expect_err("resolve fails");
            assert!(matches!(
                err.kind(),
                ErrorKind::Remote | ErrorKind::Connection
            ));
        })
        .await;
    }

    /// A one-process TLS service with session tickets, and a client
    /// configuration pinning its certificate.
    async fn tls_service(dir: &std::path::Path) -> (vole_node::Service, u16, ClientConfig) {
        use vole_transport::tickets::{ticket_context, with_ticketer, SharedTicketer, TicketKey};
        use vole_transport::tls::{self, ServerIdentity, ServerTrust};
        let server = tls::server_config(&ServerIdentity::Dev {
            state_dir: dir.to_owned(),
        })
        .expect("dev certificate");
        let ticketer = SharedTicketer::new(3600);
        ticketer.set_keys(&TicketKey::generate().expect("key"), &[]);
        let config = service_config(vole_transport::stream::ServerSettings {
            transports: vole_transport::vop::ServerPolicy::new(true, false),
            tls: Some(with_ticketer(
                &server.config,
                ticketer,
                ticket_context(None),
            )),
            vts: None,
            handshake_timeout: Duration::from_secs(10),
        });
        let (service, port) = serve(config, Arc::new(|_| echo_gateway())).await;
        let client =
            ClientConfig::tls(&ServerTrust::Pinned(server.fingerprint)).expect("client config");
        (service, port, client)
    }

    #[tokio::test]
    async fn tls_sessions_resume_unless_told_not_to() {
        let dir = std::env::temp_dir().join(format!("vole-bench-sessions-{}", std::process::id()));
        bounded(async {
            let (_service, port, client) = tls_service(&dir).await;
            let mut p = plan(&format!("vop://127.0.0.1:{port}/text/echo/"), "echo");
            let summary = run(&p, &client).await.expect("run");
            assert!(summary.calls > 0);
            assert_eq!(summary.errors, 0);
            // Tickets from the probe and the warm-up: every counted session
            // finds one in the shared cache.
            assert_eq!(summary.resumed, summary.calls, "{}", summary.to_text());
            p.cache_per_worker = true;
            let summary = run(&p, &client).await.expect("run");
            assert_eq!(summary.resumed, summary.calls, "{}", summary.to_text());
            let json: serde_json::Value = serde_json::from_str(&summary.to_json()).expect("json");
            assert_eq!(json["session_cache"], "per-worker");
            p.cache_per_worker = false;
            p.resume = false;
            let summary = run(&p, &client).await.expect("run");
            assert!(summary.calls > 0);
            assert_eq!(summary.resumed, 0, "{}", summary.to_text());
            let json: serde_json::Value = serde_json::from_str(&summary.to_json()).expect("json");
            assert_eq!(json["resume"], false);
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn raw_tls_sessions_are_the_baseline() {
        use vole_transport::tickets::{ticket_context, with_ticketer, SharedTicketer, TicketKey};
        use vole_transport::tls::{self, ServerIdentity, ServerTrust};
        let dir = std::env::temp_dir().join(format!("vole-bench-raw-sess-{}", std::process::id()));
        bounded(async {
            let server = tls::server_config(&ServerIdentity::Dev {
                state_dir: dir.clone(),
            })
            .expect("dev certificate");
            let ticketer = SharedTicketer::new(3600);
            ticketer.set_keys(&TicketKey::generate().expect("key"), &[]);
            let config = with_ticketer(&server.config, ticketer, ticket_context(None));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            tokio::spawn(raw::serve(listener, Some(config)));
            let client =
                ClientConfig::tls(&ServerTrust::Pinned(server.fingerprint)).expect("client");
            let mut p = plan(&format!("raw-tls://127.0.0.1:{port}"), "echo");
            let summary = run(&p, &client).await.expect("run");
            assert!(summary.calls > 0, "{}", summary.to_text());
            assert_eq!(summary.errors, 0);
            assert_eq!(summary.resumed, summary.calls, "{}", summary.to_text());
            p.resume = false;
            let summary = run(&p, &client).await.expect("run");
            assert!(summary.calls > 0);
            assert_eq!((summary.errors, summary.resumed), (0, 0));
            // TLS needs a TLS configuration.
            let err = run(&p, &ClientConfig::plain()).await.expect_err("plain");
            assert_eq!(err.kind(), ErrorKind::Connection);
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn errors_during_the_run_are_counted_not_fatal() {
        bounded(async {
            let (service, port) = echo_service().await;
            let mut p = plan(&format!("vop://127.0.0.1:{port}/text/echo/"), "echo");
            p.duration = Duration::from_millis(600);
            p.timeout = Duration::from_millis(300);
            // Once sessions flow, stop the server accepting: later sessions
            // fail to connect (refused) or hang (timeout).
            let stopper = async {
                while service.snapshot().accepted < 20 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                service.stop_accepting();
            };
            let config = ClientConfig::plain();
            let (summary, ()) = tokio::join!(run(&p, &config), stopper);
            let summary = summary.expect("run");
            assert!(summary.errors > 0, "{}", summary.to_text());
            let st = summary.stages;
            assert_eq!(
                summary.errors,
                st.connect + st.resolve + st.call + st.timeout,
                "{st:?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_target_is_fatal() {
        bounded(async {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            let err = run(
                &plan(&format!("vop://127.0.0.1:{port}/"), "echo"),
                &ClientConfig::plain(),
            )
            .await
            .expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::Connection);
        })
        .await;
    }
}
