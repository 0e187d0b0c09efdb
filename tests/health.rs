//! Health probes and the not-ready period before a drain (`--health`,
//! `--shutdown-delay`, `vole drain`), as a load balancer or Kubernetes
//! meets them: `/readyz` turns 404 at once on SIGTERM or `vole drain`
//! while the service serves on (new connections included) for the delay,
//! then drains and exits 0; `/livez` answers while the controller does.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{close, connect, connect_only, echo, run_vole, serial, sleep_call, Opts, Serve};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on the health port: the status code and body.
async fn probe(port: u16, path: &str) -> Result<(u16, String), String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not HTTP: {text:?}"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
        Ok((code, body.unwrap_or_default()))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "probe timed out".to_owned())?
}

/// Polls `/readyz` until it answers `code`; how long that took.
async fn until_ready_is(port: u16, code: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok((c, _)) = probe(port, "/readyz").await {
            if c == code {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < limit,
            "/readyz never answered {code} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const DELAY: Duration = Duration::from_secs(1);

/// `meta.health()` over a link.
async fn meta_health(gw: &vole_link::RemoteObject) -> String {
    match gw.call_meta("health", []).await.expect("meta.health()") {
        vole_link::Value::Str(s) => s,
        other => panic!("meta.health() answered {other:?}"),
    }
}

fn opts(nodes: u32, health: u16) -> Opts {
    Opts::new(nodes, "grant").args(&[
        "--health",
        &format!("127.0.0.1:{health}"),
        "--shutdown-delay",
        &DELAY.as_secs_f64().to_string(),
    ])
}

/// SIGTERM: not ready at once, serving (new links too) for the delay,
/// then a graceful drain and exit 0; with node processes and in one
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_404_serves_for_the_delay_then_drains() {
    let _serial = serial().await;
    for nodes in [2, 0] {
        let hport = free_port();
        let serve = Serve::start(opts(nodes, hport)).await;
        until_ready_is(hport, 200, Duration::from_secs(10)).await;
        let (code, body) = probe(hport, "/livez").await.expect("livez");
        assert_eq!((code, body.as_str()), (200, "ok\n"), "nodes {nodes}");
        let (_, body) = probe(hport, "/readyz").await.expect("readyz");
        assert!(body.starts_with("serving"), "{body}");
        let before = connect_only(serve.port()).await.expect("a link before");
        assert_eq!(meta_health(&before.1).await, "SERVING");

        let sent = Instant::now();
        serve.signal(Signal::SIGTERM);
        let not_ready = until_ready_is(hport, 404, Duration::from_secs(2)).await;
        println!("nodes {nodes}: /readyz 404 {not_ready:?} after SIGTERM");
        assert!(not_ready < DELAY / 2, "nodes {nodes}: {not_ready:?}");
        assert_eq!(probe(hport, "/livez").await.expect("livez").0, 200);
        // Over the link too (the node is told a moment after).
        let told = Instant::now();
        while meta_health(&before.1).await != "DRAINING" {
            assert!(
                told.elapsed() < DELAY / 2,
                "meta.health() never said DRAINING"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Still serving, new links included.
        let during = connect_only(serve.port())
            .await
            .expect("a new link during the delay");
        echo(&during.1, 1).await.expect("a call during the delay");
        echo(&before.1, 2).await.expect("a call on an old link");
        assert!(
            sent.elapsed() < DELAY,
            "the checks took the whole delay: {:?}",
            sent.elapsed()
        );
        close(&during.0).await;
        close(&before.0).await;
        let code = serve.wait_code(Duration::from_secs(15)).await;
        let took = sent.elapsed();
        assert_eq!(code, Some(0), "nodes {nodes}: {}", serve.log());
        assert!(took >= DELAY, "nodes {nodes}: exited after {took:?}");
    }
}

/// `vole drain` (a preStop hook): idempotent, returns when the delay is
/// over; the orchestrator's SIGTERM after it does not force the stop, so a
/// call in flight still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vole_drain_returns_after_the_delay_and_a_later_sigterm_does_not_force() {
    let _serial = serial().await;
    let hport = free_port();
    let serve = Serve::start(opts(2, hport)).await;
    until_ready_is(hport, 200, Duration::from_secs(10)).await;
    let admin = serve.admin.to_str().expect("path").to_owned();
    let c = connect(serve.port()).await.expect("a link");
    let gw = c.gw.clone();
    let call = tokio::spawn(async move { sleep_call(&gw, 2500).await });

    let start = Instant::now();
    let first = {
        let admin = admin.clone();
        tokio::spawn(async move { run_vole(&["drain", "--admin-socket", &admin]).await })
    };
    until_ready_is(hport, 404, Duration::from_secs(2)).await;
    let again = run_vole(&["drain", "--admin-socket", &admin]).await;
    let first = first.await.expect("vole drain");
    let took = start.elapsed();
    for out in [&first, &again] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(took >= DELAY * 9 / 10, "vole drain returned after {took:?}");
    // The orchestrator's SIGTERM after its preStop hook.
    serve.signal(Signal::SIGTERM);
    let slept = call.await.expect("call task");
    assert_eq!(slept, Ok(2500), "the call in flight completes: not forced");
    close(&c.link).await;
    assert_eq!(
        serve.wait_code(Duration::from_secs(15)).await,
        Some(0),
        "{}",
        serve.log()
    );
}

/// Bad health settings are usage errors naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_health_settings_are_usage_errors() {
    for (args, key) in [
        (&["serve", "--health", "nowhere"][..], "--health"),
        (&["serve", "--shutdown-delay=-1"][..], "shutdown-delay"),
    ] {
        let out = run_vole(args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(key), "{args:?}: {err}");
    }
}
