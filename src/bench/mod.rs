//! `vole bench`, the load generator, and `vole bench-server`, the baseline
//! servers it is compared with.
//!
//! `vole bench` opens N links (or raw connections), keeps M calls in flight
//! on each, runs a warm-up and then a measured window, and reports calls/s,
//! an HDR latency histogram (p50/p99/p99.9) and, when told the server's pid,
//! the server's CPU time per call (of one process, or with `--server-tree`
//! of the process and its descendants: a controller and its nodes).
//!
//! With `--sessions` it measures new sessions instead of held links: N
//! workers each loop connect, VOP and TLS, the link handshake, resolving the
//! path, one call, close ([`sessions`]); sessions/s, the latency of the whole
//! session, and how many resumed their TLS session. With `--admin-socket`
//! it reads each node's counters from the service at the window's edges
//! and reports their fairness as Jain's index ([`nodes`]). Targets:
//!
//! * `vop://host:port/path/`: a Versile service; the path is resolved once
//!   per link and `method` is called on the object with a string payload;
//! * `raw-tls://host:port` and `raw-tcp://host:port`: the length-prefixed
//!   echo servers of `vole bench-server`, driven with the same links,
//!   in-flight depth, payload and window, so the figures compare directly.
//!
//! The modules: [`load`] runs the links and records, [`sessions`] runs new
//! sessions, [`raw`] is the baseline protocol (server and client), [`cpu`]
//! reads process CPU time, [`nodes`] the per-node counts, [`report`] prints
//! the summary.

pub mod cpu;
pub mod load;
pub mod nodes;
pub mod raw;
pub mod report;
pub mod sessions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use vole::cli::exit::Failure;
use vole::cli::ClientArgs;

/// `vole bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to load: vop://host:port/path/ (a Versile service), or
    /// raw-tls://host:port / raw-tcp://host:port (a `vole bench-server`).
    #[arg(
        long,
        value_name = "URI",
        default_value = "vop://localhost:4433/text/echo/"
    )]
    pub target: String,
    /// Method called on the resolved object (vop:// targets), with one string argument.
    #[arg(long, value_name = "NAME", default_value = "echo")]
    pub method: String,
    /// Links (connections) to open; with --sessions, concurrent workers.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 64)]
    pub links: usize,
    /// Calls kept in flight on each link (1 with --sessions).
    #[arg(short = 'm', long, value_name = "M", default_value_t = 1)]
    pub inflight: usize,
    /// New sessions instead of held links: each of --links workers loops
    /// connect, VOP and TLS, link handshake, resolve the path, one call
    /// (checked), close. Counts sessions; the latency is the whole session.
    #[arg(long)]
    pub sessions: bool,
    /// With --sessions: no TLS resumption, every session a full handshake
    /// (by default all workers share one session cache, as one reconnecting
    /// client does).
    #[arg(long, requires = "sessions")]
    pub no_resume: bool,
    /// With --sessions: give each worker its own TLS session cache, as N
    /// separate clients each reconnecting (a shared cache holds at most 8
    /// tickets per server, so with more than 8 workers some sessions find
    /// it empty and do a full handshake).
    #[arg(long, requires = "sessions", conflicts_with = "no_resume")]
    pub cache_per_worker: bool,
    /// Payload size in bytes (a string of this many ASCII characters).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub payload: usize,
    /// Seconds measured.
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window.
    #[arg(short = 'w', long, value_name = "SECS", default_value_t = 2.0)]
    pub warmup: f64,
    /// Also measure this process's CPU time over the window (the server's pid).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// With --server-pid: measure the process and all its descendants (a
    /// controller and its nodes), listed again at each reading.
    #[arg(long, requires = "server_pid")]
    pub server_tree: bool,
    /// The service's admin socket: read each node's counters at the start and
    /// the end of the window, and report them with Jain's index over nodes
    /// (of calls with held links, of accepted connections with --sessions).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Print the summary as one line of JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A label copied into the summary (for scripts).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Worker threads of the load generator [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Connection flags (as for `vole call`); a link on which no call
    /// finishes for --timeout seconds is given up, its calls counted as errors.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vole bench-server` arguments (a hidden subcommand).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["tls", "plain"])))]
pub struct ServerArgs {
    /// Length-prefixed echo over TLS 1.3 (the dev certificate).
    #[arg(long)]
    pub tls: bool,
    /// Length-prefixed echo over plain TCP.
    #[arg(long)]
    pub plain: bool,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4434")]
    pub listen: SocketAddr,
    /// Where the dev certificate is kept (as for `vole serve`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Worker threads [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// What `vole bench` drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Versile service at this URI.
    Vop(String),
    /// A raw length-prefixed echo server.
    Raw {
        /// Host name or address (no brackets).
        host: String,
        /// Port.
        port: u16,
        /// Whether to speak TLS.
        tls: bool,
    },
}

impl Target {
    /// Parses a `--target` value.
    pub fn parse(text: &str) -> anyhow::Result<Target> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| anyhow::anyhow!("target {text:?} has no scheme"))?;
        let tls = match scheme {
            "vop" => return Ok(Target::Vop(text.to_owned())),
            "raw-tls" => true,
            "raw-tcp" => false,
            other => {
                anyhow::bail!("unknown target scheme {other:?} (expected vop, raw-tls or raw-tcp)")
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            anyhow::bail!("a raw target has no path: {text:?}");
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("target {text:?} needs a port"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("bad port in target {text:?}"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            anyhow::bail!("target {text:?} has no host");
        }
        Ok(Target::Raw {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The host part, for choosing trust.
    pub fn host(&self) -> anyhow::Result<String> {
        match self {
            Target::Raw { host, .. } => Ok(host.clone()),
            Target::Vop(uri) => {
                let vri: vole_link::uri::Vri = uri
                    .parse()
                    .with_context(|| format!("bad target uri {uri:?}"))?;
                Ok(vri.host.to_string())
            }
        }
    }
}

fn seconds(value: f64, flag: &str, allow_zero: bool) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| allow_zero || !d.is_zero())
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{flag} must be a positive number of seconds"
            ))
        })
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Calls on links held open for the whole run.
    Held,
    /// New sessions, one call each.
    Sessions,
}

impl Mode {
    /// Its name in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Held => "held",
            Mode::Sessions => "sessions",
        }
    }
}

/// The validated plan of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to load.
    pub target: Target,
    /// The flag as given, for the report.
    pub target_text: String,
    /// Method name (vop targets).
    pub method: String,
    /// Links.
    pub links: usize,
    /// Calls in flight per link.
    pub inflight: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Warm-up.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// Bound on connecting and on each call.
    pub timeout: Duration,
    /// Server process(es) for CPU accounting.
    pub server: Option<cpu::Server>,
    /// The service's admin socket, for per-node counts.
    pub admin_socket: Option<PathBuf>,
    /// Held links or new sessions.
    pub mode: Mode,
    /// New sessions: allow TLS resumption.
    pub resume: bool,
    /// New sessions: one TLS session cache per worker instead of one shared.
    pub cache_per_worker: bool,
    /// Label for the report.
    pub label: Option<String>,
}

impl Plan {
    /// Checks the arguments.
    pub fn from_args(args: &BenchArgs) -> Result<Plan, Failure> {
        let target = Target::parse(&args.target).map_err(Failure::usage)?;
        if args.links == 0 || args.inflight == 0 {
            return Err(Failure::usage(anyhow::anyhow!(
                "--links and --inflight must be at least 1"
            )));
        }
        let mode = if args.sessions {
            if args.inflight != 1 {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--sessions makes one call per session: --inflight must be 1"
                )));
            }
            if !matches!(target, Target::Vop(_)) {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--sessions needs a vop:// target"
                )));
            }
            Mode::Sessions
        } else {
            Mode::Held
        };
        if args.payload > raw::MAX_FRAME {
            return Err(Failure::usage(anyhow::anyhow!(
                "--payload must be at most {} bytes",
                raw::MAX_FRAME
            )));
        }
        Ok(Plan {
            target,
            target_text: args.target.clone(),
            method: args.method.clone(),
            links: args.links,
            inflight: args.inflight,
            payload: args.payload,
            warmup: seconds(args.warmup, "--warmup", true)?,
            duration: seconds(args.duration, "--duration", false)?,
            timeout: seconds(args.client.timeout, "--timeout", false)?,
            server: args.server_pid.map(|pid| {
                if args.server_tree {
                    cpu::Server::Tree(pid)
                } else {
                    cpu::Server::Pid(pid)
                }
            }),
            admin_socket: args.admin_socket.clone(),
            mode,
            resume: !args.no_resume,
            cache_per_worker: args.cache_per_worker,
            label: args.label.clone(),
        })
    }
}

/// Runs the benchmark and prints the summary.
pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    let plan = Plan::from_args(&args)?;
    let host = plan.target.host().map_err(Failure::usage)?;
    let config = vole::cli::trust::client_config(&args.client, &host).map_err(Failure::usage)?;
    let summary = match plan.mode {
        Mode::Held => load::run(&plan, &config).await?,
        Mode::Sessions => sessions::run(&plan, &config).await?,
    };
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}

/// Runs a baseline echo server until SIGTERM or SIGINT.
pub async fn run_server(args: ServerArgs) -> Result<(), Failure> {
    let tls = if args.tls {
        let state_dir = args
            .state_dir
            .clone()
            .unwrap_or_else(vole_transport::tls::default_state_dir);
        let identity = vole_transport::tls::ServerIdentity::Dev { state_dir };
        let server = vole_transport::tls::server_config(&identity).context("tls")?;
        Some(server.config)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("listener address")?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("signal handler")?;
    let mut int = signal(SignalKind::interrupt()).context("signal handler")?;
    tokio::select! {
        _ = raw::serve(listener, tls) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("vop://localhost:4433/text/echo/").expect("vop target"),
            Target::Vop("vop://localhost:4433/text/echo/".into())
        );
        assert_eq!(
            Target::parse("raw-tls://127.0.0.1:4434").expect("raw-tls target"),
            Target::Raw {
                host: "127.0.0.1".into(),
                port: 4434,
                tls: true
            }
        );
        assert_eq!(
            Target::parse("raw-tcp://[::1]:9/").expect("raw-tcp target"),
            Target::Raw {
                host: "::1".into(),
                port: 9,
                tls: false
            }
        );
    }

    #[test]
    fn rejects_bad_targets() {
        for bad in [
            "localhost:4433",
            "http://x:1",
            "raw-tcp://x",
            "raw-tcp://x:port",
            "raw-tcp://:80",
            "raw-tls://x:1/path",
            "raw-tcp://x:70000",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_host() {
        let t = Target::parse("vop://127.0.0.1:1/").expect("target");
        assert_eq!(t.host().expect("host"), "127.0.0.1");
        assert!(Target::Vop("vop://".into()).host().is_err());
    }

    fn args(extra: &[&str]) -> BenchArgs {
        let mut argv = vec!["vole", "bench"];
        argv.extend_from_slice(extra);
        match crate::ClientCli::try_parse_from(argv).expect("arguments parse") {
            crate::Client::Bench(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn plan_checks_arguments() {
        let plan = Plan::from_args(&args(&[])).expect("default plan");
        assert_eq!((plan.links, plan.inflight, plan.payload), (64, 1, 64));
        assert_eq!(plan.method, "echo");
        for bad in [
            &["--links", "0"][..],
            &["--inflight", "0"],
            &["--duration", "0"],
            &["--warmup=-1"],
            &["--timeout", "0"],
            &["--payload", "999999999"],
            &["--target", "nope"],
        ] {
            let err = Plan::from_args(&args(bad)).expect_err("bad plan");
            assert_eq!(err.code, vole::cli::exit::USAGE, "{bad:?}");
        }
        assert!(Plan::from_args(&args(&["--warmup", "0"])).is_ok());
    }

    #[test]
    fn plan_modes() {
        let plan = Plan::from_args(&args(&[])).expect("default plan");
        assert_eq!(
            (plan.mode, plan.resume, plan.server),
            (Mode::Held, true, None)
        );
        let plan = Plan::from_args(&args(&[
            "--sessions",
            "--no-resume",
            "--server-pid",
            "7",
            "--server-tree",
            "--admin-socket",
            "/tmp/a.sock",
        ]))
        .expect("sessions plan");
        assert_eq!(plan.mode, Mode::Sessions);
        assert!(!plan.resume && !plan.cache_per_worker);
        assert_eq!(plan.server, Some(cpu::Server::Tree(7)));
        assert_eq!(plan.admin_socket, Some(PathBuf::from("/tmp/a.sock")));
        let plan = Plan::from_args(&args(&["--sessions", "--cache-per-worker"])).expect("plan");
        assert!(plan.resume && plan.cache_per_worker);
        let plan = Plan::from_args(&args(&["--server-pid", "7"])).expect("plan");
        assert_eq!(plan.server, Some(cpu::Server::Pid(7)));
        for bad in [
            &["--sessions", "--inflight", "2"][..],
            &["--sessions", "--target", "raw-tls://127.0.0.1:1"],
        ] {
            let err = Plan::from_args(&args(bad)).expect_err("bad plan");
            assert_eq!(err.code, vole::cli::exit::USAGE, "{bad:?}");
        }
        for bad in [
            &["vole", "bench", "--no-resume"][..],
            &["vole", "bench", "--server-tree"],
            &["vole", "bench", "--cache-per-worker"],
            &[
                "vole",
                "bench",
                "--sessions",
                "--cache-per-worker",
                "--no-resume",
            ],
        ] {
            assert!(crate::ClientCli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
