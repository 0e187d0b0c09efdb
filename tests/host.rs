//! `vole::Host` as a user meets it: a crate outside this repository that
//! depends on `vole` by path and holds only a `main` and a `Published`
//! gateway is built with cargo, and its binary is run as a multi-process
//! host: nodes named after the service, its own method answering `vole
//! call`, `status --json`, a node killed with SIGKILL replaced, `stop`.
//!
//! A second out-of-tree crate uses `#[vole::service]`, `Host::with_init`
//! and a `[service]` settings table. Both are built with this workspace's
//! `Cargo.lock` and target directory, offline, so only `vole` and the
//! crates themselves compile. Deploying a rebuilt binary with `upgrade`
//! is checked too.

#[path = "multiprocess/harness.rs"]
mod harness;
// Only part of the operations tests' helpers is used here.
#[allow(dead_code)]
#[path = "operations/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
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

const TYPED_RS: &str = r#"
use std::sync::Arc;

use vole::link::{CallError, LinkInfo};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    greeting: String,
}

/// Greets people.
struct Greeter {
    greeting: Arc<String>,
}

#[vole::service(name = "Greeter")]
impl Greeter {
    /// Greets someone by name.
    async fn greet(&self, name: String) -> Result<String, CallError> {
        Ok(format!("{}, {name}", self.greeting))
    }
}

fn main() -> std::process::ExitCode {
    vole::Host::with_init(
        "acc-typed",
        |init: vole::host::Init<Settings>| async move {
            Ok::<_, String>(Arc::new(init.settings.greeting))
        },
        |greeting: &Arc<Arc<String>>, _link: &LinkInfo| {
            Greeter { greeting: Arc::clone(greeting) }.into_object()
        },
    )
    .version(env!("CARGO_PKG_VERSION"))
    // The tests set ACC_TYPED_REFUSE to have every client refused.
    .authorize(|link: &LinkInfo| match std::env::var("ACC_TYPED_REFUSE") {
        Ok(why) => Err(format!("{why} (over {})", link.transport.unwrap_or("nothing"))),
        Err(_) => Ok(()),
    })
    .main()
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

/// Builds the out-of-tree crates once (a workspace of two, outside this
/// repository's); returns their binaries (`acc-host`, `acc-typed`).
fn out_of_tree() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let repo = env!("CARGO_MANIFEST_DIR");
        let dir = std::env::temp_dir().join(format!("vole-acc-crates-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let krate = |name: &str, deps: &str, main: &str| {
            std::fs::create_dir_all(dir.join(name).join("src")).expect("mkdir");
            std::fs::write(
                dir.join(name).join("Cargo.toml"),
                format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.3.0\"\nedition = \"2021\"\n\n\
                     [dependencies]\nvole = {{ path = {repo:?} }}\n{deps}"
                ),
            )
            .expect("Cargo.toml");
            std::fs::write(dir.join(name).join("src/main.rs"), main).expect("main.rs");
        };
        krate("acc-host", "", MAIN_RS);
        krate(
            "acc-typed",
            "serde = { version = \"1\", features = [\"derive\"] }\n",
            TYPED_RS,
        );
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\"acc-host\", \"acc-typed\"]\nresolver = \"2\"\n",
        )
        .expect("workspace");
        std::fs::copy(Path::new(repo).join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock");
        let target = target_dir();
        let out = std::process::Command::new(env!("CARGO"))
            .args(["build", "--offline", "--quiet"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("run cargo");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "the out-of-tree crates do not build:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            target.join("debug").join("acc-host"),
            target.join("debug").join("acc-typed"),
        )
    })
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
    let program = out_of_tree().0.clone();
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

/// The macro, the init hook and the `[service]` table, from a crate
/// outside the repository: the settings reach every node's init, whose
/// state the gateway uses; `config check` names a wrong key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_tree_typed_service_gets_its_settings() {
    let program = out_of_tree().1.clone();
    let dir = TempDir::new("acc-typed");
    let config = dir.path().join("typed.toml");
    std::fs::write(&config, "[service]\ngreeting = \"salut\"\n").expect("write");
    let config = config.to_str().expect("path").to_owned();
    let _serial = serial().await;
    let serve = Serve::start(
        Opts::new(2, "grant")
            .program(&program, "acc-typed")
            .args(&["--config", &config]),
    )
    .await;
    // `acc-typed-node-0` is 16 bytes: the kernel keeps 15 of a process
    // name; the command line has the whole name.
    let status = support::wait_nodes(&serve.admin, 2, Duration::from_secs(20)).await;
    for (id, pid) in support::id_pids(&status) {
        let argv0 = support::cmdline(pid).into_iter().next().unwrap_or_default();
        assert_eq!(argv0, format!("acc-typed-node-{id}"));
        let comm = harness::proc_info(pid).map(|p| p.comm).unwrap_or_default();
        assert_eq!(comm, "acc-typed-node-", "the kernel's 15 bytes");
    }
    let uri = format!("vop://127.0.0.1:{}/", serve.port());
    for _ in 0..4 {
        // Each new link may land on either node: both have the settings.
        let out = run(Path::new(VOLE), &["call", "--plain", &uri, "greet", "ami"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "\"salut, ami\""
        );
    }
    let out = run(
        Path::new(VOLE),
        &["call", "--plain", &uri, "meta.signature", "greet"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"greet(name: str) -> str\""
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[service]\ngreting = \"typo\"\n").expect("write");
    let out = run(&program, &["config", "check", bad.to_str().expect("path")]).await;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("greting"), "the unknown key is named: {err}");
}

/// `Host::authorize` in a service's own binary: it runs in the nodes and
/// in one-process mode, and its refusal closes the connection, with the
/// reason in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_tree_host_s_authorizer_refuses_clients() {
    let program = out_of_tree().1.clone();
    let dir = TempDir::new("acc-auth");
    let config = dir.path().join("typed.toml");
    std::fs::write(&config, "[service]\ngreeting = \"salut\"\n").expect("write");
    let config = config.to_str().expect("path").to_owned();
    let _serial = serial().await;
    for nodes in [1, 0] {
        let serve = Serve::start(
            Opts::new(nodes, "grant")
                .program(&program, "acc-typed")
                .args(&["--config", &config])
                .env("ACC_TYPED_REFUSE", "closed for inventory"),
        )
        .await;
        let uri = format!("vop://127.0.0.1:{}/", serve.port());
        let out = run(Path::new(VOLE), &["call", "--plain", &uri, "greet", "ami"]).await;
        assert_eq!(
            out.status.code(),
            Some(3),
            "nodes={nodes}: refused, a connection failure: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let logged = harness::poll_until(Duration::from_secs(10), || {
            serve.log().lines().any(|l| {
                l.contains("client refused by the authorizer")
                    && l.contains("closed for inventory (over PLAIN)")
            })
        })
        .await;
        assert!(logged, "nodes={nodes}: {}", serve.log());
    }
}

/// Deploying new code: the binary at the served path is replaced and
/// `upgrade` puts it live, controller and nodes, while the old controller
/// drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_puts_a_rebuilt_binary_live() {
    let new_build = out_of_tree().0.clone();
    let dir = TempDir::new("acc-upgrade");
    let _tree = support::Tree::new(dir.path());
    // The service as deployed: a binary at a path of its own.
    let deployed = dir.path().join("svc");
    std::fs::copy(VOLE, &deployed).expect("deploy");
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(2, "grant").program(&deployed, "vole")).await;
    let uri = format!("vop://127.0.0.1:{}/", serve.port());
    let out = run(
        Path::new(VOLE),
        &["call", "--plain", &uri, "echo", "before"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rebuilt binary replaces the file (rename, as install(1) does).
    let staged = dir.path().join("svc.new");
    std::fs::copy(&new_build, &staged).expect("stage");
    std::fs::rename(&staged, &deployed).expect("replace");
    let admin = serve.admin.to_str().expect("path").to_owned();
    let out = run(Path::new(VOLE), &["upgrade", "--admin-socket", &admin]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = serve.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        serve.log()
    );
    // The new code answers, from nodes of the new controller.
    let status = support::wait_nodes(&serve.admin, 2, Duration::from_secs(30)).await;
    assert_ne!(status.pid, serve.pid, "a new controller serves");
    let out = run(
        Path::new(VOLE),
        &["call", "--plain", &uri, "greet", "new code"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"hello from acc-host, new code\""
    );
    for (_, pid) in support::id_pids(&status) {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
        let exe = exe.to_string_lossy().into_owned();
        assert!(
            exe.starts_with(deployed.to_str().expect("path")),
            "node {pid} runs the deployed binary: {exe}"
        );
    }
    let out = run(Path::new(VOLE), &["stop", "--admin-socket", &admin]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
