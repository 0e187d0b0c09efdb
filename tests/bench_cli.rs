//! `vole bench` and `vole bench-server` as the `vole` command wires them
//! (crate vole-bench behind the feature `bench`): a run against a baseline
//! server, and the exit codes of the load generator's errors.

#![cfg(feature = "bench")]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};

fn vole() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vole"))
}

fn bench(args: &[&str]) -> Output {
    vole()
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("vole bench runs")
}

/// `vole bench-server --plain` on a free loopback port, and its address.
fn bench_server() -> (Child, String) {
    let mut child = vole()
        .args(["bench-server", "--plain", "--threads", "1"])
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("vole bench-server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ADDR")
        .to_owned();
    (child, addr)
}

#[test]
fn bench_loads_a_baseline_server_and_maps_errors_to_exit_codes() {
    let (mut server, addr) = bench_server();
    let target = format!("raw-tcp://{addr}");
    let out = bench(&[
        "--target", &target, "-n", "2", "-m", "2", "-d", "0.3", "-w", "0", "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert!(
        summary["calls"].as_u64().is_some_and(|n| n > 0),
        "{summary}"
    );
    assert_eq!(summary["errors"], 0);

    // SIGTERM stops the server cleanly.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.id()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(server.wait().expect("server exits").success());

    // Nothing listens there now: a connection failure (3).
    let out = bench(&["--target", &target, "-d", "0.3", "-w", "0"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // Bad arguments (64), and a bad trust flag from the connection flags.
    assert_eq!(bench(&["--links", "0"]).status.code(), Some(64));
    let out = bench(&["--pin", "zz"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pin"),
        "{out:?}"
    );
}

/// The failover flags' bad values are usage errors (64) that name the flag.
#[test]
fn bad_failover_flags_are_usage_errors() {
    for (args, names) in [
        (&["--rate", "0"][..], "--rate"),
        (&["--rate", "nan"][..], "--rate"),
        (&["--endpoints", "localhost"][..], "--endpoints"),
        (&["--idempotent"][..], "--idempotent"),
        (&["--call-timeout", "1"][..], "--call-timeout"),
        (
            &["--rate", "10", "--call-timeout", "0"][..],
            "--call-timeout",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "--target",
                "raw-tcp://127.0.0.1:1",
            ][..],
            "vop://",
        ),
        (
            &["--endpoints", "127.0.0.1:1", "--sessions"][..],
            "--sessions",
        ),
    ] {
        let out = bench(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
}
