//! `vole call` explains a bare VOL call error (which carries no reason)
//! by asking the object: a method it does not have (with the closest name
//! it has), or the method's signature against the types given.

#[path = "multiprocess/harness.rs"]
mod harness;

use harness::{run_vole, serial, Opts, Serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_error_says_what_the_object_has_and_takes() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(1, "grant")).await;
    let root = format!("vop://127.0.0.1:{}/", serve.port());
    let adder = format!("{root}math/adder/");
    for (uri, args, want) in [
        (
            &root,
            vec!["ecoh", "hi"],
            "ecoh() failed: the object has no method \"ecoh\" (did you mean \"echo\"?)",
        ),
        (
            &root,
            vec!["zzzzzzzz"],
            "the object has no method \"zzzzzzzz\"; it has ",
        ),
        (
            &adder,
            vec!["add", "hello"],
            "add() failed: it takes add(n: any) -> any; it was given (str)",
        ),
    ] {
        let mut full = vec!["call", "--plain", uri.as_str()];
        full.extend(args);
        let out = run_vole(&full).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "vole {full:?}: {stderr}");
        assert!(stderr.contains(want), "vole {full:?}: {stderr}");
    }
}

/// Connection failures in the user's terms: a transport the server does
/// not serve (it closes during VOP without a word) and a certificate that
/// is not trusted (a wrong pin, or no trust anchor), each with the flag
/// that helps, and no rustls debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_say_what_to_do() {
    let _serial = serial().await;
    let plain_only = Serve::start(Opts::new(1, "grant")).await;
    let tls_only = Serve::start(Opts::new(1, "grant").tls()).await;
    let empty = harness::TempDir::new("no-dev-cert");
    let plain_uri = format!("vop://127.0.0.1:{}/", plain_only.port());
    let tls_uri = format!("vop://127.0.0.1:{}/", tls_only.port());
    let zeros = "0".repeat(64);
    let empty_dir = empty.path().to_str().expect("utf-8 path");
    for (args, want) in [
        (
            vec!["--plain", tls_uri.as_str()],
            "the server accepted none of the transports offered (PLAIN); it may serve only TLS: drop --plain",
        ),
        (
            vec!["--state-dir", empty_dir, plain_uri.as_str()],
            "the server accepted none of the transports offered (TLS); it may serve only PLAIN (unencrypted): add --plain",
        ),
        (
            vec!["--pin", zeros.as_str(), tls_uri.as_str()],
            "not the pinned 0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            vec!["--state-dir", empty_dir, tls_uri.as_str()],
            "the server's certificate is not trusted (no known issuer): give --ca FILE",
        ),
    ] {
        let mut full = vec!["call"];
        full.extend(args);
        full.push("echo");
        let out = run_vole(&full).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "vole {full:?}: {stderr}");
        assert!(stderr.contains(want), "vole {full:?}: {stderr}");
        assert!(!stderr.contains("OtherError"), "vole {full:?}: {stderr}");
    }
}

/// `--endpoints`: hosts tried in turn until one connects (a dead one is
/// passed over), the URI giving only the path; a bad address is a usage
/// error that names the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_pass_over_a_dead_host() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(1, "grant")).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let live = format!("127.0.0.1:{}", serve.port());
    let endpoints = format!("{dead},{live}");
    // The URI's own port is nobody's: only the endpoints are used.
    let uri = format!("vop://127.0.0.1:{}/text/echo/", dead.port());
    for cmd in ["call", "describe"] {
        let mut full = vec![cmd, "--plain", "--endpoints", &endpoints, &uri];
        if cmd == "call" {
            full.extend(["echo", "hi"]);
        }
        let out = run_vole(&full).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "vole {full:?}: {stderr}");
        if cmd == "call" {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"hi\"");
        }
    }
    let out = run_vole(&["call", "--plain", "--endpoints", "nohost", &uri, "echo"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--endpoints"), "{stderr}");
    // Every endpoint dead: a connection failure (3).
    let out = run_vole(&[
        "call",
        "--plain",
        "--endpoints",
        &dead.to_string(),
        &uri,
        "echo",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}
