//! Dead peers: `vole serve` asks every peer for VOL keep-alives
//! (`keep-alive`) and closes a link that stays silent for 1.5 of the
//! periods the peer agreed to. A stock Versile Python client that agrees
//! to send them keeps its idle link open; the same client frozen with
//! SIGSTOP (its kernel still answers TCP, so only the link's own
//! keep-alive can tell) is closed within 1.5 periods, and `vole status`
//! shows its session gone.
//!
//! Python comes from `$VOLE_VPY_PYTHON`, else `target/vpy-venv/bin/python`
//! (`.ci/run` makes it); without it this test fails, it is never skipped.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{serial, Opts, Serve};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> PathBuf {
    let path = std::env::var_os("VOLE_VPY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(WORKSPACE).join("target/vpy-venv/bin/python"));
    assert!(
        path.exists(),
        "dead-peer tests need Python with versile-python3 at {} (run .ci/run, or set VOLE_VPY_PYTHON)",
        path.display()
    );
    path
}

/// A VPy client process, killed (even if stopped) and reaped on drop.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Client {
    fn start(scenario: &str, port: u16) -> Client {
        let mut child = Command::new(python())
            .arg("-u")
            .arg(Path::new(WORKSPACE).join("tests/interop/vpy_client.py"))
            .arg(scenario)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the VPy client");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Client { child, lines }
    }

    /// The next JSON line that has `key`, within `limit`.
    fn wait_line(&self, key: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {key:?} line from the VPy client in {limit:?}"));
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json.get(key).is_some() {
                return json;
            }
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal the VPy client");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open sessions over all nodes, from `vole status --json`.
async fn sessions(serve: &Serve) -> u64 {
    serve.status_nodes().await.values().map(|n| n.2).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_vpy_client_is_closed_within_one_and_a_half_keep_alive_periods() {
    let _serial = serial().await;
    let period = Duration::from_secs(1);
    let serve = Serve::start(Opts::new(1, "grant").args(&["--keep-alive", "1"])).await;
    let client = Client::start("frozen", serve.port());
    let connected = client.wait_line("check", Duration::from_secs(30));
    assert_eq!(connected["check"], "frozen.connected", "{connected}");
    assert_eq!(connected["ok"], true, "{connected}");
    let agreed = client.wait_line("keep_alive_send_ms", Duration::from_secs(10));
    // vole asked for 1000 ms; the client allows 500 ms or more, so it
    // agrees to vole's period.
    assert_eq!(agreed["keep_alive_send_ms"], 1000, "{agreed}");

    // Sessions are reported to the controller about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions(&serve).await != 1 {
        assert!(Instant::now() < deadline, "status never showed the session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Alive and idle for three periods: its keep-alives hold the link.
    let idle = Instant::now();
    while idle.elapsed() < period * 3 {
        assert_eq!(sessions(&serve).await, 1, "a live idle client was closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    client.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    // Closed between 0.5 and 1.5 periods after the freeze (the last
    // keep-alive went out at most a period before it); status learns it
    // within a report interval (1 s); a loaded CI machine adds a margin.
    let limit = period * 3 / 2 + Duration::from_secs(1) + Duration::from_millis(1500);
    while sessions(&serve).await != 0 {
        assert!(
            frozen.elapsed() < limit,
            "the frozen client's link still open {:?} after SIGSTOP",
            frozen.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = frozen.elapsed();
    println!("frozen client's session gone from status {took:?} after SIGSTOP");
    assert!(
        serve.log().contains("keep-alive timed out"),
        "no log line says why the link closed:\n{}",
        serve.log()
    );
    client.signal(Signal::SIGCONT);
}
