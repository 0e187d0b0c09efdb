//! TLS session resumption across node processes: the controller hands every
//! node the same ticket keys, so a client resumes on whichever node its next
//! connection lands on.
//!
//! Deterministic: in `dispatch` mode the controller hands each connection
//! to the node with the fewest open ones, counting it at once (ties go
//! round), and this test holds every link open, so the counts are exact.
//! With the counts level, a client's first connection goes to one node and
//! its second to the other. Every other trial first opens one more link (of
//! another client) so that the tie falls the other way and the client's
//! connections cross the other way. Each client has a fresh configuration
//! (its own session cache), so the only ticket its second connection can
//! present is one its first connection's node issued.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::collections::BTreeMap;

use harness::{close, ping, Opts, Serve};
use vole_link::resolve::{connect_to, ClientConfig};
use vole_link::{Link, RemoteObject};
use vole_transport::tls::{local_dev_pin, ServerTrust};

/// Trials: each a fresh client that connects twice.
const TRIALS: usize = 8;

/// A TLS link, whether it resumed a session, and the node serving it.
async fn tls_link(port: u16, config: &ClientConfig) -> (Link, RemoteObject, bool, u32) {
    let (link, gw) =
        tokio::time::timeout(harness::CALL_LIMIT, connect_to("127.0.0.1", port, config))
            .await
            .expect("connect in time")
            .expect("connect");
    let resumed = link.info().tls.as_ref().expect("a TLS link").resumed;
    // The answer comes after the server's session tickets on the stream:
    // once it is here, the client holds them.
    let (node, _pid) = ping(&gw).await.expect("meta.ping()");
    (link, gw, resumed, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_clients_resume_on_any_node() {
    let _serial = harness::serial().await;
    let serve = Serve::start(Opts::new(2, "dispatch").tls()).await;
    let pin = local_dev_pin(serve.dir.path()).expect("the service generated a dev certificate");
    // Every link stays open to the end, so the controller's counts (which
    // decide where a connection goes) are exact.
    let mut held = Vec::new();
    // (first node, second node) -> trials
    let mut crossings: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for trial in 0..TRIALS {
        let config = || ClientConfig::tls(&ServerTrust::Pinned(pin)).expect("config");
        if trial % 2 == 1 {
            let (link, gw, _, _) = tls_link(serve.port(), &config()).await;
            held.push((link, gw));
        }
        let config = config();
        let (link, gw, resumed, first) = tls_link(serve.port(), &config).await;
        assert!(
            !resumed,
            "trial {trial}: a fresh client has nothing to resume"
        );
        held.push((link, gw));
        let (link, gw, resumed, second) = tls_link(serve.port(), &config).await;
        held.push((link, gw));
        assert!(
            resumed,
            "trial {trial}: a ticket from node {first} was not accepted by node {second}"
        );
        *crossings.entry((first, second)).or_default() += 1;
    }
    println!("resumed across nodes (from, to) -> trials: {crossings:?}");
    // Both ways: either node accepts the other's tickets. (A trial whose
    // connections both went to one node, if the tie rule changed, shows
    // here as (n, n).)
    assert!(
        crossings.contains_key(&(0, 1)) && crossings.contains_key(&(1, 0)),
        "resumption was not seen both ways between the nodes: {crossings:?}"
    );
    for (link, gw) in held {
        drop(gw);
        close(&link).await;
    }
}
