//! Links over in-memory pipes: handshake, calls, errors, references, close.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;
use vole_link::publish::Published;
use vole_link::{
    connect, serve, CallError, Closed, Error, Link, LinkConfig, LinkInfo, LinkSetup, Object,
    RemoteObject, Value,
};

const LIMIT: Duration = Duration::from_secs(10);

async fn echo((v,): (Value,)) -> Result<Value, CallError> {
    Ok(v)
}

async fn fail((v,): (Value,)) -> Result<Value, CallError> {
    Err(CallError::Exception(vec![Value::str("boom"), v]))
}

async fn sleep_then((ms, v): (Value, Value)) -> Result<Value, CallError> {
    let ms = ms.as_i64().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms as u64)).await;
    Ok(v)
}

/// Calls method `args[1]` on the object `args[0]` with the remaining
/// arguments and returns its result: lets the client test callbacks.
async fn invoke(args: Vec<Value>) -> Result<Value, CallError> {
    let mut it = args.into_iter();
    let (Some(Value::Ref(target)), Some(Value::Str(method))) = (it.next(), it.next()) else {
        return Err(CallError::failed("invoke(object, method, args...)"));
    };
    let remote = target
        .as_remote()
        .cloned()
        .ok_or_else(|| CallError::failed("not a remote object"))?;
    Ok(remote.call(&method, it.collect::<Vec<_>>()).await?)
}

/// A method name longer than the link reads in place.
const LONG_NAME: &str = "a_method_name_longer_than_the_link_keeps_inline_for_dispatch";

fn server_gateway() -> Arc<dyn Object> {
    Published::new("TestGateway")
        .doc("test gateway")
        .method("echo", "echoes", echo)
        .method("fail", "raises", fail)
        .method("sleep_then", "", sleep_then)
        .method("invoke", "", invoke)
        .method(LONG_NAME, "", echo)
        .into_object()
}

struct Pair {
    client: RemoteObject,
    client_link: Link,
    server: tokio::task::JoinHandle<Closed>,
}

async fn pair_with(client_gw: Arc<dyn Object>) -> Pair {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let setup = LinkSetup {
            config: LinkConfig {
                hold_peer: false,
                ..LinkConfig::default()
            },
            gateway: server_gateway(),
            info: LinkInfo::default(),
        };
        serve(b, setup, |_| {}).await
    });
    let setup = LinkSetup {
        config: LinkConfig::default(),
        gateway: client_gw,
        info: LinkInfo::default(),
    };
    let (client_link, client) = timeout(LIMIT, connect(a, setup))
        .await
        .expect("in time")
        .expect("handshake");
    Pair {
        client,
        client_link,
        server,
    }
}

async fn pair() -> Pair {
    pair_with(Published::new("ClientGateway").into_object()).await
}

#[tokio::test]
async fn echo_round_trip() {
    let p = pair().await;
    let v = timeout(LIMIT, p.client.call("echo", vec![Value::str("hello")]))
        .await
        .expect("in time")
        .expect("call");
    assert_eq!(v, Value::str("hello"));
    let nested = Value::Tuple(vec![
        Value::Int(1),
        Value::Tuple(vec![Value::Bool(true), Value::None]),
    ]);
    let v = p
        .client
        .call("echo", vec![nested.clone()])
        .await
        .expect("call");
    assert_eq!(v, nested);
}

#[tokio::test]
async fn exceptions_and_unknown_methods_keep_the_link_up() {
    let p = pair().await;
    match p.client.call("fail", vec![Value::Int(42)]).await {
        Err(Error::Exception(args)) => assert_eq!(args, vec![Value::str("boom"), Value::Int(42)]),
        other => panic!("expected an exception, got {other:?}"),
    }
    match p.client.call("nope", ()).await {
        Err(Error::CallError) => {}
        other => panic!("expected a call error, got {other:?}"),
    }
    match p.client.call("echo", ()).await {
        Err(Error::CallError) => {}
        other => panic!("wrong arity must be a call error, got {other:?}"),
    }
    assert_eq!(
        p.client
            .call("echo", vec![Value::Int(7)])
            .await
            .expect("still up"),
        Value::Int(7)
    );
}

#[tokio::test]
async fn many_calls_in_flight_complete_out_of_order() {
    let p = pair().await;
    let mut calls = Vec::new();
    for i in 0..64i64 {
        let c = p.client.clone();
        calls.push(tokio::spawn(async move {
            let delay = (64 - i) % 7 * 5;
            c.call("sleep_then", vec![Value::Int(delay), Value::Int(i)])
                .await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let v = timeout(LIMIT, call)
            .await
            .expect("in time")
            .expect("join")
            .expect("call");
        assert_eq!(v, Value::Int(i as i64));
    }
}

#[tokio::test]
async fn the_server_can_call_back_into_client_objects() {
    let p = pair().await;
    let callback = Published::new("Callback").method("twice", "", |(v,): (Value,)| async move {
        let n = v
            .as_i64()
            .ok_or_else(|| CallError::failed("int expected"))?;
        Ok::<_, CallError>(Value::Int(n * 2))
    });
    let obj = Value::Ref(vole_link::ObjectRef::local(callback.into_object()));
    let v = timeout(
        LIMIT,
        p.client
            .call("invoke", vec![obj, Value::str("twice"), Value::Int(21)]),
    )
    .await
    .expect("in time")
    .expect("callback");
    assert_eq!(v, Value::Int(42));
}

#[tokio::test]
async fn dropping_every_reference_closes_both_sides() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("vole_link=trace")
        .with_test_writer()
        .try_init();
    let p = pair().await;
    assert_eq!(
        p.client
            .call("echo", vec![Value::Int(1)])
            .await
            .expect("call"),
        Value::Int(1)
    );
    let link = p.client_link.clone();
    drop(p.client);
    drop(p.client_link);
    let reason = timeout(LIMIT, link.closed())
        .await
        .expect("client side closes");
    assert!(!reason.is_empty());
    let closed = timeout(LIMIT, p.server)
        .await
        .expect("server side closes")
        .expect("join");
    assert!(closed.clean, "{closed:?}");
}

#[tokio::test]
async fn abort_fails_pending_calls() {
    let p = pair().await;
    let c = p.client.clone();
    let pending = tokio::spawn(async move {
        c.call("sleep_then", vec![Value::Int(5_000), Value::None])
            .await
    });
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    p.client_link.abort();
    match timeout(LIMIT, pending)
        .await
        .expect("in time")
        .expect("join")
    {
        // Sent and running when the link went: it may have run.
        Err(e @ Error::Interrupted(_)) => assert!(!e.never_ran()),
        other => panic!("expected interrupted, got {other:?}"),
    }
    // Made after the close: never sent, so never run.
    match p.client.call("echo", vec![Value::None]).await {
        Err(e @ Error::Closed(_)) => assert!(e.never_ran()),
        other => panic!("expected closed, got {other:?}"),
    }
}

#[tokio::test]
async fn graceful_close_lets_running_calls_finish() {
    let p = pair().await;
    let c = p.client.clone();
    let pending = tokio::spawn(async move {
        c.call("sleep_then", vec![Value::Int(100), Value::str("done")])
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    timeout(LIMIT, p.client_link.close())
        .await
        .expect("closes in time");
    let v = timeout(LIMIT, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect("completed");
    assert_eq!(v, Value::str("done"));
}

/// A pipeline returns every outcome once, with its call's ticket, in the
/// order outcomes arrive (not the order of the calls). Virtual time: the
/// sleeps end in a fixed order however loaded the machine is.
#[tokio::test(start_paused = true)]
async fn a_pipeline_returns_each_outcome_with_its_ticket_as_it_arrives() {
    let p = pair().await;
    let mut pipe = p.client.pipeline();
    // Later calls sleep less, so they finish first.
    let mut expected = Vec::new();
    for i in 0..8i64 {
        let ms = Value::Int(80 - i * 10);
        let t = timeout(LIMIT, pipe.call("sleep_then", (ms, Value::Int(i))))
            .await
            .expect("queued in time")
            .expect("queued");
        assert_eq!(t, i as u64, "tickets count from 0");
        expected.push(t);
    }
    // An exception and an unknown method come back as outcomes too.
    let t_fail = pipe.call("fail", (Value::Int(9),)).await.expect("queued");
    let t_nope = pipe.call("nope", ()).await.expect("queued");
    assert_eq!(pipe.outstanding(), 10);
    let mut order = Vec::new();
    while let Some((ticket, outcome)) = timeout(LIMIT, pipe.next()).await.expect("in time") {
        match ticket {
            t if t == t_fail => assert!(matches!(outcome, Err(Error::Exception(_))), "{outcome:?}"),
            t if t == t_nope => assert!(matches!(outcome, Err(Error::CallError)), "{outcome:?}"),
            t => {
                assert_eq!(outcome.expect("echoed"), Value::Int(t as i64));
                order.push(t);
            }
        }
    }
    assert_eq!(pipe.outstanding(), 0);
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(order, reversed, "outcomes in the order they arrived");
    // Nothing outstanding: next() ends at once.
    assert!(pipe.next().await.is_none());
}

/// `try_next` never waits: nothing before an outcome has arrived, then the
/// outcomes that arrived together with the one `next` returned, each once.
#[tokio::test(start_paused = true)]
async fn try_next_takes_only_outcomes_already_there() {
    let p = pair().await;
    let mut pipe = p.client.pipeline();
    assert!(pipe.try_next().is_none(), "nothing queued");
    // Three calls that finish together, and one much later.
    for i in 0..3i64 {
        pipe.call("sleep_then", (Value::Int(10), Value::Int(i)))
            .await
            .expect("queued");
    }
    let late = pipe
        .call("sleep_then", (Value::Int(5_000), Value::Int(9)))
        .await
        .expect("queued");
    assert!(pipe.try_next().is_none(), "no outcome has arrived yet");
    assert_eq!(pipe.outstanding(), 4);
    let (first, outcome) = timeout(LIMIT, pipe.next())
        .await
        .expect("in time")
        .expect("an outcome");
    assert_eq!(outcome.expect("echoed"), Value::Int(first as i64));
    // The other two arrive at the same virtual instant; give the driver
    // the turn it needs to hand them over, without moving the clock.
    let mut seen = vec![first];
    for _ in 0..100 {
        if let Some((t, outcome)) = pipe.try_next() {
            assert_eq!(outcome.expect("echoed"), Value::Int(t as i64));
            seen.push(t);
        }
        if seen.len() == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(pipe.outstanding(), 1);
    assert!(pipe.try_next().is_none(), "the late call is not done");
    let (t, outcome) = timeout(LIMIT, pipe.next())
        .await
        .expect("in time")
        .expect("the late outcome");
    assert_eq!((t, outcome.expect("echoed")), (late, Value::Int(9)));
    assert!(pipe.try_next().is_none(), "nothing outstanding");
}

/// When the link closes, every call queued on a pipeline still gets an
/// outcome (an error); none is lost and next() then ends.
#[tokio::test]
async fn a_closed_link_fails_every_pipelined_call() {
    let p = pair().await;
    let mut pipe = p.client.pipeline();
    for _ in 0..5 {
        pipe.call("sleep_then", (Value::Int(60_000), Value::None))
            .await
            .expect("queued");
    }
    p.client_link.abort();
    let mut outcomes = 0;
    while let Some((_, outcome)) = timeout(LIMIT, pipe.next()).await.expect("in time") {
        // Sent or still queued when the link went.
        assert!(
            matches!(outcome, Err(Error::Closed(_) | Error::Interrupted(_))),
            "{outcome:?}"
        );
        outcomes += 1;
    }
    assert_eq!(outcomes, 5);
    // Calls after the close fail at once.
    assert!(matches!(
        pipe.call("echo", (1,)).await,
        Err(Error::Closed(_))
    ));
}

/// A pipeline dropped with calls in flight leaves the link working: the
/// outcomes that arrive later are discarded.
#[tokio::test]
async fn dropping_a_pipeline_with_calls_in_flight_is_harmless() {
    let p = pair().await;
    {
        let mut pipe = p.client.pipeline();
        for i in 0..4i64 {
            pipe.call("sleep_then", (Value::Int(20), Value::Int(i)))
                .await
                .expect("queued");
        }
    }
    // The link still serves calls, and a new pipeline works.
    let mut pipe = p.client.pipeline();
    pipe.call("echo", (7,)).await.expect("queued");
    let (_, outcome) = timeout(LIMIT, pipe.next())
        .await
        .expect("in time")
        .expect("an outcome");
    assert_eq!(outcome.expect("echo"), Value::Int(7));
    let v = timeout(
        LIMIT,
        p.client.call("sleep_then", (Value::Int(40), Value::Int(3))),
    )
    .await
    .expect("in time")
    .expect("call after the dropped pipeline's calls finished");
    assert_eq!(v, Value::Int(3));
}

/// Method names of any length reach their method, and meta calls still work.
#[tokio::test]
async fn long_method_names_and_meta_calls_dispatch() {
    let p = pair().await;
    let v = timeout(LIMIT, p.client.call(LONG_NAME, (5,)))
        .await
        .expect("in time")
        .expect("call");
    assert_eq!(v, Value::Int(5));
    let methods = p.client.meta_methods().await.expect("meta.methods()");
    assert!(methods.iter().any(|m| m == LONG_NAME), "{methods:?}");
    match p.client.call("no_such_method", ()).await {
        Err(Error::CallError) => {}
        other => panic!("expected a call error, got {other:?}"),
    }
}
