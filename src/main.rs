//! The `vole` command.

use std::io::Write as _;
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
            // Not eprintln!: it panics if stderr is gone.
            let _ = writeln!(std::io::stderr(), "vole: {:#}", failure.error);
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
        (Command::Serve(_) | Command::Node(_), _, _) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Node processes name their threads vole-node-<id>, so every log line
    // carries the node id.
    let node = matches!(cli.command, Command::Node(_));
    // A node's stderr is a pipe to its controller: if the controller dies,
    // writes fail with EPIPE, and tracing-subscriber would then report the
    // failure with `eprintln!`, which panics, killing whichever task logged
    // (a link driver, say, leaving the node hung instead of exiting).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(node)
        .log_internal_errors(false)
        .init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    let threads = match &cli.command {
        Command::Serve(args) => args
            .threads
            .or(if args.nodes == Some(0) { None } else { Some(1) }),
        Command::Node(args) => Some(args.threads.unwrap_or(1)),
        _ => Some(2),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Command::Node(args) = &cli.command {
        cli::node::set_process_name(args.id);
        builder.thread_name(format!("vole-node-{}", args.id));
    }
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
            Command::Status(args) => cli::status::run(args).await,
            Command::Node(args) => {
                // On a worker thread, so every log line carries the node's
                // thread name.
                let code = tokio::spawn(cli::node::run(args)).await.unwrap_or(1);
                if code == 0 {
                    Ok(())
                } else {
                    Err(Failure {
                        code: u8::try_from(code).unwrap_or(1),
                        error: anyhow::anyhow!("node exited with code {code}"),
                    })
                }
            }
        }
    })
}
