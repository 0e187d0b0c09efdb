//! The command line of every vole host (`vole` itself and services built
//! with [`crate::Host`]): argument definitions (clap), the serve and admin
//! commands, exit codes; and the client commands `vole` adds (`call`,
//! `describe`).

pub mod admin;
mod args;
#[cfg(feature = "bench")]
pub mod bench;
pub mod call;
pub mod config;
pub(crate) mod docs;
pub mod exit;
mod help;
pub mod node;
pub mod out;
mod run;
pub mod serve;
pub mod status;
pub mod trust;

pub use args::{
    ConfigCommand, ExecNodeArgs, Globals, HostCli, HostCommand, NodeArgs, ScaleArgs, ServeArgs,
    StatusArgs, StopArgs, TargetArgs,
};
pub use call::{CallArgs, DescribeArgs};
pub(crate) use help::command;
pub use run::{controller_runtime, init_client_logging, run_host_command, runtime};
pub use trust::ClientArgs;
