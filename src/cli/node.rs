//! `vole node`: a node process, started by the controller (never by hand).

use std::sync::Arc;

use vole_node::process::{self, NodeArgs as RunArgs, NodeExit};

use super::NodeArgs;

/// Names the process `vole-node-<id>` (what `ps` and `top` show).
pub fn set_process_name(id: u32) {
    let name = format!("vole-node-{id}");
    if let Ok(c) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// Runs the node; returns its exit code.
pub async fn run(args: NodeArgs) -> i32 {
    let run_args = RunArgs {
        id: args.id,
        control_fd: args.control_fd,
        conn_fd: args.conn_fd,
    };
    match process::run(run_args, Arc::new(|_| vole::demo::gateway())).await {
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
