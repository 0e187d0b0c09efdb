//! Values a setting is written as: the log format, listen addresses,
//! periods in seconds and the PROXY protocol's networks.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, SettingsError};
use crate::defaults;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in settings: `text` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text, json)")),
        }
    }
}

/// The addresses one `listen` value names: `host:port` with an IPv4
/// address or a host name (every address it resolves to), `[v6]:port`,
/// or `:port` for every IPv4 interface (as nginx and HAProxy read it;
/// `[::]:port` adds IPv6).
pub fn parse_listen(value: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs as _;
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!(
            "{value:?} has no port (host:port, [v6]:port or :port)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{value:?}: {port:?} is not a port number"))?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]);
    }
    if host.starts_with('[') || host.contains(':') {
        return Err(format!(
            "{value:?} is not an address (IPv6 goes in brackets: [::1]:{port})"
        ));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    Ok(addrs)
}

/// The keep-alive period: 0 turns it off; anything else must be at least
/// the 100 ms a link can time (VPy agrees to any positive period).
pub(super) fn keep_alive_period(value: f64) -> Result<Option<Duration>, SettingsError> {
    let period = optional_secs("keep-alive", value)?;
    if period.is_some_and(|p| p < Duration::from_millis(100)) {
        return Err(invalid(
            "keep-alive",
            format!("must be at least 0.1 seconds (or 0 for off), not {value}"),
        ));
    }
    Ok(period)
}

/// A period where 0 turns the feature off.
pub(super) fn optional_secs(
    key: &'static str,
    value: f64,
) -> Result<Option<Duration>, SettingsError> {
    if value == 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .map(Some)
        .ok_or_else(|| {
            invalid(
                key,
                format!("must be a positive number of seconds (or 0 for off), not {value}"),
            )
        })
}

/// `proxy-protocol` and `proxy-protocol-from`: the balancers' networks when
/// the header is required, `None` when off. A bare address is its own
/// network (`/32`, `/128`).
pub(super) fn proxy_protocol(
    mode: Option<String>,
    from: Option<Vec<String>>,
) -> Result<Option<Vec<vole_transport::proxy::IpNet>>, SettingsError> {
    let from = from.unwrap_or_default();
    match mode.as_deref().unwrap_or(defaults::PROXY_PROTOCOL) {
        "off" if from.is_empty() => Ok(None),
        "off" => Err(invalid(
            "proxy-protocol-from",
            "takes effect only with proxy-protocol = \"required\"",
        )),
        "required" if from.is_empty() => Err(invalid(
            "proxy-protocol-from",
            "proxy-protocol = \"required\" needs the balancers' networks, e.g. [\"10.0.0.0/8\"]",
        )),
        "required" => from
            .iter()
            .map(|n| {
                n.parse::<vole_transport::proxy::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(Into::into))
                    .map_err(|_| {
                        invalid(
                            "proxy-protocol-from",
                            format!(
                                "{n:?} is not a network (CIDR such as 10.0.0.0/8) or an address"
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(invalid(
            "proxy-protocol",
            format!("{other:?} is not a mode (off, required)"),
        )),
    }
}

pub(super) fn secs(key: &'static str, value: f64) -> Result<Duration, SettingsError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(
                key,
                format!("must be a positive number of seconds, not {value}"),
            )
        })
}
