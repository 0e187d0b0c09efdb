//! Admission control and buffer budgets, on real processes over loopback:
//! a node flooded with large calls stays within its buffer budget while a
//! small client is served; many one-way calls with large arguments all
//! complete within it; `max-inflight` with `overload = refuse` and `wait`;
//! `max-clients-per-ip`; `max-clients` in `shared` and `reuseport`.
//!
//! Every test takes the harness's serial lock, bounds every wait, and
//! leaves nothing running (the [`harness::Serve`] guard kills and reaps the
//! process tree).

#[path = "multiprocess/harness.rs"]
mod harness;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{close, connect, connect_only, serial, Opts, Serve, CALL_LIMIT};
use vole_link::{Entity, Error, Link, LinkConfig, LinkInfo, LinkSetup, RemoteObject, Value};
use vole_transport::stream::{Conn, Prefixed};
use vole_transport::vop::{self, Transport};

const MIB: u64 = 1 << 20;

/// The longest a witness call may take while others flood the node: a
/// well-behaved client is never paused by the budget, so its calls wait
/// only for the node's CPU (shared, on a loaded two-core CI machine, with
/// the flooders and this test); a policy that paused every link would
/// hold it for as long as the flood lasts.
const WITNESS_LIMIT: Duration = Duration::from_secs(2);

/// The resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("node status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

/// The pid of the only node of `serve`.
fn node_pid(serve: &Serve) -> u32 {
    let nodes = serve.nodes();
    assert_eq!(nodes.len(), 1, "one node: {nodes:?}");
    nodes.values().next().expect("a node").pid
}

/// Samples the RSS of `pid` every 20 ms until `stop`; returns the peak.
fn watch_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// 20 clients send 15 MiB one-way calls that hold their argument for a
/// second, back to back, for several seconds: the node's RSS stays within
/// its default budget (256 MiB) plus 64 MiB (without the budget it passes
/// 1.2 GiB within ten seconds, then the node misses its heartbeats and is
/// killed), and a witness client making small calls all the while is
/// answered each time within [`WITNESS_LIMIT`].
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_large_calls_stays_within_the_node_budget_and_a_small_client_is_served() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(1, "grant")).await;
    let port = serve.port();
    let pid = node_pid(&serve);
    let witness = connect(port).await.expect("witness connects");

    let stop = Arc::new(AtomicBool::new(false));
    let peak = watch_rss(pid, stop.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let flood_for = Duration::from_secs(8);
    let mut flooders = Vec::new();
    for _ in 0..20 {
        let client = connect(port).await.expect("flooder connects");
        let sent = sent.clone();
        flooders.push(tokio::spawn(async move {
            let until = Instant::now() + flood_for;
            while Instant::now() < until {
                let data = Value::Bytes(vec![0x5a; 15 * MIB as usize]);
                let call = client.gw.call_oneway("consume", (data, 1000));
                match tokio::time::timeout(flood_for, call).await {
                    Ok(Ok(())) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    // Still waiting for the node to read: that is the
                    // budget at work.
                    Err(_) => break,
                    Ok(Err(e)) => panic!("flooding call: {e}"),
                }
            }
            client
        }));
    }

    // The witness, meanwhile.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    while started.elapsed() < flood_for {
        let t = Instant::now();
        let v = tokio::time::timeout(WITNESS_LIMIT, witness.gw.call("echo", (calls,)))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "witness call {calls} took over {WITNESS_LIMIT:?} at {:?}",
                    started.elapsed()
                )
            })
            .expect("witness echo");
        assert_eq!(v, Entity::Int(calls));
        slowest = slowest.max(t.elapsed());
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut clients = Vec::new();
    for f in flooders {
        clients.push(f.await.expect("flooder task"));
    }
    stop.store(true, Ordering::Relaxed);
    let peak = peak.join().expect("rss watcher");
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "[measured] node peak RSS {} MiB; {sent} flooding calls of 15 MiB sent; witness: {calls} calls, slowest {slowest:?}",
        peak / MIB
    );
    assert!(
        sent >= 20,
        "the flood sent {sent} calls: it did not load the node"
    );
    assert!(
        peak <= (256 + 64) * MIB,
        "node RSS peaked at {} MiB, over the 256 MiB budget + 64 MiB",
        peak / MIB
    );
    for c in &clients {
        c.link.abort();
    }
    close(&witness.link).await;
}

/// 5,000 one-way calls with 1 MiB arguments to a method that holds them
/// 200 ms: every one completes, and the node's memory stays within its
/// (here 64 MiB) budget plus 64 MiB. (Without the budget, the node would
/// run up to `max-inflight` of them at once: hundreds of MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_one_way_calls_of_a_mebibyte_all_complete_within_the_budget() {
    let _serial = serial().await;
    let budget = 64 * MIB;
    let serve = Serve::start(Opts::new(1, "grant").args(&[
        "--node-buffer-budget",
        &budget.to_string(),
        "--link-buffer-budget",
        &budget.to_string(),
    ]))
    .await;
    let pid = node_pid(&serve);
    let client = connect(serve.port()).await.expect("connects");
    let before: u64 = client.gw.call_as("consumed", ()).await.expect("consumed()");

    let stop = Arc::new(AtomicBool::new(false));
    let peak = watch_rss(pid, stop.clone());
    let started = Instant::now();
    const CALLS: u64 = 5000;
    for _ in 0..CALLS {
        let data = Value::Bytes(vec![0xa5; MIB as usize]);
        tokio::time::timeout(CALL_LIMIT, client.gw.call_oneway("consume", (data, 200)))
            .await
            .expect("sent in time")
            .expect("sent");
    }
    let limit = Duration::from_secs(120);
    let mut done = 0;
    while started.elapsed() < limit {
        done = client
            .gw
            .call_as::<u64>("consumed", ())
            .await
            .expect("consumed()")
            - before;
        if done >= CALLS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let peak = peak.join().expect("rss watcher");
    println!(
        "[measured] {done} of {CALLS} one-way 1 MiB calls done in {:?}; node peak RSS {} MiB (budget {} MiB)",
        started.elapsed(),
        peak / MIB,
        budget / MIB
    );
    assert_eq!(done, CALLS, "every one-way call completed");
    assert!(
        peak <= budget + 64 * MIB,
        "node RSS peaked at {} MiB, over the {} MiB budget + 64 MiB",
        peak / MIB,
        budget / MIB
    );
    close(&client.link).await;
}

/// Starts two `sleep(5000)` calls on `gw` and waits until the node of
/// `serve` reports both running (a probe call behind them would otherwise
/// race them).
async fn two_sleeping(serve: &Serve, gw: &RemoteObject) -> Vec<tokio::task::JoinHandle<()>> {
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let _ = gw.call("sleep", (5000,)).await;
            })
        })
        .collect();
    let deadline = Instant::now() + CALL_LIMIT;
    loop {
        let status = serve.status().await;
        let inflight: u64 = status["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(|n| n["inflight"].as_u64()).sum())
            .unwrap_or(0);
        if inflight >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two calls are not reported running: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_inflight_refuse_answers_overloaded_at_once_and_wait_waits() {
    let _serial = serial().await;
    let serve =
        Serve::start(Opts::new(1, "grant").args(&["--max-inflight", "2", "--overload", "refuse"]))
            .await;
    let client = connect(serve.port()).await.expect("connects");
    let _running = two_sleeping(&serve, &client.gw).await;
    let t = Instant::now();
    match tokio::time::timeout(CALL_LIMIT, client.gw.call("echo", (1,))).await {
        Ok(Err(Error::Overloaded(reason))) => {
            assert!(reason.contains("max-inflight"), "{reason}")
        }
        other => panic!("expected an overloaded refusal, got {other:?}"),
    }
    let refused_in = t.elapsed();
    assert!(
        refused_in < Duration::from_secs(3),
        "refused at once, not after a sleep ended: {refused_in:?}"
    );
    close(&client.link).await;
    drop(serve);

    let serve = Serve::start(Opts::new(1, "grant").args(&["--max-inflight", "2"])).await;
    let client = connect(serve.port()).await.expect("connects");
    let _running = two_sleeping(&serve, &client.gw).await;
    let t = Instant::now();
    let v = tokio::time::timeout(CALL_LIMIT, client.gw.call("echo", (1,)))
        .await
        .expect("answered in time")
        .expect("with wait, the call runs");
    assert_eq!(v, Entity::Int(1));
    let waited = t.elapsed();
    println!("[measured] refused in {refused_in:?}; with wait, answered after {waited:?}");
    assert!(
        waited >= Duration::from_secs(3),
        "the third call waited for a sleep to end: {waited:?}"
    );
    close(&client.link).await;
}

/// Connects PLAIN to `addr` from the local address `from`.
async fn connect_from(from: IpAddr, addr: SocketAddr) -> Result<(Link, RemoteObject), String> {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| format!("bind {from}: {e}"))?;
        let mut tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let (_, leftover) = vop::negotiate_client(&mut tcp, &[Transport::Plain], CALL_LIMIT)
            .await
            .map_err(|e| format!("VOP: {e}"))?;
        let setup = LinkSetup {
            config: LinkConfig::default(),
            gateway: vole_link::publish::Published::new("Client").into_object(),
            info: LinkInfo::default(),
        };
        vole_link::connect(Conn::Plain(Prefixed::new(leftover, tcp)), setup)
            .await
            .map_err(|e| format!("link: {e}"))
    };
    tokio::time::timeout(CALL_LIMIT, attempt)
        .await
        .map_err(|_| "connect timed out".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_per_ip_refuses_one_address_and_not_another() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(1, "grant").args(&["--max-clients-per-ip", "2"])).await;
    let one: IpAddr = "127.0.0.1".parse().expect("ip");
    let two: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut held = Vec::new();
    for i in 0..2 {
        let (link, gw) = connect_from(one, serve.addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i} from {one}: {e}"));
        harness::ping(&gw).await.expect("served");
        held.push((link, gw));
    }
    let refused = connect_from(one, serve.addr).await;
    assert!(refused.is_err(), "a third connection from {one} is refused");
    let (link, gw) = connect_from(two, serve.addr)
        .await
        .expect("a connection from another address is accepted");
    harness::ping(&gw).await.expect("served");
    held.push((link, gw));
    assert!(
        serve
            .stderr
            .wait_contains(Duration::from_secs(5), "max-clients-per-ip")
            .await,
        "the refusal is logged"
    );
    // A slot freed is available again.
    let (first, _) = held.remove(0);
    close(&first).await;
    let mut again = Err(String::new());
    let deadline = Instant::now() + CALL_LIMIT;
    while again.is_err() && Instant::now() < deadline {
        again = connect_from(one, serve.addr).await;
        if again.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    again.expect("room again once a connection from it closed");
    for (link, _) in &held {
        close(link).await;
    }
}

/// In `shared` and `reuseport` no controller gates accepts: each node
/// holds itself to its share of `max-clients`. Never more than
/// `max-clients` connections are served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_is_honoured_in_shared_and_reuseport() {
    let _serial = serial().await;
    for balance in ["shared", "reuseport"] {
        let serve = Serve::start(Opts::new(2, balance).args(&["--max-clients", "2"])).await;
        let mut served = Vec::new();
        let mut refused = 0;
        for _ in 0..8 {
            match connect_only(serve.port()).await {
                Ok((link, gw)) => match harness::ping(&gw).await {
                    Ok(node) => served.push((link, gw, node)),
                    Err(_) => refused += 1,
                },
                Err(_) => refused += 1,
            }
        }
        let per_node: std::collections::HashMap<u32, usize> =
            served.iter().fold(Default::default(), |mut m, (_, _, n)| {
                *m.entry(n.0).or_default() += 1;
                m
            });
        println!(
            "[measured] {balance}: {} served {per_node:?}, {refused} refused",
            served.len()
        );
        assert!(
            !served.is_empty() && served.len() <= 2,
            "{balance}: {} connections served at once with max-clients 2",
            served.len()
        );
        assert!(
            per_node.values().all(|&n| n <= 1),
            "{balance}: each of the 2 nodes holds at most 1: {per_node:?}"
        );
        assert_eq!(served.len() + refused, 8);
        for (link, _, _) in &served {
            close(link).await;
        }
    }
}
