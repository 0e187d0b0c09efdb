//! Running `vole bench` and `vole bench-server`, the load generator (crate
//! `vole-bench`), with the client configuration of the connection flags,
//! and its errors as exit codes.

use clap::Args;
use vole_bench::ErrorKind;

use super::exit::{self, Failure};
use super::trust::ClientArgs;

/// `vole bench`: the load generator's flags and the connection flags.
#[derive(Debug, Args)]
pub struct BenchCommand {
    /// The load generator's flags.
    #[command(flatten)]
    pub bench: vole_bench::BenchArgs,
    /// Connection flags (as for `vole call`); a link on which no call
    /// finishes for --timeout seconds is given up, its calls counted as errors.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `vole bench`.
pub async fn run(cmd: BenchCommand) -> Result<(), Failure> {
    let client = cmd.client;
    let config = |host: &str| super::trust::client_config(&client, host).map_err(Into::into);
    vole_bench::run(cmd.bench, config).await.map_err(failure)
}

/// Runs `vole bench-server`.
pub async fn run_server(args: vole_bench::ServerArgs) -> Result<(), Failure> {
    vole_bench::run_server(args).await.map_err(failure)
}

/// The exit code of a load generator's error, by its kind.
fn failure(error: vole_bench::Error) -> Failure {
    let code = match error.kind() {
        ErrorKind::Usage => exit::USAGE,
        ErrorKind::Connection => exit::CONNECTION,
        ErrorKind::Remote => exit::REMOTE,
        // Internal, and any kind added later.
        _ => exit::INTERNAL,
    };
    Failure {
        code,
        error: error.into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        Bench(BenchCommand),
    }

    #[test]
    fn bench_takes_its_flags_and_the_connection_flags() {
        let argv = [
            "vole",
            "bench",
            "-n",
            "3",
            "--sessions",
            "--plain",
            "--timeout",
            "2",
        ];
        let Ok(Cli {
            command: Command::Bench(cmd),
            ..
        }) = Cli::try_parse_from(argv)
        else {
            panic!("vole bench parses");
        };
        assert_eq!((cmd.bench.links, cmd.bench.sessions), (3, true));
        assert!(cmd.client.plain);
        assert_eq!(cmd.client.timeout, 2.0);
        assert!(Cli::try_parse_from(["vole", "bench", "--no-resume"]).is_err());
    }

    #[test]
    fn kinds_map_to_exit_codes() {
        let usage = vole_bench::Error::Usage {
            message: "--links".into(),
            source: None,
        };
        assert_eq!(failure(usage).code, exit::USAGE);
        let connect = vole_bench::Error::Connect {
            target: "raw-tcp://127.0.0.1:1".into(),
            source: "refused".into(),
        };
        assert_eq!(failure(connect).code, exit::CONNECTION);
        let remote = vole_bench::Error::Remote {
            target: "vop://127.0.0.1:1/".into(),
            source: "call error".into(),
        };
        assert_eq!(failure(remote).code, exit::REMOTE);
    }
}
