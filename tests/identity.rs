//! Client identity end to end: `vole serve` asking TLS clients for
//! certificates (`--tls-client-ca`, `--tls-client-auth`), `vole call
//! --cert/--key` and CPython's `ssl` module as clients, the demo's
//! `whoami()` showing what the service sees, and the allow lists refusing
//! clients (closed connection, log line, `refused` counter). Certificates
//! are made here with rcgen: a client CA issuing `alice` and `bob`, and
//! another CA issuing `mallory`.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{poll_until, run_vole, serial, Opts, Serve, TempDir};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A CA and the client certificates it issued, as PEM files in a
/// directory.
struct Pki {
    dir: TempDir,
}

fn new_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key")
}

fn named(cn: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    params
}

/// A self-signed CA named `name`, its PEM written to `<name>.pem`.
fn ca(dir: &Path, name: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let key = new_key();
    let mut params = named(name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("ca");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write ca");
    rcgen::Issuer::new(params, key)
}

/// A client certificate for `cn` issued by `issuer`, written to
/// `<cn>-cert.pem` and `<cn>-key.pem`.
fn client(dir: &Path, issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, cn: &str) {
    let key = new_key();
    let mut params = named(cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).expect("sign");
    std::fs::write(dir.join(format!("{cn}-cert.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{cn}-key.pem")), key.serialize_pem()).expect("write key");
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("pki");
        let ours = ca(dir.path(), "client-ca");
        let theirs = ca(dir.path(), "other-ca");
        client(dir.path(), &ours, "alice");
        client(dir.path(), &ours, "bob");
        client(dir.path(), &theirs, "mallory");
        Pki { dir }
    }

    fn ca(&self) -> String {
        self.path("client-ca.pem")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `--cert FILE --key FILE` for `who`.
    fn creds(&self, who: &str) -> Vec<String> {
        vec![
            "--cert".to_owned(),
            self.path(&format!("{who}-cert.pem")),
            "--key".to_owned(),
            self.path(&format!("{who}-key.pem")),
        ]
    }
}

/// `vole call ... whoami` against `serve` as `who` (no certificate if
/// `None`): the exit code and, on success, the answer.
async fn whoami(serve: &Serve, pki: &Pki, who: Option<&str>) -> (i32, Option<serde_json::Value>) {
    let uri = format!("vop://localhost:{}/", serve.port());
    let state = serve.dir.path().to_string_lossy().into_owned();
    let mut args: Vec<String> = vec!["call".into(), "--state-dir".into(), state];
    if let Some(who) = who {
        args.extend(pki.creds(who));
    }
    args.extend([uri, "whoami".to_owned()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_vole(&argv).await;
    let code = out.status.code().unwrap_or(-1);
    let answer = (code == 0).then(|| {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "whoami printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    });
    (code, answer)
}

/// What `vole call ... echo 1` as `who` printed on stderr.
async fn call_stderr(serve: &Serve, pki: &Pki, who: Option<&str>) -> String {
    let uri = format!("vop://localhost:{}/", serve.port());
    let state = serve.dir.path().to_string_lossy().into_owned();
    let mut args = vec!["call".to_owned(), "--state-dir".to_owned(), state];
    if let Some(who) = who {
        args.extend(pki.creds(who));
    }
    args.extend([uri, "echo".to_owned(), "1".to_owned()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    String::from_utf8_lossy(&run_vole(&argv).await.stderr).into_owned()
}

/// The subject `whoami` reported (`None` for JSON null).
fn subject(answer: &serde_json::Value) -> Option<String> {
    let items = answer.as_array().expect("whoami answers a tuple");
    assert_eq!(items.len(), 4, "{answer}");
    assert!(items[3].is_null(), "no balancer: {answer}");
    assert_eq!(items[0], "TLS", "{answer}");
    assert!(
        items[1]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{answer}"
    );
    items[2].as_str().map(str::to_owned)
}

/// Exit code of a connection, TLS or protocol failure.
const CONNECTION_FAILED: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_serve_the_ca_s_clients_only() {
    let _serial = serial().await;
    let pki = Pki::new();
    let ca = pki.ca();
    let serve = Serve::start(Opts::new(1, "grant").tls().args(&[
        "--tls-client-ca",
        &ca,
        "--tls-client-auth",
        "required",
    ]))
    .await;
    let (code, answer) = whoami(&serve, &pki, Some("alice")).await;
    assert_eq!(code, 0, "alice is served: {}", serve.log());
    assert_eq!(
        subject(&answer.expect("answer")).as_deref(),
        Some("CN=alice")
    );
    let (code, _) = whoami(&serve, &pki, None).await;
    assert_eq!(code, CONNECTION_FAILED, "no certificate is refused");
    let (code, _) = whoami(&serve, &pki, Some("mallory")).await;
    assert_eq!(
        code, CONNECTION_FAILED,
        "another CA's certificate is refused"
    );
    // What vole call says about each.
    let said = call_stderr(&serve, &pki, None).await;
    assert!(
        said.contains("asks for a client certificate: give --cert"),
        "{said}"
    );
    let said = call_stderr(&serve, &pki, Some("mallory")).await;
    assert!(
        said.contains("did not accept the client certificate"),
        "{said}"
    );
    // Still serving the right client after the refusals.
    assert_eq!(whoami(&serve, &pki, Some("bob")).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_serve_everyone_and_name_who_has_one() {
    let _serial = serial().await;
    let pki = Pki::new();
    let ca = pki.ca();
    // One process: the same path as the nodes take, without a controller.
    let serve = Serve::start(Opts::new(0, "grant").tls().args(&[
        "--tls-client-ca",
        &ca,
        "--tls-client-auth",
        "optional",
    ]))
    .await;
    let (code, answer) = whoami(&serve, &pki, Some("alice")).await;
    assert_eq!(code, 0, "{}", serve.log());
    assert_eq!(
        subject(&answer.expect("answer")).as_deref(),
        Some("CN=alice")
    );
    let (code, answer) = whoami(&serve, &pki, None).await;
    assert_eq!(code, 0, "{}", serve.log());
    assert_eq!(subject(&answer.expect("answer")), None);
    let (code, _) = whoami(&serve, &pki, Some("mallory")).await;
    assert_eq!(
        code, CONNECTION_FAILED,
        "a certificate that does not verify is refused even when optional"
    );
}

/// What CPython's ssl client saw (see `identity/tls_client.py`).
async fn python_client(serve: &Serve, pki: &Pki, who: Option<&str>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/identity/tls_client.py");
    let server_ca = serve.dir.path().join("dev-cert.pem");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(script)
        .arg(serve.port().to_string())
        .arg(server_ca)
        .kill_on_drop(true);
    if let Some(who) = who {
        cmd.arg(pki.path(&format!("{who}-cert.pem")))
            .arg(pki.path(&format!("{who}-key.pem")));
    }
    let out = match tokio::time::timeout(Duration::from_secs(20), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("python3 is needed for this test (CPython's ssl module): {e}")
        }
        Ok(Err(e)) => panic!("python3: {e}"),
        Err(_) => panic!("the python client did not finish in time"),
    };
    assert!(
        out.status.success(),
        "tls_client.py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpython_ssl_is_served_with_the_right_certificate_only() {
    let _serial = serial().await;
    let pki = Pki::new();
    let ca = pki.ca();
    let serve = Serve::start(Opts::new(1, "grant").tls().args(&[
        "--tls-client-ca",
        &ca,
        "--auth-allow-subject",
        "CN=alice",
    ]))
    .await;
    let seen = python_client(&serve, &pki, Some("alice")).await;
    assert!(seen.starts_with("served VEC_DRAFT-0.8"), "alice: {seen}");
    let seen = python_client(&serve, &pki, None).await;
    assert!(seen.starts_with("refused"), "no certificate: {seen}");
    let seen = python_client(&serve, &pki, Some("mallory")).await;
    assert!(seen.starts_with("refused"), "another CA: {seen}");
    // Bob's certificate verifies, but the allow list does not name him:
    // TLS comes up, then the connection closes without a VEC hello.
    let seen = python_client(&serve, &pki, Some("bob")).await;
    assert_eq!(seen, "closed", "bob");
}

/// The identity `whoami` reports on a link, and whether its TLS session
/// was resumed.
async fn whoami_on(
    port: u16,
    config: &vole::link::resolve::ClientConfig,
) -> (Option<String>, bool) {
    try_whoami_on(port, config).await.expect("connect")
}

/// [`whoami_on`], or the connection's error.
async fn try_whoami_on(
    port: u16,
    config: &vole::link::resolve::ClientConfig,
) -> Result<(Option<String>, bool), String> {
    use vole::link::{Entity, Value};
    let (link, gw) = tokio::time::timeout(
        Duration::from_secs(10),
        vole::link::resolve::connect_to("127.0.0.1", port, config),
    )
    .await
    .expect("connect in time")
    .map_err(|e| format!("{e:#}"))?;
    let resumed = link.info().tls.as_ref().expect("a TLS link").resumed;
    let answer: Value = tokio::time::timeout(Duration::from_secs(10), gw.call("whoami", ()))
        .await
        .expect("whoami in time")
        .expect("whoami");
    let Entity::Tuple(items) = answer else {
        panic!("whoami answered {answer:?}")
    };
    let identity = match items.get(2) {
        Some(Entity::Str(s)) => Some(s.clone()),
        Some(Entity::None) => None,
        other => panic!("whoami's identity is {other:?}"),
    };
    tokio::time::timeout(Duration::from_secs(10), link.close())
        .await
        .expect("close in time");
    Ok((identity, resumed))
}

/// A resumed TLS session is its first session's client: the identity
/// comes back with it (rustls keeps the chain in the ticket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_keeps_its_identity() {
    use vole_transport::tls::{local_dev_pin, ClientCert, ServerTrust};
    let _serial = serial().await;
    let pki = Pki::new();
    let ca = pki.ca();
    let serve = Serve::start(Opts::new(1, "grant").tls().args(&["--tls-client-ca", &ca])).await;
    let pin = local_dev_pin(serve.dir.path()).expect("the dev certificate");
    let cert = ClientCert::from_files(
        Path::new(&pki.path("alice-cert.pem")),
        Path::new(&pki.path("alice-key.pem")),
    )
    .expect("alice's certificate");
    let config =
        vole::link::resolve::ClientConfig::tls_with_cert(&ServerTrust::Pinned(pin), Some(&cert))
            .expect("client config");
    let first = whoami_on(serve.port(), &config).await;
    assert_eq!(first, (Some("CN=alice".to_owned()), false));
    let second = whoami_on(serve.port(), &config).await;
    assert_eq!(
        second,
        (Some("CN=alice".to_owned()), true),
        "resumed, same client"
    );
}

/// A session from before a reload that made client certificates required
/// does not resume past the requirement: tickets are bound to the client
/// authentication settings (rustls would resume it with no certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_before_client_certificates_were_required_does_not_resume() {
    use vole_transport::tls::{local_dev_pin, ServerTrust};
    let _serial = serial().await;
    let pki = Pki::new();
    let settings = |mode: &str| {
        format!(
            "[tls]\nclient-ca = {:?}\nclient-auth = {mode:?}\n",
            pki.ca()
        )
    };
    let file = write_config(pki.dir.path(), &settings("optional"));
    let file = file.to_string_lossy().into_owned();
    let serve = Serve::start(Opts::new(1, "grant").tls().args(&["--config", &file])).await;
    let pin = local_dev_pin(serve.dir.path()).expect("the dev certificate");
    let anonymous =
        vole::link::resolve::ClientConfig::tls(&ServerTrust::Pinned(pin)).expect("client config");
    assert_eq!(whoami_on(serve.port(), &anonymous).await, (None, false));
    assert_eq!(
        whoami_on(serve.port(), &anonymous).await,
        (None, true),
        "resumes while the settings stay"
    );
    write_config(pki.dir.path(), &settings("required"));
    let admin = serve.admin.to_string_lossy().into_owned();
    let reload = run_vole(&["reload", "--admin-socket", &admin]).await;
    assert_eq!(
        reload.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let after = try_whoami_on(serve.port(), &anonymous).await;
    assert!(
        after.is_err(),
        "served without a certificate after the reload: {after:?}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The Prometheus endpoint's text, bounded.
async fn scrape(port: u16) -> String {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("send the request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read the answer");
        String::from_utf8_lossy(&raw).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .expect("metrics answered in time")
}

/// The sum of `vole_handshake_failures_total{...reason="<reason>"...}`.
fn failures(body: &str, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    body.lines()
        .filter(|l| l.starts_with("vole_handshake_failures_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Clients the authorizer refused, by the metrics.
fn refused(body: &str) -> f64 {
    failures(body, "refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_refuses_by_subject_logs_and_counts() {
    let _serial = serial().await;
    let pki = Pki::new();
    let ca = pki.ca();
    let mport = free_port();
    let metrics = format!("127.0.0.1:{mport}");
    let serve = Serve::start(Opts::new(1, "grant").tls().args(&[
        "--tls-client-ca",
        &ca,
        "--auth-allow-subject",
        "CN=alice",
        "--metrics",
        &metrics,
    ]))
    .await;
    assert_eq!(
        whoami(&serve, &pki, Some("alice")).await.0,
        0,
        "{}",
        serve.log()
    );
    let (code, _) = whoami(&serve, &pki, Some("bob")).await;
    assert_eq!(code, CONNECTION_FAILED, "bob is not on the list");
    let logged = poll_until(Duration::from_secs(10), || {
        serve
            .log()
            .lines()
            .any(|l| l.contains("client refused by the authorizer") && l.contains("CN=bob"))
    })
    .await;
    assert!(logged, "no refusal line naming bob: {}", serve.log());
    // The controller collects node counters about once a second.
    let mut body = String::new();
    for _ in 0..100 {
        body = scrape(mport).await;
        if refused(&body) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused(&body), 1.0, "{body}");
    // A client without a certificate fails in TLS, counted apart.
    assert_eq!(whoami(&serve, &pki, None).await.0, CONNECTION_FAILED);
    let mut tls_refusals = 0.0;
    for _ in 0..100 {
        body = scrape(mport).await;
        tls_refusals = failures(&body, "client_certificate");
        if tls_refusals >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tls_refusals, 1.0, "{body}");
    assert_eq!(refused(&body), 1.0, "{body}");
    // The others are served still.
    assert_eq!(whoami(&serve, &pki, Some("alice")).await.0, 0);
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("vole.toml");
    std::fs::write(&path, text).expect("write settings");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_file_allow_list_serves_only_whom_it_names() {
    let _serial = serial().await;
    let pki = Pki::new();
    let config = write_config(
        pki.dir.path(),
        &format!(
            "[tls]\nclient-ca = {:?}\nclient-auth = \"optional\"\n\n[auth]\nallow-subjects = [\"CN=bob\"]\n",
            pki.ca()
        ),
    );
    let config = config.to_string_lossy().into_owned();
    let serve = Serve::start(Opts::new(0, "grant").tls().args(&["--config", &config])).await;
    let (code, answer) = whoami(&serve, &pki, Some("bob")).await;
    assert_eq!(code, 0, "{}", serve.log());
    assert_eq!(subject(&answer.expect("answer")).as_deref(), Some("CN=bob"));
    assert_eq!(
        whoami(&serve, &pki, Some("alice")).await.0,
        CONNECTION_FAILED
    );
    assert_eq!(
        whoami(&serve, &pki, None).await.0,
        CONNECTION_FAILED,
        "optional lets a client without a certificate through TLS, the allow list does not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_identity_settings_are_usage_errors_naming_the_key() {
    let pki = Pki::new();
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let junk = junk.to_string_lossy().into_owned();
    let missing = pki.path("missing.pem");
    let ca = pki.ca();
    let state = pki.dir.path().join("state").to_string_lossy().into_owned();
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "0",
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(extra);
        args.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<String>>()
    };
    for (args, key) in [
        (serve(&["--tls-client-auth", "required"]), "tls.client-auth"),
        (serve(&["--tls-client-ca", &missing]), "tls.client-ca"),
        (serve(&["--tls-client-ca", &junk]), "tls.client-ca"),
        (
            serve(&["--plain", "--no-tls", "--tls-client-ca", &ca]),
            "tls.client-ca",
        ),
        (
            serve(&["--auth-allow-subject", "CN=alice"]),
            "auth.allow-subjects",
        ),
        (
            serve(&["--tls-client-ca", &ca, "--auth-allow-key", "xyz"]),
            "auth.allow-keys",
        ),
    ] {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_vole(&argv).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(key), "{args:?} should name {key}: {err}");
    }
    let bad_mode = run_vole(&["serve", "--tls-client-auth", "maybe"]).await;
    assert_eq!(bad_mode.status.code(), Some(64));

    // config check reads the CA file too.
    for (text, key) in [
        (format!("[tls]\nclient-ca = {missing:?}\n"), "tls.client-ca"),
        (format!("[tls]\nclient-ca = {junk:?}\n"), "tls.client-ca"),
        (
            "[tls]\nclient-auth = \"optional\"\n".to_owned(),
            "tls.client-auth",
        ),
        (
            format!("[tls]\nclient-ca = {ca:?}\n[auth]\nallow-keys = [\"nope\"]\n"),
            "auth.allow-keys",
        ),
        (
            format!("[tls]\nclient-ca = {ca:?}\n[auth]\nallow-subjects = []\n"),
            "auth",
        ),
    ] {
        let file = write_config(pki.dir.path(), &text);
        let file = file.to_string_lossy().into_owned();
        let out = run_vole(&["config", "check", &file]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {err}");
        assert!(err.contains(key), "{text} should name {key}: {err}");
    }
    let good = write_config(
        pki.dir.path(),
        &format!("nodes = 2\n[tls]\nclient-ca = {ca:?}\n[auth]\nallow-subjects = [\"CN=alice\"]\n"),
    );
    let good = good.to_string_lossy().into_owned();
    let out = run_vole(&["config", "check", &good]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
