//! Integration tests of operating a service: daemon mode and the pid file,
//! admin commands, signals (reload, scale, reopen logs, binary upgrade),
//! settings files, log files, metrics and privilege dropping. Real
//! processes on loopback, ephemeral ports, a temporary state directory per
//! test.
//!
//! Every test that starts processes takes the serial lock of the
//! multi-process harness, bounds every wait, and leaves nothing running: a
//! [`support::Tree`] guard kills and reaps, when the test ends, every
//! process whose command line names the test's directory (daemons and
//! controllers started by an upgrade are not children of the test), their
//! descendants and orphaned nodes; on failure it prints the log files.
//!
//! **Failed calls.** The reload and upgrade tests run clients that call
//! continuously and must see zero failed calls. A call the server refused
//! because its link was closing (`vole_link::Error::Closing`, on the wire
//! the exception `("vole.closing", reason)`), or a call that could not be sent because the link had
//! already closed (the link was closed before the call, or the link's
//! driver never took the call, so its count of calls sent did not move),
//! was never executed: the client reconnects and retries it, and these
//! retries are counted and printed. Every other error is a failure (in the
//! upgrade test that includes any error connecting, a reset, a failed
//! handshake), and every answer must be the right one. One more case is
//! the documented limit of a drain (design.md, "Stop"): a draining link
//! closes once its client has been quiet for `vole_node::DRAIN_QUIET`, and a
//! call the client sends as it closes is lost (VOL has no goodbye). A call
//! sent, then lost with its link's close, is therefore retried (and counted)
//! only if it was sent `DRAIN_QUIET` or more after the link's previous call
//! was sent (the server read that one no earlier, so it cannot have seen
//! less quiet); sooner, it is a failure. The retries are
//! bounded: one call may be retried at most once per node the event
//! replaces, plus one (more is a failure), and each event may refuse each
//! client at most once per node it replaces (asserted per event).

#[path = "multiprocess/harness.rs"]
mod harness;
#[path = "operations/support.rs"]
mod support;
#[path = "operations/vpy.rs"]
mod vpy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{connect, echo, serial, sleep_call, wait_dead, Opts, Serve, TempDir};
use nix::sys::signal::Signal;
use support::{
    free_port, http_get, id_pids, nodes_of, procs_naming, run_to_files, start_load, status,
    stop_load, uid_of, vole, wait_child_code, wait_file, wait_nodes, Traffic, Tree,
};
use vole_controller::admin::StatusReport;

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| (*x).to_owned()).collect()
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("pid file {}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid in the pid file")
}

fn no_common<T: Ord + Copy + std::fmt::Debug>(a: &[T], b: &[T]) -> bool {
    let a: BTreeSet<T> = a.iter().copied().collect();
    b.iter().all(|x| !a.contains(x))
}

// ------------------------------------------------------------------ 1

/// `vole serve --daemon` returns once the nodes serve; `vole status` shows
/// them; a second daemon on the same pid file refuses; `vole stop` ends
/// everything and removes the pid file and the admin socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_when_started_refuses_a_second_instance_and_stops() {
    let _serial = serial().await;
    let dir = TempDir::new("ops-daemon");
    let d = dir.path();
    let tree = Tree::new(d);
    let pidfile = d.join("vole.pid");
    let log = d.join("vole.log");
    for f in ["vole.log", "first.stderr", "second.stderr", "second.log"] {
        tree.show(&d.join(f));
    }
    let daemon_args = |log: &Path| {
        let mut a = strings(&["serve", "--daemon", "--pidfile"]);
        a.extend([s(&pidfile), "--log-file".into(), s(log)]);
        a.extend(strings(&[
            "--listen",
            "127.0.0.1:0",
            "--plain",
            "--no-tls",
            "--nodes",
            "2",
            "--state-dir",
        ]));
        a.push(s(d));
        a
    };
    let started = Instant::now();
    let ran = run_to_files(d, "first", &daemon_args(&log), Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(ran.code, Some(0), "the daemon's launcher failed: {ran:?}");
    assert!(
        ran.stderr.is_empty(),
        "nothing on the terminal: {}",
        ran.stderr
    );

    // Right away: every node serves and a call works.
    let st = vole(&["status", "--json", "--state-dir", &s(d)]).await;
    assert_eq!(st.code, Some(0), "vole status: {st:?}");
    let json: serde_json::Value = serde_json::from_str(&st.stdout).expect("status JSON");
    let nodes = json["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{json:#}");
    for n in nodes {
        assert_eq!(n["state"], "serving", "{json:#}");
    }
    let port: u16 = json["listen"][0]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("listen address in status");
    let client = connect(port).await.expect("a call right after the start");
    echo(&client.gw, 42).await.expect("echo");
    println!(
        "daemon start returned after {took:?}; node answering: {:?}",
        client.node
    );

    let daemon = read_pid(&pidfile);
    assert_eq!(json["pid"].as_u64(), Some(u64::from(daemon)), "{json:#}");
    let me = std::process::id();
    assert_eq!(
        harness::proc_info(daemon).map(|p| p.ppid),
        Some(me),
        "the daemon is detached (orphaned to this test, a subreaper)"
    );
    let procs = nodes_of(daemon);
    let status_pids: BTreeSet<u32> = nodes
        .iter()
        .filter_map(|n| n["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let proc_pids: BTreeSet<u32> = procs.values().map(|p| p.pid).collect();
    assert_eq!(status_pids, proc_pids, "status vs. the daemon's children");
    let table = vole(&["status", "--state-dir", &s(d)]).await;
    assert_eq!(table.code, Some(0), "{table:?}");
    for pid in &proc_pids {
        assert!(table.stdout.contains(&pid.to_string()), "{}", table.stdout);
    }
    assert_eq!(
        table.stdout.matches("serving").count(),
        2,
        "{}",
        table.stdout
    );

    // A second daemon with the same pid file refuses, on its terminal.
    let second_log = d.join("second.log");
    let second = run_to_files(
        d,
        "second",
        &daemon_args(&second_log),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(second.code, Some(64), "{second:?}");
    assert!(
        second.stderr.contains("another vole is running")
            && second.stderr.contains(&daemon.to_string())
            && second.stderr.contains(&s(&pidfile)),
        "the refusal says why: {:?}",
        second.stderr
    );
    println!("second daemon: {}", second.stderr.trim());
    let gone = harness::poll_until(Duration::from_secs(5), || {
        procs_naming(&second_log).is_empty()
    })
    .await;
    assert!(gone, "the refused daemon still runs");
    // The first is unaffected.
    assert_eq!(read_pid(&pidfile), daemon);
    echo(&client.gw, 43)
        .await
        .expect("the first daemon still serves");
    let again = status(&d.join(format!("admin-{port}.sock")))
        .await
        .expect("status");
    assert_eq!(
        again
            .nodes
            .iter()
            .filter_map(|n| n.pid)
            .collect::<BTreeSet<u32>>(),
        proc_pids
    );

    // Its log file has the controller's and the nodes' lines.
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(text.contains("controller starting"), "{text}");
    assert!(
        text.contains("[node 0 pid ") && text.contains("[node 1 pid "),
        "{text}"
    );

    // `vole stop` ends everything.
    harness::close(&client.link).await;
    let stop = vole(&["stop", "--state-dir", &s(d)]).await;
    assert_eq!(stop.code, Some(0), "{stop:?}");
    assert_eq!(
        wait_child_code(daemon, Duration::from_secs(20)).await,
        Some(0),
        "the daemon exits 0 after vole stop"
    );
    for p in procs.values() {
        assert!(
            wait_dead(p, Duration::from_secs(5)).await,
            "node {p:?} still runs"
        );
    }
    assert!(!pidfile.exists(), "pid file removed");
    let sockets: Vec<_> = std::fs::read_dir(d)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert!(sockets.is_empty(), "admin socket removed: {sockets:?}");
    assert!(tree.procs().is_empty(), "left running: {:?}", tree.procs());
}

/// A daemon that cannot start (its certificate is missing) says why on the
/// launching terminal, exits non-zero, and leaves no process and no pid
/// file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_start_failure_is_reported_on_the_launching_terminal() {
    let _serial = serial().await;
    let dir = TempDir::new("ops-daemon-fail");
    let d = dir.path();
    let tree = Tree::new(d);
    let pidfile = d.join("vole.pid");
    tree.show(&d.join("vole.log"));
    let mut args = strings(&["serve", "--daemon", "--pidfile"]);
    args.extend([s(&pidfile), "--log-file".into(), s(&d.join("vole.log"))]);
    args.extend(strings(&[
        "--listen",
        "127.0.0.1:0",
        "--nodes",
        "1",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
        "--state-dir",
    ]));
    args.push(s(d));
    let ran = run_to_files(d, "launch", &args, Duration::from_secs(30)).await;
    println!("launcher: exit {:?}, stderr {:?}", ran.code, ran.stderr);
    assert_eq!(ran.code, Some(64), "the launcher fails (usage): {ran:?}");
    assert!(
        ran.stderr.contains("/nonexistent/cert.pem"),
        "the reason is on the launching terminal: {:?}",
        ran.stderr
    );
    let gone = harness::poll_until(Duration::from_secs(5), || tree.procs().is_empty()).await;
    assert!(gone, "left running: {:?}", tree.procs());
    assert!(!pidfile.exists(), "no pid file left");
}

// ------------------------------------------------------------------ 2

/// SIGHUP and `vole reload` replace every node one by one while 64 clients
/// call continuously: no failed call (see the file's doc for the retry
/// rule and its bounds). A reload with a broken settings file is refused,
/// naming the key, and the old nodes keep serving. In `grant` mode here;
/// the other modes below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_every_node_while_64_clients_call() {
    reload_under_load("grant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_every_node_while_64_clients_call_shared() {
    reload_under_load("shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_every_node_while_64_clients_call_dispatch() {
    reload_under_load("dispatch").await;
}

/// In `reuseport` mode the connections queued on a stopping node are lost
/// (documented): a reconnection reset so is counted, not failed; calls on
/// links still never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_every_node_while_64_clients_call_reuseport() {
    reload_under_load("reuseport").await;
}

/// Held-link clients of the reload tests.
const RELOAD_CLIENTS: usize = 64;

/// The reload test in `mode`.
async fn reload_under_load(mode: &'static str) {
    let _serial = serial().await;
    let cfg_dir = TempDir::new("ops-reload-cfg");
    let cfg = cfg_dir.path().join("vole.toml");
    std::fs::write(&cfg, "nodes = 2\ngrace = 5\n").expect("settings file");
    let serve = Serve::start(
        Opts::new(2, mode)
            .nodes_from_config()
            .args(&["--config", &s(&cfg)]),
    )
    .await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    let admin = serve.admin.clone();
    let limit = Duration::from_secs(20);
    let initial = wait_nodes(&admin, 2, limit).await;

    let t = Traffic::new();
    // A reload replaces at most 3 nodes here: a call may be refused once
    // by each (see Traffic::set_max_retries).
    t.set_max_retries(4);
    let tasks = start_load(&t, serve.port(), RELOAD_CLIENTS, 0);
    assert!(
        t.more(1000).await,
        "the load never got going: {}",
        t.summary()
    );

    // Each round replaces every node: SIGHUP twice with the file as it is,
    // then `vole reload` with the file asking for 3 nodes, then 2 again.
    let ids = |s: &StatusReport| s.nodes.iter().map(|n| n.id).collect::<Vec<_>>();
    let pids = |s: &StatusReport| s.nodes.iter().filter_map(|n| n.pid).collect::<Vec<_>>();
    let rounds: [(&str, usize); 4] = [
        ("SIGHUP", 2),
        ("SIGHUP", 2),
        ("vole reload", 3),
        ("vole reload", 2),
    ];
    let mut before = initial;
    for (how, nodes) in rounds {
        std::fs::write(&cfg, format!("nodes = {nodes}\ngrace = 5\n")).expect("settings file");
        let t0 = Instant::now();
        let refused_before = t.closing();
        if how == "SIGHUP" {
            let done = serve.log().matches("reload complete").count();
            serve.signal(Signal::SIGHUP);
            assert!(
                serve
                    .stderr
                    .wait_for(limit, |l| l.matches("reload complete").count() > done)
                    .await,
                "{mode}: SIGHUP: no reload"
            );
        } else {
            let r = vole(&["reload", "--admin-socket", &s(&admin)]).await;
            assert_eq!(r.code, Some(0), "{mode}: vole reload: {r:?}");
            assert!(r.stdout.contains("reloaded"), "{r:?}");
        }
        let after = wait_nodes(&admin, nodes, limit).await;
        println!(
            "{how}: {:?} -> {:?} in {:?}",
            id_pids(&before),
            id_pids(&after),
            t0.elapsed()
        );
        assert!(
            no_common(&ids(&before), &ids(&after)),
            "{how}: new node ids"
        );
        assert!(
            no_common(&pids(&before), &pids(&after)),
            "{how}: new node pids"
        );
        let cli = serve.status_nodes().await;
        assert_eq!(cli.len(), nodes, "vole status --json: {cli:?}");
        assert!(
            t.more(1000).await,
            "{mode}: calls stalled after {how}: {}",
            t.summary()
        );
        // Each client is refused at most once by each old node (it
        // reconnects after a refusal, and may land on an old node that
        // drains later).
        let refused = t.closing() - refused_before;
        let bound = (RELOAD_CLIENTS * before.nodes.len()) as u64;
        println!("{mode} {how}: {refused} calls refused as closing (at most {bound})");
        assert!(
            refused <= bound,
            "{mode} {how}: {refused} calls refused as closing, more than {bound}: {}",
            t.summary()
        );
        before = after;
    }
    let after_reload = before;

    // A broken file is refused, naming the key; nothing changes.
    std::fs::write(&cfg, "nodes = \"three\"\n").expect("settings file");
    let r = vole(&["reload", "--admin-socket", &s(&admin)]).await;
    println!("broken reload: exit {:?}: {}", r.code, r.stderr.trim());
    assert_eq!(r.code, Some(2), "refused by the service: {r:?}");
    assert!(
        r.stderr.contains("`nodes`"),
        "the error names the key: {r:?}"
    );
    std::fs::write(&cfg, "nodes = 2\nnodez = 4\n").expect("settings file");
    serve.signal(Signal::SIGHUP);
    assert!(
        serve.stderr.wait_contains(limit, "nodez").await,
        "SIGHUP with an unknown key: the refusal is logged with the key"
    );
    assert!(serve.log().contains("reload refused"), "{}", serve.log());
    let unchanged = wait_nodes(&admin, 2, limit).await;
    assert_eq!(
        id_pids(&unchanged),
        id_pids(&after_reload),
        "the old nodes keep serving"
    );
    assert!(
        t.more(500).await,
        "calls stalled after the refused reload: {}",
        t.summary()
    );

    stop_load(&t, tasks).await;
    println!("{mode}: reload under load: {}", t.summary());
    // In `reuseport` mode each node has its own accept queue, and the
    // connections queued on a node that stops are reset (design.md,
    // "reuseport"): a reconnection can be lost so. Nothing else may fail,
    // and no call on a link.
    let (lost, failures): (Vec<String>, Vec<String>) = t.failures().into_iter().partition(|f| {
        mode == "reuseport"
            && f.contains("client: connect: ")
            && f.contains("Connection reset by peer")
    });
    if mode == "reuseport" {
        println!(
            "{mode}: {} reconnections lost in a stopping node's queue",
            lost.len()
        );
    }
    assert!(failures.is_empty(), "{mode}: failed calls: {failures:#?}");
}

// ------------------------------------------------------------------ 3

/// SIGUSR2 and `vole upgrade` while clients connect (a fresh connection per
/// call) and call (on held links), in `grant` mode: no connection refused
/// or reset, no failed call; the new controller owns the pid file and
/// answers `vole status`, from the moment it serves; the old one exits 0
/// and its nodes exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_hands_over_without_refusing_a_connection() {
    upgrade_under_load("grant", 4).await;
}

/// The same in `shared` mode (every node accepts from the one socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_hands_over_without_refusing_a_connection_shared() {
    upgrade_under_load("shared", 2).await;
}

/// The same in `dispatch` mode, where the controllers themselves accept:
/// the old one stops accepting once the new one serves (before its nodes
/// drain), so nothing it accepts is dropped, and the new one takes what is
/// still in the listening socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_hands_over_without_refusing_a_connection_dispatch() {
    upgrade_under_load("dispatch", 2).await;
}

/// The same in `reuseport` mode. Old and new nodes have their own accept
/// queues there, and a connection queued on an old node that stops is
/// reset (design.md): such a lost connection is counted, not failed; no
/// call on a link may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_hands_over_without_refusing_a_connection_reuseport() {
    upgrade_under_load("reuseport", 2).await;
}

/// What the old controller logs when the new one serves (and it drains).
const HANDED_OVER: &str = "upgrade: the new controller serves; this one drains and exits";

/// Waits for the `nth` (from 0) hand-over in the controllers' log file
/// (every controller of an upgrade appends to it) and returns the new
/// controller's pid it names.
async fn handed_over(log: &Path, nth: usize, limit: Duration) -> u32 {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some((_, line)) = text.split(HANDED_OVER).enumerate().nth(nth + 1) {
            let pid = line
                .lines()
                .next()
                .and_then(|l| l.split("new_pid=").nth(1))
                .and_then(|p| {
                    p.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .ok()
                });
            return pid.unwrap_or_else(|| panic!("no new_pid in the hand-over line: {line}"));
        }
        assert!(
            Instant::now() < deadline,
            "no hand-over {nth} logged within {limit:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `pid` runs (neither gone nor a zombie).
fn running(pid: u32) -> bool {
    harness::proc_info(pid).is_some_and(|p| p.state != 'Z')
}

/// Held-link and fresh-connection clients of the upgrade tests.
const UPGRADE_HELD: usize = 32;
const UPGRADE_FRESH: usize = 16;

/// Upgrades `rounds` times (SIGUSR2 and `vole upgrade` in turn) under load
/// in `mode`; checks that no call or connection fails and that the admin
/// socket answers for the new controller only, from the moment it serves.
async fn upgrade_under_load(mode: &'static str, rounds: usize) {
    let _serial = serial().await;
    let pid_dir = TempDir::new("ops-upgrade-pid");
    let pidfile = pid_dir.path().join("vole.pid");
    let log = pid_dir.path().join("vole.log");
    let serve =
        Serve::start(Opts::new(2, mode).args(&["--pidfile", &s(&pidfile), "--log-file", &s(&log)]))
            .await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    tree.show(&log);
    let admin = serve.admin.clone();
    let a = s(&admin);
    let limit = Duration::from_secs(30);
    let me = std::process::id();
    let first = serve.pid;
    assert_eq!(read_pid(&pidfile), first);
    wait_nodes(&admin, 2, limit).await;

    let t = Traffic::new();
    // Two old nodes drain at each upgrade: a call may be refused once by
    // each (see Traffic::set_max_retries).
    t.set_max_retries(3);
    let tasks = start_load(&t, serve.port(), UPGRADE_HELD, UPGRADE_FRESH);
    assert!(
        t.more(500).await,
        "{mode}: the load never got going: {}",
        t.summary()
    );

    // The first controller is this test's child; each later one is
    // orphaned to the test (a subreaper) when the one that started it
    // exits.
    let mut current = first;
    let mut seen = vec![first];
    for round in 0..rounds {
        let how = if round % 2 == 0 {
            "SIGUSR2"
        } else {
            "vole upgrade"
        };
        let old_nodes = nodes_of(current);
        assert_eq!(old_nodes.len(), 2, "{mode} {how}: nodes of {current}");
        if current != first {
            assert_eq!(
                harness::proc_info(current).map(|p| p.ppid),
                Some(me),
                "controller {current} was orphaned to the test"
            );
        }
        // A call running on an old node through the hand-over: it holds
        // the drain open (so the admin socket is polled through it) and
        // must finish.
        let slow = connect(serve.port())
            .await
            .unwrap_or_else(|e| panic!("{mode} {how}: connect: {e}"));
        assert!(
            old_nodes.values().any(|p| p.pid == slow.node.1),
            "{mode} {how}: the slow call's node {:?} is an old one",
            slow.node
        );
        let slow_gw = slow.gw.clone();
        let slow_call = tokio::spawn(async move { sleep_call(&slow_gw, 2000).await });
        let t0 = Instant::now();
        let (refused_before, conns_before) = (t.closing(), t.connections());
        if how == "SIGUSR2" {
            harness::signal(current, Signal::SIGUSR2);
        } else {
            let r = vole(&["upgrade", "--admin-socket", &a]).await;
            assert_eq!(r.code, Some(0), "vole upgrade: {r:?}");
        }
        // From the hand-over until the old controller is gone, the admin
        // socket answers for the new one only.
        let new = handed_over(&log, round, limit).await;
        assert_ne!(new, current, "{mode} {how}");
        let mut polls = 0;
        while running(current) && t0.elapsed() < limit {
            let st = status(&admin)
                .await
                .unwrap_or_else(|e| panic!("{mode} {how}: status during the drain: {e}"));
            assert_eq!(
                st.pid, new,
                "{mode} {how}: status during the old controller's drain (poll {polls})"
            );
            if polls % 4 == 0 && running(current) {
                let r = vole(&["status", "--json", "--admin-socket", &a]).await;
                assert_eq!(r.code, Some(0), "{mode} {how}: vole status: {r:?}");
                let cli: serde_json::Value = serde_json::from_str(&r.stdout)
                    .unwrap_or_else(|e| panic!("vole status --json: {e}: {r:?}"));
                assert_eq!(
                    cli["pid"].as_u64(),
                    Some(u64::from(new)),
                    "{mode} {how}: vole status --json during the drain (poll {polls}): {cli}"
                );
            }
            polls += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            polls > 0,
            "{mode} {how}: the old controller was gone at once"
        );
        assert_eq!(
            slow_call.await.ok(),
            Some(Ok(2000)),
            "{mode} {how}: a call running through the hand-over finishes"
        );
        harness::close(&slow.link).await;
        let code = if current == first {
            serve.wait_exit(limit).await.and_then(|e| e.code())
        } else {
            wait_child_code(current, limit).await
        };
        assert_eq!(
            code,
            Some(0),
            "{mode} {how}: the old controller {current} exits 0"
        );
        assert_eq!(
            read_pid(&pidfile),
            new,
            "{mode} {how}: the new controller owns the pid file"
        );
        assert!(!seen.contains(&new), "{mode} {how}: a new pid ({new})");
        let st = wait_nodes(&admin, 2, limit).await;
        assert_eq!(
            st.pid, new,
            "{mode} {how}: status reports the new controller"
        );
        let cli = serve.status().await;
        assert_eq!(
            cli["pid"].as_u64(),
            Some(u64::from(new)),
            "vole status --json: {cli}"
        );
        let children: BTreeSet<u32> = nodes_of(new).values().map(|p| p.pid).collect();
        assert_eq!(
            st.nodes
                .iter()
                .filter_map(|n| n.pid)
                .collect::<BTreeSet<_>>(),
            children,
            "{mode} {how}: the nodes are the new controller's"
        );
        for p in old_nodes.values() {
            assert!(
                wait_dead(p, Duration::from_secs(10)).await,
                "{mode} {how}: old node {p:?} still runs"
            );
        }
        println!(
            "{mode} {how}: controller {current} -> {new} in {:?}; status polled {polls} times during the drain",
            t0.elapsed()
        );
        assert!(
            t.more(1000).await,
            "{mode}: calls stalled after {how}: {}",
            t.summary()
        );
        // Each client is refused at most once by each old node: an old node
        // stops accepting when it starts to drain, so a client's next
        // connection goes to a new node or to an old one not yet draining.
        let refused = t.closing() - refused_before;
        let conns = t.connections() - conns_before;
        let bound = ((UPGRADE_HELD + UPGRADE_FRESH) * old_nodes.len()) as u64;
        println!(
            "{mode} {how}: {refused} calls refused as closing (at most {bound}) in {conns} \
             connections"
        );
        assert!(
            refused <= bound,
            "{mode} {how}: {refused} calls refused as closing, more than {bound}: {}",
            t.summary()
        );
        seen.push(new);
        current = new;
    }

    stop_load(&t, tasks).await;
    println!("{mode}: upgrades under load: {}", t.summary());
    let (lost, failures): (Vec<String>, Vec<String>) = t.failures().into_iter().partition(|f| {
        mode == "reuseport"
            && f.contains("client: connect: ")
            && f.contains("Connection reset by peer")
    });
    if mode == "reuseport" {
        println!(
            "{mode}: {} connections lost in a stopping node's queue",
            lost.len()
        );
    }
    assert!(
        failures.is_empty(),
        "{mode}: failed connections or calls: {failures:#?}"
    );
}

// ------------------------------------------------------------------ 3b

/// The sum of `name` over every series.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls the metrics endpoint until `vole_calls_total` sums to `calls` or
/// more; the body.
async fn scrape_until_calls(mport: u16, calls: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = http_get(mport, "/metrics").await;
        if let Ok(b) = &body {
            if metric_sum(b, "vole_calls_total") >= calls {
                return b.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {calls} calls: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `vole upgrade` with `--metrics`: the metrics socket passes to the new
/// controller (it used to fail binding the port the old one held, and to
/// delete the pid file); `vole upgrade` returns once the new one serves,
/// the pid file names it, and scrapes are answered by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_metrics_hands_the_endpoint_over() {
    let _serial = serial().await;
    let pid_dir = TempDir::new("ops-upgrade-metrics-pid");
    let pidfile = pid_dir.path().join("vole.pid");
    let mport = free_port();
    let hport = free_port();
    let serve = Serve::start(Opts::new(2, "grant").args(&[
        "--pidfile",
        &s(&pidfile),
        "--metrics",
        &format!("127.0.0.1:{mport}"),
        "--health",
        &format!("127.0.0.1:{hport}"),
    ]))
    .await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    let admin = serve.admin.clone();
    let limit = Duration::from_secs(30);
    wait_nodes(&admin, 2, limit).await;
    assert_eq!(read_pid(&pidfile), serve.pid);
    // A balancer's health check every 20 ms, across the upgrade: always
    // ready (the health socket passes over like the metrics socket).
    let probing = Arc::new(AtomicBool::new(true));
    let prober = {
        let probing = probing.clone();
        tokio::spawn(async move {
            let (mut ok, mut bad) = (0u32, Vec::new());
            while probing.load(Ordering::SeqCst) {
                match http_get(hport, "/readyz").await {
                    Ok(_) => ok += 1,
                    Err(e) => bad.push(e),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, bad)
        })
    };
    let c = connect(serve.port()).await.expect("connect");
    for i in 0..3 {
        echo(&c.gw, i).await.expect("echo");
    }
    scrape_until_calls(mport, 3.0).await;

    let r = vole(&["upgrade", "--admin-socket", &s(&admin)]).await;
    assert_eq!(
        r.code,
        Some(0),
        "vole upgrade: {r:?}\nlog:\n{}",
        serve.log()
    );
    let code = serve.wait_exit(limit).await.and_then(|e| e.code());
    assert_eq!(
        code,
        Some(0),
        "the old controller exits 0; log:\n{}",
        serve.log()
    );
    harness::close(&c.link).await;
    probing.store(false, Ordering::SeqCst);
    let (ok, bad) = prober.await.expect("prober");
    assert!(
        ok > 0 && bad.is_empty(),
        "/readyz across the upgrade: {ok} ok, {bad:?}"
    );
    let new = read_pid(&pidfile);
    assert_ne!(new, serve.pid, "the pid file names the new controller");
    assert!(r.stdout.contains("the new controller serves"), "{r:?}");
    let st = wait_nodes(&admin, 2, limit).await;
    assert_eq!(st.pid, new, "status reports the new controller");

    // The old controller is gone: the endpoint answers from the new one,
    // which counts the calls its own nodes serve.
    let c = connect(serve.port())
        .await
        .expect("connect after the upgrade");
    for i in 0..5 {
        echo(&c.gw, i).await.expect("echo");
    }
    let body = scrape_until_calls(mport, 5.0).await;
    assert!(body.contains("service=\"vole\""), "{body}");
    harness::close(&c.link).await;
    let r = vole(&["stop", "--admin-socket", &s(&admin)]).await;
    assert_eq!(r.code, Some(0), "vole stop: {r:?}");
    assert_eq!(wait_child_code(new, limit).await, Some(0));
    assert!(!pidfile.exists(), "the pid file is removed at the stop");
}

/// A failed upgrade: the binary at the served path now exits at once, or
/// is a vole whose controller fails after start-up. `vole upgrade` exits 2
/// and says why, the old controller keeps serving (calls, metrics), and
/// its pid file stays in place naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_keeps_the_old_controller_and_its_pid_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let _serial = serial().await;
    let bin = TempDir::new("ops-upgrade-fail-bin");
    let deployed = bin.path().join("vole");
    std::fs::copy(harness::VOLE, &deployed).expect("deploy");
    let pidfile = bin.path().join("vole.pid");
    let mport = free_port();
    let serve = Serve::start(Opts::new(2, "grant").program(&deployed, "vole").args(&[
        "--pidfile",
        &s(&pidfile),
        "--metrics",
        &format!("127.0.0.1:{mport}"),
    ]))
    .await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    let admin = serve.admin.clone();
    let limit = Duration::from_secs(30);
    wait_nodes(&admin, 2, limit).await;
    assert_eq!(read_pid(&pidfile), serve.pid);

    // The new "binary" (replaced as install(1) does): first one that exits
    // at once; then a real vole controller that fails after its start-up
    // (an unknown node user), which used to delete the pid file.
    let real = bin.path().join("vole.real");
    std::fs::copy(harness::VOLE, &real).expect("copy");
    let failing = [
        ("#!/bin/sh\nexit 1\n".to_owned(), "exited before serving"),
        (
            format!(
                "#!/bin/sh\nexec {} \"$@\" --user no-such-user-vole-test\n",
                s(&real)
            ),
            "no-such-user-vole-test",
        ),
    ];
    for (script, reason) in failing {
        let staged = bin.path().join("vole.new");
        std::fs::write(&staged, script).expect("script");
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&staged, &deployed).expect("replace");

        let r = vole(&["upgrade", "--admin-socket", &s(&admin)]).await;
        assert_eq!(r.code, Some(2), "vole upgrade fails: {r:?}");
        assert!(r.stderr.contains(reason), "the reason: {r:?}");
        assert!(serve.exit_status().is_none(), "the old controller runs on");
        assert_eq!(read_pid(&pidfile), serve.pid, "the pid file names it still");
        let st = status(&admin).await.expect("status");
        assert_eq!(st.pid, serve.pid);
        let c = connect(serve.port()).await.expect("connect");
        echo(&c.gw, 1)
            .await
            .expect("a call after the failed upgrade");
        harness::close(&c.link).await;
        http_get(mport, "/metrics")
            .await
            .expect("the old controller's metrics still answer");
    }
    let r = vole(&["stop", "--admin-socket", &s(&admin)]).await;
    assert_eq!(r.code, Some(0), "vole stop: {r:?}");
    assert_eq!(serve.wait_exit(limit).await.and_then(|e| e.code()), Some(0));
    assert!(!pidfile.exists(), "the pid file is removed at the stop");
}

// ------------------------------------------------------------------ 4

/// SIGTTIN/SIGTTOU and `vole scale N` change the number of nodes; `vole
/// status --json` follows; a node removed drains (`retiring`) while a call
/// on it finishes; SIGTTOU never goes below one node. In `grant` mode here;
/// the other modes below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_with_signals_and_vole_scale() {
    scaling_in("grant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_with_signals_and_vole_scale_shared() {
    scaling_in("shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_with_signals_and_vole_scale_dispatch() {
    scaling_in("dispatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_with_signals_and_vole_scale_reuseport() {
    scaling_in("reuseport").await;
}

/// The scaling test in `mode`.
async fn scaling_in(mode: &'static str) {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(2, mode)).await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    let admin = serve.admin.clone();
    let a = s(&admin);
    let limit = Duration::from_secs(20);
    let check = |n: usize| {
        let serve = &serve;
        async move {
            let cli = serve.status_nodes().await;
            assert_eq!(cli.len(), n, "vole status --json: {cli:?}");
            assert!(
                cli.values().all(|(_, state, _)| state == "serving"),
                "{cli:?}"
            );
            assert_eq!(nodes_of(serve.pid).len(), n, "node processes");
        }
    };
    wait_nodes(&admin, 2, limit).await;

    serve.signal(Signal::SIGTTIN);
    wait_nodes(&admin, 3, limit).await;
    check(3).await;
    serve.signal(Signal::SIGTTOU);
    wait_nodes(&admin, 2, limit).await;
    check(2).await;

    let r = vole(&["scale", "4", "--admin-socket", &a]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    wait_nodes(&admin, 4, limit).await;
    check(4).await;
    // A node that `scale 1` removes shows as `retiring` while it finishes
    // a running call (the newest nodes go, the oldest stays).
    let survivor = *serve.status_nodes().await.keys().min().expect("nodes");
    let mut held = None;
    for _ in 0..40 {
        let c = connect(serve.port()).await.expect("connect");
        if c.node.0 != survivor {
            held = Some(c);
            break;
        }
        harness::close(&c.link).await;
    }
    let held = held.expect("a link to a node that scale 1 removes");
    let victim = held.node.0;
    let gw = held.gw.clone();
    let call = tokio::spawn(async move { harness::sleep_call(&gw, 3000).await });
    let started = Instant::now();
    loop {
        let st = serve.status().await;
        let running = st["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["id"] == victim && n["inflight"] == 1);
        if running {
            break;
        }
        assert!(started.elapsed() < limit, "the call never ran: {st:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = vole(&["scale", "1", "--admin-socket", &a]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let during = serve.status_nodes().await;
    assert_eq!(during[&survivor].1, "serving", "{during:?}");
    assert_eq!(during[&victim].1, "retiring", "{during:?}");
    let table = vole(&["status", "--admin-socket", &a]).await;
    assert!(table.stdout.contains("retiring"), "{table:?}");
    assert_eq!(call.await.expect("join"), Ok(3000), "the call finished");
    harness::close(&held.link).await;
    let one = wait_nodes(&admin, 1, limit).await;
    check(1).await;

    // SIGTTOU at one node: stays at one.
    serve.signal(Signal::SIGTTOU);
    assert!(
        serve
            .stderr
            .wait_contains(limit, "scaling from=1 to=1")
            .await,
        "SIGTTOU at one node was not handled"
    );
    let still = wait_nodes(&admin, 1, limit).await;
    assert_eq!(id_pids(&still), id_pids(&one));
    check(1).await;
    let r = vole(&["scale", "0", "--admin-socket", &a]).await;
    assert_eq!(r.code, Some(2), "scale 0 is refused: {r:?}");
    assert!(r.stderr.contains("at least one node"), "{r:?}");

    let c = connect(serve.port()).await.expect("still serves");
    echo(&c.gw, 7).await.expect("echo");
    harness::close(&c.link).await;
}

// ------------------------------------------------------------------ 5

/// A settings file with a wrong type or an unknown key is refused with the
/// key named, by `vole config check` and by `vole serve --config` (exit
/// 64); a valid file passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_files_are_refused_naming_the_key() {
    let dir = TempDir::new("ops-config");
    let d = dir.path();
    let tree = Tree::new(d);
    let cases = [
        ("wrong-type", "nodes = \"three\"\n", "`nodes`"),
        ("unknown-key", "nodes = 2\nnodez = 3\n", "nodez"),
        (
            "nested-type",
            "[restart]\nintensity = \"often\"\n",
            "restart.intensity",
        ),
        (
            "nested-unknown",
            "[log]\nfile = \"/tmp/x.log\"\ncolour = true\n",
            "colour",
        ),
        ("bad-value", "grace = 0\n", "grace"),
        // What exists only on the machine is checked too, before serve
        // writes anything.
        ("no-user", "user = \"no-such-user-vole\"\n", "no user named"),
        (
            "no-group",
            "user = \"nobody\"\ngroup = \"no-such-group-vole\"\n",
            "no group named",
        ),
    ];
    for (name, text, key) in cases {
        let f = d.join(format!("{name}.toml"));
        std::fs::write(&f, text).expect("write");
        let check = vole(&["config", "check", &s(&f)]).await;
        assert_eq!(check.code, Some(64), "{name}: config check: {check:?}");
        assert!(check.stderr.contains(key), "{name}: names {key}: {check:?}");
        let serve = vole(&[
            "serve",
            "--config",
            &s(&f),
            "--state-dir",
            &s(d),
            "--listen",
            "127.0.0.1:0",
        ])
        .await;
        assert_eq!(serve.code, Some(64), "{name}: serve: {serve:?}");
        assert!(serve.stderr.contains(key), "{name}: names {key}: {serve:?}");
        println!("{name}: {}", check.stderr.trim());
    }
    assert!(
        !d.join("dev-cert.pem").exists(),
        "a refused serve wrote a dev certificate"
    );
    let good = d.join("good.toml");
    std::fs::write(
        &good,
        "listen = [\"127.0.0.1:0\"]\nnodes = 3\nbalance = \"dispatch\"\ngrace = 2.5\n\
         [transports]\ntls = false\nplain = true\n[restart]\nintensity = 9\n\
         [log]\nlevel = \"debug\"\nformat = \"json\"\n",
    )
    .expect("write");
    let check = vole(&["config", "check", &s(&good)]).await;
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(
        check.stdout.contains("ok (3 node(s), balance dispatch"),
        "{check:?}"
    );
    assert!(
        tree.procs().is_empty(),
        "nothing started: {:?}",
        tree.procs()
    );
}

// ------------------------------------------------------------------ 6

/// `--log-file` gets the controller's and the nodes' lines; after the file
/// is renamed (logrotate), SIGUSR1 and `vole reopen-logs` make new lines go
/// to a new file at the original path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_is_reopened_after_rotation() {
    let _serial = serial().await;
    let log_dir = TempDir::new("ops-logs");
    let log = log_dir.path().join("vole.log");
    let rotated1 = log_dir.path().join("vole.log.1");
    let rotated2 = log_dir.path().join("vole.log.2");
    let serve = Serve::start(Opts::new(1, "grant").args(&["--log-file", &s(&log)])).await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    for f in [&log, &rotated1, &rotated2] {
        tree.show(f);
    }
    let a = s(&serve.admin);
    let limit = Duration::from_secs(10);
    wait_file(&log, limit, "controller and node lines", |t| {
        t.contains("controller starting")
            && t.contains("[node 0 pid ")
            && t.contains("node serving")
    })
    .await;

    // logrotate moves the file; SIGUSR1.
    std::fs::rename(&log, &rotated1).expect("rotate");
    serve.signal(Signal::SIGUSR1);
    wait_file(&log, limit, "the reopen line", |t| {
        t.contains("log file reopened")
    })
    .await;
    let r = vole(&["scale", "2", "--admin-socket", &a]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    wait_file(&log, limit, "node 1's lines", |t| {
        t.contains("[node 1 pid ")
    })
    .await;
    let old = std::fs::read_to_string(&rotated1).expect("rotated file");
    assert!(
        !old.contains("[node 1 pid ") && !old.contains("log file reopened"),
        "nothing new goes to the rotated file:\n{old}"
    );

    // Again, with `vole reopen-logs`.
    std::fs::rename(&log, &rotated2).expect("rotate");
    let r = vole(&["reopen-logs", "--admin-socket", &a]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    wait_file(&log, limit, "the reopen line", |t| {
        t.contains("log file reopened")
    })
    .await;
    let r = vole(&["scale", "3", "--admin-socket", &a]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    wait_file(&log, limit, "node 2's lines", |t| {
        t.contains("[node 2 pid ")
    })
    .await;
    let old = std::fs::read_to_string(&rotated2).expect("rotated file");
    assert!(
        !old.contains("[node 2 pid "),
        "nothing new goes to the rotated file:\n{old}"
    );
}

/// `--log-format json`: every line of the log file, the controller's and
/// the nodes', parses as a JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse() {
    let _serial = serial().await;
    let log_dir = TempDir::new("ops-json");
    let log = log_dir.path().join("vole.log");
    let serve =
        Serve::start(Opts::new(2, "grant").args(&["--log-file", &s(&log), "--log-format", "json"]))
            .await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    tree.show(&log);
    let c = connect(serve.port()).await.expect("connect");
    echo(&c.gw, 1).await.expect("echo");
    harness::close(&c.link).await;
    let stop = vole(&["stop", "--admin-socket", &s(&serve.admin)]).await;
    assert_eq!(stop.code, Some(0), "{stop:?}");
    let exit = serve.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(exit.and_then(|e| e.code()), Some(0));
    let text = std::fs::read_to_string(&log).expect("log file");
    let mut node_lines = 0;
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
        lines += 1;
        if v["threadName"]
            .as_str()
            .is_some_and(|t| t.starts_with("vole-node-"))
        {
            // A node's line, forwarded by the controller: it says which.
            assert!(
                v["node"].is_u64() && v["pid"].is_u64(),
                "node line without node and pid: {line}"
            );
            node_lines += 1;
        }
    }
    println!("{lines} JSON lines, {node_lines} from nodes");
    assert!(text.contains("controller starting"), "{text}");
    assert!(node_lines >= 2, "node lines in the file:\n{text}");
}

// ------------------------------------------------------------------ 7

fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of `name` over the series whose labels include all of `labels`.
fn metric_total(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `--metrics`: after calls, the Prometheus endpoint shows per-node call
/// counters, the latency histogram's buckets, and a handshake failure with
/// reason `bad_vop` after a garbage connection. In `grant` mode here; the
/// other modes below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_shows_calls_latency_and_handshake_failures() {
    metrics_in("grant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_shows_calls_latency_and_handshake_failures_shared() {
    metrics_in("shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_shows_calls_latency_and_handshake_failures_dispatch() {
    metrics_in("dispatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_shows_calls_latency_and_handshake_failures_reuseport() {
    metrics_in("reuseport").await;
}

/// The metrics test in `mode`. Six links make five calls each; each node's
/// counter must show the calls made on its links (which node
/// served a link, `meta.ping()` says). `grant` and `dispatch` balance, so
/// both nodes must have served; in `shared` and `reuseport` the kernel
/// chooses, and whichever nodes served are checked.
async fn metrics_in(mode: &'static str) {
    let _serial = serial().await;
    let mport = free_port();
    let serve =
        Serve::start(Opts::new(2, mode).args(&["--metrics", &format!("127.0.0.1:{mport}")])).await;
    let tree = Tree::new(serve.dir.path());
    tree.not_mine(serve.pid);
    wait_nodes(&serve.admin, 2, Duration::from_secs(20)).await;
    const LINKS: usize = 6;
    const CALLS: usize = 5;
    let mut clients = Vec::new();
    for _ in 0..LINKS {
        clients.push(connect(serve.port()).await.expect("connect"));
    }
    for (i, c) in clients.iter().enumerate() {
        for j in 0..CALLS {
            echo(&c.gw, (i * 10 + j) as i64).await.expect("echo");
        }
    }
    // Calls made per node id: the echoes and the `meta.ping()` that
    // `connect` makes.
    let mut made: BTreeMap<u32, f64> = BTreeMap::new();
    for c in &clients {
        *made.entry(c.node.0).or_default() += (CALLS + 1) as f64;
    }
    if mode == "grant" || mode == "dispatch" {
        assert_eq!(made.len(), 2, "{mode}: calls on both nodes: {made:?}");
    }
    // A garbage connection.
    let mut garbage = tokio::net::TcpStream::connect(serve.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut garbage, b"GARBAGE\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut garbage, &mut sink),
    )
    .await
    .expect("the server closes a garbage connection");

    // The controller polls its nodes every second: poll the endpoint.
    let calls = |b: &str, n: u32| metric_total(b, "vole_calls_total", &[&format!("node=\"{n}\"")]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let body = http_get(mport, "/metrics").await;
        if let Ok(b) = &body {
            if made.iter().all(|(n, k)| calls(b, *n) >= *k)
                && metric_total(b, "vole_handshake_failures_total", &["reason=\"bad_vop\""]) >= 1.0
            {
                break b.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: metrics never showed the calls {made:?}: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let show: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("vole_calls_total") || l.starts_with("vole_handshake"))
        .collect();
    println!("{mode}: calls made per node {made:?}\n{}", show.join("\n"));
    // Exactly those: none lost, none counted twice, none on a node that
    // served no link.
    for n in 0..2 {
        let want = made.get(&n).copied().unwrap_or(0.0);
        assert_eq!(calls(&body, n), want, "{mode}: calls of node {n}:\n{body}");
    }
    for n in made.keys() {
        let bucket = metric(
            &body,
            "vole_call_duration_seconds_bucket",
            &[&format!("node=\"{n}\""), "le=\"+Inf\""],
        );
        assert!(
            bucket.is_some_and(|v| v >= made[n]),
            "{mode}: +Inf bucket of node {n} counts the {} calls:\n{body}",
            made[n]
        );
    }
    let finite_buckets = body
        .lines()
        .filter(|l| l.starts_with("vole_call_duration_seconds_bucket{") && !l.contains("+Inf"))
        .count();
    assert!(finite_buckets >= 2, "{mode}: histogram buckets:\n{body}");
    assert!(body.contains("vole_call_duration_seconds_count{"), "{body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("vole_handshake_failures_total{")
                && l.contains("node=\"")
                && l.contains("reason=\"bad_vop\"")),
        "{mode}: {body}"
    );
    // Every metric has its help text, and the build is named.
    let helped: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for l in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = l.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            helped.contains(&name),
            "{mode}: no # HELP for {name}:\n{body}"
        );
    }
    assert!(helped.len() >= 8, "{mode}: {helped:?}");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        metric(&body, "vole_build_info", &[&version]),
        Some(1.0),
        "{mode}: vole_build_info:\n{body}"
    );
    for c in &clients {
        harness::close(&c.link).await;
    }
}

// ------------------------------------------------------------------ 8

/// As root: nodes run as `nobody` by default, as root with
/// `--allow-root-nodes`, as the user named by `--user`; an unknown user is
/// refused (64). Running as `nobody` is warned about, and nodes are not
/// dumpable: their /proc files are root's, and another process of their
/// uid cannot read their environment (or memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_drop_root_privileges() {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::process::CommandExt as _;
    let _serial = serial().await;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test checks privilege dropping and must run as root"
    );
    let nobody_user = nix::unistd::User::from_name("nobody")
        .expect("user lookup")
        .expect("user nobody exists");
    let nobody = nobody_user.uid.as_raw();
    // Reads a node's environment as `nobody`, as a neighbour would.
    let read_as_nobody = |pid: u32| {
        std::process::Command::new("cat")
            .arg(format!("/proc/{pid}/environ"))
            .uid(nobody)
            .gid(nobody_user.gid.as_raw())
            .output()
            .expect("run cat as nobody")
    };
    for (args, want) in [
        (&[][..], nobody),
        (&["--allow-root-nodes"][..], 0),
        (&["--user", "nobody"][..], nobody),
    ] {
        let serve = Serve::start(Opts::new(1, "grant").args(args)).await;
        let tree = Tree::new(serve.dir.path());
        tree.not_mine(serve.pid);
        let nodes = nodes_of(serve.pid);
        let node = nodes.get(&0).expect("node 0");
        assert_eq!(uid_of(node.pid), Some(want), "{args:?}: the node's uid");
        let owner = std::fs::metadata(format!("/proc/{}/environ", node.pid))
            .expect("the node's /proc/PID/environ")
            .uid();
        assert_eq!(owner, 0, "{args:?}: the node is not dumpable");
        if want == nobody {
            let read = read_as_nobody(node.pid);
            assert!(
                !read.status.success(),
                "{args:?}: nobody read the node's environment: {read:?}"
            );
            assert!(
                serve.log().contains("a uid other services share"),
                "{args:?}: no warning about nobody: {}",
                serve.log()
            );
        } else {
            assert!(!serve.log().contains("a uid other services share"));
        }
        assert_eq!(
            uid_of(serve.pid),
            Some(0),
            "{args:?}: the controller stays root"
        );
        let c = connect(serve.port()).await.expect("connect");
        echo(&c.gw, 5).await.expect("echo");
        harness::close(&c.link).await;
        println!("{args:?}: node uid {want}");
    }
    let dir = TempDir::new("ops-user");
    let d = dir.path();
    let _tree = Tree::new(d);
    let r = vole(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--plain",
        "--no-tls",
        "--nodes",
        "1",
        "--state-dir",
        &s(d),
        "--user",
        "no-such-user",
    ])
    .await;
    assert_eq!(r.code, Some(64), "{r:?}");
    assert!(r.stderr.contains("no-such-user"), "{r:?}");
}
