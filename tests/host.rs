//! `vole::Host` as a user meets it: a crate outside this repository that
//! depends on `vole` by path and holds only a `main` and a `Published`
//! gateway is built with cargo, and its binary is run as a multi-process
//! host: nodes named after the service, its own method answering `vole
//! call`, `status --json`, a node killed with SIGKILL replaced, `stop`.
//!
//! The crate is built with this workspace's `Cargo.lock` and target
//! directory, offline, so only `vole` and the crate itself compile.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{serial, Opts, Serve, TempDir, VOLE};
use nix::sys::signal::Signal;

const MAIN_RS: &str = r#"
use std::sync::Arc;

use vole::link::publish::Published;
use vole::link::{CallError, LinkInfo, Object};

async fn greet((name,): (String,)) -> Result<String, CallError> {
    Ok(format!("hello from acc-host, {name}"))
}

fn my_gateway(_info: &LinkInfo) -> Arc<dyn Object> {
    Published::new("AccHost").method("greet", "Greets.", greet).into_object()
}

fn main() -> std::process::ExitCode {
    vole::Host::new("acc-host", |info: &vole::link::LinkInfo| my_gateway(info)).main()
}
"#;

/// The target directory this test binary was built into.
fn target_dir() -> PathBuf {
    // .../target/debug/vole -> .../target
    Path::new(VOLE)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .expect("the vole binary lives in target/<profile>/")
}

/// Builds the out-of-tree crate; returns its binary.
fn build_out_of_tree(dir: &Path) -> PathBuf {
    let repo = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"acc-host\"\nversion = \"0.3.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nvole = {{ path = {repo:?} }}\n\n[workspace]\n"
        ),
    )
    .expect("Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), MAIN_RS).expect("main.rs");
    std::fs::copy(Path::new(repo).join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock");
    let target = target_dir();
    let out = std::process::Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the out-of-tree crate does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug").join("acc-host")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_tree_service_is_a_full_host() {
    let crate_dir = TempDir::new("acc-host-crate");
    let program = build_out_of_tree(crate_dir.path());
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(2, "grant").program(&program, "acc-host")).await;

    // Two nodes, named after the service, re-executed from its binary.
    let nodes = serve.nodes();
    assert_eq!(nodes.len(), 2, "two acc-host-node-* children: {nodes:?}");
    for p in nodes.values() {
        let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid)).expect("exe");
        assert_eq!(exe, program, "node {} runs the service's own binary", p.pid);
    }

    // Its own method answers `vole call`.
    let uri = format!("vop://127.0.0.1:{}/", serve.port());
    let out = run(
        Path::new(VOLE),
        &["call", "--plain", &uri, "greet", "world"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"hello from acc-host, world\""
    );

    // `status --json`, from the service's own command line.
    let admin = serve.admin.to_str().expect("path").to_owned();
    let out = run(&program, &["status", "--json", "--admin-socket", &admin]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let reported = status["nodes"].as_array().expect("nodes");
    assert_eq!(reported.len(), 2, "{status}");
    assert!(reported.iter().all(|n| n["state"] == "serving"), "{status}");

    // A node killed with SIGKILL is replaced.
    let victim = nodes.get(&1).expect("node 1").clone();
    harness::signal(victim.pid, Signal::SIGKILL);
    let replaced = harness::poll_until(Duration::from_secs(20), || {
        serve.nodes().get(&1).is_some_and(|p| p.pid != victim.pid)
    })
    .await;
    assert!(replaced, "node 1 was not replaced; log:\n{}", serve.log());
    let out = run(
        Path::new(VOLE),
        &["call", "--plain", &uri, "greet", "again"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `stop` drains and ends it; nothing is left behind.
    let out = run(&program, &["stop", "--admin-socket", &admin]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = serve.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        serve.log()
    );
    assert!(serve.running_nodes().is_empty(), "nodes left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_settings_refuses_a_service_table() {
    let dir = TempDir::new("host-config");
    let file = dir.path().join("vole.toml");
    std::fs::write(&file, "nodes = 2\n[service]\ncolour = \"blue\"\n").expect("write");
    let out = run(
        Path::new(VOLE),
        &["config", "check", file.to_str().expect("path")],
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service") && err.contains("takes no [service] settings"),
        "{err}"
    );
}

/// `vole describe` shows the signatures a vole service gives
/// (`meta.signature`), and keeps the one-line form for a method without
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_signatures_where_the_service_has_them() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(0, "grant")).await;
    let uri = format!("vop://127.0.0.1:{}/", serve.port());
    let out = run(Path::new(VOLE), &["describe", "--plain", &uri]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "echo(x: any) -> any")
        .unwrap_or_else(|| panic!("no echo signature:\n{text}"));
    assert_eq!(
        lines.get(at + 1).map(|l| l.trim()),
        Some("Returns its argument.")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("urlget ") && l.contains("Returns the object")),
        "a method without a signature keeps one line:\n{text}"
    );
}
