//! VTS interop (docs/vts.md): stock VPy on its default settings against
//! `vole serve --vts`, vole's client against a stock VPy VTS service, and a
//! tampered record closing only its own link.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use vole::transport::vts::{self, VtsKey, VtsTrust};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(WORKSPACE)
        .join("transport/tests/fixtures/vts")
        .join(name)
}

/// The fixture server key (the one `keys.json` and the VPy service use).
fn server_key() -> VtsKey {
    VtsKey::load(&fixture("server-key.pem")).expect("fixture server key")
}

fn vts_config(trust: VtsTrust, client_key: Option<VtsKey>) -> ClientConfig {
    let mut settings = vts::ClientSettings::new(trust);
    settings.key = client_key.map(Arc::new);
    ClientConfig::vts(settings)
}

#[test]
fn vpy_default_client_reaches_vole_serve_vts_on_two_nodes() {
    let key = fixture("server-key.pem");
    let service = vole_serve_with(
        false,
        2,
        &["--vts", "--vts-key", key.to_str().expect("utf-8 path")],
    );
    let fingerprint = server_key().public().fingerprint_hex();
    assert!(
        service.proc.stderr.wait_for(&fingerprint, WAIT)
            && service
                .proc
                .stderr
                .wait_for("VTS is enabled: a legacy transport", WAIT),
        "vole serve did not log the VTS key fingerprint and the legacy warning\n{}",
        service.proc.diagnostics()
    );
    let report = vpy_client("vts", service.port);
    let mut expected = vec![
        "vts.connected".to_owned(),
        "vts.echo.1mib".to_owned(),
        "vts.pipelined.500".to_owned(),
        "vts.close".to_owned(),
        "vts.links.8.connected".to_owned(),
        "vts.links.8.echo".to_owned(),
    ];
    expected.extend(VALUE_NAMES.iter().map(|v| format!("vts.echo.{v}")));
    expected.extend((0..8).map(|j| format!("vts.links.8.close{j}")));
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_checks(&report, &expected);
}

/// The PLAIN interop suite, again over VTS: a stock VPy client on its
/// default settings against `vole serve --vts` with 2 nodes sees what a
/// PLAIN client sees against one process: the same checks, all passing
/// (values of every type, other string codecs, meta calls, exceptions and
/// call errors, callbacks both ways, the adder and VRI queries, two links,
/// whoami).
#[test]
fn the_plain_interop_scenarios_pass_over_vts_on_two_nodes() {
    let key = fixture("server-key.pem");
    let vts = vole_serve_with(
        false,
        2,
        &["--vts", "--vts-key", key.to_str().expect("utf-8 path")],
    );
    let plain = vole_serve_nodes(true, 0);
    for scenario in [
        "values",
        "codecs",
        "errors",
        "errors_repeated",
        "callback",
        "adder",
        "two_links",
        "whoami",
    ] {
        let over_plain = vpy_client(scenario, plain.port);
        let mut cmd = vpy_client_cmd(scenario, vts.port);
        cmd.env("VOLE_VPY_VTS", "1");
        let over_vts = Report::parse(
            scenario,
            run(&format!("vpy_client.py {scenario} (VTS)"), cmd, CLIENT_WAIT),
        );
        let outcomes = |r: &Report| -> Vec<(String, bool)> {
            r.checks.iter().map(|c| (c.name.clone(), c.ok)).collect()
        };
        assert!(!over_plain.checks.is_empty(), "{scenario}: no check ran");
        assert_eq!(
            over_plain.failed,
            Some(0),
            "{scenario} over PLAIN: {:?}",
            outcomes(&over_plain)
        );
        assert_eq!(
            outcomes(&over_vts),
            outcomes(&over_plain),
            "{scenario}: VTS on 2 nodes differs from PLAIN"
        );
        assert_eq!(over_vts.failed, Some(0), "{scenario} over VTS");
    }
}

/// A VPy client's key is its identity: `whoami()` over VTS shows the
/// transport and the key's fingerprint (None without a key).
#[test]
fn whoami_over_vts_shows_the_client_key() {
    let key = fixture("server-key.pem");
    let service = vole_serve_with(
        false,
        1,
        &["--vts", "--vts-key", key.to_str().expect("utf-8 path")],
    );
    let client = VtsKey::load(&fixture("client-key.pem")).expect("client key");
    let mut cmd = vpy_client_cmd("vts_whoami", service.port);
    cmd.env("VOLE_VTS_KEYS", fixture("keys.json"))
        .env("VOLE_VTS_CLIENT_FP", client.public().fingerprint_hex());
    let report = Report::parse(
        "vts_whoami",
        run("vpy_client.py vts_whoami", cmd, CLIENT_WAIT),
    );
    assert_checks(
        &report,
        &[
            "vts.whoami",
            "vts.whoami.close",
            "vts.whoami.key.connected",
            "vts.whoami.key",
            "vts.whoami.key.close",
        ],
    );
}

#[test]
fn vole_pins_a_vpy_vts_service_and_refuses_a_wrong_pin() {
    let keys = fixture("keys.json");
    let service = vpy_service_with(&["--vts", keys.to_str().expect("utf-8 path")]);
    let pin = server_key().public().fingerprint();
    block_on("vts to VPy", async {
        let client_key = VtsKey::load(&fixture("client-key.pem")).expect("client key");
        for key in [None, Some(client_key)] {
            let with_key = key.is_some();
            let config = vts_config(VtsTrust::Pinned(pin), key);
            let root = resolve(&service.uri(""), &config)
                .await
                .unwrap_or_else(|e| panic!("resolve over VTS (client key: {with_key}): {e:#?}"));
            let gw = remote(&root.value, "the root");
            assert_echoes(&gw, "/ over VTS").await;
            close(root).await;
        }

        let mut wrong = pin;
        wrong[0] ^= 1;
        let Err(err) = resolve(&service.uri(""), &vts_config(VtsTrust::Pinned(wrong), None)).await
        else {
            panic!("a wrong pin must be refused");
        };
        let mut text = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        assert!(
            text.contains(&vts::PublicKey::fingerprint_hex(&server_key().public())),
            "the refusal names the server's fingerprint: {text}"
        );
    });
    service.stop();
}

/// A TCP proxy for one connection that flips one byte of the client's
/// first VTS record: after the VOP line, the VTS line and the client's two
/// handshake messages (hello, key exchange).
fn tampering_proxy(target: u16) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let (mut client, _) = listener.accept().expect("accept");
        let mut server = TcpStream::connect(("127.0.0.1", target)).expect("connect");
        for s in [&client, &server] {
            s.set_read_timeout(Some(WAIT)).expect("timeout");
        }
        let (mut c2, mut s2) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        let back = thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = s2.read(&mut buf) {
                if n == 0 || c2.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = c2.shutdown(Shutdown::Write);
        });
        let mut seen = Vec::new();
        let mut flipped = false;
        let mut buf = [0u8; 65536];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            let start = seen.len();
            seen.extend_from_slice(&buf[..n]);
            if !flipped {
                if let Some(at) = first_record_offset(&seen) {
                    // 20 bytes into the first record: past its first
                    // block (the length), inside the data.
                    let target = at + 20;
                    if target < seen.len() {
                        buf[target - start] ^= 0x01;
                        flipped = true;
                    }
                }
            }
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(Shutdown::Write);
        let _ = back.join();
    });
    (port, handle)
}

/// Where the client's records start, once the bytes show it.
fn first_record_offset(seen: &[u8]) -> Option<usize> {
    let vop = seen.iter().position(|&b| b == b'\n')? + 1;
    let line = vop + seen[vop..].iter().position(|&b| b == b'\n')? + 1;
    let mut decoder = vole::transport::vec::Decoder::new(Default::default());
    let mut buf = bytes::BytesMut::from(&seen[line..]);
    for _ in 0..2 {
        decoder
            .decode(&mut buf, &mut vole::transport::entity::RawRefs)
            .ok()??;
    }
    Some(seen.len() - buf.len())
}

#[test]
fn a_tampered_vts_record_closes_only_its_link() {
    // A generated key in the state directory, trusted from there.
    let mut service = vole_serve_with(false, 0, &["--vts"]);
    let pin = vts::local_vts_pin(&service.state.0).expect("vole serve generated a VTS key");
    let (proxy, proxy_thread) = tampering_proxy(service.port);
    block_on("tampered and clean VTS links", async {
        let config = vts_config(VtsTrust::Pinned(pin), None);
        let tampered = resolve(&format!("vop://127.0.0.1:{proxy}/"), &config).await;
        assert!(
            tampered.is_err(),
            "a link with a tampered record must not come up"
        );

        let clean = resolve(&format!("vop://127.0.0.1:{}/", service.port), &config)
            .await
            .expect("a clean VTS link after the tampered one");
        let gw = remote(&clean.value, "the root");
        let got = gw.call("echo", ("still serving",)).await.expect("echo");
        assert_eq!(got, Value::str("still serving"));
        clean.link.close().await;
    });
    proxy_thread.join().expect("proxy");
    let why = "VTS record 0 failed its integrity check";
    assert!(
        service.proc.stderr.wait_for(why, WAIT),
        "vole did not log why it closed the tampered link (expected {why:?})\n{}",
        service.proc.diagnostics()
    );
    assert!(service.proc.is_running(), "vole serve exited");
}

#[test]
fn vole_serve_refuses_an_unusable_vts_key_as_a_usage_error() {
    let state = Scratch::new("vts-bad-key");
    let bad = state.0.join("bad.pem");
    std::fs::write(&bad, "not a key\n").expect("write");
    for key in [bad.clone(), state.0.join("missing.pem")] {
        let mut cmd = Command::new(VOLE);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--vts", "--vts-key"])
            .arg(&key)
            .arg("--state-dir")
            .arg(&state.0);
        let out = run("vole serve --vts-key (unusable)", cmd, WAIT);
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(64),
            "stderr:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("transports.vts-key:")
                && out.stderr.contains(&*key.to_string_lossy()),
            "the error names the key and the file:\n{}",
            out.stderr
        );
    }
}

#[test]
fn vts_ciphers_are_the_servers_choice_and_a_mismatch_is_logged() {
    let key = fixture("server-key.pem");
    let key = key.to_str().expect("utf-8 path");
    // AES only: a stock VPy (no PyCrypto) has none of it.
    let service = vole_serve_with(
        false,
        2,
        &["--vts", "--vts-key", key, "--vts-ciphers", "aes256-cbc"],
    );
    let report = vpy_client("vts_refused", service.port);
    assert_checks(&report, &["vts.refused"]);
    let why = "no common VTS cipher (peer offered blowfish-cbc, blowfish-ofb, blowfish128-cbc, blowfish128-ofb; local allows aes256-cbc)";
    assert!(
        service.proc.stderr.wait_for(why, WAIT),
        "vole did not log why it refused the VPy client (expected {why:?})\n{}",
        service.proc.diagnostics()
    );
    // vole's own client offers AES and gets through.
    let pin = server_key().public().fingerprint();
    block_on("vts aes256 to vole", async {
        let root = resolve(
            &format!("vop://127.0.0.1:{}/", service.port),
            &vts_config(VtsTrust::Pinned(pin), None),
        )
        .await
        .expect("vole's client offers aes256-cbc");
        let gw = remote(&root.value, "the root");
        let got = gw.call("echo", ("aes",)).await.expect("echo");
        assert_eq!(got, Value::str("aes"));
        root.link.close().await;
    });
}

/// The scenarios that need a service of their own, again over VTS: a
/// stock VPy client on its default settings asks for keep-alives and gets
/// them, gets `--max-call-time`'s cancellation as an exception and goes
/// on, and, without a key the allow-list names, sees its link refused.
#[test]
fn keep_alive_max_call_time_and_refusal_over_vts() {
    let key = fixture("server-key.pem");
    let key = key.to_str().expect("utf-8 path");
    // A key no client here has: its fingerprint is the only one allowed.
    let other = server_key().public().fingerprint_hex();
    let cases: [(&str, Vec<&str>, &[&str]); 3] = [
        (
            "keep_alive",
            vec![],
            &[
                "keep_alive.granted",
                "keep_alive.echo_before",
                "keep_alive.link_open_after_idle",
                "keep_alive.echo_after",
                "close",
            ],
        ),
        (
            "max_call_time",
            vec!["--max-call-time", "0.3"],
            &[
                "sleep.cancelled",
                "sleep.cancelled.promptly",
                "sleep.short",
                "usable_after_cancel",
                "close",
            ],
        ),
        (
            "unauthorized",
            vec!["--auth-allow-key", other.as_str()],
            &["unauthorized"],
        ),
    ];
    for (scenario, extra, checks) in cases {
        let mut args = vec!["--vts", "--vts-key", key];
        args.extend(extra);
        let mut service = vole_serve_with(false, 1, &args);
        let mut cmd = vpy_client_cmd(scenario, service.port);
        cmd.env("VOLE_VPY_VTS", "1");
        let report = Report::parse(
            scenario,
            run(&format!("vpy_client.py {scenario} (VTS)"), cmd, CLIENT_WAIT),
        );
        assert_checks(&report, checks);
        if scenario == "unauthorized" {
            let why = "client refused by the authorizer";
            assert!(
                service.proc.stderr.wait_for(why, WAIT),
                "vole did not log the refusal (expected {why:?})\n{}",
                service.proc.diagnostics()
            );
            assert!(service.proc.is_running(), "vole serve exited");
        }
    }
}
