//! Admission and buffer budgets, over in-memory pipes on a paused tokio
//! clock: `max_inflight` with each [`Overload`] mode, the per-link buffer
//! limit and the shared budget.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;
use crate::budget::Budget;
use crate::model::Value;
use crate::publish::Published;

const LIMIT: Duration = Duration::from_secs(10);

/// A server gateway with `hold(data)`, which returns once the gate gives
/// it a permit, and `echo(x)`.
fn gateway(gate: Arc<Semaphore>) -> Arc<dyn Object> {
    Published::new("Server")
        .method_raw("hold", "", move |_, _, args| {
            let gate = gate.clone();
            Box::pin(async move {
                let _args = args; // held while the call runs
                gate.acquire().await.map(|p| p.forget()).ok();
                Ok(Value::None)
            })
        })
        .method_raw("echo", "", |_, _, args| {
            Box::pin(async move { Ok(args.into_iter().next().unwrap_or(Value::None)) })
        })
        .into_object()
}

/// A client link to a server link with `config` serving [`gateway`].
async fn client(
    server_config: LinkConfig,
    gate: Arc<Semaphore>,
) -> (Link, RemoteObject, Link, JoinHandle<Closed>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: false,
            ..server_config
        },
        gateway: gateway(gate),
        info: LinkInfo::default(),
    };
    let server = tokio::spawn(serve(b, setup, move |link| {
        let _ = tx.send(link);
    }));
    let setup = LinkSetup {
        config: LinkConfig::default(),
        gateway: Published::new("Client").into_object(),
        info: LinkInfo::default(),
    };
    let (link, gw) = timeout(LIMIT, connect(a, setup))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let server_link = rx.await.expect("server link");
    (link, gw, server_link, server)
}

/// Waits (on the paused clock) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_hold(gw: &RemoteObject, bytes: usize) -> JoinHandle<Result<Value, Error>> {
    let gw = gw.clone();
    tokio::spawn(async move { gw.call("hold", (Value::Bytes(vec![7u8; bytes]),)).await })
}

#[tokio::test(start_paused = true)]
async fn with_refuse_the_call_past_max_inflight_is_refused_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let config = LinkConfig {
        max_inflight: 2,
        overload: Overload::Refuse,
        ..LinkConfig::default()
    };
    let (_link, gw, server, _task) = client(config, gate.clone()).await;
    let held = [spawn_hold(&gw, 10), spawn_hold(&gw, 10)];
    until("two calls run", || server.stats().inflight() == 2).await;

    let started = Instant::now();
    match timeout(LIMIT, gw.call("echo", (1,)))
        .await
        .expect("answered")
    {
        Err(Error::Overloaded(reason)) => {
            assert!(reason.contains("max-inflight"), "{reason}")
        }
        other => panic!("expected an overload refusal, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::ZERO, "refused at once");
    // A one-way call past the limit is dropped and counted.
    gw.call_oneway("echo", (2,)).await.expect("sent");
    until("the one-way call is counted", || {
        server.stats().refused_overload.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(server.stats().inflight(), 2, "neither refused call ran");

    // Room again: calls run.
    gate.add_permits(2);
    for h in held {
        h.await.expect("task").expect("held call completes");
    }
    let v = timeout(LIMIT, gw.call("echo", (3,)))
        .await
        .expect("in time")
        .expect("runs once there is room");
    assert_eq!(v, Value::Int(3));
}

#[tokio::test(start_paused = true)]
async fn with_wait_the_call_past_max_inflight_waits_for_room() {
    let gate = Arc::new(Semaphore::new(0));
    let config = LinkConfig {
        max_inflight: 2,
        ..LinkConfig::default()
    };
    let (_link, gw, server, _task) = client(config, gate.clone()).await;
    let _held = [spawn_hold(&gw, 10), spawn_hold(&gw, 10)];
    until("two calls run", || server.stats().inflight() == 2).await;
    let third = {
        let gw = gw.clone();
        tokio::spawn(async move { gw.call("echo", (1,)).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!third.is_finished(), "the third call waits");
    assert_eq!(server.stats().calls_in.load(Ordering::Relaxed), 2);
    gate.add_permits(1);
    let v = timeout(LIMIT, third)
        .await
        .expect("in time")
        .expect("task")
        .expect("the third call runs once one finished");
    assert_eq!(v, Value::Int(1));
    assert_eq!(server.stats().refused_overload.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_link_over_its_buffer_limit_reads_no_more_until_calls_finish() {
    let gate = Arc::new(Semaphore::new(0));
    let limit = 2 << 20;
    let config = LinkConfig {
        max_buffered: limit,
        ..LinkConfig::default()
    };
    let (_link, gw, server, _task) = client(config, gate.clone()).await;
    let calls: Vec<_> = (0..8).map(|_| spawn_hold(&gw, 600 * 1024)).collect();
    until("a call runs", || server.stats().inflight() >= 1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let read = server.stats().calls_in.load(Ordering::Relaxed);
    assert!(
        (1..8).contains(&read),
        "{read} calls read: reading stopped over the limit"
    );
    let held = server.stats().buffered.load(Ordering::Relaxed) as usize;
    // It stopped where the next message would not fit.
    assert!(held + 600 * 1024 >= limit, "{held} bytes held");
    assert!(held <= limit, "{held} bytes held: reading stopped");
    gate.add_permits(8);
    for c in calls {
        timeout(LIMIT, c)
            .await
            .expect("in time")
            .expect("task")
            .expect("every call completes");
    }
    until("nothing held", || {
        server.stats().buffered.load(Ordering::Relaxed) < 64 * 1024
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn over_the_shared_budget_the_link_holding_most_pauses_and_a_small_one_goes_on() {
    let gate = Arc::new(Semaphore::new(0));
    let budget = Arc::new(Budget::new(3 << 20));
    let config = LinkConfig {
        budget: Some(budget.clone()),
        ..LinkConfig::default()
    };
    let (_l1, flood, flooder, _t1) = client(config.clone(), gate.clone()).await;
    let (_l2, witness, _, _t2) = client(config, gate.clone()).await;
    let calls: Vec<_> = (0..8).map(|_| spawn_hold(&flood, 1 << 20)).collect();
    until("the flooder pauses on the budget", || budget.pauses() > 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let read = flooder.stats().calls_in.load(Ordering::Relaxed);
    assert!(read < 8, "the flooder stopped reading ({read} calls read)");
    assert!(budget.pauses() > 0);
    assert!(
        budget.used() <= (3 << 20) + crate::budget::READ_LIMIT,
        "{} bytes held",
        budget.used()
    );
    // The witness, holding little, is not paused.
    for i in 0..20 {
        let v = timeout(Duration::from_millis(100), witness.call("echo", (i,)))
            .await
            .expect("the witness is served at once")
            .expect("echo");
        assert_eq!(v, Value::Int(i));
    }
    gate.add_permits(8);
    for c in calls {
        timeout(LIMIT, c)
            .await
            .expect("in time")
            .expect("task")
            .expect("every flooding call completes in the end");
    }
    until("the budget is released", || budget.used() < 256 * 1024).await;
}
