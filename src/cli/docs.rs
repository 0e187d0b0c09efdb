//! `completions` and `man`: documentation generated from the command line
//! itself (clap_complete, clap_mangen), so it never drifts from it.

use std::io::Write as _;

use super::args::HostCommand;
use super::exit::{self, Failure};

/// Writes what `command` (`completions` or `man`) asks for about `cli`, the
/// whole command line of the program called `name`, to stdout. Any other
/// command is not documentation: `None`.
pub fn generate(
    command: &HostCommand,
    cli: clap::Command,
    name: &str,
) -> Option<Result<(), Failure>> {
    let mut out = std::io::stdout().lock();
    let written = match command {
        HostCommand::Completions(a) => {
            // clap_complete offers hidden subcommands too (the internal
            // `node` and `exec-node`): complete what a person may type.
            let mut shown = without_hidden(&cli);
            clap_complete::generate(a.shell, &mut shown, name, &mut out);
            Ok(())
        }
        HostCommand::Man => clap_mangen::Man::new(cli).render(&mut out),
        _ => return None,
    };
    Some(written.and_then(|()| out.flush()).map_err(|e| Failure {
        code: exit::IO,
        error: anyhow::anyhow!("writing to stdout: {e}"),
    }))
}

/// `cmd` with its hidden subcommands left out, at every level (their
/// arguments and the visible subcommands are kept as they are).
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_owned());
    if let Some(bin) = cmd.get_bin_name() {
        out = out.bin_name(bin.to_owned());
    }
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    for a in cmd.get_arguments() {
        out = out.arg(a.clone());
    }
    for sc in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(without_hidden(sc));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_subcommands_are_left_out_at_every_level() {
        let cli = clap::Command::new("x")
            .arg(clap::Arg::new("verbose").short('v').global(true))
            .subcommand(
                clap::Command::new("shown")
                    .arg(clap::Arg::new("flag").long("flag"))
                    .subcommand(clap::Command::new("inner-hidden").hide(true)),
            )
            .subcommand(clap::Command::new("internal").hide(true));
        let out = without_hidden(&cli);
        let names: Vec<&str> = out.get_subcommands().map(|s| s.get_name()).collect();
        assert_eq!(names, ["shown"]);
        let shown = out.find_subcommand("shown").expect("kept");
        assert!(shown.get_arguments().any(|a| a.get_id() == "flag"));
        assert_eq!(shown.get_subcommands().count(), 0);
        assert!(out.get_arguments().any(|a| a.get_id() == "verbose"));
    }
}
