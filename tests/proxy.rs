//! The PROXY protocol through real balancers: HAProxy (`send-proxy-v2`)
//! and nginx's stream module (`proxy_protocol on`, v1) in front of `vole
//! serve --proxy-protocol required`. Every call sees the client's own
//! address (and the balancer's apart); a balancer outside
//! `proxy-protocol-from`, or a connection without a header, is refused.
//!
//! `.ci/run` installs haproxy and nginx; under `CI=true` a missing one
//! fails the test, elsewhere the test says what it skipped.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{close, connect_only, serial, Opts, Serve, TempDir};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn tool(name: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing (CI=true): .ci/run installs it"
        );
        eprintln!("skipped: {name} is missing (.ci/run installs it)");
    }
    found
}

/// A balancer process, killed when dropped.
struct Balancer {
    child: Child,
    port: u16,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Balancer {
    /// Waits until the balancer accepts on its port.
    async fn up(mut self) -> Balancer {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the balancer exited: {status}");
            }
            assert!(Instant::now() < deadline, "the balancer never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn haproxy(bin: &Path, dir: &Path, backend: u16) -> Balancer {
    let port = free_port();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend vop\n    bind 127.0.0.1:{port}\n    default_backend vole\n\
             backend vole\n    server host1 127.0.0.1:{backend} send-proxy-v2\n"
        ),
    )
    .expect("haproxy.cfg");
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy starts");
    Balancer { child, port }
}

fn nginx(bin: &Path, dir: &Path, backend: u16) -> Balancer {
    let port = free_port();
    let cfg = dir.join("nginx.conf");
    std::fs::write(
        &cfg,
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
             daemon off;\nmaster_process off;\nerror_log stderr;\npid {pid};\nevents {{}}\n\
             stream {{\n    server {{\n        listen 127.0.0.1:{port};\n\
             proxy_pass 127.0.0.1:{backend};\n        proxy_protocol on;\n    }}\n}}\n",
            pid = dir.join("nginx.pid").display()
        ),
    )
    .expect("nginx.conf");
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    Balancer { child, port }
}

/// `whoami()` over a link: (peer, balancer) as the service saw them.
async fn whoami(gw: &vole_link::RemoteObject) -> (Option<String>, Option<String>) {
    type Who = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let (_, peer, _, via): Who = gw.call_as("whoami", ()).await.expect("whoami");
    (peer, via)
}

fn opts(from: &str) -> Opts {
    Opts::new(2, "grant").args(&[
        "--proxy-protocol",
        "required",
        "--proxy-protocol-from",
        from,
    ])
}

/// Through HAProxy (v2) and nginx (v1): each of 10 links' calls see the
/// client's own address, and the balancer's as a separate one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancers_pass_the_client_address() {
    let _serial = serial().await;
    let (Some(hap), Some(ngx)) = (tool("haproxy"), tool("nginx")) else {
        return;
    };
    let serve = Serve::start(opts("127.0.0.1")).await;
    let dir = TempDir::new("proxy-balancers");
    for (name, balancer) in [
        ("haproxy", haproxy(&hap, dir.path(), serve.port())),
        ("nginx", nginx(&ngx, dir.path(), serve.port())),
    ] {
        let balancer = balancer.up().await;
        let mut seen = 0;
        for _ in 0..10 {
            let (link, gw) = connect_only(balancer.port)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", serve.log()));
            let me = link.info().local_addr.map(|a| a.to_string());
            for _ in 0..10 {
                let (peer, via) = whoami(&gw).await;
                assert_eq!(peer, me, "{name}: the service saw {peer:?}, not the client");
                assert!(
                    via.as_deref()
                        .is_some_and(|v| v.starts_with("127.0.0.1:") && Some(v) != me.as_deref()),
                    "{name}: balancer {via:?}"
                );
                seen += 1;
            }
            close(&link).await;
        }
        assert_eq!(seen, 100, "{name}");
        drop(balancer);
    }
}

/// A balancer outside `proxy-protocol-from` is refused, and so is a client
/// that connects without a header; both are logged as PROXY failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sources_and_missing_headers_are_refused() {
    let _serial = serial().await;
    let Some(hap) = tool("haproxy") else { return };
    // Direct, no header.
    let serve = Serve::start(opts("127.0.0.1")).await;
    assert!(
        connect_only(serve.port()).await.is_err(),
        "a connection without a PROXY header was served"
    );
    assert!(
        serve
            .stderr
            .wait_contains(Duration::from_secs(5), "PROXY protocol header")
            .await,
        "{}",
        serve.log()
    );
    drop(serve);
    // Through a balancer the service does not trust.
    let serve = Serve::start(opts("10.0.0.0/8")).await;
    let dir = TempDir::new("proxy-untrusted");
    let balancer = haproxy(&hap, dir.path(), serve.port()).up().await;
    assert!(
        connect_only(balancer.port).await.is_err(),
        "an untrusted balancer's client was served"
    );
    assert!(
        serve
            .stderr
            .wait_contains(Duration::from_secs(5), "proxy-protocol-from")
            .await,
        "{}",
        serve.log()
    );
}

/// Settings the PROXY protocol refuses, each a usage error naming its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proxy_settings_are_usage_errors() {
    for (args, key) in [
        (
            &["serve", "--proxy-protocol", "sometimes"][..],
            "proxy-protocol",
        ),
        (
            &["serve", "--proxy-protocol", "required"][..],
            "proxy-protocol-from",
        ),
        (
            &["serve", "--proxy-protocol-from", "10.0.0.0/8"][..],
            "proxy-protocol-from",
        ),
        (
            &[
                "serve",
                "--proxy-protocol",
                "required",
                "--proxy-protocol-from",
                "10.0.0.0/33",
            ][..],
            "proxy-protocol-from",
        ),
    ] {
        let out = harness::run_vole(args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(key), "{args:?}: {err}");
    }
}
