//! Running a host's subcommand: runtimes, logging, and the dispatch from a
//! parsed command line to serve, node and the admin commands.

use super::args::{Globals, HostCommand};
use super::exit::{self, Failure};
use crate::hosted::HostedService;
use crate::logging;
use crate::settings::LogFormat;

/// A multi-threaded runtime (`threads` workers, or one per CPU), its
/// threads named `name` if given.
pub fn runtime(
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
        error: anyhow::Error::new(e).context("cannot start the async runtime"),
    })
}

/// A controller's runtime: one thread, no worker pool. Everything it does
/// (accepting and passing on connections in `dispatch` mode, control
/// links, supervision) is a little work on each wake-up, and a
/// multi-threaded runtime's worker and handoffs cost more per wake-up than
/// that work (docs/design.md, "One thread").
pub fn controller_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: exit::INTERNAL,
            error: anyhow::Error::new(e).context("cannot start the async runtime"),
        })
}

/// Logging for a client command: text on stderr at the level `-v`/`-q`
/// ask for.
pub fn init_client_logging(globals: Globals) {
    logging::init(globals.client_log_level(), LogFormat::Text, false);
}

/// Runs one of the host's own subcommands for `service`.
pub fn run_host_command(
    command: HostCommand,
    globals: Globals,
    service: &HostedService,
) -> Result<(), Failure> {
    let level = globals.client_log_level();
    match command {
        HostCommand::Serve(args) => {
            // Before any thread: settings, logging, daemon, pid file.
            let prepared = super::serve::prepare(*args, globals, service)?;
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
            rt.block_on(super::serve::run(prepared))
        }
        HostCommand::Node(args) => {
            logging::init(&args.log_level, args.log_format, true);
            super::node::forbid_inspection();
            let name = service.node_name(args.id);
            super::node::set_process_name(&name);
            let rt = runtime(Some(args.threads.unwrap_or(1)), Some(name))?;
            let init = service.node_init();
            // The allow lists arrive from the controller; this is the
            // host's own.
            let authorizer = service.authorizer.clone();
            // On a worker thread, so every log line carries the node's
            // thread name.
            let code = rt.block_on(async {
                tokio::spawn(super::node::run(args, init, authorizer))
                    .await
                    .unwrap_or(1)
            });
            if code == 0 {
                Ok(())
            } else {
                Err(Failure {
                    code: u8::try_from(code).unwrap_or(1),
                    error: anyhow::anyhow!("node exited with code {code}"),
                })
            }
        }
        HostCommand::ExecNode(args) => {
            // One thread so far (nothing has started any): setting the
            // environment is safe.
            let error =
                vole_controller::spawn::exec_node(args.id, args.fds, &args.name, &args.command);
            // A program that cannot be run is a configuration error: the
            // controller stops instead of restarting the node.
            Err(Failure {
                code: u8::try_from(vole_control::control::EXIT_CONFIG).unwrap_or(exit::USAGE),
                error: anyhow::Error::new(error).context(format!(
                    "cannot start the node command {:?}",
                    args.command.join(" ")
                )),
            })
        }
        // `Host` documents its whole command line (its own subcommands
        // too); called directly, the host commands are what there is.
        c @ (HostCommand::Completions(_) | HostCommand::Man) => {
            let cli = super::command()
                .name(service.name.clone())
                .bin_name(service.name.clone());
            super::docs::generate(&c, cli, &service.name).unwrap_or(Ok(()))
        }
        HostCommand::Config(cmd) => {
            logging::init(level, LogFormat::Text, false);
            super::config::run(cmd, service)
        }
        command => {
            logging::init(level, LogFormat::Text, false);
            let rt = runtime(Some(2), None)?;
            rt.block_on(async move {
                match command {
                    HostCommand::Status(args) => super::status::run(args, service).await,
                    HostCommand::Stop(args) => super::admin::stop(args, service).await,
                    HostCommand::Drain(t) => {
                        super::admin::simple(
                            t,
                            service,
                            vole_controller::admin::AdminRequest::Drain,
                            "draining: the shutdown delay is over",
                        )
                        .await
                    }
                    HostCommand::Reload(t) => {
                        super::admin::simple(
                            t,
                            service,
                            vole_controller::admin::AdminRequest::Reload,
                            "reloaded: every node replaced",
                        )
                        .await
                    }
                    HostCommand::Scale(args) => {
                        let n = args.nodes;
                        super::admin::simple(
                            args.target,
                            service,
                            vole_controller::admin::AdminRequest::Scale { nodes: n },
                            "scaling",
                        )
                        .await
                    }
                    HostCommand::ReopenLogs(t) => {
                        super::admin::simple(
                            t,
                            service,
                            vole_controller::admin::AdminRequest::ReopenLogs,
                            "log file reopened",
                        )
                        .await
                    }
                    HostCommand::Upgrade(t) => {
                        super::admin::simple(
                            t,
                            service,
                            vole_controller::admin::AdminRequest::Upgrade,
                            "upgraded: the new controller serves",
                        )
                        .await
                    }
                    HostCommand::Serve(_)
                    | HostCommand::Node(_)
                    | HostCommand::ExecNode(_)
                    | HostCommand::Config(_)
                    | HostCommand::Completions(_)
                    | HostCommand::Man => Ok(()),
                }
            })
        }
    }
}
