//! The controller yields the CPU to its nodes: its threads run under
//! `SCHED_BATCH`, its nodes under `SCHED_OTHER`.
//!
//! Why: the controller wakes for control traffic and, in `dispatch` mode, for
//! every new connection, usually on a core where a node is busy serving.
//! Under `SCHED_OTHER` each such wake-up preempts the node at once: two
//! context switches per connection, measured at tens of microseconds of CPU
//! each on a virtual machine. A `SCHED_BATCH` thread does not preempt on
//! wake-up; it runs when the node blocks (a node waiting for I/O, as it does
//! many times per session) or at the next tick, and then finds several
//! connections waiting, handled in one go. On an idle core it runs at once,
//! as before. It keeps its fair share of the CPU (same weight), so
//! supervision, heartbeats and stops are not starved.
//!
//! Only a controller that starts under `SCHED_OTHER` (or already
//! `SCHED_BATCH`, as after a binary upgrade) changes anything; one started
//! under a real-time or idle policy is left alone, and so are its nodes.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether nodes must be put back to `SCHED_OTHER` (the controller made
/// itself `SCHED_BATCH`).
static RESET_NODES: AtomicBool = AtomicBool::new(false);

fn policy_of(tid: libc::pid_t) -> Option<libc::c_int> {
    // SAFETY: sched_getscheduler takes a thread id and reads nothing else.
    let p = unsafe { libc::sched_getscheduler(tid) };
    (p >= 0).then_some(p)
}

fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration.
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

/// Puts every thread of this process under `SCHED_BATCH` (threads made
/// later inherit it from the thread that makes them) and arranges for nodes
/// started from now on to run under `SCHED_OTHER`. Does nothing if the
/// process runs under another policy; failures are logged and ignored.
pub fn yield_to_nodes() {
    let main = std::process::id() as libc::pid_t;
    match policy_of(main) {
        Some(libc::SCHED_OTHER | libc::SCHED_BATCH) => {}
        other => {
            tracing::debug!(policy = other, "controller keeps its scheduling policy");
            return;
        }
    }
    let tids: Vec<libc::pid_t> = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_else(|_| vec![main]);
    let mut failed = 0;
    for tid in &tids {
        if matches!(policy_of(*tid), Some(libc::SCHED_OTHER))
            && !set_policy(*tid, libc::SCHED_BATCH)
        {
            failed += 1;
        }
    }
    if failed > 0 {
        tracing::debug!(
            threads = tids.len(),
            failed,
            error = %std::io::Error::last_os_error(),
            "cannot run the controller as SCHED_BATCH"
        );
    }
    RESET_NODES.store(failed < tids.len(), Ordering::SeqCst);
}

/// Whether [`reset_in_child`] must run for a node about to start.
pub(crate) fn nodes_need_reset() -> bool {
    RESET_NODES.load(Ordering::SeqCst)
}

/// In a node's process between fork and exec: back to `SCHED_OTHER` (one
/// system call, async-signal-safe).
pub(crate) fn reset_in_child() -> std::io::Result<()> {
    if set_policy(0, libc::SCHED_OTHER) {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread made batch can go back (what a node does before exec),
    /// without privileges.
    #[test]
    fn batch_and_back_without_privileges() {
        std::thread::spawn(|| {
            // SAFETY: gettid has no arguments.
            let tid = unsafe { libc::gettid() };
            if policy_of(tid) != Some(libc::SCHED_OTHER) {
                return; // run under another policy: nothing to show
            }
            assert!(set_policy(tid, libc::SCHED_BATCH));
            assert_eq!(policy_of(tid), Some(libc::SCHED_BATCH));
            reset_in_child().expect("back to SCHED_OTHER");
            assert_eq!(policy_of(tid), Some(libc::SCHED_OTHER));
        })
        .join()
        .expect("thread");
    }
}
