//! The direct handshake (TLS ALPN `vole/1`) over real TLS on loopback:
//! two vole peers agree on it; a client that offers no ALPN gets the
//! standard handshake from the same server; resolving, calls, callbacks,
//! references and the close work on both.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use vole_link::publish::Published;
use vole_link::resolve::{self, ClientConfig};
use vole_link::router::Router;
use vole_link::{serve, CallError, Error, LinkConfig, LinkInfo, LinkSetup, Value};
use vole_transport::stream::{self, ServerSettings};
use vole_transport::tls::{self, ServerIdentity, ServerTrust};
use vole_transport::vop::ServerPolicy;

const LIMIT: Duration = Duration::from_secs(10);

/// A state directory of its own, removed when dropped.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vole-direct-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("state dir");
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TLS service on an ephemeral port serving `/text/echo/` and an
/// `invoke(object, method, args...)` that calls back. Reports each
/// accepted link's agreed ALPN protocol. Returns the port, the client
/// settings that trust it, and the reports.
async fn service(state: &StateDir) -> (u16, ClientConfig, mpsc::UnboundedReceiver<Option<String>>) {
    service_with(state, true).await
}

/// [`service`]; without `alpn` the server accepts no ALPN protocol (a
/// vole from before the direct handshake, or another VOP server).
async fn service_with(
    state: &StateDir,
    alpn: bool,
) -> (u16, ClientConfig, mpsc::UnboundedReceiver<Option<String>>) {
    let server = tls::server_config(&ServerIdentity::Dev {
        state_dir: state.0.clone(),
    })
    .expect("server tls");
    let mut server_tls = (*server.config).clone();
    if !alpn {
        server_tls.alpn_protocols.clear();
    }
    let settings = ServerSettings {
        transports: ServerPolicy::new(true, false),
        tls: Some(Arc::new(server_tls)),
        vts: None,
        handshake_timeout: LIMIT,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let settings = settings.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok((conn, info)) = stream::accept(tcp, &settings).await else {
                    return;
                };
                let info = LinkInfo::from_conn(&info);
                let _ = tx.send(info.tls.as_ref().and_then(|t| t.alpn.clone()));
                let setup = LinkSetup {
                    config: LinkConfig {
                        hold_peer: false,
                        keep_alive: Some(Duration::from_secs(5)),
                        ..LinkConfig::default()
                    },
                    gateway: gateway(),
                    info,
                };
                serve(conn, setup, |_| {}).await;
            });
        }
    });
    let client = ClientConfig::tls(&ServerTrust::Pinned(server.fingerprint)).expect("client tls");
    (port, client, rx)
}

fn gateway() -> Arc<dyn vole_link::Object> {
    let echo = || {
        Published::new("Echo")
            .method(
                "echo",
                "",
                |(v,): (Value,)| async move { Ok::<_, CallError>(v) },
            )
            .into_object()
    };
    Router::new(Published::new("Gateway").method_raw(
        "invoke",
        "calls method args[1] of object args[0]",
        |_, _, args| {
            Box::pin(async move {
                let mut it = args.into_iter();
                let (Some(Value::Ref(target)), Some(Value::Str(method))) = (it.next(), it.next())
                else {
                    return Err(CallError::failed("invoke(object, method, args...)"));
                };
                let remote = target
                    .as_remote()
                    .cloned()
                    .ok_or_else(|| CallError::failed("not a remote object"))?;
                Ok(remote.call(&method, it.collect::<Vec<_>>()).await?)
            })
        },
    ))
    .route(["text", "echo"], move |_| echo())
    .into_object()
}

/// Without ALPN: what a peer that does not know the direct handshake
/// offers (a VPy client over TLS, an older vole).
fn without_alpn(mut config: ClientConfig) -> ClientConfig {
    if let Some(tls) = config.transport.tls.take() {
        let mut plain = (*tls).clone();
        plain.alpn_protocols.clear();
        config.transport.tls = Some(Arc::new(plain));
    }
    config
}

/// Resolves `/text/echo/`, calls it, makes the service call back into a
/// client object, and closes. Returns the id of the service's gateway as
/// the client sees it (1 on a direct link, 2 on a standard one).
async fn session(port: u16, config: &ClientConfig) -> Result<i64, Error> {
    let uri = format!("vop://127.0.0.1:{port}/text/echo/");
    let resolved = resolve::resolve(&uri, config).await?;
    let Value::Ref(echo) = &resolved.value else {
        panic!("resolved to {:?}", resolved.value);
    };
    let echo = echo.as_remote().cloned().expect("remote");
    assert_eq!(echo.call("echo", ("hello",)).await?, Value::str("hello"));
    match echo.call("nope", ()).await {
        Err(Error::CallError) => {}
        other => panic!("an unknown method must be a call error: {other:?}"),
    }
    let callback = Published::new("Callback")
        .method("twice", "", |(n,): (i64,)| async move {
            Ok::<_, CallError>(n * 2)
        })
        .into_object();
    let got = resolved
        .gateway
        .call(
            "invoke",
            vec![
                Value::Ref(vole_link::ObjectRef::Local(callback)),
                Value::str("twice"),
                Value::Int(21),
            ],
        )
        .await?;
    assert_eq!(got, Value::Int(42));
    let id = resolved.gateway.id();
    resolved.link.close().await;
    Ok(id)
}

#[tokio::test]
async fn vole_peers_agree_on_the_direct_handshake() {
    let state = StateDir::new();
    let (port, client, mut agreed) = service(&state).await;
    let id = timeout(LIMIT, session(port, &client))
        .await
        .expect("in time")
        .expect("session");
    assert_eq!(agreed.recv().await, Some(Some("vole/1".to_owned())));
    assert_eq!(id, 1, "a direct link's gateway is object 1");
}

#[tokio::test]
async fn a_client_without_alpn_gets_the_standard_handshake() {
    let state = StateDir::new();
    let (port, client, mut agreed) = service(&state).await;
    let client = without_alpn(client);
    let id = timeout(LIMIT, session(port, &client))
        .await
        .expect("in time")
        .expect("session");
    assert_eq!(agreed.recv().await, Some(None));
    assert_eq!(
        id, 2,
        "the standard handshake's gateway follows its handshake object"
    );
}

#[tokio::test]
async fn a_server_without_alpn_gets_the_standard_handshake_from_a_vole_client() {
    let state = StateDir::new();
    let (port, client, mut agreed) = service_with(&state, false).await;
    let id = timeout(LIMIT, session(port, &client))
        .await
        .expect("in time")
        .expect("session");
    assert_eq!(agreed.recv().await, Some(None));
    assert_eq!(id, 2);
}

#[tokio::test]
async fn both_kinds_of_client_interleave_on_one_service() {
    let state = StateDir::new();
    let (port, client, mut agreed) = service(&state).await;
    let standard = without_alpn(client.clone());
    let runs = (0..6).map(|i| {
        let config = if i % 2 == 0 { &client } else { &standard };
        session(port, config)
    });
    let ids = timeout(LIMIT, futures_util::future::join_all(runs))
        .await
        .expect("in time");
    let ids: Vec<i64> = ids.into_iter().map(|r| r.expect("session")).collect();
    assert_eq!(ids, vec![1, 2, 1, 2, 1, 2]);
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(agreed.recv().await.expect("report"));
    }
    assert_eq!(seen.iter().filter(|a| a.is_some()).count(), 3);
}
