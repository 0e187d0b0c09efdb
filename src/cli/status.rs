//! `vole status`: a running service's nodes, from its admin socket.

use std::path::PathBuf;
use std::time::Duration;

use super::args::StatusArgs;
use super::exit::Failure;
use crate::hosted::HostedService;
use anyhow::Context as _;
use vole_controller::admin::{self, AdminRequest, StatusReport};

/// Finds the admin socket: the one given, else the only `admin-*.sock` in
/// the state directory that a service answers on (a service killed
/// without its clean-up leaves its socket behind; those are skipped).
pub fn find_socket(
    explicit: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    service: &HostedService,
) -> Result<PathBuf, Failure> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let dir = state_dir.unwrap_or_else(|| service.defaults.state_dir.clone());
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("admin-") && n.ends_with(".sock"))
                })
                .filter(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
                .collect()
        })
        .unwrap_or_default();
    match found.len() {
        1 => Ok(found.remove(0)),
        // Nothing answers: a connection failure (3), as for an admin
        // socket given by path that nobody serves; not a bug in vole (70).
        0 => Err(Failure {
            code: super::exit::CONNECTION,
            error: anyhow::anyhow!(
                "no running service found ({}'s state directory {} has no admin-*.sock that answers); give --admin-socket or --state-dir",
                service.name,
                dir.display()
            ),
        }),
        _ => {
            found.sort();
            let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            Err(Failure::usage(anyhow::anyhow!(
                "several services run; choose one with --admin-socket: {}",
                names.join(", ")
            )))
        }
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn latency(us: Option<u64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(us) if us < 1000 => format!("{us}us"),
        Some(us) if us < 1_000_000 => format!("{}ms", us / 1000),
        Some(us) => format!("{}s", us / 1_000_000),
    }
}

/// Renders a status report as a table.
pub fn table(name: &str, s: &StatusReport) -> String {
    let mut out = format!(
        "{name} pid {}  mode {}  listening {}  up {}\n",
        s.pid,
        s.mode,
        s.listen.join(", "),
        duration(s.uptime_ms)
    );
    out.push_str(&format!(
        "{:>4} {:>8} {:<12} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "NODE",
        "PID",
        "STATE",
        "SESSIONS",
        "INFLIGHT",
        "CALLS",
        "ERRORS",
        "P50",
        "P99",
        "RESTARTS",
        "UPTIME"
    ));
    for n in &s.nodes {
        out.push_str(&format!(
            "{:>4} {:>8} {:<12} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            n.id,
            n.pid.map_or("-".to_owned(), |p| p.to_string()),
            n.state,
            n.sessions,
            n.inflight,
            n.calls,
            n.errors,
            latency(n.p50_us),
            latency(n.p99_us),
            n.restarts,
            if n.pid.is_some() {
                duration(n.uptime_ms)
            } else {
                "-".to_owned()
            },
        ));
    }
    for n in s.nodes.iter().filter(|n| n.state == "full") {
        out.push_str(&format!(
            "node {}: not taking connections ({})\n",
            n.id,
            full_why(n)
        ));
    }
    out
}

/// Why a `full` node takes no connections, as far as its report says.
fn full_why(n: &vole_controller::admin::NodeReport) -> String {
    match (n.capacity, n.fd_limit) {
        (Some(c), Some(l)) if n.sessions >= c => {
            format!("fd limit: {l} descriptors hold {c} connections; raise it with ulimit -n or LimitNOFILE=")
        }
        (_, Some(l)) => format!("fd limit {l} reached a moment ago; backing off"),
        _ => "fd limit".to_owned(),
    }
}

/// Runs `vole status`.
pub async fn run(args: StatusArgs, service: &HostedService) -> Result<(), Failure> {
    let path = find_socket(args.admin_socket, args.state_dir, service)?;
    let response = admin::request(&path, &AdminRequest::Status, Duration::from_secs(10))
        .await
        .map_err(anyhow::Error::from)?;
    if !response.ok {
        return Err(Failure::remote(anyhow::anyhow!(
            "{}",
            response.error.unwrap_or_default()
        )));
    }
    let status = response.status.context("the service sent no status")?;
    if args.json {
        crate::cli::out::outln!("{}", serde_json::to_string_pretty(&status).context("json")?);
    } else {
        super::out::out(format_args!("{}", table(&service.name, &status)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full node is shown as such, with why.
    #[test]
    fn the_table_says_why_a_node_is_full() {
        use vole_controller::admin::NodeReport;
        let status = StatusReport {
            pid: 1,
            mode: "dispatch".to_owned(),
            nodes: vec![
                NodeReport {
                    id: 0,
                    state: "full".to_owned(),
                    sessions: 85,
                    capacity: Some(85),
                    fd_limit: Some(128),
                    ..NodeReport::default()
                },
                NodeReport {
                    id: 1,
                    state: "full".to_owned(),
                    sessions: 3,
                    capacity: Some(85),
                    fd_limit: Some(128),
                    ..NodeReport::default()
                },
                NodeReport {
                    id: 2,
                    state: "serving".to_owned(),
                    ..NodeReport::default()
                },
            ],
            ..StatusReport::default()
        };
        let text = table("vole", &status);
        assert!(
            text.contains(
                "node 0: not taking connections (fd limit: 128 descriptors hold 85 connections"
            ),
            "{text}"
        );
        assert!(
            text.contains("node 1: not taking connections (fd limit 128 reached a moment ago"),
            "{text}"
        );
        assert!(!text.contains("node 2:"), "{text}");
        assert_eq!(text.matches(" full ").count(), 2, "{text}");
    }

    /// A socket left by a killed service is skipped; the live one is found.
    #[test]
    fn stale_admin_sockets_are_skipped() {
        let dir = std::env::temp_dir().join(format!("vole-status-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // Bound and dropped: the file stays, nobody answers.
        drop(std::os::unix::net::UnixListener::bind(dir.join("admin-1.sock")).expect("bind"));
        let service = HostedService::plain(
            "vole",
            std::sync::Arc::new(|_: &vole_link::LinkInfo| crate::demo::gateway()),
        );
        let err = find_socket(None, Some(dir.clone()), &service).expect_err("only a stale socket");
        let text = err.error.to_string();
        assert!(text.contains("no running service found"), "{text}");
        assert_eq!(err.code, crate::cli::exit::CONNECTION);
        let live = dir.join("admin-2.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).expect("bind");
        let found = find_socket(None, Some(dir.clone()), &service).expect("the live socket");
        assert_eq!(found, live);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
