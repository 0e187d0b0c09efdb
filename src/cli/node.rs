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

/// Makes the process non-dumpable: only root (`CAP_SYS_PTRACE`) may read
/// its memory (`/proc/PID/mem`) or environment or trace it, its `/proc/PID`
/// files become root's, and it leaves no core dump. A node holds the TLS
/// private key and the session ticket keys, which another process of its
/// uid must not read. Set by the node itself: exec and a change of
/// credentials (the controller's privilege drop before the exec) both
/// reset it, and the key arrives later, over the control link.
pub fn forbid_inspection() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the node non-dumpable: processes of its uid can read its memory");
    }
}

/// Runs the node; returns its exit code.
pub async fn run(args: NodeArgs, init: NodeInit, authorizer: Option<vole_node::Authorizer>) -> i32 {
    let run_args = RunArgs {
        id: args.id,
        control_fd: args.control_fd,
        conn_fd: args.conn_fd,
    };
    match process::run(run_args, init, authorizer).await {
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
