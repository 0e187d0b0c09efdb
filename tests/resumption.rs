//! TLS session resumption across node processes: the controller hands every
//! node the same ticket keys, so a client resumes on whichever node its next
//! connection lands on.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::collections::HashMap;

use harness::{close, ping, Opts, Serve};
use vole_link::resolve::{connect_to, ClientConfig};
use vole_transport::tls::{local_dev_pin, ServerTrust};

const CONNECTIONS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_clients_resume_on_any_node() {
    let _serial = harness::serial().await;
    let serve = Serve::start(Opts::new(2, "shared").tls()).await;
    let pin = local_dev_pin(serve.dir.path()).expect("the service generated a dev certificate");
    // One client configuration: one session cache, as a reconnecting client has.
    let config = ClientConfig::tls(&ServerTrust::Pinned(pin)).expect("client config");
    // node id -> (connections, resumed)
    let mut per_node: HashMap<u32, (u32, u32)> = HashMap::new();
    let mut first_resumed = None;
    for i in 0..CONNECTIONS {
        let (link, gw) = connect_to("127.0.0.1", serve.port(), &config)
            .await
            .expect("connect");
        let resumed = link.info().tls.as_ref().expect("a TLS link").resumed;
        let (node, _pid) = ping(&gw).await.expect("meta.ping()");
        if i == 0 {
            first_resumed = Some(resumed);
        } else {
            let e = per_node.entry(node).or_default();
            e.0 += 1;
            e.1 += u32::from(resumed);
        }
        drop(gw);
        close(&link).await;
    }
    let total: u32 = per_node.values().map(|v| v.0).sum();
    let resumed: u32 = per_node.values().map(|v| v.1).sum();
    let rate = f64::from(resumed) / f64::from(total);
    println!(
        "resumption: {resumed}/{total} reconnections resumed ({:.1}%), per node {per_node:?}",
        rate * 100.0
    );
    assert_eq!(
        first_resumed,
        Some(false),
        "the first connection has nothing to resume"
    );
    assert!(
        rate >= 0.95,
        "only {resumed} of {total} reconnections resumed"
    );
    // Both nodes must have resumed sessions: with per-process keys a ticket
    // would only work on the node that issued it.
    let resuming_nodes = per_node.values().filter(|v| v.1 > 0).count();
    assert_eq!(
        resuming_nodes, 2,
        "connections resumed on both nodes: {per_node:?}"
    );
}
