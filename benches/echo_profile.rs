//! A fixed amount of echo calls through two links in one process (an
//! in-memory pipe, one thread), for instruction counting:
//!
//! ```sh
//! cargo bench --bench echo_profile --no-run
//! valgrind --tool=callgrind target/release/deps/echo_profile-* 100000 16
//! ```
//!
//! Arguments: calls (default 100000), calls in flight (default 16) and
//! `pipe` to keep them in flight through one `Pipeline` (as `vole bench`
//! does) instead of one future per call. It prints the wall time per call; run it twice with different call counts
//! under callgrind and divide the difference by the difference in calls to
//! get instructions per call without the setup.

#[path = "support/echo_pair.rs"]
mod echo_pair;

use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use vole::link::Value;

/// As in the `vole` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let calls: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let inflight: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let pipelined = args.next().as_deref() == Some("pipe");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (_link, target) = echo_pair::echo_pair().await;
        let target = Arc::new(target);
        let payload = "x".repeat(64);
        let start = Instant::now();
        if pipelined {
            let mut pipe = target.pipeline();
            let mut sent = 0;
            while sent < inflight.min(calls) {
                pipe.call("echo", vec![Value::Str(payload.clone())])
                    .await
                    .expect("queued");
                sent += 1;
            }
            while let Some((_, v)) = pipe.next().await {
                let v = v.expect("echo");
                assert!(matches!(v, Value::Str(ref s) if s.len() == payload.len()));
                if sent < calls {
                    pipe.call("echo", vec![Value::Str(payload.clone())])
                        .await
                        .expect("queued");
                    sent += 1;
                }
            }
            println!(
                "{calls} calls, {inflight} in flight, pipelined: {:.3} us/call",
                start.elapsed().as_secs_f64() * 1e6 / calls as f64
            );
            return;
        }
        let slot = || {
            let target = target.clone();
            let payload = payload.clone();
            async move {
                let mut n = 0u64;
                while n < calls / inflight {
                    let v = target
                        .call("echo", vec![Value::Str(payload.clone())])
                        .await
                        .expect("echo");
                    assert!(matches!(v, Value::Str(ref s) if s.len() == payload.len()));
                    n += 1;
                }
            }
        };
        let mut slots: FuturesUnordered<_> = (0..inflight).map(|_| slot()).collect();
        while slots.next().await.is_some() {}
        let done = (calls / inflight) * inflight;
        println!(
            "{done} calls, {inflight} in flight: {:.3} us/call",
            start.elapsed().as_secs_f64() * 1e6 / done as f64
        );
    });
}
