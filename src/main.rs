//! The `vole` command.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

mod cli;
mod daemon;
mod logging;
mod settings;

use cli::exit::{self, Failure};
use cli::{Cli, Command};

/// The global allocator. Every call allocates a few small buffers (decoded
/// strings and argument lists, a boxed call future) and frees them on the
/// same thread soon after; glibc malloc spent about 10% of the instructions
/// of an echo round trip on that, mimalloc a third of it (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            // Not eprintln!: it panics if stderr is gone. A daemon's start-up
            // failure was already printed by the launching process.
            if !daemon::REPORTED.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = writeln!(std::io::stderr(), "vole: {:#}", failure.error);
            }
            ExitCode::from(failure.code)
        }
    }
}

fn runtime(
    threads: Option<usize>,
    name: Option<String>,
) -> Result<tokio::runtime::Runtime, Failure> {
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
    if let Some(name) = name {
        builder.thread_name(name);
    }
    builder.build().map_err(|e| Failure {
        code: exit::INTERNAL,
        error: e.into(),
    })
}

/// A controller's runtime: one thread, no worker pool. Everything it does
/// (accepting and passing on connections in `dispatch` mode, control
/// links, supervision) is a little work on each wake-up, and a
/// multi-threaded runtime's worker and handoffs cost more per wake-up than
/// that work (docs/design.md, "One thread").
fn controller_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: exit::INTERNAL,
            error: e.into(),
        })
}

fn client_log_level(cli: &Cli) -> &'static str {
    match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "debug",
        _ => "trace",
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let level = client_log_level(&cli);
    match cli.command {
        Command::Serve(args) => {
            // Before any thread: settings, logging, daemon, pid file.
            let prepared = cli::serve::prepare(*args, cli.verbose, cli.quiet)?;
            let rt = match if prepared.is_controller() {
                controller_runtime()
            } else {
                runtime(prepared.threads(), None)
            } {
                Ok(rt) => rt,
                Err(f) => {
                    prepared.report_failure(&f);
                    return Err(f);
                }
            };
            rt.block_on(cli::serve::run(prepared))
        }
        Command::Node(args) => {
            logging::init(&args.log_level, args.log_format, true);
            cli::node::set_process_name(args.id);
            let rt = runtime(
                Some(args.threads.unwrap_or(1)),
                Some(format!("vole-node-{}", args.id)),
            )?;
            // On a worker thread, so every log line carries the node's
            // thread name.
            let code = rt.block_on(async { tokio::spawn(cli::node::run(args)).await.unwrap_or(1) });
            if code == 0 {
                Ok(())
            } else {
                Err(Failure {
                    code: u8::try_from(code).unwrap_or(1),
                    error: anyhow::anyhow!("node exited with code {code}"),
                })
            }
        }
        Command::Config(cmd) => {
            logging::init(level, settings::LogFormat::Text, false);
            cli::config::run(cmd)
        }
        command => {
            logging::init(level, settings::LogFormat::Text, false);
            let threads = match &command {
                #[cfg(feature = "bench")]
                Command::Bench(cmd) => cmd.bench.threads,
                #[cfg(feature = "bench")]
                Command::BenchServer(args) => args.threads,
                _ => Some(2),
            };
            let rt = runtime(threads.or(Some(2)), None)?;
            rt.block_on(async move {
                match command {
                    Command::Call(args) => cli::call::call(args).await,
                    Command::Describe(args) => cli::call::describe(args).await,
                    #[cfg(feature = "bench")]
                    Command::Bench(cmd) => cli::bench::run(cmd).await,
                    #[cfg(feature = "bench")]
                    Command::BenchServer(args) => cli::bench::run_server(args).await,
                    Command::Status(args) => cli::status::run(args).await,
                    Command::Stop(args) => cli::admin::stop(args).await,
                    Command::Reload(t) => {
                        cli::admin::simple(
                            t,
                            vole_controller::admin::AdminRequest::Reload,
                            "reloaded: every node replaced",
                        )
                        .await
                    }
                    Command::Scale(args) => {
                        let n = args.nodes;
                        cli::admin::simple(
                            args.target,
                            vole_controller::admin::AdminRequest::Scale { nodes: n },
                            "scaling",
                        )
                        .await
                    }
                    Command::ReopenLogs(t) => {
                        cli::admin::simple(
                            t,
                            vole_controller::admin::AdminRequest::ReopenLogs,
                            "log file reopened",
                        )
                        .await
                    }
                    Command::Upgrade(t) => {
                        cli::admin::simple(
                            t,
                            vole_controller::admin::AdminRequest::Upgrade,
                            "upgrade started",
                        )
                        .await
                    }
                    Command::Serve(_) | Command::Node(_) | Command::Config(_) => Ok(()),
                }
            })
        }
    }
}
