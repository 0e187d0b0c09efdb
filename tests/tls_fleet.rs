//! TLS for several hosts behind one balancer: session tickets resume on
//! any host that shares the ticket-key file (`[tls] ticket-key-file`), and
//! none do without it (this proves the test measures resumption); and
//! `[tls] watch` reloads a changed certificate, refusing a broken one while
//! the current one keeps serving.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{close, ping, serial, Opts, Serve, TempDir};
use vole_link::resolve::{connect_to, ClientConfig};
use vole_transport::tls::{ensure_dev_identity, fingerprint, load_certs, Fingerprint, ServerTrust};

/// A certificate and key made for this test, and the pin of the
/// certificate.
fn identity(dir: &Path) -> (PathBuf, PathBuf, Fingerprint) {
    let (cert, key) = ensure_dev_identity(dir).expect("a certificate");
    let der = load_certs(&cert).expect("certificate").remove(0);
    (cert, key, fingerprint(&der))
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether a fresh link with `config` to `port` resumed its session.
async fn resumed(port: u16, config: &ClientConfig) -> Result<bool, String> {
    let (link, gw) =
        tokio::time::timeout(harness::CALL_LIMIT, connect_to("127.0.0.1", port, config))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
    let resumed = link.info().tls.as_ref().is_some_and(|t| t.resumed);
    // The answer comes after the server's tickets: the client holds them.
    ping(&gw).await?;
    close(&link).await;
    Ok(resumed)
}

/// Of `trials` fresh clients that connect to `a` and then to `b`, how many
/// resumed at `b`.
async fn resumed_across(a: u16, b: u16, pin: Fingerprint, trials: usize) -> usize {
    let mut n = 0;
    for trial in 0..trials {
        let config = ClientConfig::tls(&ServerTrust::Pinned(pin)).expect("config");
        let first = resumed(a, &config).await.expect("first link");
        assert!(!first, "trial {trial}: a fresh client resumed");
        n += usize::from(resumed(b, &config).await.expect("second link"));
    }
    n
}

const TRIALS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_ticket_key_file_resumes_sessions_across_hosts() {
    let _serial = serial().await;
    let dir = TempDir::new("tls-fleet");
    let (cert, key, pin) = identity(&dir.path().join("pki"));
    let keys = dir.path().join("ticket.keys");
    let mut bytes = [0u8; 96];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut r| std::io::Read::read_exact(&mut r, &mut bytes))
        .expect("random bytes");
    std::fs::write(&keys, bytes).expect("ticket keys");
    let host = |shared: bool| {
        let mut args = vec![
            "--tls-cert".to_owned(),
            s(&cert),
            "--tls-key".to_owned(),
            s(&key),
        ];
        if shared {
            args.extend(["--tls-ticket-key-file".to_owned(), s(&keys)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Serve::start(Opts::new(1, "grant").tls().args(&args))
    };
    let (a, b) = (host(true).await, host(true).await);
    let shared = resumed_across(a.port(), b.port(), pin, TRIALS).await;
    drop((a, b));
    let (c, d) = (host(false).await, host(false).await);
    let own = resumed_across(c.port(), d.port(), pin, TRIALS).await;
    println!(
        "resumed on the other host: {shared}/{TRIALS} with the shared file, {own}/{TRIALS} without"
    );
    assert_eq!(shared, TRIALS, "with the shared ticket-key file");
    assert_eq!(own, 0, "without it, each host's own keys");
}

/// A ticket-key file of the wrong size is a usage error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ticket_key_file_is_a_usage_error() {
    let dir = TempDir::new("tls-bad-keys");
    let keys = dir.path().join("short.keys");
    std::fs::write(&keys, [1u8; 20]).expect("write");
    for args in [
        vec!["serve", "--tls-ticket-key-file", &s(&keys)],
        vec!["serve", "--tls-ticket-key-file", "/nonexistent/keys"],
        vec!["serve", "--tls-watch", "1"],
    ] {
        let out = harness::run_vole(&args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("tls."), "{args:?}: {err}");
    }
}

/// Whether a link pinned to `pin` gets through.
async fn serves_with(port: u16, pin: Fingerprint) -> bool {
    let config = ClientConfig::tls(&ServerTrust::Pinned(pin)).expect("config");
    resumed(port, &config).await.is_ok()
}

/// `--tls-watch`: a certificate swapped in place is served after the
/// reload it triggers; a broken one is refused and the current one keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_certificate_is_reloaded_and_a_broken_one_refused() {
    let _serial = serial().await;
    let dir = TempDir::new("tls-watch");
    let (cert_a, key_a, pin_a) = identity(&dir.path().join("a"));
    let (cert_b, key_b, pin_b) = identity(&dir.path().join("b"));
    let (live_cert, live_key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&cert_a, &live_cert).expect("copy");
    std::fs::copy(&key_a, &live_key).expect("copy");
    let serve = Serve::start(Opts::new(1, "grant").tls().args(&[
        "--tls-cert",
        &s(&live_cert),
        "--tls-key",
        &s(&live_key),
        "--tls-watch",
        "0.2",
    ]))
    .await;
    assert!(serves_with(serve.port(), pin_a).await, "{}", serve.log());
    // Swapped in place, each file whole (written aside, then renamed).
    for (from, to) in [(&key_b, &live_key), (&cert_b, &live_cert)] {
        let aside = to.with_extension("new");
        std::fs::copy(from, &aside).expect("copy");
        std::fs::rename(&aside, to).expect("rename");
    }
    let start = Instant::now();
    while !serves_with(serve.port(), pin_b).await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new certificate was never served: {}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "new certificate served {:?} after the swap",
        start.elapsed()
    );
    assert!(
        !serves_with(serve.port(), pin_a).await,
        "the old one is gone"
    );
    // A broken certificate: refused, the current one serves on.
    std::fs::write(&live_cert, b"not a certificate").expect("write");
    assert!(
        serve
            .stderr
            .wait_contains(Duration::from_secs(10), "were not taken")
            .await,
        "{}",
        serve.log()
    );
    assert!(serves_with(serve.port(), pin_b).await, "{}", serve.log());
}
