//! What runs beside the workers of a run: the progress line on stderr,
//! the readings of CPU time and per-node counts at the edges of the
//! measured window, and collecting the workers' results.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cpu::{self, Process};
use crate::nodes::{self, Basis, Fairness};
use crate::plan::Plan;
use crate::record::{Counters, Window};
use crate::report::CpuUse;

/// Prints a progress line to stderr every second until aborted; `unit`
/// names what `counters.calls` counts ("calls", "sessions").
pub async fn progress(counters: Arc<Counters>, begun: Instant, window: Window, unit: &str) {
    let mut tick = tokio::time::interval_at(begun + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_calls, mut last_errors, mut last_at) = (0u64, 0u64, begun);
    loop {
        let now = tick.tick().await;
        let calls = counters.calls.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let phase = if now <= window.start {
            "warm-up"
        } else {
            "measure"
        };
        eprintln!(
            "bench: {:>5.1}s {phase}  {:>10.0} {unit}/s  {:>6} errors/s  ({calls} {unit}, {errors} errors in total)",
            now.duration_since(begun).as_secs_f64(),
            (calls - last_calls) as f64 / secs,
            ((errors - last_errors) as f64 / secs).round(),
        );
        (last_calls, last_errors, last_at) = (calls, errors, now);
    }
}

/// What is read at the edges of the measured window.
#[derive(Debug, Default)]
pub struct Sampled {
    /// CPU use over the window.
    pub cpu: CpuUse,
    /// Per-node counts over the window, if an admin socket was given and
    /// answered.
    pub fairness: Option<Fairness>,
}

/// CPU time of this process and the server, and (given the service's admin
/// socket) each node's counters, over the window, or over the part of it
/// before `early` fires (every link ended early). Fairness is judged on
/// `basis`.
pub async fn sample_window(
    window: Window,
    plan: &Plan,
    basis: Basis,
    early: oneshot::Receiver<()>,
) -> Sampled {
    let server = plan.server;
    let own = || cpu::cpu_time(Process::This);
    let theirs = || server.and_then(cpu::Server::read);
    let status = || async {
        let socket = plan.admin_socket.as_deref()?;
        match nodes::fetch(socket).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = %socket.display(), error = %e, "no node counts from the admin socket");
                None
            }
        }
    };
    tokio::pin!(early);
    tokio::select! {
        _ = tokio::time::sleep_until(window.start) => {}
        _ = &mut early => return Sampled::default(),
    }
    // Listing a process tree may scan /proc: do it outside the client's
    // window (before it starts and after it ends). The status requests are
    // inside it, a few hundred microseconds in a window of seconds.
    let server0 = theirs();
    let client0 = own();
    let t0 = Instant::now();
    let nodes0 = status().await;
    tokio::select! {
        _ = tokio::time::sleep_until(window.end) => {}
        _ = &mut early => {}
    }
    let client1 = own();
    let wall = t0.elapsed();
    let server1 = theirs();
    let nodes1 = status().await;
    let diff = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let (server_used, server_root, server_procs) = match (&server0, &server1) {
        (Some(a), Some(b)) => (
            Some(cpu::used(a, b)),
            cpu::used_by_root(a, b),
            Some(b.processes()),
        ),
        _ => (None, None, None),
    };
    let fairness = match (nodes0, nodes1) {
        (Some(a), Some(b)) => Some(Fairness::new(nodes::deltas(&a, &b), basis)),
        _ => None,
    };
    Sampled {
        cpu: CpuUse {
            wall,
            client: diff(client0, client1),
            server: server_used,
            server_root,
            server_procs,
        },
        fairness,
    }
}

/// What runs beside the workers of a run: the progress line and the
/// sampler of CPU and per-node counts over the window.
pub struct Watch {
    progress: tokio::task::JoinHandle<()>,
    early: oneshot::Sender<()>,
    sampler: tokio::task::JoinHandle<Sampled>,
}

impl Watch {
    /// Starts both; `unit` names what the progress line counts.
    pub fn start(
        counters: &Arc<Counters>,
        begun: Instant,
        window: Window,
        plan: &Arc<Plan>,
        basis: Basis,
        unit: &'static str,
    ) -> Watch {
        let progress = tokio::spawn(progress(counters.clone(), begun, window, unit));
        let (early, early_rx) = oneshot::channel();
        let plan = plan.clone();
        let sampler =
            tokio::spawn(async move { sample_window(window, &plan, basis, early_rx).await });
        Watch {
            progress,
            early,
            sampler,
        }
    }

    /// Stops the progress line and takes the samples (early, if the
    /// workers ended before the window did).
    pub async fn finish(self) -> Sampled {
        self.progress.abort();
        let _ = self.early.send(());
        self.sampler.await.unwrap_or_default()
    }
}

/// Awaits worker tasks until `give_up`, handing each result to `take`.
/// Returns how many failed or had not finished (those are aborted).
pub async fn join_until<T: 'static>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
    give_up: Instant,
    what: &str,
    mut take: impl FnMut(T),
) -> usize {
    let mut stuck = 0;
    for mut task in tasks {
        match tokio::time::timeout_at(give_up, &mut task).await {
            Ok(Ok(result)) => take(result),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "{what} failed");
                stuck += 1;
            }
            Err(_) => {
                task.abort();
                stuck += 1;
            }
        }
    }
    stuck
}
