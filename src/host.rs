//! [`Host`]: any program becomes a full vole host for its own service.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vole::link::publish::Published;
//! use vole::link::{CallError, LinkInfo, Object};
//!
//! async fn greet((name,): (String,)) -> Result<String, CallError> {
//!     Ok(format!("hello, {name}"))
//! }
//!
//! fn my_gateway(_info: &LinkInfo) -> Arc<dyn Object> {
//!     Published::new("Greeter").method("greet", "Greets.", greet).into_object()
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     vole::Host::new("greeter", |info: &vole::link::LinkInfo| my_gateway(info)).main()
//! }
//! ```
//!
//! `greeter serve --nodes 4` then runs a controller and four node
//! processes (`greeter-node-0` ...) re-executed from the program's own
//! binary, with everything `vole serve` has: balancing, supervision,
//! daemon mode, `status`, `stop`, `reload`, `scale`, `reopen-logs`,
//! `upgrade`, `config check`, systemd and metrics. The exit codes are those
//! of [`crate::cli::exit`].

use std::fmt::Display;
use std::future::Future;
use std::io::Write as _;
use std::marker::PhantomData;
use std::process::ExitCode;
use std::sync::Arc;

use clap::FromArgMatches as _;
use serde::de::DeserializeOwned;
use vole_link::{LinkInfo, Object};

use crate::cli::exit::{self, Failure};
use crate::cli::{Globals, HostCli};
use crate::hosted::HostedService;
pub use crate::hosted::Init;

/// A program's own subcommands, next to the host's.
trait Extra {
    fn augment(&self, cmd: clap::Command) -> clap::Command;
    fn has(&self, name: &str) -> bool;
    fn run(self: Box<Self>, matches: &clap::ArgMatches, globals: Globals) -> ExitCode;
}

struct Commands<C, R> {
    run: R,
    _command: PhantomData<fn() -> C>,
}

impl<C, R> Extra for Commands<C, R>
where
    C: clap::Subcommand,
    R: FnOnce(C, Globals) -> ExitCode,
{
    fn augment(&self, cmd: clap::Command) -> clap::Command {
        C::augment_subcommands(cmd)
    }

    fn has(&self, name: &str) -> bool {
        C::has_subcommand(name)
    }

    fn run(self: Box<Self>, matches: &clap::ArgMatches, globals: Globals) -> ExitCode {
        match C::from_arg_matches(matches) {
            Ok(command) => (self.run)(command, globals),
            Err(e) => {
                let _ = e.print();
                ExitCode::from(exit::USAGE)
            }
        }
    }
}

/// A vole host for one service: the command line, the controller, the
/// nodes, the admin commands. Build it with [`Host::new`] (a gateway
/// factory) or [`Host::with_init`] (typed settings and per-node state),
/// adjust it with the other methods, and hand `main` over to
/// [`Host::main`].
pub struct Host {
    service: HostedService,
    extra: Option<Box<dyn Extra>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host for the service named `name` (a short, lowercase word: it
    /// names the program, its node processes `<name>-node-<id>`, its state
    /// directory and its metrics), serving for each new link the object
    /// `factory` makes.
    pub fn new<F>(name: impl Into<String>, factory: F) -> Host
    where
        F: Fn(&LinkInfo) -> Arc<dyn Object> + Send + Sync + 'static,
    {
        Host {
            service: HostedService::plain(name, Arc::new(factory)),
            extra: None,
        }
    }

    /// A host whose nodes each run `init` once before they serve (open a
    /// database pool, load a model), and serve the objects `factory` makes
    /// from what `init` returned (the node's state), without globals.
    ///
    /// `init` gets the service's own settings, `C`: the `[service]` table
    /// of the settings file, deserialized with serde (checked when the
    /// service starts, on every reload and by `config check`, with errors
    /// that name the key). An `init` that fails ends its node: the error is
    /// logged and the restart policy decides (backoff, then give up past
    /// the restart intensity).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use vole::link::publish::Published;
    /// use vole::link::LinkInfo;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Settings {
    ///     greeting: String,
    /// }
    ///
    /// struct State {
    ///     greeting: String,
    /// }
    ///
    /// fn main() -> std::process::ExitCode {
    ///     vole::Host::with_init(
    ///         "greeter",
    ///         |init: vole::host::Init<Settings>| async move {
    ///             Ok::<_, std::io::Error>(State { greeting: init.settings.greeting })
    ///         },
    ///         |state: &Arc<State>, _info: &LinkInfo| {
    ///             let state = state.clone();
    ///             Published::new("Greeter")
    ///                 .method("greet", "Greets.", move |(name,): (String,)| {
    ///                     let text = format!("{}, {name}", state.greeting);
    ///                     async move { Ok(text) }
    ///                 })
    ///                 .into_object()
    ///         },
    ///     )
    ///     .main()
    /// }
    /// ```
    pub fn with_init<C, S, E, I, Fut, F>(name: impl Into<String>, init: I, factory: F) -> Host
    where
        C: DeserializeOwned + Send + 'static,
        S: Send + Sync + 'static,
        E: Display + Send + 'static,
        I: Fn(Init<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        F: Fn(&Arc<S>, &LinkInfo) -> Arc<dyn Object> + Send + Sync + 'static,
    {
        Host {
            service: HostedService::typed(name, init, factory),
            extra: None,
        }
    }

    /// Decides which clients are served: `authorize` sees each connection
    /// after its transport handshake (TLS, PLAIN) and before the link
    /// handshake, with the peer's address, the transport and the identity
    /// the client proved ([`LinkInfo::identity`]: a verified client
    /// certificate's subject and chain, a key), and returns `Err(reason)`
    /// to refuse it. A refused client's connection is closed (a VPy
    /// client sees "Link failed"); the refusal is logged at info level
    /// with the peer and the reason (rate-limited) and counted in
    /// `vole_handshake_failures_total{reason="refused"}`. It runs in every
    /// serving process (each node, or the one process), after the
    /// settings file's allow lists (`[auth]`), which must serve the client
    /// too.
    ///
    /// ```no_run
    /// use vole::link::LinkInfo;
    ///
    /// fn main() -> std::process::ExitCode {
    ///     vole::Host::new("greeter", |_: &LinkInfo| vole::demo::gateway())
    ///         .authorize(|link: &LinkInfo| match link.identity.as_ref().and_then(|i| i.subject()) {
    ///             Some(s) if s.ends_with(", O=Example") => Ok(()),
    ///             other => Err(format!("{other:?} is not of Example")),
    ///         })
    ///         .main()
    /// }
    /// ```
    pub fn authorize<F>(mut self, authorize: F) -> Self
    where
        F: Fn(&LinkInfo) -> Result<(), String> + Send + Sync + 'static,
    {
        self.service.authorizer = Some(Arc::new(authorize));
        self
    }

    /// The version `--version` prints (usually
    /// `env!("CARGO_PKG_VERSION")`); vole's own version by default.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.service.version = version.into();
        self
    }

    /// One line for `--help` saying what the service is.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.service.about = about.into();
        self
    }

    /// The port of the default listen address, `127.0.0.1:<port>` (4433
    /// unless set).
    pub fn default_port(mut self, port: u16) -> Self {
        self.service.defaults.port = port;
        self
    }

    /// The name of the default state directory (the dev certificate, the
    /// admin socket): `$XDG_STATE_HOME/<name>`, else
    /// `~/.local/state/<name>`; `$VOLE_STATE_DIR` overrides it. The
    /// service's name unless set.
    pub fn state_dir_name(mut self, name: &str) -> Self {
        self.service.defaults.state_dir = vole_transport::tls::state_dir_named(name);
        self
    }

    /// The program's own subcommands (a clap `Subcommand` enum), offered
    /// next to the host's; `run` gets the one given, with the global
    /// `-v`/`-q` flags, and returns the exit code.
    pub fn commands<C, R>(mut self, run: R) -> Self
    where
        C: clap::Subcommand + 'static,
        R: FnOnce(C, Globals) -> ExitCode + 'static,
    {
        self.extra = Some(Box::new(Commands {
            run,
            _command: PhantomData::<fn() -> C>,
        }));
        self
    }

    /// The command line this host parses.
    pub fn command(&self) -> clap::Command {
        let name = self.service.name.clone();
        let serve_about =
            format!("Serve the {name} service (TLS with a generated dev certificate by default)");
        let mut cmd = crate::cli::command()
            .name(name.clone())
            .bin_name(name)
            .version(self.service.version.clone())
            .mut_subcommand("serve", |c| c.about(serve_about));
        if let Some(extra) = &self.extra {
            cmd = extra.augment(cmd);
        }
        // After the program's own subcommands: their enum's doc comment
        // would replace it.
        cmd.about(self.service.about.clone())
    }

    /// Parses the process's command line and runs it: serving, operating,
    /// a node process (when the controller re-executes this program), or
    /// one of the program's own subcommands. Returns the exit code.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// [`Host::main`] with the arguments given (the first is the program).
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = self.command();
        let matches = match command.clone().try_get_matches_from(args) {
            Ok(m) => m,
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
        let globals = Globals {
            verbose: matches.get_count("verbose"),
            quiet: matches.get_flag("quiet"),
        };
        if let (Some(extra), Some((sub, _))) = (self.extra, matches.subcommand()) {
            if extra.has(sub) {
                return extra.run(&matches, globals);
            }
        }
        let cli = match HostCli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(exit::USAGE);
            }
        };
        // Documentation covers the whole command line, the program's own
        // subcommands included.
        let result = crate::cli::docs::generate(&cli.command, command, &self.service.name)
            .unwrap_or_else(|| crate::cli::run_host_command(cli.command, globals, &self.service));
        finish(&self.service.name, result)
    }
}

/// The exit code for a command's result; prints the failure.
pub fn finish(program: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            // Not eprintln!: it panics if stderr is gone. A daemon's start-up
            // failure was already printed by the launching process.
            if !crate::daemon::REPORTED.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = writeln!(std::io::stderr(), "{program}: {:#}", failure.error);
            }
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host::new("greeter", |_: &LinkInfo| crate::demo::gateway())
            .version("1.2.3")
            .default_port(7000)
    }

    #[test]
    fn the_command_line_is_the_service_s() {
        let cmd = host().command();
        assert_eq!(cmd.get_name(), "greeter");
        assert_eq!(cmd.get_version(), Some("1.2.3"));
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        for want in [
            "serve",
            "status",
            "stop",
            "reload",
            "scale",
            "reopen-logs",
            "upgrade",
            "config",
            "node",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let serve = cmd.find_subcommand("serve").expect("serve");
        let about = serve
            .get_about()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(about.contains("greeter"), "{about}");
        // `node` is there for the controller, not for people.
        assert!(cmd
            .find_subcommand("node")
            .is_some_and(clap::Command::is_hide_set));
    }

    /// My own commands (this doc comment must not become the program's about).
    #[derive(Debug, clap::Subcommand)]
    enum Mine {
        /// Says hi.
        Hello {
            /// Whom.
            name: String,
        },
    }

    #[test]
    fn a_program_s_own_subcommands_run_and_the_host_s_still_parse() {
        let ran = std::rc::Rc::new(std::cell::RefCell::new(None));
        let seen = ran.clone();
        let code = host()
            .commands(move |c: Mine, g: Globals| {
                *seen.borrow_mut() = Some((format!("{c:?}"), g.verbose));
                ExitCode::from(7)
            })
            .main_from(["greeter", "-v", "hello", "you"]);
        assert_eq!(code, ExitCode::from(7));
        assert_eq!(
            ran.borrow().clone(),
            Some(("Hello { name: \"you\" }".to_owned(), 1))
        );
        let cmd = host()
            .about("Greets people.")
            .commands(|_: Mine, _| ExitCode::SUCCESS)
            .command();
        assert_eq!(
            cmd.get_about().map(ToString::to_string).as_deref(),
            Some("Greets people.")
        );
        assert!(cmd.find_subcommand("hello").is_some());
        assert!(cmd.find_subcommand("serve").is_some());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert_eq!(
            host().main_from(["greeter", "serve", "--nodes", "many"]),
            ExitCode::from(exit::USAGE)
        );
        assert_eq!(
            host().main_from(["greeter", "frobnicate"]),
            ExitCode::from(exit::USAGE)
        );
    }
}
