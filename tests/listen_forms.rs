//! `--listen` in the forms a user writes: `:PORT` (every IPv4 interface),
//! `[::1]:PORT` (IPv6) and `localhost:PORT` (a host name, every address
//! it resolves to); each serves a call made to it.

#[path = "multiprocess/harness.rs"]
mod harness;

use harness::{run_vole, serial, Opts, Serve};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listen_form_serves() {
    let _serial = serial().await;
    for (form, host, bound) in [
        (":{port}", "127.0.0.1", "0.0.0.0:{port}"),
        ("[::1]:{port}", "[::1]", "[::1]:{port}"),
        ("localhost:{port}", "localhost", "127.0.0.1:{port}"),
    ] {
        let port = free_port().to_string();
        let listen = form.replace("{port}", &port);
        let serve = Serve::start(Opts::new(1, "grant").args(&["--listen", &listen])).await;
        let out = serve.stdout.text();
        let bound = bound.replace("{port}", &port);
        assert!(
            out.lines().any(|l| l == format!("listening on {bound}")),
            "--listen {listen}: {out}"
        );
        let uri = format!("vop://{host}:{port}/text/echo/");
        let call = run_vole(&["call", "--plain", &uri, "echo", "hi"]).await;
        assert_eq!(
            call.status.code(),
            Some(0),
            "--listen {listen}, call {uri}: {}",
            String::from_utf8_lossy(&call.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&call.stdout).trim(), "\"hi\"");
    }
}
