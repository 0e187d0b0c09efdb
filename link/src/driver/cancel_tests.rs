//! Deadlines and cancellation, over in-memory pipes: a caller that gives
//! up tells the server, whose handler is dropped; `max-call-time`; a
//! closed link cancels everything; pipelines' deadlines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;
use crate::info::CallContext;
use crate::model::{CallError, Value};
use crate::publish::Published;

/// What the server's handlers report: how many run now, and a signal at
/// each start and each drop.
#[derive(Default)]
struct Probe {
    running: AtomicUsize,
    started: AtomicUsize,
    changed: Notify,
    /// Spawned work that saw its call's token fire.
    saw_cancel: AtomicUsize,
}

impl Probe {
    /// Waits (bounded) until `pred` holds.
    async fn until(&self, what: &str, pred: impl Fn(&Probe) -> bool) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if pred(self) {
                    return;
                }
                changed.await;
            }
        };
        timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

/// Counts a handler as running until it is dropped.
struct Guard(Arc<Probe>);

impl Guard {
    fn new(probe: &Arc<Probe>) -> Self {
        probe.running.fetch_add(1, Ordering::SeqCst);
        probe.started.fetch_add(1, Ordering::SeqCst);
        probe.changed.notify_waiters();
        Guard(probe.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A gateway with `echo`, and `sleep(ms)` that reports to `probe` and
/// hands a watcher of its cancellation token to a spawned task.
fn gateway(probe: &Arc<Probe>) -> Arc<dyn Object> {
    let p = probe.clone();
    Published::new("Server")
        .method(
            "echo",
            "",
            |(v,): (Value,)| async move { Ok::<_, CallError>(v) },
        )
        .method_raw("sleep", "", move |_, cx: CallContext, args: Vec<Value>| {
            let probe = p.clone();
            Box::pin(async move {
                let ms = match args.as_slice() {
                    [Value::Int(ms)] => *ms as u64,
                    _ => return Err(CallError::failed("sleep(ms)")),
                };
                let _guard = Guard::new(&probe);
                let watcher = probe.clone();
                let token = cx.cancellation_token();
                tokio::spawn(async move {
                    token.cancelled().await;
                    watcher.saw_cancel.fetch_add(1, Ordering::SeqCst);
                    watcher.changed.notify_waiters();
                });
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Value::str("slept"))
            })
        })
        .into_object()
}

/// A client and a server link over an in-memory pipe.
async fn pair(
    server_config: LinkConfig,
    probe: &Arc<Probe>,
) -> (Link, RemoteObject, Link, JoinHandle<Closed>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: false,
            ..server_config
        },
        gateway: gateway(probe),
        info: LinkInfo::default(),
    };
    let server = tokio::spawn(serve(b, setup, move |link| {
        let _ = tx.send(link);
    }));
    let client = LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let (link, gw) = timeout(Duration::from_secs(10), connect(a, client))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let server_link = rx.await.expect("server link");
    (link, gw, server_link, server)
}

async fn echo_works(gw: &RemoteObject) {
    let v = timeout(Duration::from_secs(10), gw.call("echo", (5,)))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(v, Value::Int(5));
}

/// Unit-level acceptance: a 200 ms deadline on a 5 s method returns at
/// 200 ms with `DeadlineExceeded`, and the server's handler is dropped
/// (its in-flight count is 0 right after), its token fires, and the link
/// goes on.
#[tokio::test(start_paused = true)]
async fn a_deadline_cancels_the_call_on_the_server() {
    let probe = Arc::new(Probe::default());
    let (_link, gw, server_link, _server) = pair(LinkConfig::default(), &probe).await;
    let began = tokio::time::Instant::now();
    let r = gw
        .with_timeout(Duration::from_millis(200))
        .call("sleep", (5000,))
        .await;
    let took = began.elapsed();
    match r {
        Err(Error::DeadlineExceeded { method, timeout }) => {
            assert_eq!(method, "sleep");
            assert_eq!(timeout, Duration::from_millis(200));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(300),
        "returned after {took:?}"
    );
    let e = Error::DeadlineExceeded {
        method: "sleep".into(),
        timeout: Duration::from_millis(200),
    };
    assert_eq!(
        e.to_string(),
        "call of sleep exceeded its deadline of 200ms"
    );
    probe
        .until("the handler to be dropped", |p| p.running() == 0)
        .await;
    probe
        .until("the token to fire", |p| {
            p.saw_cancel.load(Ordering::SeqCst) == 1
        })
        .await;
    assert!(
        began.elapsed() < Duration::from_millis(300),
        "cancelled on the server by {:?}",
        began.elapsed()
    );
    assert_eq!(server_link.stats().inflight(), 0);
    assert_eq!(server_link.stats().cancelled_in.load(Ordering::Relaxed), 1);
    echo_works(&gw).await;
}

/// Dropping a call's future before its answer sends the cancel message:
/// the server's handler is dropped; the answer never arrives to confuse
/// anything; later calls work.
#[tokio::test(start_paused = true)]
async fn dropping_a_pending_call_cancels_it_on_the_server() {
    let probe = Arc::new(Probe::default());
    let (link, gw, server_link, _server) = pair(LinkConfig::default(), &probe).await;
    let caller = gw.clone();
    let call = tokio::spawn(async move { caller.call("sleep", (60_000,)).await });
    probe
        .until("the handler to start", |p| p.running() == 1)
        .await;
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    probe
        .until("the handler to be dropped", |p| p.running() == 0)
        .await;
    assert_eq!(server_link.stats().inflight(), 0);
    echo_works(&gw).await;
    assert!(!link.is_closed());
}

/// A call given up while still queued (the link busy, or not yet taken
/// by the driver) is never sent.
#[tokio::test(start_paused = true)]
async fn a_call_given_up_before_it_is_sent_is_not_sent() {
    let probe = Arc::new(Probe::default());
    let (_link, gw, server_link, _server) = pair(LinkConfig::default(), &probe).await;
    // Polled once (queued), then dropped before the driver runs.
    {
        let call = gw.call("sleep", (60_000,));
        futures_util::pin_mut!(call);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(call.as_mut().poll(&mut cx).is_pending());
    }
    echo_works(&gw).await;
    assert_eq!(probe.started.load(Ordering::SeqCst), 0, "never sent");
    assert_eq!(server_link.stats().calls_in.load(Ordering::Relaxed), 1);
}

/// `max_call_time` bounds a handler: the caller gets `Cancelled`, the
/// handler is dropped, the link goes on.
#[tokio::test(start_paused = true)]
async fn max_call_time_cancels_a_long_handler() {
    let probe = Arc::new(Probe::default());
    let metrics = Arc::new(crate::metrics::CallMetrics::default());
    let config = LinkConfig {
        max_call_time: Some(Duration::from_millis(100)),
        metrics: Some(metrics.clone()),
        ..LinkConfig::default()
    };
    let (_link, gw, server_link, _server) = pair(config, &probe).await;
    let began = tokio::time::Instant::now();
    let r = timeout(Duration::from_secs(10), gw.call("sleep", (5000,)))
        .await
        .expect("an answer in time");
    let took = began.elapsed();
    match &r {
        Err(e @ Error::Cancelled(reason)) => {
            assert!(reason.contains("max-call-time"), "{reason}");
            assert!(e.is_remote());
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(200),
        "answered after {took:?}"
    );
    assert_eq!(probe.running(), 0, "the handler was dropped");
    assert_eq!(server_link.stats().inflight(), 0);
    // Its latency is recorded: it ran 100 ms (the 0.1 s bucket's upper
    // bound is inclusive: 100 ms lands in it).
    let counts = metrics.counts();
    let slot = crate::metrics::BUCKETS
        .iter()
        .position(|b| *b >= 0.1)
        .expect("a 100 ms bucket");
    assert_eq!(counts.iter().sum::<u64>(), 1, "{counts:?}");
    assert_eq!(counts[slot], 1, "{counts:?}");
    assert_eq!(metrics.cancelled(), 1, "counted as cancelled");
    // A short call under the limit is untouched.
    let v = gw.call("sleep", (20,)).await.expect("a short sleep");
    assert_eq!(v, Value::str("slept"));
    echo_works(&gw).await;
}

/// A pipeline's deadline: calls past it come back as `DeadlineExceeded`
/// (and are cancelled on the server), the others with their answers.
#[tokio::test(start_paused = true)]
async fn pipeline_calls_past_their_deadline_are_cancelled() {
    let probe = Arc::new(Probe::default());
    let (_link, gw, _server_link, _server) = pair(LinkConfig::default(), &probe).await;
    let mut pipe = gw.pipeline();
    pipe.set_timeout(Some(Duration::from_millis(200)));
    let slow = pipe.call("sleep", (5000,)).await.expect("queued");
    let quick = pipe.call("echo", (1,)).await.expect("queued");
    let own = pipe
        .call_with(
            "sleep",
            (50,),
            crate::CallOptions::default().timeout(Duration::from_secs(10)),
        )
        .await
        .expect("queued");
    let mut outcomes = std::collections::HashMap::new();
    while let Some((ticket, outcome)) = timeout(Duration::from_secs(10), pipe.next())
        .await
        .expect("outcomes in time")
    {
        outcomes.insert(ticket, outcome);
    }
    assert_eq!(outcomes.len(), 3, "one outcome per call");
    assert!(
        matches!(&outcomes[&slow], Err(Error::DeadlineExceeded { method, .. }) if method == "sleep"),
        "{:?}",
        outcomes[&slow]
    );
    assert_eq!(outcomes[&quick].as_ref().expect("echo"), &Value::Int(1));
    assert_eq!(
        outcomes[&own].as_ref().expect("own timeout"),
        &Value::str("slept")
    );
    probe
        .until("the slow handler to be dropped", |p| p.running() == 0)
        .await;
    echo_works(&gw).await;
}

/// A client that goes away with 1,000 calls running on the server: every
/// handler is dropped at once. Real time: measured, not simulated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_link_cancels_a_thousand_running_calls_at_once() {
    const CALLS: usize = 1000;
    let probe = Arc::new(Probe::default());
    let (link, gw, server_link, server) = pair(LinkConfig::default(), &probe).await;
    let mut pipe = gw.pipeline();
    for _ in 0..CALLS {
        pipe.call("sleep", (600_000,)).await.expect("queued");
    }
    probe
        .until("every call to run", |p| p.running() == CALLS)
        .await;
    let began = std::time::Instant::now();
    link.abort();
    probe
        .until("every handler to be dropped", |p| p.running() == 0)
        .await;
    let took = began.elapsed();
    println!("{CALLS} running calls cancelled {took:?} after the client went");
    // 100 ms is the requirement; measured at a few ms here. The margin is
    // for a loaded 2-core CI machine, and still fails if the calls run on
    // (they sleep for ten minutes).
    assert!(took < Duration::from_millis(500), "took {took:?}");
    probe
        .until("every token to fire", |p| {
            p.saw_cancel.load(Ordering::SeqCst) == CALLS
        })
        .await;
    // The counters are updated as the driver's poll ends: once it is done.
    let closed = timeout(Duration::from_secs(10), server)
        .await
        .expect("the server link closes")
        .expect("server task");
    assert!(closed.clean, "{}", closed.reason);
    assert_eq!(server_link.stats().inflight(), 0);
    assert_eq!(
        server_link.stats().cancelled_in.load(Ordering::Relaxed),
        CALLS as u64
    );
}

/// Dropping a pipeline with calls running cancels them on the server;
/// its entry is freed and a new pipeline works.
#[tokio::test(start_paused = true)]
async fn dropping_a_pipeline_cancels_its_calls() {
    let probe = Arc::new(Probe::default());
    let (_link, gw, server_link, _server) = pair(LinkConfig::default(), &probe).await;
    let mut pipe = gw.pipeline();
    for _ in 0..3 {
        pipe.call("sleep", (60_000,)).await.expect("queued");
    }
    probe
        .until("three calls to run", |p| p.running() == 3)
        .await;
    let began = tokio::time::Instant::now();
    drop(pipe);
    probe
        .until("every handler to be dropped", |p| p.running() == 0)
        .await;
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(server_link.stats().inflight(), 0);
    let mut again = gw.pipeline();
    let ticket = again.call("echo", (4,)).await.expect("queued");
    let (t, v) = timeout(Duration::from_secs(10), again.next())
        .await
        .expect("in time")
        .expect("an outcome");
    assert_eq!((t, v.expect("echo")), (ticket, Value::Int(4)));
    echo_works(&gw).await;
}
