//! What a stock VPy client sees through reloads: it calls in a loop on a
//! held link (`vpy_loop_client.py`), reconnecting and retrying a call the
//! service refused as closing. Its only failures may be such refusals (or,
//! after it was quiet for `vole_node::DRAIN_QUIET`, a call lost with the
//! link's close: the drain's documented limit), bounded: at most one per
//! node a reload replaces, per client, and no call retried more often than
//! the nodes replaced plus one.
//!
//! Python comes from `$VOLE_VPY_PYTHON`, else `target/vpy-venv/bin/python`
//! (`.ci/run` makes it); without it the test fails, it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::watch;

use crate::harness::{self, serial, Opts, Serve, TempDir};
use crate::support::{id_pids, vole, wait_nodes, Tree};

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

/// VPy clients calling through the reloads.
const CLIENTS: usize = 4;

fn python() -> PathBuf {
    let path = std::env::var_os("VOLE_VPY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(WORKSPACE).join("target/vpy-venv/bin/python"));
    assert!(
        path.exists(),
        "the VPy reload test needs Python with versile-python3 at {} (run .ci/run, or set \
         VOLE_VPY_PYTHON)",
        path.display()
    );
    path
}

/// A running VPy loop client and the JSON lines it printed.
struct VpyClient {
    child: tokio::process::Child,
    lines: watch::Receiver<Vec<serde_json::Value>>,
}

impl VpyClient {
    fn start(port: u16, stopfile: &Path, stderr: &Path) -> VpyClient {
        let script = Path::new(WORKSPACE).join("tests/operations/vpy_loop_client.py");
        let mut child = tokio::process::Command::new(python())
            .arg(&script)
            .arg(port.to_string())
            .arg(stopfile)
            .arg(vole_node::DRAIN_QUIET.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start the VPy client");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = watch::channel(Vec::new());
        tokio::spawn(async move {
            let mut out = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = out.next_line().await {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "unparsed": line }));
                tx.send_modify(|l| l.push(v));
            }
        });
        VpyClient { child, lines }
    }

    /// Waits until a line satisfies `pred`; false after `limit`.
    async fn wait_line(&self, limit: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
        let mut rx = self.lines.clone();
        tokio::time::timeout(limit, rx.wait_for(|l| l.iter().any(&pred)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Calls answered, by the last progress line.
    fn progress(&self) -> u64 {
        self.lines
            .borrow()
            .iter()
            .filter_map(|l| l["progress"].as_u64())
            .max()
            .unwrap_or(0)
    }

    fn text(&self) -> String {
        let lines: Vec<String> = self.lines.borrow().iter().map(|l| l.to_string()).collect();
        lines.join("\n")
    }
}

/// What replaces the nodes under the VPy clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// SIGHUP, then `vole reload`: the nodes one by one.
    Reload,
    /// SIGUSR2, then `vole upgrade`: a new controller with new nodes.
    Upgrade,
}

/// Four VPy clients call in a loop while SIGHUP and `vole reload` replace
/// both nodes: every client goes on being answered, by the new nodes too;
/// it sees nothing but "closing" refusals (and calls on a link already
/// closed, never sent), at most one per replaced node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpy_client_sees_only_bounded_closing_refusals_through_reloads() {
    vpy_through(Replace::Reload).await;
}

/// The same through binary upgrades (SIGUSR2, then `vole upgrade`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpy_client_sees_only_bounded_closing_refusals_through_upgrades() {
    vpy_through(Replace::Upgrade).await;
}

async fn vpy_through(replace: Replace) {
    let python = python();
    let _serial = serial().await;
    let cfg_dir = TempDir::new("ops-vpy-cfg");
    let cfg = cfg_dir.path().join("vole.toml");
    std::fs::write(&cfg, "nodes = 2\ngrace = 5\n").expect("settings file");
    let serve = Serve::start(
        Opts::new(2, "grant")
            .nodes_from_config()
            .args(&["--config", cfg.to_str().expect("utf-8 path")]),
    )
    .await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    let admin = serve.admin.clone();
    let a = admin.to_str().expect("path").to_owned();
    let limit = Duration::from_secs(30);
    let initial = wait_nodes(&admin, 2, limit).await;
    let stopfile = serve.dir.path().join("stop-vpy-clients");
    let clients: Vec<VpyClient> = (0..CLIENTS)
        .map(|i| {
            let stderr = serve.dir.path().join(format!("vpy-{i}.stderr"));
            tree.show(&stderr);
            VpyClient::start(serve.port(), &stopfile, &stderr)
        })
        .collect();
    println!("VPy clients run with {}", python.display());
    for (i, c) in clients.iter().enumerate() {
        assert!(
            c.wait_line(limit, |l| l["ready"] == true).await,
            "VPy client {i} never got an answer: {}",
            c.text()
        );
    }

    let rounds: [&str; 2] = match replace {
        Replace::Reload => ["SIGHUP", "vole reload"],
        Replace::Upgrade => ["SIGUSR2", "vole upgrade"],
    };
    let mut before = initial.clone();
    for how in rounds {
        let progress: Vec<u64> = clients.iter().map(VpyClient::progress).collect();
        let current = before.pid;
        if replace == Replace::Upgrade {
            if how == "SIGUSR2" {
                harness::signal(current, Signal::SIGUSR2);
            } else {
                let r = vole(&["upgrade", "--admin-socket", &a]).await;
                assert_eq!(r.code, Some(0), "vole upgrade: {r:?}");
            }
            // The old controller drains its nodes and exits (its exit code
            // is the upgrade tests' business).
            assert!(
                harness::poll_until(limit, || !harness::alive(current)).await,
                "{how}: the old controller {current} still runs"
            );
        } else if how == "SIGHUP" {
            let done = serve.log().matches("reload complete").count();
            serve.signal(Signal::SIGHUP);
            assert!(
                serve
                    .stderr
                    .wait_for(limit, |l| l.matches("reload complete").count() > done)
                    .await,
                "SIGHUP: no reload"
            );
        } else {
            let r = vole(&["reload", "--admin-socket", &a]).await;
            assert_eq!(r.code, Some(0), "vole reload: {r:?}");
        }
        let after = wait_nodes(&admin, 2, limit).await;
        if replace == Replace::Upgrade {
            assert_ne!(after.pid, current, "{how}: a new controller");
        }
        println!("{how}: {:?} -> {:?}", id_pids(&before), id_pids(&after));
        // Every client is answered afterwards (by the new nodes, as the
        // served pids checked below show).
        for (i, c) in clients.iter().enumerate() {
            let past = progress[i] + 200;
            assert!(
                c.wait_line(limit, |l| l["progress"].as_u64() >= Some(past))
                    .await,
                "{how}: VPy client {i} stalled: {}",
                c.text()
            );
        }
        before = after;
    }

    std::fs::write(&stopfile, "").expect("stop file");
    let initial_pids: Vec<u32> = initial.nodes.iter().filter_map(|n| n.pid).collect();
    let final_pids: Vec<u32> = before.nodes.iter().filter_map(|n| n.pid).collect();
    // Each round replaces 2 nodes.
    let replaced = rounds.len() as u64 * 2;
    for (i, mut c) in clients.into_iter().enumerate() {
        let exit = tokio::time::timeout(limit, c.child.wait())
            .await
            .unwrap_or_else(|_| panic!("VPy client {i} did not stop"))
            .expect("wait");
        assert!(
            c.wait_line(Duration::from_secs(5), |l| l["done"] == true)
                .await,
            "VPy client {i} printed no summary: {}",
            c.text()
        );
        let done = c
            .lines
            .borrow()
            .iter()
            .find(|l| l["done"] == true)
            .cloned()
            .expect("summary");
        println!("VPy client {i}: {done}");
        assert!(exit.success(), "VPy client {i}: {exit}: {done}");
        assert_eq!(
            done["other"].as_array().map(Vec::len),
            Some(0),
            "VPy client {i} saw failures other than closing refusals: {done}"
        );
        // Each replaced node ends a client's link at most once: by a
        // refusal, or (after the client was quiet for DRAIN_QUIET) by a
        // close its call crossed.
        let closing = done["closing"].as_u64().expect("closing");
        let crossed = done["crossed"].as_u64().expect("crossed");
        assert!(
            closing + crossed <= replaced,
            "VPy client {i}: {closing} closing refusals and {crossed} calls lost with a quiet \
             close for {replaced} replaced nodes: {done}"
        );
        let worst = done["worst_retries"].as_u64().expect("worst_retries");
        assert!(
            worst <= 3,
            "VPy client {i}: a call was retried {worst} times (2 nodes replaced at a time): \
             {done}"
        );
        let served: Vec<u32> = done["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n[1].as_u64())
            .map(|p| p as u32)
            .collect();
        assert!(
            served.iter().any(|p| initial_pids.contains(p))
                && served.iter().any(|p| final_pids.contains(p)),
            "VPy client {i} was served by {served:?}: not by an initial node ({initial_pids:?}) \
             and a final one ({final_pids:?})"
        );
    }
}
