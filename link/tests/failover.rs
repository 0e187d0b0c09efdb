//! The failover client against real sockets: hosts that close, die or
//! freeze under calls, and what is tried again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::timeout;
use vole_link::failover::{Failover, FailoverConfig, Retry};
use vole_link::pool::Pool;
use vole_link::publish::Published;
use vole_link::resolve::ClientConfig;
use vole_link::{serve, CallError, Error, Link, LinkConfig, LinkInfo, LinkSetup, Value};
use vole_transport::stream::{accept, ServerSettings};
use vole_transport::vop::ServerPolicy;

const LIMIT: Duration = Duration::from_secs(20);

/// One service host on loopback: its links, the calls it ran, and a way to
/// stop it as a drain or as a crash.
struct Host {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    ran: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Host {
    async fn start() -> Host {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let ran = Arc::new(AtomicU64::new(0));
        let (l2, r2) = (links.clone(), ran.clone());
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (links, ran) = (l2.clone(), r2.clone());
                tokio::spawn(async move {
                    let settings = ServerSettings {
                        transports: ServerPolicy::new(false, true),
                        tls: None,
                        vts: None,
                        handshake_timeout: Duration::from_secs(5),
                    };
                    let Ok((conn, info)) = accept(tcp, &settings).await else {
                        return;
                    };
                    let (r_echo, r_slow) = (ran.clone(), ran.clone());
                    let gateway = Published::new("G")
                        .method("echo", "", move |(v,): (Value,)| {
                            let ran = r_echo.clone();
                            async move {
                                ran.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, CallError>(v)
                            }
                        })
                        .method("slow", "", move |(ms, v): (i64, Value)| {
                            let ran = r_slow.clone();
                            async move {
                                ran.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(ms as u64)).await;
                                Ok::<_, CallError>(v)
                            }
                        })
                        .into_object();
                    let setup = LinkSetup {
                        config: LinkConfig {
                            hold_peer: false,
                            ..LinkConfig::default()
                        },
                        gateway,
                        info: LinkInfo::from_conn(&info),
                    };
                    let _ = serve(conn, setup, move |link| {
                        links.lock().expect("lock").push(link);
                    })
                    .await;
                });
            }
        });
        Host {
            addr,
            links,
            ran,
            accept,
        }
    }

    fn links(&self) -> Vec<Link> {
        self.links.lock().expect("lock").clone()
    }

    /// Stops accepting and drains every link: calls still arriving are
    /// refused as closing.
    fn drain(&self) {
        self.accept.abort();
        for link in self.links() {
            tokio::spawn(async move { link.close().await });
        }
    }

    /// Stops accepting and cuts every link, as a crash does.
    fn kill(&self) {
        self.accept.abort();
        for link in self.links() {
            link.abort();
        }
    }
}

fn failover(hosts: &[&Host], config: FailoverConfig) -> Failover {
    let pool = Pool::with_addrs(
        "127.0.0.1",
        hosts.iter().map(|h| h.addr),
        ClientConfig::plain(),
    );
    Failover::new(Arc::new(pool), config)
}

/// A host that drains under a stream of calls: every call succeeds, the
/// refused ones tried again on the other host, none run twice.
#[tokio::test]
async fn a_draining_host_loses_no_call() {
    timeout(LIMIT, async {
        let (a, b) = (Host::start().await, Host::start().await);
        let f = Arc::new(failover(&[&a, &b], FailoverConfig::default()));
        // The first link goes to a.
        let first = f.call("echo", vec![Value::Int(0)], Retry::NeverRan).await;
        assert_eq!(first.result.expect("answer").as_i64(), Some(0));
        assert_eq!(f.current_addr().await, Some(a.addr));
        let mut tasks = Vec::new();
        for w in 0..4 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let mut retried = 0;
                for i in 0..200 {
                    let n = w * 1000 + i;
                    let o = f.call("echo", vec![Value::Int(n)], Retry::NeverRan).await;
                    assert_eq!(o.result.expect("no call fails").as_i64(), Some(n));
                    retried += o.retries;
                    tokio::task::yield_now().await;
                }
                retried
            }));
        }
        while a.ran.load(Ordering::SeqCst) < 100 {
            tokio::task::yield_now().await;
        }
        a.drain();
        let mut retried = 0;
        for t in tasks {
            retried += t.await.expect("task");
        }
        // Every call ran once: none was lost, none run twice.
        let ran = a.ran.load(Ordering::SeqCst) + b.ran.load(Ordering::SeqCst);
        assert_eq!(ran, 801, "{retried} retried");
        assert_eq!(f.current_addr().await, Some(b.addr));
    })
    .await
    .expect("in time");
}

/// A host that dies with a call in flight: the call may have run, so it
/// fails as interrupted, unless it is idempotent: then it runs again on the
/// other host.
#[tokio::test]
async fn a_call_cut_in_flight_is_interrupted_unless_idempotent() {
    timeout(LIMIT, async {
        for retry in [Retry::NeverRan, Retry::Idempotent] {
            let (a, b) = (Host::start().await, Host::start().await);
            let f = Arc::new(failover(&[&a, &b], FailoverConfig::default()));
            let f2 = f.clone();
            let call = tokio::spawn(async move {
                f2.call("slow", vec![Value::Int(300), Value::str("x")], retry)
                    .await
            });
            while a.ran.load(Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
            a.kill();
            let o = call.await.expect("task");
            match retry {
                Retry::NeverRan => {
                    assert!(
                        matches!(o.result, Err(Error::Interrupted(_))),
                        "{:?}",
                        o.result
                    );
                    assert_eq!(o.retries, 0);
                    // The next call goes to the other host.
                    let next = f.call("echo", vec![Value::Int(1)], retry).await;
                    assert_eq!(next.result.expect("answer").as_i64(), Some(1));
                    assert_eq!(f.current_addr().await, Some(b.addr));
                }
                Retry::Idempotent => {
                    assert_eq!(o.result.expect("answer").as_str(), Some("x"));
                    assert_eq!(o.retries, 1);
                    assert_eq!(b.ran.load(Ordering::SeqCst), 1);
                }
            }
        }
    })
    .await
    .expect("in time");
}

/// A frozen host (its method never answers): the call's deadline ends the
/// wait, the host is set aside, and an idempotent call runs on the other.
#[tokio::test]
async fn a_frozen_host_is_left_after_the_deadline() {
    timeout(LIMIT, async {
        let (a, b) = (Host::start().await, Host::start().await);
        let config = FailoverConfig {
            call_timeout: Some(Duration::from_millis(200)),
            ..FailoverConfig::default()
        };
        let f = failover(&[&a, &b], config);
        let began = tokio::time::Instant::now();
        let o = f
            .call(
                "slow",
                vec![Value::Int(60_000), Value::str("x")],
                Retry::NeverRan,
            )
            .await;
        assert!(
            matches!(o.result, Err(Error::DeadlineExceeded { .. })),
            "{:?}",
            o.result
        );
        assert!(began.elapsed() < Duration::from_secs(2));
        // Set aside: the next links go to b, though a's turn came.
        for i in 0..3 {
            let o = f.call("echo", vec![Value::Int(i)], Retry::NeverRan).await;
            assert_eq!(o.result.expect("answer").as_i64(), Some(i));
            assert_eq!(f.current_addr().await, Some(b.addr));
        }
        assert_eq!(a.ran.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("in time");
}

/// No host at all: the call fails with the connection error once the
/// patience is spent, not before and not much after.
#[tokio::test]
async fn no_host_fails_after_the_patience() {
    timeout(LIMIT, async {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let pool = Pool::with_addrs("127.0.0.1", [dead], ClientConfig::plain());
        let config = FailoverConfig {
            connect_patience: Duration::from_millis(300),
            ..FailoverConfig::default()
        };
        let f = Failover::new(Arc::new(pool), config);
        let began = tokio::time::Instant::now();
        let o = f.call("echo", vec![Value::Int(1)], Retry::Idempotent).await;
        let took = began.elapsed();
        assert!(
            matches!(o.result, Err(Error::Transport(_))),
            "{:?}",
            o.result
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    })
    .await
    .expect("in time");
}
