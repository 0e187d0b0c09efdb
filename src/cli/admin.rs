//! Admin commands (`vole stop`, `drain`, `reload`, `scale`, `reopen-logs`,
//! `upgrade`): one request over the service's admin socket.

use std::path::PathBuf;
use std::time::Duration;

use vole_controller::admin::{self, AdminRequest};

use super::args::{StopArgs, TargetArgs};
use super::exit::Failure;
use crate::hosted::HostedService;
use crate::settings::{Overrides, Settings};

/// The admin socket of the service the arguments name: `--admin-socket`;
/// else the one its settings file implies; else the only one in the state
/// directory.
pub fn socket(t: &TargetArgs, service: &HostedService) -> Result<PathBuf, Failure> {
    if let Some(p) = &t.admin_socket {
        return Ok(p.clone());
    }
    if let Some(file) = &t.config {
        let args = Overrides {
            config: Some(file.clone()),
            state_dir: t.state_dir.clone(),
            ..Overrides::default()
        };
        let s = Settings::resolve(&args, &service.defaults)
            .map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
        return Ok(s.admin_path(s.listen.first()));
    }
    super::status::find_socket(None, t.state_dir.clone(), service)
}

async fn send(
    t: &TargetArgs,
    service: &HostedService,
    request: AdminRequest,
    limit: Duration,
) -> Result<(), Failure> {
    let path = socket(t, service)?;
    let response = admin::request(&path, &request, limit)
        .await
        .map_err(anyhow::Error::from)?;
    if response.ok {
        Ok(())
    } else {
        // The service answered and said no: not a bug in vole (70).
        Err(Failure {
            code: super::exit::REMOTE,
            error: anyhow::anyhow!("{}", response.error.unwrap_or_else(|| "refused".to_owned())),
        })
    }
}

/// A request with no arguments of its own; prints `done` on success.
pub async fn simple(
    t: TargetArgs,
    service: &HostedService,
    request: AdminRequest,
    done: &str,
) -> Result<(), Failure> {
    // A reload replaces every node, and an upgrade waits for the new
    // controller's nodes to serve: either can take a while.
    send(&t, service, request, Duration::from_secs(300)).await?;
    crate::cli::out::outln!("{done}");
    Ok(())
}

/// Past the grace, how long `vole stop` waits for the service to exit: the
/// controller's own margin (nodes still running 3 s past the grace are
/// killed) and some slack.
const STOP_WAIT_MARGIN: Duration = Duration::from_secs(5);

/// `vole stop`: asks the service to stop and, unless `--no-wait`, waits
/// for its process to exit (up to the grace period plus a margin), so that
/// a new `serve` can start at once. Prints how it ended.
pub async fn stop(args: StopArgs, service: &HostedService) -> Result<(), Failure> {
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t >= 0.0) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--timeout must be a number of seconds"
            )));
        }
    }
    let path = socket(&args.target, service)?;
    // Who to wait for, and how long it may take.
    let status = if args.no_wait {
        None
    } else {
        let response = admin::request(&path, &AdminRequest::Status, Duration::from_secs(10))
            .await
            .map_err(anyhow::Error::from)?;
        response.status
    };
    send(
        &args.target,
        service,
        AdminRequest::Stop {
            force: args.force,
            timeout_s: args.timeout,
        },
        Duration::from_secs(10),
    )
    .await?;
    let Some(status) = status else {
        crate::cli::out::outln!("stopping");
        return Ok(());
    };
    let grace = match (args.force, args.timeout) {
        (true, _) => Duration::ZERO,
        (false, Some(t)) => Duration::from_secs_f64(t),
        (false, None) => Duration::from_millis(status.grace_ms),
    };
    let limit = grace + STOP_WAIT_MARGIN;
    let began = std::time::Instant::now();
    while running(status.pid) {
        if began.elapsed() >= limit {
            return Err(Failure {
                code: super::exit::REMOTE,
                error: anyhow::anyhow!(
                    "the service (pid {}) is still running {:.1} s after it was asked to stop",
                    status.pid,
                    limit.as_secs_f64()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let how = if args.force {
        "stopped by force"
    } else {
        "stopped"
    };
    crate::cli::out::outln!(
        "{how} (pid {} exited after {:.1} s)",
        status.pid,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether process `pid` still runs: it exists and is not a zombie (a
/// service started by the caller's own process stays one until reaped).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses
        // and may itself hold any character.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
