//! Help texts that are computed: each `serve` argument's default, from
//! [`crate::defaults`] and the settings' enums, not written in its doc
//! comment.

use vole_link::Overload;

use crate::defaults;
use crate::settings::LogFormat;

/// Every default `serve --help` shows: (the argument's id, the value as
/// written on the command line).
pub fn shown() -> Vec<(&'static str, String)> {
    let restart = defaults::restart();
    vec![
        ("handshake_timeout", defaults::HANDSHAKE_TIMEOUT.to_string()),
        ("max_message", defaults::MAX_MESSAGE.to_string()),
        ("grace", defaults::GRACE.to_string()),
        ("shutdown_delay", defaults::SHUTDOWN_DELAY.to_string()),
        ("proxy_protocol", defaults::PROXY_PROTOCOL.to_owned()),
        ("write_timeout", defaults::WRITE_TIMEOUT.to_string()),
        ("keep_alive", defaults::KEEP_ALIVE.to_string()),
        ("idle_timeout", defaults::IDLE_TIMEOUT.to_string()),
        ("backlog", defaults::BACKLOG.to_string()),
        ("max_inflight", defaults::max_inflight().to_string()),
        ("overload", Overload::default().name().to_owned()),
        (
            "link_buffer_budget",
            defaults::LINK_BUFFER_BUDGET.to_string(),
        ),
        (
            "node_buffer_budget",
            defaults::NODE_BUFFER_BUDGET.to_string(),
        ),
        (
            "heartbeat_interval",
            defaults::HEARTBEAT_INTERVAL.to_string(),
        ),
        ("heartbeat_timeout", defaults::HEARTBEAT_TIMEOUT.to_string()),
        ("restart_intensity", restart.intensity.to_string()),
        ("restart_period", restart.period.as_secs_f64().to_string()),
        ("log_format", LogFormat::default().name().to_owned()),
        ("log_level", defaults::LOG_LEVEL.to_owned()),
        ("ticket_rotation", defaults::TICKET_ROTATION.to_string()),
        ("tls_client_auth", defaults::CLIENT_AUTH.name().to_owned()),
        (
            "vts_ciphers",
            defaults::vts_ciphers()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]
}

/// The command line of a host: [`HostCli`](super::HostCli) with the
/// computed help texts.
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory as _;
    super::HostCli::command().mut_subcommand("serve", annotate)
}

/// `serve`'s command with each argument's default from [`shown`] added to
/// its help (`[default: 10]`, as clap writes the defaults it knows; these
/// are not clap defaults, so that a setting from the file still applies
/// when the flag is absent).
pub fn annotate(mut serve: clap::Command) -> clap::Command {
    for (id, value) in shown() {
        if !serve.get_arguments().any(|a| a.get_id() == id) {
            // A host without this argument (a test's command line).
            continue;
        }
        serve = serve.mut_arg(id, |a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            a.help(format!("{help} [default: {value}]"))
        });
    }
    serve
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shown default names an argument of `serve`, and its help
    /// ends with it, once.
    #[test]
    fn every_default_is_shown_on_its_argument() {
        let cli = command();
        let annotated = cli.find_subcommand("serve").expect("serve").clone();
        for (id, value) in shown() {
            let arg = annotated
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("serve has no argument {id}"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.ends_with(&format!(" [default: {value}]")),
                "{id}: {help}"
            );
            assert_eq!(help.matches("[default:").count(), 1, "{id}: {help}");
            assert!(
                !help.contains(" [0]") && !help.contains(" [1]"),
                "{id}: {help}"
            );
        }
    }
}
