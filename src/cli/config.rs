//! `vole config check FILE`.

use super::exit::Failure;
use super::{ConfigCommand, ServeArgs};
use crate::settings::Settings;

/// Runs a `vole config` command.
pub fn run(cmd: ConfigCommand) -> Result<(), Failure> {
    match cmd {
        ConfigCommand::Check { file } => {
            let args = ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            };
            let s = Settings::resolve(&args).map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
            if let crate::settings::TlsSetting::Files { cert, key } = &s.tls {
                vole_transport::tls::server_config(&vole_transport::tls::ServerIdentity::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .map_err(|e| Failure::usage(anyhow::Error::new(e).context("tls")))?;
            }
            let listen: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
            crate::outln!(
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
