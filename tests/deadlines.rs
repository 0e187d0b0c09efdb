//! Deadlines and cancellation end to end: `vole serve` with the demo
//! service (its `sleep(ms)`) in node processes, called by a vole client and
//! by `vole call --timeout`, and bounded by `--max-call-time`. The node's
//! in-flight gauge, as `vole status` reports it, shows the cancellation.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{connect, run_vole, serial, Opts, Serve};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vole::link::{Error, Value};

/// The Prometheus endpoint's text (`GET /metrics`), bounded.
async fn scrape(port: u16) -> String {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("send the request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read the answer");
        String::from_utf8_lossy(&raw).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .expect("metrics answered in time")
}

/// The sum of the series of `name` in a scrape.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Calls in flight and calls received, over every node, from
/// `vole status --json`.
async fn inflight_and_calls(serve: &Serve) -> (u64, u64) {
    let s = serve.status().await;
    let nodes = s["nodes"].as_array().expect("nodes array");
    let sum = |key: &str| {
        nodes
            .iter()
            .map(|n| n[key].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    (sum("inflight"), sum("calls"))
}

/// Polls `vole status` until `pred(inflight, calls)` holds; returns when
/// (bounded: panics after 10 s).
async fn wait_status(serve: &Serve, what: &str, pred: impl Fn(u64, u64) -> bool) -> Instant {
    let limit = Instant::now() + Duration::from_secs(10);
    loop {
        let (inflight, calls) = inflight_and_calls(serve).await;
        if pred(inflight, calls) {
            return Instant::now();
        }
        assert!(
            Instant::now() < limit,
            "{what}: status says {inflight} in flight, {calls} calls"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The acceptance, end to end: a 200 ms deadline on a 5 s
/// `sleep` returns within 300 ms, and the node has cancelled the call:
/// `vole status` counts it and shows nothing in flight long before the
/// 5 s are up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_cancels_the_demo_sleep_in_its_node() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(1, "grant")).await;
    let client = connect(serve.port()).await.expect("connect");
    wait_status(&serve, "idle", |inflight, _| inflight == 0).await;
    let (_, before) = inflight_and_calls(&serve).await;
    let began = Instant::now();
    let r = client
        .gw
        .with_timeout(Duration::from_millis(200))
        .call("sleep", (5000,))
        .await;
    let returned = began.elapsed();
    assert!(
        matches!(&r, Err(Error::DeadlineExceeded { method, .. }) if method == "sleep"),
        "{r:?}"
    );
    // Measured: ~201 ms. The bound is generous for a loaded CI machine
    // and still fails if the call ran its 5 s.
    assert!(
        returned >= Duration::from_millis(200) && returned < Duration::from_millis(1500),
        "the deadline returned after {returned:?}"
    );
    let seen = wait_status(
        &serve,
        "the call counted and not in flight",
        |inflight, calls| calls > before && inflight == 0,
    )
    .await;
    let cancelled = seen - began;
    println!("returned after {returned:?}; status shows it cancelled {cancelled:?} after the call");
    assert!(
        cancelled < Duration::from_secs(4),
        "the node still ran the call {cancelled:?} after it began"
    );
    let v = client.gw.call("echo", (1,)).await.expect("echo");
    assert_eq!(v, Value::Int(1));
    harness::close(&client.link).await;
}

/// `vole call --timeout`: past the deadline it exits 7 (documented in
/// `vole --help`'s exit codes) and names the call and the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vole_call_timeout_exits_7() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(1, "grant")).await;
    let uri = format!("vop://127.0.0.1:{}/", serve.port());
    let began = Instant::now();
    let out = run_vole(&["call", "--plain", "--timeout", "0.3", &uri, "sleep", "5000"]).await;
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "stderr: {stderr}");
    assert!(
        stderr.contains("call of sleep exceeded its deadline of 300ms"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(4), "vole call took {took:?}");
    wait_status(&serve, "the call cancelled", |inflight, _| inflight == 0).await;
    let out = run_vole(&["call", "--plain", "--timeout", "5", &uri, "sleep", "10"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
}

/// `--max-call-time` bounds the demo's `sleep` in the node: the caller
/// gets the cancelled exception (`vole call` exits 2, a remote error), the
/// node logs it, and the link keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_call_time_bounds_a_call_in_a_node() {
    let _serial = serial().await;
    let mport = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let metrics = format!("127.0.0.1:{mport}");
    let serve = Serve::start(Opts::new(1, "grant").args(&[
        "--max-call-time",
        "0.3",
        "--metrics",
        &metrics,
    ]))
    .await;
    let client = connect(serve.port()).await.expect("connect");
    let began = Instant::now();
    let r = client.gw.call("sleep", (5000,)).await;
    let took = began.elapsed();
    match &r {
        Err(Error::Cancelled(reason)) => assert!(reason.contains("max-call-time"), "{reason}"),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    let v = client.gw.call("sleep", (10,)).await.expect("a short sleep");
    assert_eq!(v, Value::Int(10));
    assert!(
        serve
            .stderr
            .wait_contains(Duration::from_secs(5), "call exceeded max-call-time")
            .await,
        "not logged:\n{}",
        serve.log()
    );
    let uri = format!("vop://127.0.0.1:{}/", serve.port());
    let out = run_vole(&["call", "--plain", "--timeout", "5", &uri, "sleep", "5000"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("call cancelled by the peer"), "{stderr}");
    // Both counted as cancelled, in the Prometheus metrics.
    let limit = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(mport).await;
        if metric_sum(&body, "vole_calls_cancelled_total") >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < limit,
            "cancelled calls not counted:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    harness::close(&client.link).await;
}
