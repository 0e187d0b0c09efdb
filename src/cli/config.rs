//! `config check FILE`: the settings, the service's own `[service]`
//! table and the TLS files, checked without starting anything.

use super::args::ConfigCommand;
use super::exit::Failure;
use crate::hosted::HostedService;
use crate::settings::{Overrides, Settings};

/// Runs a `config` command.
pub fn run(cmd: ConfigCommand, service: &HostedService) -> Result<(), Failure> {
    match cmd {
        ConfigCommand::Check { file } => {
            let args = Overrides {
                config: Some(file.clone()),
                ..Overrides::default()
            };
            let s = Settings::resolve(&args, &service.defaults)
                .map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
            service
                .check(s.service.as_ref())
                .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", file.display())))?;
            // What serve checks before it starts: the nodes' user and group.
            if s.nodes > 0 {
                super::serve::privileges::node_user(&s).map_err(|f| Failure {
                    code: f.code,
                    error: f.error.context(file.display().to_string()),
                })?;
            }
            if let Some(c) = &s.client_auth {
                c.load().map_err(Failure::usage)?;
            }
            if let crate::settings::TlsSetting::Files { cert, key } = &s.tls {
                vole_transport::tls::server_config(&vole_transport::tls::ServerIdentity::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .map_err(|e| Failure::usage(anyhow::Error::new(e).context("tls")))?;
            }
            super::serve::setup::shared_ticket_keys(&s)?;
            let listen: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
            crate::cli::out::outln!(
                "{}: ok ({} node(s), balance {}, listening on {})",
                file.display(),
                s.nodes,
                s.balance.name(),
                listen.join(", ")
            );
            Ok(())
        }
    }
}
