//! Links driven over in-memory pipes on a paused tokio clock.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;
use crate::model::{CallError, Value};
use crate::publish::Published;

async fn echo((v,): (Value,)) -> Result<Value, CallError> {
    Ok(v)
}

/// A link whose peer asked for keep-alives sends them while idle. The
/// keep-alive is produced by a timer, with no other traffic to wake the
/// driver: it must still be written at once (VPy closes a link whose
/// keep-alives are 1.5 periods late).
#[tokio::test(start_paused = true)]
async fn idle_link_writes_requested_keep_alives() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = LinkSetup {
        config: LinkConfig {
            hold_peer: false,
            keep_alive_min_send: Duration::from_millis(100),
            ..LinkConfig::default()
        },
        gateway: Published::new("Server")
            .method("echo", "", echo)
            .into_object(),
        info: LinkInfo::default(),
    };
    let server = tokio::spawn(serve(b, server, |_| {}));
    let client = LinkSetup {
        config: LinkConfig {
            keep_alive: Some(Duration::from_millis(100)),
            ..LinkConfig::default()
        },
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let (link, gateway) = timeout(Duration::from_secs(10), connect(a, client))
        .await
        .expect("handshake in time")
        .expect("handshake");

    // Ten periods of silence from the application.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !link.is_closed(),
        "client link closed while idle: {}",
        link.closed().await
    );
    let v = timeout(Duration::from_secs(10), gateway.call("echo", (7,)))
        .await
        .expect("call in time")
        .expect("call after an idle second");
    assert_eq!(v, Value::Int(7));

    drop(gateway);
    timeout(Duration::from_secs(10), link.close())
        .await
        .expect("close in time");
    let closed = timeout(Duration::from_secs(10), server)
        .await
        .expect("server in time")
        .expect("server task");
    assert!(closed.clean, "server link: {}", closed.reason);
}

/// Calls queue up to the cap while the driver is busy; callers beyond
/// it wait for room rather than queue without bound, and every queued
/// call gets its outcome once the driver runs.
#[tokio::test(start_paused = true)]
async fn a_full_call_queue_makes_callers_wait() {
    use crate::calls::QUEUE_CAP;
    let (a, _b) = tokio::io::duplex(64 * 1024);
    let setup = LinkSetup {
        config: LinkConfig {
            handshake_timeout: Duration::from_secs(1),
            ..LinkConfig::default()
        },
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let (link, driver, _hs) = Driver::new(a, setup);
    // A proxy for an object of the peer, as the handshake would give.
    let target = RemoteObject::new(1, link.shared().clone());
    let mut calls: Vec<_> = (0..=QUEUE_CAP)
        .map(|i| {
            let target = target.clone();
            tokio::spawn(async move { target.call("m", (i as i64,)).await })
        })
        .collect();
    // Let every caller run; the driver is not running yet.
    for _ in 0..1000 {
        if link.shared().calls.queued() == QUEUE_CAP {
            break;
        }
        tokio::task::yield_now().await;
    }
    // And once more, so the last caller has surely tried.
    tokio::task::yield_now().await;
    let queued = link.shared().calls.queued();
    assert_eq!(queued, QUEUE_CAP, "the queue is capped");
    let last = calls.pop().expect("one more than the cap");
    assert!(!last.is_finished(), "the caller beyond the cap waits");
    // Once the driver runs, every call gets an outcome: calls wait for
    // the link handshake, which never completes here, so each fails with
    // the link when the handshake times out (not lost, not hung).
    let driver = tokio::spawn(driver);
    calls.push(last);
    for call in calls {
        let r = timeout(Duration::from_secs(5), call)
            .await
            .expect("an outcome in time")
            .expect("task");
        assert!(
            matches!(&r, Err(Error::Closed(reason)) if reason.contains("handshake")),
            "{r:?}"
        );
    }
    link.abort();
    let _ = timeout(Duration::from_secs(5), driver).await;
}

/// A client and a server link over an in-memory pipe; the server's
/// handle comes from `on_open`.
async fn pair(server_config: LinkConfig) -> (Link, RemoteObject, Link, JoinHandle<Closed>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let setup = LinkSetup {
        config: server_config,
        gateway: Published::new("Server")
            .method("echo", "", echo)
            .method("stall", "", stall)
            .into_object(),
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
    let (link, gateway) = timeout(Duration::from_secs(10), connect(a, client))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let server_link = rx.await.expect("server link");
    (link, gateway, server_link, server)
}

async fn stall((): ()) -> Result<Value, CallError> {
    std::future::pending().await
}

/// With `drain_quiet`, a draining link stays open while the peer keeps
/// calling (each call refused as closing, none lost on the wire), but for
/// no longer than the quiet period after the first refusal: a peer that
/// goes on calling after it was told does not hold the link.
#[tokio::test(start_paused = true)]
async fn a_drain_refuses_calls_for_the_quiet_period_after_the_first_refusal() {
    let quiet = Duration::from_millis(200);
    let every = Duration::from_millis(60);
    let (link, gw, server_link, server) = pair(LinkConfig {
        hold_peer: false,
        drain_quiet: quiet,
        ..LinkConfig::default()
    })
    .await;
    let v = gw.call("echo", (1,)).await.expect("echo before the drain");
    assert_eq!(v, Value::Int(1));
    let drain = tokio::spawn(async move { server_link.close().await });
    let began = tokio::time::Instant::now();
    let watched = link.clone();
    let client_closed = tokio::spawn(async move {
        watched.closed().await;
        tokio::time::Instant::now()
    });
    let mut refused = 0;
    loop {
        // Each call comes within the quiet period of the one before.
        tokio::time::sleep(every).await;
        match gw.call("echo", (2,)).await {
            Err(e @ Error::Closing(_)) => {
                assert!(e.never_ran(), "{e}");
                refused += 1;
            }
            Err(Error::Closed(_) | Error::Interrupted(_)) => break,
            other => panic!("expected a closing refusal, got {other:?}"),
        }
    }
    // Refused at 60, 120, 180 and 240 ms; closed at 60 + 200 ms.
    assert_eq!(refused, 4);
    let closed = timeout(Duration::from_secs(5), server)
        .await
        .expect("server closes")
        .expect("server task");
    assert!(closed.clean, "{}", closed.reason);
    let waited = client_closed.await.expect("watcher") - began;
    assert!(
        waited >= every + quiet && waited < every * 5,
        "closed {waited:?} after the drain began"
    );
    timeout(Duration::from_secs(5), drain)
        .await
        .expect("drain returns")
        .expect("drain task");
    timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("the client follows");
}

/// With `drain_quiet`, a draining link that refused [`DRAIN_REFUSALS`]
/// calls closes as soon as none of its calls runs, quiet period or not.
#[tokio::test(start_paused = true)]
async fn a_drain_closes_after_enough_refusals() {
    let (link, gw, server_link, server) = pair(LinkConfig {
        hold_peer: false,
        drain_quiet: Duration::from_secs(3),
        ..LinkConfig::default()
    })
    .await;
    let began = tokio::time::Instant::now();
    let drain = tokio::spawn(async move { server_link.close().await });
    let mut refused = 0;
    loop {
        match gw.call("echo", (2,)).await {
            Err(e @ Error::Closing(_)) => {
                assert!(e.never_ran(), "{e}");
                refused += 1;
            }
            Err(Error::Closed(_) | Error::Interrupted(_)) => break,
            other => panic!("expected a closing refusal, got {other:?}"),
        }
    }
    assert!(
        (DRAIN_REFUSALS..=DRAIN_REFUSALS + 1).contains(&refused),
        "{refused} refusals"
    );
    let closed = timeout(Duration::from_secs(5), server)
        .await
        .expect("server closes")
        .expect("server task");
    assert!(closed.clean, "{}", closed.reason);
    assert!(
        began.elapsed() < Duration::from_millis(10),
        "{:?}",
        began.elapsed()
    );
    timeout(Duration::from_secs(5), drain)
        .await
        .expect("drain returns")
        .expect("drain task");
    timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("the client follows");
}

/// With `drain_quiet`, a link drained as it is set up completes its
/// handshake and refuses the peer's first call as closing, rather than
/// failing the handshake or losing that call.
#[tokio::test(start_paused = true)]
async fn a_link_drained_at_once_still_refuses_its_first_call() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: false,
            drain_quiet: Duration::from_millis(200),
            ..LinkConfig::default()
        },
        gateway: Published::new("Server")
            .method("echo", "", echo)
            .into_object(),
        info: LinkInfo::default(),
    };
    let server = tokio::spawn(serve(b, setup, |link| {
        tokio::spawn(async move { link.close().await });
    }));
    let client = LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let (link, gw) = timeout(Duration::from_secs(10), connect(a, client))
        .await
        .expect("handshake in time")
        .expect("the handshake completes");
    match gw.call("echo", (1,)).await {
        Err(e @ Error::Closing(_)) => assert!(e.to_string().contains("closing"), "{e}"),
        other => panic!("expected a closing refusal, got {other:?}"),
    }
    drop(gw);
    let closed = timeout(Duration::from_secs(5), server)
        .await
        .expect("server closes")
        .expect("server task");
    assert!(closed.clean, "{}", closed.reason);
    timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("the client follows");
}

/// Without `drain_quiet`, a drained idle link closes at once.
#[tokio::test(start_paused = true)]
async fn a_drain_without_quiet_closes_an_idle_link_at_once() {
    let (link, _gw, server_link, server) = pair(LinkConfig {
        hold_peer: false,
        ..LinkConfig::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    timeout(Duration::from_secs(5), server_link.close())
        .await
        .expect("closes");
    assert!(started.elapsed() < Duration::from_millis(10));
    let closed = server.await.expect("server task");
    assert!(closed.clean, "{}", closed.reason);
    timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("the client follows");
}

/// When the peer closes its sending side (still reading, as a closing
/// link lingers) while a call of ours waits for its answer, the call
/// fails and the link closes at once: no waiting for an answer that can
/// no longer come (it used to wait for the close grace).
#[tokio::test(start_paused = true)]
async fn peer_eof_with_a_call_pending_closes_without_waiting() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // client <-> proxy <-> server; the proxy can end the server-to-client
    // direction while still reading what the client sends.
    let (client_io, proxy_c) = tokio::io::duplex(64 * 1024);
    let (proxy_s, server_io) = tokio::io::duplex(64 * 1024);
    let (mut c_read, mut c_write) = tokio::io::split(proxy_c);
    let (mut s_read, mut s_write) = tokio::io::split(proxy_s);
    let half_close = Arc::new(tokio::sync::Notify::new());
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut c_read, &mut s_write).await;
    });
    let notified = half_close.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                n = s_read.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if c_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                },
                _ = notified.notified() => break,
            }
        }
        let _ = c_write.shutdown().await;
        // Keep the server's side open.
        std::future::pending::<()>().await;
        drop(s_read);
    });
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: false,
            ..LinkConfig::default()
        },
        gateway: Published::new("Server")
            .method("stall", "", stall)
            .into_object(),
        info: LinkInfo::default(),
    };
    let _server = tokio::spawn(serve(server_io, setup, |_| {}));
    let client = LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let (link, gw) = timeout(Duration::from_secs(10), connect(client_io, client))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let pending = tokio::spawn(async move { gw.call("stall", ()).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    half_close.notify_one();
    match timeout(Duration::from_secs(1), pending)
        .await
        .expect("the call ends")
        .expect("call task")
    {
        Err(Error::Interrupted(_)) => {}
        other => panic!("expected a closed link, got {other:?}"),
    }
    timeout(Duration::from_secs(1), link.closed())
        .await
        .expect("the link closes without waiting for the close grace");
    up.abort();
    down.abort();
}

/// A peer that went away (reset, or TLS without close_notify, as every
/// exiting client does) is told apart from a real failure, for the log
/// level of the close.
#[test]
fn a_vanished_peer_is_not_an_error_worth_a_warning() {
    use std::io::{Error as IoError, ErrorKind};
    let io = |kind| Error::Transport(vole_transport::Error::Io(IoError::new(kind, "x")));
    assert!(peer_vanished(&io(ErrorKind::UnexpectedEof)));
    assert!(peer_vanished(&io(ErrorKind::ConnectionReset)));
    assert!(peer_vanished(&io(ErrorKind::BrokenPipe)));
    assert!(!peer_vanished(&io(ErrorKind::PermissionDenied)));
    assert!(!peer_vanished(&Error::Closed("closed".to_owned())));
    assert!(!peer_vanished(&Error::Protocol(
        crate::ProtocolViolation::MalformedMessage {
            found: "x".to_owned()
        }
    )));
}

async fn nap((ms,): (i64,)) -> Result<Value, CallError> {
    tokio::time::sleep(Duration::from_millis(ms.max(0) as u64)).await;
    Ok(Value::None)
}

/// With `idle_timeout`, a link closes (cleanly) once the peer has made no
/// call for that long and none of its calls runs: each call restarts the
/// clock, and a call that runs longer than the timeout holds the link
/// until it ends, then for the whole timeout again.
#[tokio::test(start_paused = true)]
async fn an_idle_link_closes_after_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let (a, b) = tokio::io::duplex(64 * 1024);
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: false,
            idle_timeout: Some(idle),
            ..LinkConfig::default()
        },
        gateway: Published::new("Server")
            .method("nap", "", nap)
            .into_object(),
        info: LinkInfo::default(),
    };
    let server = tokio::spawn(serve(b, setup, |_| {}));
    let client = LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let (link, gw) = timeout(Duration::from_secs(10), connect(a, client))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let began = tokio::time::Instant::now();
    // Calls 0.8 s apart keep it open past the timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        gw.call("nap", (0,)).await.expect("a call on a busy link");
    }
    // A call that runs 2.5 s, twice the timeout: the link waits for it.
    gw.call("nap", (2500,))
        .await
        .expect("a long call is not cut short");
    let long_done = tokio::time::Instant::now();
    assert!(long_done - began >= Duration::from_millis(4900));
    timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("the idle link closes");
    let closed_after = tokio::time::Instant::now() - long_done;
    assert!(
        closed_after >= idle && closed_after < idle + Duration::from_millis(100),
        "closed {closed_after:?} after the last call ended"
    );
    let closed = server.await.expect("server task");
    assert!(closed.clean, "{}", closed.reason);
}

/// Without `idle_timeout` (the default), an idle link stays open.
#[tokio::test(start_paused = true)]
async fn without_an_idle_timeout_an_idle_link_stays_open() {
    let (link, gw, _server_link, _server) = pair(LinkConfig {
        hold_peer: false,
        ..LinkConfig::default()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        gw.call("echo", (7,)).await.expect("still open"),
        Value::Int(7)
    );
    assert!(!link.is_closed());
}

/// Polls `driver` once.
async fn poll_once<IO>(driver: &mut Driver<IO>) -> Poll<Closed>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *driver).poll(cx))).await
}

/// Polls `driver` until `task` is done (boundedly) and returns its output.
async fn drive_until<IO, T>(driver: &mut Driver<IO>, task: JoinHandle<T>) -> T
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    for _ in 0..10_000 {
        if task.is_finished() {
            return task.await.expect("task");
        }
        assert!(poll_once(driver).await.is_pending(), "the link closed");
        tokio::task::yield_now().await;
    }
    panic!("the task did not finish");
}

/// A link that has waited for its peer a while holds no read or write
/// buffer (they are most of an idle link's memory), and allocates them
/// again for the next call; a link between calls keeps them.
#[tokio::test(start_paused = true)]
async fn an_idle_link_holds_no_buffers() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Server")
            .method("echo", "", echo)
            .into_object(),
        info: LinkInfo::default(),
    };
    let (_server_link, mut driver, _hs) = Driver::new(b, server);
    let client = LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let connecting = tokio::spawn(connect(a, client));
    let (_link, gateway) = drive_until(&mut driver, connecting)
        .await
        .expect("handshake");
    for i in 0..3 {
        let g = gateway.clone();
        let call = tokio::spawn(async move { g.call("echo", (i,)).await });
        let v = drive_until(&mut driver, call).await.expect("echo");
        assert_eq!(v, Value::Int(i));
        assert!(poll_once(&mut driver).await.is_pending());
        assert!(driver.inbuf.capacity() > 0, "just after call {i}");
        // The driver's timer wakes it once the link has been idle so long.
        tokio::time::sleep(IDLE_RELEASE).await;
        assert!(poll_once(&mut driver).await.is_pending());
        assert_eq!(driver.inbuf.capacity(), 0, "read buffer after call {i}");
        assert_eq!(
            driver.core.output().capacity(),
            0,
            "write buffer after call {i}"
        );
    }
}
