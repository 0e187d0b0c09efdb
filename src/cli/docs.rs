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
    mut cli: clap::Command,
    name: &str,
) -> Option<Result<(), Failure>> {
    let mut out = std::io::stdout().lock();
    let written = match command {
        HostCommand::Completions(a) => {
            clap_complete::generate(a.shell, &mut cli, name, &mut out);
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
