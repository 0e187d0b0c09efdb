//! Services defined with `#[vole::service]`, served over in-memory and
//! loopback PLAIN links and called through the generated clients.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::timeout;
use vole::link::publish::Published;
use vole::link::service::Service;
use vole::link::{
    connect, serve, CallContext, CallError, CallFuture, Error, LinkConfig, LinkInfo, LinkSetup,
    Object, ObjectRef, RemoteObject, Value,
};

const LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

/// The calculator of these tests.
///
/// Second paragraph.
struct Calc {
    total: Mutex<i64>,
}

#[vole::service(name = "Calc")]
impl Calc {
    /// Not a method: no receiver.
    fn new() -> Self {
        Calc {
            total: Mutex::new(0),
        }
    }

    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> Result<i64, CallError> {
        a.checked_add(b)
            .ok_or_else(|| CallError::exception("overflow"))
    }

    /// Returns its argument.
    fn echo(&self, value: Value) -> Value {
        value
    }

    /// Greets.
    fn greet(&self, name: String, greeting: Option<String>) -> String {
        format!("{}, {name}", greeting.as_deref().unwrap_or("hello"))
    }

    /// Adds to the total.
    fn accumulate(&self, n: i64) -> Result<(), CallError> {
        let mut t = self
            .total
            .lock()
            .map_err(|_| CallError::failed("poisoned"))?;
        *t += n;
        Ok(())
    }

    /// Sets the total to zero.
    async fn clear(&self) {
        if let Ok(mut t) = self.total.lock() {
            *t = 0;
        }
    }

    /// The total.
    fn total(&self) -> i64 {
        self.total.lock().map(|t| *t).unwrap_or(-1)
    }

    /// Sets the total, one-way.
    #[vole(oneway)]
    fn note(&self, n: i64) {
        if let Ok(mut t) = self.total.lock() {
            *t = n;
        }
    }

    /// Raises.
    fn fail(&self, message: String) -> Result<i64, CallError> {
        Err(CallError::Exception(vec![
            Value::str("boom"),
            Value::str(message),
        ]))
    }

    /// Fails without detail.
    fn internal(&self) -> Result<(), CallError> {
        Err(CallError::failed("a detail only the log sees"))
    }

    /// Mirrors a point.
    fn mirror(&self, p: Point) -> Point {
        Point { x: p.y, y: p.x }
    }

    /// Who is calling.
    fn whoami(&self, tag: String, cx: &CallContext) -> String {
        format!(
            "{tag} node={:?} transport={:?}",
            cx.link().node_id,
            cx.transport()
        )
    }

    /// The context in the middle, by value.
    async fn between(&self, a: i64, cx: CallContext, b: i64) -> String {
        format!("{} {:?}", a + b, cx.link().node_id)
    }

    /// Sums its arguments.
    #[vole(name = "sum")]
    fn sum_all(&self, first: i64, #[vole(rest)] rest: Vec<Value>) -> Result<i64, CallError> {
        let mut total = first;
        for v in rest {
            total += v
                .as_i64()
                .ok_or_else(|| CallError::exception("not an int"))?;
        }
        Ok(total)
    }

    /// Calls `double(n)` on the caller's object, through its typed client.
    async fn call_back(&self, target: RemoteObject, n: i64) -> Result<i64, CallError> {
        Ok(DoublerClient::new(target).double(n).await?)
    }

    /// Calls `double(n)` on any object.
    async fn call_any(&self, target: Arc<dyn Object>, n: i64) -> Result<Value, CallError> {
        target
            .call(
                CallContext::detached(),
                vec![Value::str("double"), Value::Int(n)],
            )
            .await
    }

    /// A new counter, as an object.
    fn counter(&self, start: i64) -> Arc<dyn Object> {
        Counter {
            next: AtomicI64::new(start),
        }
        .into_object()
    }

    /// Hands back the object it gets.
    fn same(&self, object: ObjectRef) -> ObjectRef {
        object
    }

    /// The length of some bytes.
    fn size(&self, data: Vec<u8>) -> usize {
        data.len()
    }

    /// Borrowed results are fine.
    fn label(&self) -> &str {
        "calc"
    }

    #[vole(skip)]
    #[allow(dead_code)]
    fn helper(&self) -> i64 {
        1
    }
}

struct Counter {
    next: AtomicI64,
}

/// Counts.
#[vole::service]
impl Counter {
    /// The next number.
    fn next(&self) -> i64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }
}

struct Doubler;

#[vole::service(doc = "Doubles numbers.", client = "DoublerClient")]
impl Doubler {
    fn double(&self, n: i64) -> i64 {
        n * 2
    }
}

struct Quiet;

#[vole::service(client = false)]
impl Quiet {
    fn hush(&self) {}
}

/// Answers every meta call with an error, as VPy does for unknown ones.
struct VpyLike;

impl Object for VpyLike {
    fn call(self: Arc<Self>, _cx: CallContext, args: Vec<Value>) -> CallFuture {
        let r = match args.first() {
            Some(Value::None) => Err(CallError::failed("unknown meta call")),
            _ => Ok(Value::None),
        };
        Box::pin(std::future::ready(r))
    }
}

/// A link over an in-memory pipe: the client's proxy for `gateway`.
async fn pair(gateway: Arc<dyn Object>, client_gw: Arc<dyn Object>) -> RemoteObject {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let setup = LinkSetup {
            config: LinkConfig {
                hold_peer: false,
                ..LinkConfig::default()
            },
            gateway,
            info: LinkInfo {
                node_id: Some(7),
                transport: Some("PLAIN"),
                ..LinkInfo::default()
            },
        };
        serve(b, setup, |_| {}).await
    });
    let setup = LinkSetup {
        config: LinkConfig::default(),
        gateway: client_gw,
        info: LinkInfo::default(),
    };
    let (_link, remote) = timeout(LIMIT, connect(a, setup))
        .await
        .expect("in time")
        .expect("handshake");
    remote
}

async fn calc() -> CalcClient {
    CalcClient::new(pair(Calc::new().into_object(), Published::new("C").into_object()).await)
}

async fn t<T>(f: impl std::future::Future<Output = T>) -> T {
    timeout(LIMIT, f).await.expect("in time")
}

#[tokio::test]
async fn values_round_trip() {
    let c = calc().await;
    assert_eq!(t(c.add(2, 40)).await.expect("add"), 42);
    assert_eq!(
        t(c.echo(Value::Tuple(vec![Value::Int(1), Value::str("x")])))
            .await
            .expect("echo"),
        Value::Tuple(vec![Value::Int(1), Value::str("x")])
    );
    assert_eq!(
        t(c.greet("ann".into(), None)).await.expect("greet"),
        "hello, ann"
    );
    assert_eq!(
        t(c.greet("bo".into(), Some("hi".into())))
            .await
            .expect("greet"),
        "hi, bo"
    );
    assert_eq!(
        t(c.mirror(Point { x: 1, y: 2 })).await.expect("mirror"),
        Point { x: 2, y: 1 }
    );
    assert_eq!(t(c.size(vec![1, 2, 3])).await.expect("size"), 3);
    assert_eq!(t(c.label()).await.expect("label"), "calc");
    assert_eq!(
        t(c.sum_all(1, vec![Value::Int(2), Value::Int(3)]))
            .await
            .expect("sum"),
        6
    );
    assert_eq!(t(c.sum_all(1, vec![])).await.expect("sum"), 1);
}

#[tokio::test]
async fn void_and_oneway() {
    let c = calc().await;
    t(c.accumulate(5)).await.expect("accumulate");
    t(c.accumulate(6)).await.expect("accumulate");
    assert_eq!(t(c.total()).await.expect("total"), 11);
    t(c.clear()).await.expect("clear");
    assert_eq!(t(c.total()).await.expect("total"), 0);
    t(c.note(99)).await.expect("note");
    // One-way calls run in order with later calls on the same link.
    assert_eq!(t(c.total()).await.expect("total"), 99);
}

#[tokio::test]
async fn errors_reach_the_client() {
    let c = calc().await;
    match t(c.fail("bad".into())).await {
        Err(Error::Exception(args)) => {
            assert_eq!(args, vec![Value::str("boom"), Value::str("bad")])
        }
        other => panic!("expected an exception, got {other:?}"),
    }
    match t(c.add(i64::MAX, 1)).await {
        Err(Error::Exception(args)) => assert_eq!(args, vec![Value::str("overflow")]),
        other => panic!("expected an exception, got {other:?}"),
    }
    assert!(matches!(t(c.internal()).await, Err(Error::CallError)));
    // The link is still up.
    assert_eq!(t(c.add(1, 1)).await.expect("add"), 2);
}

#[tokio::test]
async fn wrong_arguments_are_call_errors() {
    let c = calc().await;
    let r = c.remote();
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("add", vec![Value::str("x"), Value::Int(1)]),
        ("add", vec![Value::Int(1)]),
        ("add", vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
        ("total", vec![Value::Int(1)]),
        ("sum", vec![]),
        ("mirror", vec![Value::str("not a point")]),
        ("call_back", vec![Value::Int(1), Value::Int(2)]),
        ("same", vec![Value::Int(1)]),
        ("helper", vec![]),
        ("new", vec![]),
        ("no_such_method", vec![]),
    ];
    for (method, args) in cases {
        match t(r.call(method, args)).await {
            Err(Error::CallError) => {}
            other => panic!("{method}: expected a call error, got {other:?}"),
        }
    }
    assert_eq!(t(c.add(1, 2)).await.expect("add"), 3);
}

#[tokio::test]
async fn meta_methods_doc_signature() {
    let c = calc().await;
    let r = c.remote();
    let methods = t(r.meta_methods()).await.expect("methods");
    assert_eq!(
        methods,
        [
            "accumulate",
            "add",
            "between",
            "call_any",
            "call_back",
            "clear",
            "counter",
            "echo",
            "fail",
            "greet",
            "internal",
            "label",
            "mirror",
            "note",
            "same",
            "size",
            "sum",
            "total",
            "whoami"
        ]
    );
    assert_eq!(t(r.meta_doc(None)).await.expect("doc"), None);
    assert_eq!(
        t(r.meta_doc(Some("add"))).await.expect("doc").as_deref(),
        Some("Adds two numbers.")
    );
    let sig = |m: &'static str| async move { t(r.meta_signature(m)).await.expect("signature") };
    let cases = [
        ("add", "add(a: int, b: int) -> int"),
        ("echo", "echo(value: any) -> any"),
        ("greet", "greet(name: str, greeting: str|none) -> str"),
        ("accumulate", "accumulate(n: int) -> none"),
        ("clear", "clear() -> none"),
        ("note", "note(n: int) -> none"),
        ("mirror", "mirror(p: any) -> any"),
        ("whoami", "whoami(tag: str) -> str"),
        ("between", "between(a: int, b: int) -> str"),
        ("sum", "sum(first: int, *rest: any) -> int"),
        ("call_back", "call_back(target: object, n: int) -> int"),
        ("call_any", "call_any(target: object, n: int) -> any"),
        ("counter", "counter(start: int) -> object"),
        ("same", "same(object: object) -> object"),
        ("size", "size(data: bytes) -> int"),
        ("label", "label() -> str"),
    ];
    for (m, want) in cases {
        assert_eq!(sig(m).await.as_deref(), Some(want), "{m}");
    }
    assert_eq!(sig("no_such_method").await, None);

    // The object doc comes from the impl block, or from `doc = ...`.
    let counter = pair(
        Counter {
            next: AtomicI64::new(0),
        }
        .into_object(),
        Published::new("C").into_object(),
    )
    .await;
    assert_eq!(
        t(counter.meta_doc(None)).await.expect("doc").as_deref(),
        Some("Counts.")
    );
    let doubler = pair(Doubler.into_object(), Published::new("C").into_object()).await;
    assert_eq!(
        t(doubler.meta_doc(None)).await.expect("doc").as_deref(),
        Some("Doubles numbers.")
    );
    assert_eq!(
        t(doubler.meta_doc(Some("double"))).await.expect("doc"),
        None
    );
    assert_eq!(Calc::NAME, "Calc");
    assert_eq!(Counter::NAME, "Counter");
    assert_eq!(Quiet.into_object().type_name(), "Quiet");
}

#[tokio::test]
async fn signature_is_optional() {
    // A VPy-style peer answers meta.signature with an error.
    let vpy = pair(Arc::new(VpyLike), Published::new("C").into_object()).await;
    assert_eq!(
        t(vpy.meta_signature("anything")).await.expect("no error"),
        None
    );
    // A Published method without a signature answers None.
    async fn f((): ()) -> Result<(), CallError> {
        Ok(())
    }
    let plain = pair(
        Published::new("P").method("f", "", f).into_object(),
        Published::new("C").into_object(),
    )
    .await;
    assert_eq!(t(plain.meta_signature("f")).await.expect("no error"), None);
}

#[tokio::test]
async fn call_context() {
    let c = calc().await;
    assert_eq!(
        t(c.whoami("me".into())).await.expect("whoami"),
        "me node=Some(7) transport=Some(\"PLAIN\")"
    );
    assert_eq!(t(c.between(1, 2)).await.expect("between"), "3 Some(7)");
}

#[tokio::test]
async fn callback_objects() {
    let c = calc().await;
    // A service passed as a callback, called through its typed client.
    assert_eq!(t(c.call_back(Doubler, 21)).await.expect("call_back"), 42);
    // An Arc<dyn Object>, called as any object.
    assert_eq!(
        t(c.call_any(Doubler.into_object(), 4))
            .await
            .expect("call_any"),
        Value::Int(8)
    );
    // A RemoteObject passed back to its own side is the peer's own object.
    let counter = t(c.counter(10)).await.expect("counter");
    let back = t(c.same(counter.clone())).await.expect("same");
    assert_eq!(back, ObjectRef::Remote(counter));
}

#[tokio::test]
async fn returned_objects() {
    let c = calc().await;
    let counter = CounterClient::new(t(c.counter(5)).await.expect("counter"));
    assert_eq!(t(counter.next()).await.expect("next"), 5);
    assert_eq!(t(counter.next()).await.expect("next"), 6);
    let other = CounterClient::new(t(c.counter(0)).await.expect("counter"));
    assert_eq!(t(other.next()).await.expect("next"), 0);
    assert_eq!(
        t(counter.remote().meta_doc(None))
            .await
            .expect("doc")
            .as_deref(),
        Some("Counts.")
    );
}

#[tokio::test]
async fn resolve_over_loopback_plain() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = vole::link::router::Router::new(Calc::new().publish())
        .route(["counter"], |_| {
            Counter {
                next: AtomicI64::new(100),
            }
            .into_object()
        })
        .into_object();
    let service = vole::serve_plain(Arc::new(move |_| router.clone()));
    tokio::spawn(async move { service.run(listener).await });
    let config = vole::link::resolve::ClientConfig::plain();
    let calc = t(CalcClient::resolve(
        &format!("vop://127.0.0.1:{port}/"),
        &config,
    ))
    .await
    .expect("resolve");
    assert_eq!(t(calc.add(20, 22)).await.expect("add"), 42);
    assert!(t(calc.whoami("x".into()))
        .await
        .expect("whoami")
        .ends_with("transport=Some(\"PLAIN\")"));
    let counter = t(CounterClient::resolve(
        &format!("vop://127.0.0.1:{port}/counter/"),
        &config,
    ))
    .await
    .expect("resolve");
    assert_eq!(t(counter.next()).await.expect("next"), 100);
    assert_eq!(
        t(counter.remote().meta_signature("next"))
            .await
            .expect("sig")
            .as_deref(),
        Some("next() -> int")
    );
}

#[test]
fn publish_can_be_extended() {
    async fn extra((): ()) -> Result<i64, CallError> {
        Ok(1)
    }
    let published = Doubler.publish().method("extra", "", extra);
    let names: Vec<&str> = published.method_names().collect();
    assert_eq!(names, ["double", "extra"]);
}

#[tokio::test]
async fn demo_gateway_and_its_typed_clients() {
    let gw = pair(vole::demo::gateway(), Published::new("C").into_object()).await;
    let demo = vole::demo::DemoGatewayClient::new(gw.clone());
    assert_eq!(
        t(demo.echo(Value::str("hi"))).await.expect("echo"),
        Value::str("hi")
    );
    assert_eq!(t(demo.sleep(1)).await.expect("sleep"), 1);
    match t(demo.raise_exception(vec![Value::str("boom"), Value::Int(42)])).await {
        Err(Error::Exception(args)) => assert_eq!(args, [Value::str("boom"), Value::Int(42)]),
        other => panic!("expected an exception, got {other:?}"),
    }
    assert_eq!(
        t(demo.invoke(Doubler, "double".into(), vec![Value::Int(4)]))
            .await
            .expect("invoke"),
        Value::Int(8)
    );
    assert_eq!(
        t(gw.meta_methods()).await.expect("methods"),
        [
            "consume",
            "consumed",
            "echo",
            "invoke",
            "raise_exception",
            "sleep",
            "urlget",
            "whoami"
        ]
    );
    // Over a duplex pipe: PLAIN (as the link was told), no address, no
    // identity, no balancer.
    assert_eq!(
        t(demo.whoami()).await.expect("whoami"),
        (Some("PLAIN".to_owned()), None, None, None)
    );
    assert_eq!(
        t(gw.meta_signature("invoke"))
            .await
            .expect("sig")
            .as_deref(),
        Some("invoke(object: object, method: str, *args: any) -> any")
    );
    assert_eq!(t(gw.meta_signature("urlget")).await.expect("sig"), None);
    let adder = t(vole::link::resolve::resolve_relative(&gw, "/math/adder/"))
        .await
        .expect("resolve");
    let Value::Ref(ObjectRef::Remote(adder)) = adder else {
        panic!("not an object: {adder:?}");
    };
    let adder = vole::demo::AdderClient::new(adder);
    t(adder.add(Value::Int(2))).await.expect("add");
    assert_eq!(
        t(adder.add(Value::Int(3))).await.expect("add"),
        Value::Int(5)
    );
    t(adder.reset()).await.expect("reset");
    assert_eq!(t(adder.result()).await.expect("result"), Value::Int(0));
}

/// The macro's `crate = "..."`: generated code names only `<path>::link`.
mod renamed {
    pub mod facade {
        pub use vole::link;
    }

    pub struct Maker;

    /// Makes counters.
    #[vole::service(crate = "crate::renamed::facade", client = "MakerProxy")]
    impl Maker {
        /// A counter starting at `start`, if it is not negative.
        pub fn make(
            &self,
            start: i64,
        ) -> Result<std::sync::Arc<dyn link::Object>, link::CallError> {
            if start < 0 {
                return Err(link::CallError::exception("negative"));
            }
            Ok(super::Counter {
                next: super::AtomicI64::new(start),
            }
            .into_object())
        }
    }

    use facade::link;
}

#[tokio::test]
async fn crate_path_and_fallible_object_results() {
    let maker = renamed::MakerProxy::new(
        pair(
            renamed::Maker.into_object(),
            Published::new("C").into_object(),
        )
        .await,
    );
    let counter = CounterClient::new(t(maker.make(3)).await.expect("make"));
    assert_eq!(t(counter.next()).await.expect("next"), 3);
    assert!(matches!(t(maker.make(-1)).await, Err(Error::Exception(_))));
    assert_eq!(
        t(maker.remote().meta_signature("make"))
            .await
            .expect("sig")
            .as_deref(),
        Some("make(start: int) -> object")
    );
}

/// A service whose method takes its time, and reports whether its
/// handler is still around and whether it saw the cancellation.
#[derive(Default)]
struct Napper {
    running: Arc<AtomicI64>,
    dropped: Arc<tokio::sync::Notify>,
}

/// Decrements the running count when the handler is dropped.
struct Running(Arc<AtomicI64>, Arc<tokio::sync::Notify>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.notify_one();
    }
}

#[vole::service(name = "Napper")]
impl Napper {
    /// Sleeps `ms` milliseconds, unless the call is cancelled first.
    async fn nap(&self, ms: i64, cx: &CallContext) -> Result<bool, CallError> {
        self.running.fetch_add(1, Ordering::SeqCst);
        let _running = Running(self.running.clone(), self.dropped.clone());
        let was_cancelled = cx.is_cancelled();
        tokio::time::sleep(Duration::from_millis(ms.max(0) as u64)).await;
        Ok(was_cancelled)
    }
}

/// A typed client's deadline: the call fails with `DeadlineExceeded`
/// naming the method, the service's handler is dropped, and calls without
/// a deadline (another clone of the client) are unaffected.
#[tokio::test]
async fn typed_clients_take_a_deadline() {
    let napper = Napper::default();
    let (running, dropped) = (napper.running.clone(), napper.dropped.clone());
    let remote = pair(napper.into_object(), Published::new("C").into_object()).await;
    let plain = NapperClient::new(remote);
    let hasty = plain.clone().with_timeout(Duration::from_millis(100));
    match t(hasty.nap(60_000)).await {
        Err(Error::DeadlineExceeded { method, timeout }) => {
            assert_eq!(method, "nap");
            assert_eq!(timeout, Duration::from_millis(100));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    // The handler is dropped once the cancel arrives.
    t(async {
        while running.load(Ordering::SeqCst) != 0 {
            dropped.notified().await;
        }
    })
    .await;
    // A short nap within the deadline, and one with no deadline.
    assert!(!t(hasty.nap(1)).await.expect("in time"));
    assert!(!t(plain.nap(150)).await.expect("no deadline"));
}

/// Remembers a login per link, in the link's session.
struct Desk;

struct Login(String);

#[vole::service(name = "Desk")]
impl Desk {
    /// Logs in for the rest of the link.
    fn login(&self, user: String, cx: &CallContext) -> bool {
        cx.session().insert(Login(user)).is_none()
    }

    /// Who logged in on this link.
    fn who(&self, cx: &CallContext) -> Option<String> {
        cx.session().get::<Login>().map(|l| l.0.clone())
    }
}

#[tokio::test]
async fn calls_on_one_link_share_its_session_and_other_links_do_not() {
    let desk: Arc<dyn Object> = Desk.into_object();
    let one = DeskClient::new(pair(desk.clone(), Published::new("C").into_object()).await);
    let other = DeskClient::new(pair(desk, Published::new("C").into_object()).await);
    assert_eq!(t(one.who()).await.expect("who"), None);
    assert!(t(one.login("ann".to_owned())).await.expect("login"));
    assert_eq!(t(one.who()).await.expect("who"), Some("ann".to_owned()));
    assert!(!t(one.login("bo".to_owned())).await.expect("login again"));
    assert_eq!(t(one.who()).await.expect("who"), Some("bo".to_owned()));
    assert_eq!(t(other.who()).await.expect("who"), None, "another link");
}
