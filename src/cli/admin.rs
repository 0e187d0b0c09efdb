//! Admin commands (`vole stop`, `reload`, `scale`, `reopen-logs`,
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

/// `vole stop`.
pub async fn stop(args: StopArgs, service: &HostedService) -> Result<(), Failure> {
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t >= 0.0) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--timeout must be a number of seconds"
            )));
        }
    }
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
    crate::cli::out::outln!("stopping");
    Ok(())
}
