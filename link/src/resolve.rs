//! Client side: connecting to a service and resolving resource identifiers.
//!
//! Resolving `vop://host:port/a/b/name?x&k=v` means: connect (VOP, TLS or
//! PLAIN, VEC, VOL handshake), take the peer's gateway, call
//! `urlget(("a", "b"))` on it, then, if the identifier ends in a query, call
//! `name(x, {k: v})` on the object found and return that result instead. An
//! empty path returns the gateway itself.

use std::sync::Arc;
use std::time::Duration;

use vole_transport::stream::{self, ClientSettings, ConnInfo};
use vole_transport::tls::{ClientCert, ServerTrust};
use vole_transport::vop::Transport;
use vole_transport::Entity;

use crate::driver::{start_client, Started};
use crate::object::{LinkInfo, Object, TlsInfo};
use crate::publish::Published;
use crate::uri::{format_relative, parse_relative, Query, Vri};
use crate::{Error, Link, LinkConfig, LinkSetup, ObjectRef, RemoteObject, Value};

/// How a client connects.
#[derive(Clone)]
pub struct ClientConfig {
    /// Transports to offer, TLS trust, timeouts.
    pub transport: ClientSettings,
    /// Link settings.
    pub link: LinkConfig,
    /// The object the service receives as this side's gateway; an empty
    /// object if `None`.
    pub gateway: Option<Arc<dyn Object>>,
}

impl ClientConfig {
    /// TLS only, trusting servers as `trust` says.
    pub fn tls(trust: &ServerTrust) -> Result<Self, Error> {
        ClientConfig::tls_with_cert(trust, None)
    }

    /// TLS only, trusting servers as `trust` says and presenting `cert`
    /// (see [`ClientCert::from_files`]) to servers that ask for a client
    /// certificate.
    pub fn tls_with_cert(trust: &ServerTrust, cert: Option<&ClientCert>) -> Result<Self, Error> {
        let tls = vole_transport::tls::client_config_with(trust, cert)?;
        Ok(ClientConfig::with_settings(ClientSettings {
            offer: vec![Transport::Tls],
            tls: Some(tls),
            vts: None,
            server_name: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }))
    }

    /// PLAIN only: no encryption, for trusted networks.
    pub fn plain() -> Self {
        ClientConfig::with_settings(ClientSettings {
            offer: vec![Transport::Plain],
            tls: None,
            vts: None,
            server_name: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        })
    }

    /// VTS only (VPy's default transport): trusts the server key and sends
    /// a client key as `vts` says.
    pub fn vts(vts: vole_transport::vts::ClientSettings) -> Self {
        ClientConfig::with_settings(ClientSettings {
            offer: vec![Transport::Vts],
            tls: None,
            vts: Some(Arc::new(vts)),
            server_name: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        })
    }

    fn with_settings(transport: ClientSettings) -> Self {
        ClientConfig {
            transport,
            link: LinkConfig::default(),
            gateway: None,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("offer", &self.transport.offer)
            .field("link", &self.link)
            .finish()
    }
}

/// The outcome of [`resolve`].
#[derive(Debug)]
pub struct Resolved {
    /// The link to the service.
    pub link: Link,
    /// The service's gateway.
    pub gateway: RemoteObject,
    /// The object the path named (the gateway for an empty path), or the
    /// result of the query call.
    pub value: Value,
}

impl LinkInfo {
    /// What a link over `conn` knows about it.
    pub fn from_conn(conn: &ConnInfo) -> LinkInfo {
        LinkInfo {
            link_id: 0,
            peer_addr: Some(conn.peer),
            local_addr: Some(conn.local),
            transport: Some(conn.transport.token()),
            tls: conn.tls.as_ref().map(|t| TlsInfo {
                version: t.protocol.clone(),
                cipher_suite: t.cipher_suite.clone(),
                server_name: t.sni.clone(),
                peer_cert_sha256: t.peer_fingerprint,
                resumed: t.resumed,
                alpn: t
                    .alpn
                    .as_deref()
                    .map(|a| String::from_utf8_lossy(a).into_owned()),
            }),
            node_id: None,
            identity: conn.identity.clone(),
            proxy_addr: None,
            health: None,
        }
    }
}

/// Connects to `host:port` and completes the link handshake.
pub async fn connect_to(
    host: &str,
    port: u16,
    config: &ClientConfig,
) -> Result<(Link, RemoteObject), Error> {
    start(host, port, config).await?.opened().await
}

/// Connects to `host:port` and starts the link.
async fn start(host: &str, port: u16, config: &ClientConfig) -> Result<Started, Error> {
    // The link writes its hellos at once: the TLS Finished goes with them.
    let (conn, info) = stream::connect_held(host, port, &config.transport).await?;
    let gateway = config
        .gateway
        .clone()
        .unwrap_or_else(|| Published::new("ClientGateway").into_object());
    let setup = LinkSetup {
        config: config.link.clone(),
        gateway,
        info: LinkInfo::from_conn(&info),
    };
    Ok(start_client(conn, setup))
}

/// Connects to `host:port` and resolves `path` there ([`resolve_path`]):
/// the link, the service's gateway and the object found.
///
/// Between two vole peers (the direct handshake, see `vole_link`'s
/// `core::direct`) the `urlget` call goes out with the link's hellos, so
/// resolving costs no round trip of its own. A link that does not open is
/// reported as by [`connect_to`]; a path that does not resolve as
/// [`Error::Resolve`].
pub async fn connect_resolving(
    host: &str,
    port: u16,
    path: &[String],
    config: &ClientConfig,
) -> Result<(Link, RemoteObject, RemoteObject), Error> {
    let started = start(host, port, config).await?;
    match started.early.clone() {
        Some(early) if !path.is_empty() => {
            let (opened, target) = tokio::join!(started.opened(), resolve_path(&early, path));
            let (link, gateway) = opened?;
            Ok((link, gateway, target?))
        }
        _ => {
            let (link, gateway) = started.opened().await?;
            let target = resolve_path(&gateway, path).await?;
            Ok((link, gateway, target))
        }
    }
}

/// Connects to the service `uri` names and resolves it.
pub async fn resolve(uri: &str, config: &ClientConfig) -> Result<Resolved, Error> {
    let vri: Vri = uri.parse()?;
    let host = vri.host.to_string();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (link, gateway, target) = connect_resolving(host, vri.port, &vri.path, config).await?;
    let value = match vri.query.as_ref() {
        None => Value::from(target),
        Some(q) => call_query(&target, q).await?,
    };
    Ok(Resolved {
        link,
        gateway,
        value,
    })
}

/// Resolves a path relative to a gateway already connected (reusing its
/// link), e.g. `/math/adder/` or `text/echo/echo?hi`.
pub async fn resolve_relative(gateway: &RemoteObject, relative: &str) -> Result<Value, Error> {
    let (path, query) = parse_relative(relative)?;
    resolve_on(gateway, &path, query.as_ref()).await
}

/// Resolves `path` on `gateway`, then runs `query` on the result if given.
pub async fn resolve_on(
    gateway: &RemoteObject,
    path: &[String],
    query: Option<&Query>,
) -> Result<Value, Error> {
    let target = resolve_path(gateway, path).await?;
    match query {
        None => Ok(Value::from(target)),
        Some(q) => call_query(&target, q).await,
    }
}

/// `gateway.urlget(path)`, or the gateway itself for an empty path.
pub async fn resolve_path(gateway: &RemoteObject, path: &[String]) -> Result<RemoteObject, Error> {
    if path.is_empty() {
        return Ok(gateway.clone());
    }
    let segments = Value::Tuple(path.iter().map(|s| Value::Str(s.clone())).collect());
    let shown = format_relative(path, None);
    match gateway.call("urlget", vec![segments]).await {
        Ok(Entity::Ref(ObjectRef::Remote(object))) => Ok(object),
        Ok(other) => Err(Error::Resolve {
            path: shown,
            source: Box::new(Error::Convert(format!(
                "urlget returned a {}, not an object",
                other.kind()
            ))),
        }),
        Err(e) => Err(Error::Resolve {
            path: shown,
            source: Box::new(e),
        }),
    }
}

/// Calls the query's method with its arguments; keyword arguments travel
/// as one trailing frozen dict, as in VPy.
pub async fn call_query(target: &RemoteObject, query: &Query) -> Result<Value, Error> {
    let mut args: Vec<Value> = query.args.iter().map(|a| a.to_entity()).collect();
    if !query.kwargs.is_empty() {
        let pairs = query
            .kwargs
            .iter()
            .map(|(k, v)| (Value::Str(k.clone()), v.to_entity()));
        args.push(vole_transport::serde::frozen_dict(pairs));
    }
    target.call(&query.name, args).await
}
