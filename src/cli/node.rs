//! `node`: a node process, started by the controller (never by hand) from
//! the host's own executable.

use vole_node::process::{self, NodeArgs as RunArgs, NodeExit, NodeInit};

use super::args::NodeArgs;

/// Names the process (what `top` and `ps -o comm` show; the kernel keeps
/// the first 15 bytes, and the command line has the whole name).
pub fn set_process_name(name: &str) {
    if let Ok(c) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// Runs the node; returns its exit code.
pub async fn run(args: NodeArgs, init: NodeInit) -> i32 {
    let run_args = RunArgs {
        id: args.id,
        control_fd: args.control_fd,
        conn_fd: args.conn_fd,
    };
    match process::run(run_args, init).await {
        Ok(exit) => {
            if exit != NodeExit::Orphaned {
                tracing::info!(?exit, "node stopped");
            }
            exit.code()
        }
        Err(e) => {
            tracing::error!(error = %vole_link::object::error_chain(&e), "node failed");
            1
        }
    }
}
