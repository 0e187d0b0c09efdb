//! The `vole` command.

use std::process::ExitCode;

use clap::Parser as _;

mod bench;
mod cli;

use cli::exit::{self, Failure};
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            // clap prints help and version to stdout, errors to stderr.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli);
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            eprintln!("vole: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (&cli.command, cli.quiet, cli.verbose) {
        (_, true, _) => "error",
        (_, _, 1) => "debug",
        (_, _, v) if v >= 2 => "trace",
        (Command::Serve(_), _, _) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    let threads = match &cli.command {
        Command::Serve(args) => args.threads,
        Command::Bench(args) => args.threads,
        Command::BenchServer(args) => args.threads,
        _ => Some(2),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        if n == 0 {
            return Err(Failure::usage(anyhow::anyhow!(
                "--threads must be at least 1"
            )));
        }
        builder.worker_threads(n);
    }
    let runtime = builder.build().map_err(|e| Failure {
        code: exit::INTERNAL,
        error: e.into(),
    })?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(args).await,
            Command::Call(args) => cli::call::call(args).await,
            Command::Describe(args) => cli::call::describe(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchServer(args) => bench::run_server(args).await,
        }
    })
}
