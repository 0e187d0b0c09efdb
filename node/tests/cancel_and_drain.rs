//! A service over real TCP: a client that disconnects has its running calls
//! cancelled at once, and a draining link closes promptly once its calls are
//! done, however busily its client keeps calling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use vole_link::publish::Published;
use vole_link::{CallError, Error as LinkError, Link, LinkConfig, LinkInfo, RemoteObject, Value};
use vole_node::{Service, ServiceConfig, DRAIN_QUIET};
use vole_transport::stream::{Conn, Prefixed, ServerSettings};
use vole_transport::vop::{self, ServerPolicy, Transport};

const LIMIT: Duration = Duration::from_secs(10);

/// Counts the handlers of `slow` that started and that were dropped
/// (finished or cancelled).
#[derive(Default)]
struct Handlers {
    started: AtomicU64,
    dropped: AtomicU64,
}

struct DropGuard(Arc<Handlers>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

async fn start(handlers: Arc<Handlers>) -> (Service, std::net::SocketAddr) {
    let config = ServiceConfig {
        transport: ServerSettings {
            transports: ServerPolicy::new(false, true),
            tls: None,
            vts: None,
            handshake_timeout: LIMIT,
        },
        link: LinkConfig {
            hold_peer: false,
            drain_quiet: DRAIN_QUIET,
            ..LinkConfig::default()
        },
        node_id: None,
        admission: Default::default(),
        authorizer: None,
        proxy_from: None,
    };
    let service = Service::new(
        config,
        Arc::new(move |_| {
            let h = handlers.clone();
            Published::new("Gateway")
                .method(
                    "echo",
                    "",
                    |(v,): (Value,)| async move { Ok::<_, CallError>(v) },
                )
                .method("slow", "", move |(ms,): (i64,)| {
                    let h = h.clone();
                    async move {
                        h.started.fetch_add(1, Ordering::SeqCst);
                        let _guard = DropGuard(h);
                        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
                        Ok::<_, CallError>(Value::Int(ms))
                    }
                })
                .into_object()
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let running = service.clone();
    tokio::spawn(async move { running.run(listener).await });
    (service, addr)
}

async fn connect(addr: std::net::SocketAddr) -> (Link, RemoteObject) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let (_, leftover) = vop::negotiate_client(&mut tcp, &[Transport::Plain], LIMIT)
        .await
        .expect("VOP");
    let setup = vole_link::LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    timeout(
        LIMIT,
        vole_link::connect(Conn::Plain(Prefixed::new(leftover, tcp)), setup),
    )
    .await
    .expect("in time")
    .expect("link handshake")
}

/// Polls `cond` every millisecond until it holds; returns how long that
/// took, or `None` after `limit`.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cond() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cond().then(|| started.elapsed())
}

/// A client starts 1,000 calls of a method that would run for a minute,
/// then disconnects: every one is cancelled (its future dropped) and the
/// service's in-flight count is back to 0 within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_cancels_running_calls_at_once() {
    disconnect_with_calls(1_000).await;
}

/// The same with more calls than the link runs at once
/// (`LinkConfig::max_inflight`, 1,024): the link has stopped reading, and
/// still notices the disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_cancels_calls_on_a_saturated_link() {
    disconnect_with_calls(1_500).await;
}

async fn disconnect_with_calls(calls: u64) {
    let max_inflight = LinkConfig::default().max_inflight as u64;
    let handlers = Arc::new(Handlers::default());
    let (service, addr) = start(handlers.clone()).await;
    let (link, gw) = connect(addr).await;
    let mut pipe = gw.pipeline();
    for _ in 0..calls {
        pipe.call("slow", (60_000,)).await.expect("queued");
    }
    // The link runs up to max_inflight calls (it may start a few more from
    // what it read at once).
    let running = calls.min(max_inflight);
    wait_for(LIMIT, || {
        handlers.started.load(Ordering::SeqCst) >= running && service.snapshot().inflight >= running
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "calls running: {} started, {:?}",
            handlers.started.load(Ordering::SeqCst),
            service.snapshot()
        )
    });
    // Let whatever else the link will take in arrive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = handlers.started.load(Ordering::SeqCst);

    link.abort();
    let took = wait_for(LIMIT, || {
        service.snapshot().inflight == 0 && handlers.dropped.load(Ordering::SeqCst) == started
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "calls still running {LIMIT:?} after the disconnect: {} of {started} dropped, {:?}",
            handlers.dropped.load(Ordering::SeqCst),
            service.snapshot()
        )
    });
    println!("disconnect with {started} calls running: all cancelled {took:?} after it");
    assert!(
        took <= Duration::from_millis(100),
        "the calls were cancelled {took:?} after the disconnect (limit 100 ms)"
    );
    assert_eq!(
        handlers.started.load(Ordering::SeqCst),
        started,
        "no call started after the disconnect"
    );
    drop(pipe);
    assert_eq!(service.shutdown(LIMIT).await, 0, "nothing left to force");
}

/// What a client that calls `echo` in a loop on one link, ignoring
/// "closing" refusals, came to.
#[derive(Debug, Default)]
struct Hammered {
    answered: u64,
    refused: u64,
    /// Calls that failed otherwise (the link closed under them).
    failed: u64,
}

async fn hammer(gw: RemoteObject) -> Hammered {
    let mut h = Hammered::default();
    loop {
        match timeout(LIMIT, gw.call("echo", (1,))).await {
            Ok(Ok(_)) => h.answered += 1,
            Ok(Err(LinkError::Closing(_))) => h.refused += 1,
            Ok(Err(_)) => {
                h.failed += 1;
                if gw.link().is_closed() {
                    return h;
                }
            }
            Err(_) => panic!("a call took {LIMIT:?}"),
        }
    }
}

/// A client that keeps calling on a draining link (ignoring the refusals)
/// gets a bounded number of "closing" refusals, its running call finishes
/// and is answered, and its link closes within ~100 ms of that call's end,
/// not at the end of the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_link_closes_soon_after_its_calls_however_busy_its_client() {
    let handlers = Arc::new(Handlers::default());
    let (service, addr) = start(handlers.clone()).await;
    let (link, gw) = connect(addr).await;
    let slow_gw = gw.clone();
    let slow = tokio::spawn(async move {
        let r = slow_gw.call("slow", (300,)).await;
        (r, Instant::now())
    });
    wait_for(LIMIT, || handlers.started.load(Ordering::SeqCst) == 1)
        .await
        .expect("the slow call runs");
    let hammering = tokio::spawn(hammer(gw));
    tokio::time::sleep(Duration::from_millis(20)).await;

    let drain_began = Instant::now();
    let stopping = service.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(LIMIT).await });
    let (slow_result, slow_done) = timeout(LIMIT, slow)
        .await
        .expect("the slow call ends")
        .expect("slow task");
    assert_eq!(
        slow_result.expect("the running call is answered"),
        Value::Int(300)
    );
    timeout(LIMIT, link.closed())
        .await
        .expect("the link closes");
    let closed_after = slow_done.elapsed();
    let h = timeout(LIMIT, hammering)
        .await
        .expect("the client stops")
        .expect("client task");
    assert!(
        closed_after <= Duration::from_millis(150),
        "the link closed {closed_after:?} after its last call was answered \
         ({:?} after the drain began); client: {h:?}",
        drain_began.elapsed()
    );
    assert!(h.refused >= 1, "{h:?}");
    // The link refuses DRAIN_REFUSALS calls, then reads no more; the one
    // call it read ahead meanwhile is refused as it closes.
    assert!(
        h.refused <= vole_link::DRAIN_REFUSALS + 1,
        "{} refusals, more than {} + 1: {h:?}",
        h.refused,
        vole_link::DRAIN_REFUSALS
    );
    let forced = timeout(LIMIT, shutdown)
        .await
        .expect("the stop ends")
        .expect("stop task");
    assert_eq!(forced, 0, "no link had to be forced");
}

/// A client that retries elsewhere after its first refusal (as the reload
/// tests' clients do) gets exactly one, and a draining link whose client is
/// idle closes within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_link_with_an_idle_client_closes_within_100_ms() {
    let handlers = Arc::new(Handlers::default());
    let (service, addr) = start(handlers.clone()).await;
    let (link, gw) = connect(addr).await;
    let (busy_link, busy_gw) = connect(addr).await;
    assert_eq!(
        gw.call("echo", (1,)).await.expect("echo"),
        Value::Int(1),
        "a call just before the drain"
    );
    let drain_began = Instant::now();
    let stopping = service.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(LIMIT).await });
    // The busy client's first call once the drain has reached its link is
    // refused; it then stops calling on that link. (The stop runs in
    // another task: a call that gets there first is answered.)
    loop {
        match busy_gw.call("echo", (2,)).await {
            Ok(v) => {
                assert_eq!(v, Value::Int(2));
                assert!(
                    drain_began.elapsed() < LIMIT,
                    "no closing refusal within {LIMIT:?}"
                );
                tokio::task::yield_now().await;
            }
            Err(e @ LinkError::Closing(_)) => {
                assert!(e.never_ran(), "{e}");
                break;
            }
            Err(other) => panic!("expected a closing refusal, got {other:?}"),
        }
    }
    timeout(LIMIT, link.closed())
        .await
        .expect("the idle link closes");
    let idle_closed = drain_began.elapsed();
    timeout(LIMIT, busy_link.closed())
        .await
        .expect("the refused link closes");
    let busy_closed = drain_began.elapsed();
    // 100 ms, and a margin for a loaded machine.
    assert!(
        idle_closed <= Duration::from_millis(150),
        "the idle link closed {idle_closed:?} after the drain began"
    );
    assert!(
        busy_closed <= Duration::from_millis(150),
        "the link whose client was refused once closed {busy_closed:?} after the drain began"
    );
    let forced = timeout(LIMIT, shutdown)
        .await
        .expect("the stop ends")
        .expect("stop task");
    assert_eq!(forced, 0, "no link had to be forced");
}
