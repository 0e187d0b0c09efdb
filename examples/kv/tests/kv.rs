//! The kv example as its users run it: `kv serve` as a controller with two
//! nodes, `kv-client` against it (pipelined calls, a remote exception, a
//! long call with progress callbacks, reconnecting across a restart), the
//! `[service]` table checked, applied by `reload`, and a failing init
//! handled by the restart policy. Real processes on loopback, a temporary
//! state directory per test, every wait bounded; each service is killed on
//! drop and its nodes follow it (PDEATHSIG).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const KV: &str = env!("CARGO_BIN_EXE_kv");
const CLIENT: &str = env!("CARGO_BIN_EXE_kv-client");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vole-kv-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `kv serve`.
struct Kv {
    child: Child,
    port: u16,
    /// Lines the service printed on stdout after "listening on".
    stdout: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Kv {
    /// Starts `kv serve` with `config` and waits until every node serves.
    fn start(state: &Path, config: &Path, listen: &str) -> Kv {
        let mut child = Command::new(KV)
            .args([
                "serve", "--plain", "--no-tls", "--listen", listen, "--config",
            ])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kv serve");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let mut kv = Kv {
            child,
            port: 0,
            stdout,
            stderr,
        };
        let listening = kv.line(|l| l.starts_with("listening on "));
        kv.port = listening
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        kv.line(|l| l.starts_with("ready: "));
        kv
    }

    /// Waits (up to 30 s) for a stdout line.
    fn line(&self, want: impl Fn(&str) -> bool) -> String {
        loop {
            match self.stdout.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("kv serve did not print the line: {e}"),
            }
        }
    }

    fn uri(&self) -> String {
        format!("vop://127.0.0.1:{}/", self.port)
    }

    /// Waits for the service to exit; its exit code and what it logged.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kv serve did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        (status.code(), log.join().unwrap_or_default())
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(dir: &Path, service: &str) -> PathBuf {
    let path = dir.join("kv.toml");
    std::fs::write(&path, format!("nodes = 2\n[service]\n{service}")).expect("write config");
    path
}

fn admin(state: &Path) -> String {
    state.to_str().expect("path").to_owned()
}

#[test]
fn the_client_s_demo_runs_against_two_nodes() {
    let dir = TempDir::new("demo");
    let config = write_config(&dir.0, "max-value-bytes = 1000\nscan-batch = 100\n");
    let kv = Kv::start(&dir.0, &config, "127.0.0.1:0");
    let out = run(CLIENT, &["--plain", &kv.uri(), "demo"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("pipelined: 500 puts, 500 gets, 500 right"),
        "{said}"
    );
    assert!(said.contains("put refused: too large, 1000"), "{said}");
    assert!(
        said.contains("5 progress reports, last Some((500, 500))"),
        "{said}"
    );
    let out = run(KV, &["stop", "--state-dir", &admin(&dir.0)]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, log) = kv.wait();
    assert_eq!(code, Some(0), "{log}");
    // The nodes are the service's, by name.
    assert!(
        log.contains("kv-node-0") && log.contains("kv-node-1"),
        "{log}"
    );
}

#[test]
fn the_client_reconnects_when_the_service_restarts() {
    let dir = TempDir::new("restart");
    let config = write_config(&dir.0, "");
    let kv = Kv::start(&dir.0, &config, "127.0.0.1:0");
    let port = kv.port;
    let uri = kv.uri();
    let watcher = std::thread::spawn(move || {
        run(
            CLIENT,
            &[
                "--plain",
                &uri,
                "watch",
                "--count",
                "30",
                "--interval-ms",
                "40",
            ],
        )
    });
    // Let some rounds pass, stop the service, start a new one on the port.
    std::thread::sleep(Duration::from_millis(300));
    let out = run(KV, &["stop", "--state-dir", &admin(&dir.0)]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, log) = kv.wait();
    assert_eq!(code, Some(0), "{log}");
    let again = Kv::start(&dir.0, &config, &format!("127.0.0.1:{port}"));
    let out = watcher.join().expect("watcher");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let summary = said.lines().last().unwrap_or_default();
    assert!(summary.starts_with("watch: 30 rounds ok"), "{said}");
    assert!(!summary.contains(" 0 reconnects"), "it reconnected: {said}");
    drop(again);
}

#[test]
fn the_service_table_is_checked_and_reload_applies_it() {
    let dir = TempDir::new("reload");
    let bad = write_config(&dir.0, "max-keys = \"many\"\n");
    let out = run(KV, &["config", "check", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("service.max-keys"), "{}", text(&out));

    let config = write_config(&dir.0, "max-keys = 2\n");
    let kv = Kv::start(&dir.0, &config, "127.0.0.1:0");
    // A reload with a broken [service] table is refused and changes nothing.
    std::fs::write(&config, "nodes = 2\n[service]\nmax-keys = 0.5\n").expect("write");
    let out = run(KV, &["reload", "--state-dir", &admin(&dir.0)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("service.max-keys"), "{}", text(&out));
    // A good one replaces the nodes, which then run with the new table.
    std::fs::write(
        &config,
        "nodes = 2\n[service]\nmax-keys = 5\nscan-batch = 7\n",
    )
    .expect("write");
    let out = run(KV, &["reload", "--state-dir", &admin(&dir.0)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(CLIENT, &["--plain", &kv.uri(), "demo"]);
    let said = text(&out);
    // The demo's 500 puts meet the new limit of 5 keys.
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("full"), "{said}");
}

#[test]
fn a_failing_init_is_a_node_failure_and_the_restart_policy_decides() {
    let dir = TempDir::new("init");
    // max-keys = 0 passes deserialization but Store::open refuses it.
    let config = write_config(&dir.0, "max-keys = 0\n");
    let mut child = Command::new(KV)
        .args(["serve", "--plain", "--no-tls", "--listen", "127.0.0.1:0"])
        .args(["--restart-intensity", "2", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&dir.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kv serve");
    let err = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kv serve did not give up on its failing nodes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log.join().unwrap_or_default();
    assert_eq!(status.code(), Some(4), "gave up (restart intensity): {log}");
    assert!(
        log.contains("max-keys and scan-batch must be at least 1"),
        "the init's error is in the log: {log}"
    );
    // One process: the same failure is exit 6.
    let out = run(
        KV,
        &[
            "serve",
            "--plain",
            "--no-tls",
            "--nodes",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().expect("path"),
            "--state-dir",
            dir.0.to_str().expect("path"),
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
}
