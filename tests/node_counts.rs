//! `vole status --json` reports, per node, the connections it accepted in
//! total (`accepted`): the cumulative count `vole bench --admin-socket`
//! judges the fairness of new sessions on.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::collections::HashMap;

use harness::{close, connect, connect_only, Opts, Serve};

/// `accepted` per node id, from `vole status --json`.
async fn accepted(serve: &Serve) -> HashMap<u64, u64> {
    let status = serve.status().await;
    status["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| {
            (
                n["id"].as_u64().expect("id"),
                n["accepted"].as_u64().expect("an accepted count"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_accepted_connections_per_node() {
    let _serial = harness::serial().await;
    for (nodes, mode) in [(2, "grant"), (0, "grant")] {
        let serve = Serve::start(Opts::new(nodes, mode)).await;
        let before = accepted(&serve).await;
        // node id -> connections it served, as meta.ping() says.
        let mut served: HashMap<u64, u64> = HashMap::new();
        for _ in 0..12 {
            if nodes == 0 {
                // One process: node 0, and meta.ping() names no node.
                let (link, _gw) = connect_only(serve.port()).await.expect("connect");
                *served.entry(0).or_default() += 1;
                close(&link).await;
            } else {
                let client = connect(serve.port()).await.expect("connect");
                *served.entry(u64::from(client.node.0)).or_default() += 1;
                close(&client.link).await;
            }
        }
        let after = accepted(&serve).await;
        let delta: HashMap<u64, u64> = after
            .iter()
            .map(|(id, n)| (*id, n - before.get(id).copied().unwrap_or_default()))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(delta, served, "{nodes} node(s): status deltas vs ping");
        assert_eq!(delta.values().sum::<u64>(), 12);
    }
}
