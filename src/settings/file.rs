//! The settings file as written (TOML), read with errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vole_control::control::Balance;

use super::error::{invalid, SettingsError};
use super::values::LogFormat;
use crate::access::ClientAuthMode;

/// The settings file, as written. Every key is optional; unknown keys are
/// errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub(super) listen: Option<Vec<String>>,
    pub(super) backlog: Option<i32>,
    pub(super) nodes: Option<u32>,
    pub(super) balance: Option<Balance>,
    pub(super) threads: Option<usize>,
    pub(super) max_clients: Option<u64>,
    pub(super) max_node_clients: Option<u64>,
    pub(super) max_clients_per_ip: Option<u64>,
    pub(super) max_inflight: Option<usize>,
    pub(super) overload: Option<String>,
    pub(super) link_buffer_budget: Option<usize>,
    pub(super) node_buffer_budget: Option<usize>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) handshake_timeout: Option<f64>,
    pub(super) write_timeout: Option<f64>,
    pub(super) keep_alive: Option<f64>,
    pub(super) idle_timeout: Option<f64>,
    pub(super) max_message: Option<usize>,
    pub(super) grace: Option<f64>,
    pub(super) max_call_time: Option<f64>,
    pub(super) admin_socket: Option<PathBuf>,
    pub(super) pidfile: Option<PathBuf>,
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
    pub(super) allow_root_nodes: Option<bool>,
    pub(super) metrics: Option<SocketAddr>,
    pub(super) health: Option<SocketAddr>,
    pub(super) shutdown_delay: Option<f64>,
    pub(super) proxy_protocol: Option<String>,
    pub(super) proxy_protocol_from: Option<Vec<String>>,
    pub(super) ticket_rotation: Option<f64>,
    pub(super) transports: Option<TransportsSection>,
    pub(super) tls: Option<TlsSection>,
    pub(super) auth: Option<crate::access::AuthSection>,
    pub(super) restart: Option<RestartSection>,
    pub(super) heartbeat: Option<HeartbeatSection>,
    pub(super) log: Option<LogSection>,
    /// The hosted service's own settings, checked by the service.
    pub(super) service: Option<toml::Table>,
    pub(super) node_command: Option<CommandLine>,
}

/// The VTS cipher list, in order, duplicates dropped; an unknown name or an
/// empty list is an error naming `transports.vts-ciphers`.
pub(super) fn parse_vts_ciphers<'a>(
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<vole_transport::vts::Suite>, SettingsError> {
    let key = "transports.vts-ciphers";
    let mut out = Vec::new();
    for name in names {
        let suite = vole_transport::vts::Suite::parse(name).ok_or_else(|| {
            invalid(
                key,
                format!("unknown cipher {name:?} (cipher-mode: aes256, blowfish or blowfish128, and cbc or ofb)"),
            )
        })?;
        if !out.contains(&suite) {
            out.push(suite);
        }
    }
    if out.is_empty() {
        return Err(invalid(key, "needs at least one cipher"));
    }
    Ok(out)
}

/// A command as the file writes it: one string (split like a shell does)
/// or a list of arguments.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CommandLine {
    Line(String),
    Argv(Vec<String>),
}

/// Splits a command line like a POSIX shell (quotes and backslashes; no
/// expansion).
pub(super) fn split_command(key: &'static str, line: &str) -> Result<Vec<String>, SettingsError> {
    let argv = shlex::split(line)
        .ok_or_else(|| invalid(key, format!("cannot split {line:?} (unbalanced quotes?)")))?;
    if argv.is_empty() {
        return Err(invalid(key, "is empty"));
    }
    Ok(argv)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct TransportsSection {
    pub(super) tls: Option<bool>,
    pub(super) plain: Option<bool>,
    pub(super) vts: Option<bool>,
    pub(super) vts_key: Option<PathBuf>,
    pub(super) vts_ciphers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct TlsSection {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) client_auth: Option<ClientAuthMode>,
    pub(super) ticket_key_file: Option<PathBuf>,
    pub(super) watch: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RestartSection {
    pub(super) intensity: Option<u32>,
    pub(super) period: Option<f64>,
    pub(super) backoff_base: Option<f64>,
    pub(super) backoff_max: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct HeartbeatSection {
    pub(super) interval: Option<f64>,
    pub(super) timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct LogSection {
    pub(super) level: Option<String>,
    pub(super) format: Option<LogFormat>,
    pub(super) file: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> Result<FileConfig, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }

    /// Parses settings text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, SettingsError> {
        let de = toml::Deserializer::parse(text).map_err(|e| SettingsError::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = one_line(&e.into_inner().to_string());
            SettingsError::Parse {
                path: path.to_owned(),
                message: if key == "." || key.is_empty() {
                    message
                } else {
                    format!("key `{key}`: {message}")
                },
            }
        })
    }
}

/// toml's messages carry a source excerpt over several lines; keep the
/// location and the problem on one line.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|'))
        .collect();
    lines.join("; ")
}
