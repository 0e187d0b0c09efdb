//! The `vole` command: a [`vole::Host`] for the demo gateway, plus the
//! client commands `call`, `describe` and `bench`.

use std::process::ExitCode;

use clap::Subcommand;
use vole::cli::exit::Failure;
use vole::cli::{CallArgs, DescribeArgs, Globals};

/// The global allocator. Every call allocates a few small buffers (decoded
/// strings and argument lists, a boxed call future) and frees them on the
/// same thread soon after; glibc malloc spent about 10% of the instructions
/// of an echo round trip on that, mimalloc a third of it (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The client commands `vole` adds to the host's.
#[derive(Debug, Subcommand)]
enum Client {
    /// Resolve a vop:// URI and call a method; prints the result as JSON.
    Call(CallArgs),
    /// Resolve a vop:// URI and list the methods of the object with their docs.
    Describe(DescribeArgs),
    /// Load generator: many links, many calls in flight, latency histogram.
    #[cfg(feature = "bench")]
    Bench(vole::cli::bench::BenchCommand),
    /// Baseline length-prefixed echo server for `vole bench` (raw TLS or TCP).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchServer(vole_bench::ServerArgs),
}

fn main() -> ExitCode {
    vole::Host::new("vole", |_: &vole::link::LinkInfo| vole::demo::gateway())
        .about("Host Versile-protocol object services across many processes")
        .commands(run_client)
        .main()
}

fn run_client(command: Client, globals: Globals) -> ExitCode {
    vole::cli::init_client_logging(globals);
    let threads = match &command {
        #[cfg(feature = "bench")]
        Client::Bench(cmd) => cmd.bench.threads,
        #[cfg(feature = "bench")]
        Client::BenchServer(args) => args.threads,
        _ => None,
    };
    let result = vole::cli::runtime(threads.or(Some(2)), None).and_then(|rt| {
        rt.block_on(async move {
            match command {
                Client::Call(args) => vole::cli::call::call(args).await,
                Client::Describe(args) => vole::cli::call::describe(args).await,
                #[cfg(feature = "bench")]
                Client::Bench(cmd) => vole::cli::bench::run(cmd).await,
                #[cfg(feature = "bench")]
                Client::BenchServer(args) => vole::cli::bench::run_server(args).await,
            }
        })
    });
    let result: Result<(), Failure> = result;
    vole::host::finish("vole", result)
}
