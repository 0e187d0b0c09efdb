//! External nodes (`vole serve --node-command`): a stock Versile Python
//! service (`examples/python/vpy_node.py`) runs as 2 nodes under vole's
//! controller. Each gets the listening socket by the systemd
//! socket-activation convention; the VPy client and `vole call` are
//! served; a node killed with SIGKILL is replaced; `vole stop` leaves no
//! process behind. Modes that need a control link are refused.
//!
//! Python comes from `$VOLE_VPY_PYTHON`, else `target/vpy-venv/bin/python`
//! (`.ci/run` makes it); without it these tests fail, they are never
//! skipped.

#[path = "multiprocess/harness.rs"]
mod harness;
// Only part of the operations tests' helpers is used here.
#[allow(dead_code)]
#[path = "operations/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{serial, Opts, Serve, TempDir, VOLE};
use nix::sys::signal::Signal;
use support::{id_pids, status, wait_nodes};

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> PathBuf {
    let path = std::env::var_os("VOLE_VPY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(WORKSPACE).join("target/vpy-venv/bin/python"));
    assert!(
        path.exists(),
        "external-node tests need Python with versile-python3 at {} (run .ci/run, or set VOLE_VPY_PYTHON)",
        path.display()
    );
    path
}

fn node_command() -> String {
    let script = Path::new(WORKSPACE).join("examples/python/vpy_node.py");
    format!("'{}' '{}'", python().display(), script.display())
}

/// The environment a process started with.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn run(program: &Path, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("in time")
    .expect("runs")
}

/// The stock VPy client: resolves the gateway over PLAIN and calls it.
async fn vpy_call(port: u16) -> std::process::Output {
    let code = format!(
        "from versile.quick import VUrl\n\
         from versile.reactor.io.url import VOPInsecureUrlConfig\n\
         gw = VUrl.resolve('vop://127.0.0.1:{port}/', conf=VOPInsecureUrlConfig(), nowait=True).result(10)\n\
         print(gw.echo('from vpy', nowait=True).result(10))\n\
         print(gw.add(40, 2, nowait=True).result(10))\n\
         gw._v_link.shutdown()\n\
         import os; os._exit(0)\n"
    );
    run(&python(), &["-c", &code]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpy_service_runs_as_external_nodes() {
    let command = node_command();
    let _serial = serial().await;
    // As root, nodes run as nobody unless allowed to keep root; the test's
    // Python lives where nobody may not read.
    let serve = Serve::start(Opts::new(2, "shared").args(&[
        "--node-command",
        &command,
        "--allow-root-nodes",
    ]))
    .await;
    // Serving from the start (the socket queues connections); wait until
    // each node is the Python program (not the shim before its exec) and
    // says it serves.
    for id in 0..2 {
        let said = format!("vpy node {id} serving");
        assert!(
            serve
                .stderr
                .wait_contains(Duration::from_secs(20), &said)
                .await,
            "{said:?} missing; log:\n{}",
            serve.log()
        );
    }
    let report = wait_nodes(&serve.admin, 2, Duration::from_secs(20)).await;
    let nodes = id_pids(&report);
    assert_eq!(nodes.len(), 2, "{report:?}");
    for (id, pid) in &nodes {
        // The controller's child, exec'd into Python with the
        // socket-activation variables for its own pid.
        let info = harness::proc_info(*pid).expect("node runs");
        assert_eq!(info.ppid, serve.pid, "node {id} is the controller's child");
        let env = environ(*pid);
        for want in [
            format!("LISTEN_PID={pid}"),
            "LISTEN_FDS=1".to_owned(),
            format!("VOLE_NODE_ID={id}"),
        ] {
            assert!(env.contains(&want), "node {id} lacks {want}: {env:?}");
        }
        assert!(env.iter().any(|v| v.starts_with("LISTEN_FDNAMES=")));
    }

    // vole call and the VPy client are served.
    let uri = format!("vop://127.0.0.1:{}/", serve.port());
    let out = run(Path::new(VOLE), &["call", "--plain", &uri, "echo", "hello"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"hello\"");
    let out = run(Path::new(VOLE), &["call", "--plain", &uri, "node"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let pid = served[1].as_u64().expect("a pid") as u32;
    assert!(
        nodes.iter().any(|(_, p)| *p == pid),
        "{served} from {nodes:?}"
    );
    let out = vpy_call(serve.port()).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.lines().collect::<Vec<_>>(), ["from vpy", "42"]);

    // A node killed with SIGKILL is replaced.
    let (victim_id, victim) = nodes[1];
    harness::signal(victim, Signal::SIGKILL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let replaced = loop {
        if let Ok(s) = status(&serve.admin).await {
            let now = id_pids(&s);
            if now.len() == 2
                && now
                    .iter()
                    .any(|(id, pid)| *id == victim_id && *pid != victim)
                && s.nodes.iter().all(|n| n.state == "serving")
            {
                break s;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {victim_id} was not replaced; log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let restarted = replaced
        .nodes
        .iter()
        .find(|n| n.id == victim_id)
        .expect("the node");
    assert_eq!(restarted.restarts, 1);
    let out = run(Path::new(VOLE), &["call", "--plain", &uri, "echo", "again"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // vole stop: SIGTERM to each node, which drains and exits; nothing is
    // left behind.
    let last: Vec<u32> = id_pids(&replaced).into_iter().map(|(_, p)| p).collect();
    let admin = serve.admin.to_str().expect("path").to_owned();
    let out = run(Path::new(VOLE), &["stop", "--admin-socket", &admin]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        serve.log()
    );
    for pid in last {
        let gone = harness::proc_info(pid).is_none_or(|p| p.state == 'Z');
        assert!(gone, "external node {pid} outlived the controller");
    }
    let log = serve.log();
    assert!(
        log.contains("vpy node 0 stopping"),
        "nodes got SIGTERM: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_command_that_cannot_run_is_a_configuration_error() {
    let dir = TempDir::new("external-bad");
    let state = dir.path().to_str().expect("path").to_owned();
    // Not there at all: refused before anything starts.
    let out = run(
        Path::new(VOLE),
        &[
            "serve",
            "--nodes",
            "1",
            "--node-command",
            "no-such-program-here --x",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            &state,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-program-here"), "{err}");
    // There and executable, but exec fails (its interpreter is missing):
    // the node reports a configuration error, and the controller stops
    // instead of restarting it again and again.
    let script = dir.path().join("broken.sh");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = run(
        Path::new(VOLE),
        &[
            "serve",
            "--nodes",
            "1",
            "--node-command",
            script.to_str().expect("path"),
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            &state,
            "--allow-root-nodes",
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("cannot start the node command") && err.contains("configuration unusable"),
        "{err}"
    );
    assert!(!err.contains("restarting node"), "not restarted: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_that_need_a_control_link_are_refused() {
    let dir = TempDir::new("external-modes");
    for mode in ["grant", "dispatch"] {
        let out = run(
            Path::new(VOLE),
            &[
                "serve",
                "--nodes",
                "2",
                "--balance",
                mode,
                "--node-command",
                "python3 x.py",
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                dir.path().to_str().expect("path"),
            ],
        )
        .await;
        assert_eq!(out.status.code(), Some(64), "{mode}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines().count() == 1 && err.contains("shared or reuseport"),
            "{mode}: {err}"
        );
    }
}

/// A reload whose new program exits at once (here: the node command's
/// script now fails) is abandoned: `vole reload` fails and says why, the
/// old nodes keep serving (same pids), and the service does not end in a
/// restart loop. Once the script is fixed, a reload replaces every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_new_nodes_exit_at_once_keeps_the_old_ones() {
    let _serial = serial().await;
    let dir = TempDir::new("ext-reload");
    let script = dir.path().join("node.sh");
    let good = format!("#!/bin/sh\nexec {}\n", node_command());
    std::fs::write(&script, &good).expect("write the node script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let serve = Serve::start(Opts::new(2, "shared").args(&[
        "--node-command",
        script.to_str().expect("utf-8 path"),
        "--allow-root-nodes",
    ]))
    .await;
    for id in 0..2 {
        let said = format!("vpy node {id} serving");
        assert!(
            serve
                .stderr
                .wait_contains(Duration::from_secs(20), &said)
                .await,
            "{said:?} missing; log:\n{}",
            serve.log()
        );
    }
    let before = id_pids(&wait_nodes(&serve.admin, 2, Duration::from_secs(20)).await);

    std::fs::write(&script, "#!/bin/sh\nexit 1\n").expect("break the node script");
    let admin = serve.admin.to_str().expect("utf-8 path").to_owned();
    let out = run(Path::new(VOLE), &["reload", "--admin-socket", &admin]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the reload must fail: {stderr}");
    assert!(
        stderr.contains("reload failed") && stderr.contains("exited with code 1"),
        "{stderr}"
    );
    let after = id_pids(&wait_nodes(&serve.admin, 2, Duration::from_secs(10)).await);
    assert_eq!(after, before, "the old nodes keep serving");
    let out = vpy_call(serve.port()).await;
    assert!(
        out.status.success(),
        "served after the failed reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(serve.exit_status().is_none(), "the service still runs");

    std::fs::write(&script, &good).expect("fix the node script");
    let out = run(Path::new(VOLE), &["reload", "--admin-socket", &admin]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replaced = id_pids(&wait_nodes(&serve.admin, 2, Duration::from_secs(20)).await);
    for (id, pid) in &replaced {
        assert!(
            before.iter().all(|(_, old)| old != pid),
            "node {id} ({pid}) was replaced"
        );
    }
}
