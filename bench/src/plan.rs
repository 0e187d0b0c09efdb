//! The plan of a run: the arguments checked and turned into what the
//! runners need.

use std::path::PathBuf;
use std::time::Duration;

use crate::args::BenchArgs;
use crate::cpu;
use crate::error::Error;
use crate::raw::MAX_FRAME;

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
    pub fn parse(text: &str) -> Result<Target, Error> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| Error::usage(format!("target {text:?} has no scheme")))?;
        let tls = match scheme {
            "vop" => return Ok(Target::Vop(text.to_owned())),
            "raw-tls" => true,
            "raw-tcp" => false,
            other => {
                return Err(Error::usage(format!(
                    "unknown target scheme {other:?} (expected vop, raw-tls or raw-tcp)"
                )))
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(Error::usage(format!("a raw target has no path: {text:?}")));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| Error::usage(format!("target {text:?} needs a port")))?;
        let port: u16 = port.parse().map_err(|e| Error::Usage {
            message: format!("bad port in target {text:?}"),
            source: Some(Box::new(e)),
        })?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(Error::usage(format!("target {text:?} has no host")));
        }
        Ok(Target::Raw {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The host part, for choosing trust.
    pub fn host(&self) -> Result<String, Error> {
        match self {
            Target::Raw { host, .. } => Ok(host.clone()),
            Target::Vop(uri) => {
                let vri: vole_link::uri::Vri = uri.parse().map_err(|e| Error::Usage {
                    message: format!("bad target uri {uri:?}"),
                    source: Some(Box::new(e)),
                })?;
                Ok(vri.host.to_string())
            }
        }
    }
}

fn seconds(value: f64, flag: &str, allow_zero: bool) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| allow_zero || !d.is_zero())
        .ok_or_else(|| Error::usage(format!("{flag} must be a positive number of seconds")))
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Calls on links held open for the whole run.
    Held,
    /// New sessions, one call each.
    Sessions,
    /// Calls through the failover client, over several hosts.
    Failover,
}

impl Mode {
    /// Its name in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Held => "held",
            Mode::Sessions => "sessions",
            Mode::Failover => "failover",
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
    /// With [`Mode::Failover`]: how.
    pub failover: Option<FailoverPlan>,
}

/// How a [`Mode::Failover`] run calls.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverPlan {
    /// The hosts (empty: every address the target's host resolves to, or
    /// with `srv` its SRV records name).
    pub endpoints: Vec<std::net::SocketAddr>,
    /// Find the hosts by the SRV records of `_vop._tcp.HOST`.
    pub srv: bool,
    /// Calls per second over all links (`None`: back to back).
    pub rate: Option<f64>,
    /// Whether calls cut off in flight are tried again.
    pub idempotent: bool,
    /// A deadline for each try of a call.
    pub call_timeout: Option<Duration>,
}

impl FailoverPlan {
    fn from_args(args: &BenchArgs, target: &Target) -> Result<Option<FailoverPlan>, Error> {
        if args.endpoints.is_empty() && args.rate.is_none() && !args.srv {
            if args.idempotent || args.call_timeout.is_some() {
                return Err(Error::usage(
                    "--idempotent and --call-timeout need --endpoints, --srv or --rate",
                ));
            }
            return Ok(None);
        }
        if !matches!(target, Target::Vop(_)) {
            return Err(Error::usage(
                "--endpoints, --srv and --rate need a vop:// target",
            ));
        }
        let mut endpoints = Vec::with_capacity(args.endpoints.len());
        for text in &args.endpoints {
            let addr = text.trim().parse().map_err(|e| Error::Usage {
                message: format!("bad --endpoints address {text:?} (expected IP:PORT)"),
                source: Some(Box::new(e)),
            })?;
            endpoints.push(addr);
        }
        let rate = match args.rate {
            Some(r) if r.is_finite() && r > 0.0 => Some(r),
            Some(_) => return Err(Error::usage("--rate must be a positive number of calls/s")),
            None => None,
        };
        let call_timeout = match args.call_timeout {
            Some(t) => Some(seconds(t, "--call-timeout", false)?),
            None => None,
        };
        Ok(Some(FailoverPlan {
            endpoints,
            srv: args.srv,
            rate,
            idempotent: args.idempotent,
            call_timeout,
        }))
    }
}

impl Plan {
    /// Checks the arguments; `timeout` bounds connecting and each call (a
    /// link on which no call finishes for that long is given up).
    pub fn from_args(args: &BenchArgs, timeout: Duration) -> Result<Plan, Error> {
        let target = Target::parse(&args.target)?;
        if args.links == 0 || args.inflight == 0 {
            return Err(Error::usage("--links and --inflight must be at least 1"));
        }
        let mode = if args.sessions {
            if args.inflight != 1 {
                return Err(Error::usage(
                    "--sessions makes one call per session: --inflight must be 1",
                ));
            }
            Mode::Sessions
        } else {
            Mode::Held
        };
        let failover = FailoverPlan::from_args(args, &target)?;
        let mode = if failover.is_some() {
            Mode::Failover
        } else {
            mode
        };
        if args.payload > MAX_FRAME {
            return Err(Error::usage(format!(
                "--payload must be at most {MAX_FRAME} bytes"
            )));
        }
        if timeout.is_zero() {
            return Err(Error::usage(
                "--timeout must be a positive number of seconds",
            ));
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
            timeout,
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
            failover,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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

    /// `vole bench` as the `vole` command defines it: these arguments and
    /// the connection flags, of which the plan takes `--timeout`.
    #[derive(Debug, clap::Parser)]
    #[command(name = "bench")]
    struct TestCli {
        #[command(flatten)]
        bench: BenchArgs,
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    }

    fn parse(extra: &[&str]) -> Result<TestCli, clap::Error> {
        use clap::Parser as _;
        TestCli::try_parse_from(std::iter::once(&"bench").chain(extra))
    }

    fn plan_of(extra: &[&str]) -> Result<Plan, Error> {
        let cli = parse(extra).expect("arguments parse");
        let timeout = Duration::try_from_secs_f64(cli.timeout).expect("a duration");
        Plan::from_args(&cli.bench, timeout)
    }

    #[test]
    fn plan_checks_arguments() {
        let plan = plan_of(&[]).expect("default plan");
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
            let err = plan_of(bad).expect_err("bad plan");
            assert_eq!(err.kind(), ErrorKind::Usage, "{bad:?}");
        }
        assert!(plan_of(&["--warmup", "0"]).is_ok());
    }

    #[test]
    fn plan_modes() {
        let plan = plan_of(&[]).expect("default plan");
        assert_eq!(
            (plan.mode, plan.resume, plan.server),
            (Mode::Held, true, None)
        );
        let plan = plan_of(&[
            "--sessions",
            "--no-resume",
            "--server-pid",
            "7",
            "--server-tree",
            "--admin-socket",
            "/tmp/a.sock",
        ])
        .expect("sessions plan");
        assert_eq!(plan.mode, Mode::Sessions);
        assert!(!plan.resume && !plan.cache_per_worker);
        assert_eq!(plan.server, Some(cpu::Server::Tree(7)));
        assert_eq!(plan.admin_socket, Some(PathBuf::from("/tmp/a.sock")));
        let plan = plan_of(&["--sessions", "--cache-per-worker"]).expect("plan");
        assert!(plan.resume && plan.cache_per_worker);
        let plan = plan_of(&["--server-pid", "7"]).expect("plan");
        assert_eq!(plan.server, Some(cpu::Server::Pid(7)));
        // New raw sessions are the baseline of new vole sessions.
        let plan = plan_of(&["--sessions", "--target", "raw-tls://127.0.0.1:1"]).expect("plan");
        assert_eq!(plan.mode, Mode::Sessions);
        let err = plan_of(&["--sessions", "--inflight", "2"]).expect_err("bad plan");
        assert_eq!(err.kind(), ErrorKind::Usage);
        // Flags that need others, or exclude each other.
        for bad in [
            &["--no-resume"][..],
            &["--server-tree"],
            &["--cache-per-worker"],
            &["--sessions", "--cache-per-worker", "--no-resume"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
