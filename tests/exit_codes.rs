//! Every documented exit code (`src/cli/exit.rs`), 70 (a bug in vole)
//! excepted, produced the way a user meets it. 6 (a service's init failed,
//! one-process mode) needs a service with an init and is walked in
//! `examples/kv/tests/kv.rs`.

#[path = "multiprocess/harness.rs"]
mod harness;

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{run_vole, serial, sleep_call, Opts, Serve, TempDir, VOLE};

async fn code(args: &[&str]) -> Option<i32> {
    run_vole(args).await.status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_exit_code() {
    let _serial = serial().await;
    let serve = Serve::start(Opts::new(1, "grant")).await;
    let root = format!("vop://127.0.0.1:{}/", serve.port());

    // 0: it worked.
    assert_eq!(
        code(&["call", "--plain", &root, "echo", "hi"]).await,
        Some(0)
    );
    // 2: the remote side raised.
    assert_eq!(
        code(&["call", "--plain", &root, "raise_exception", "boom"]).await,
        Some(2)
    );
    // 3: nothing answers.
    let missing = TempDir::new("exit-codes");
    let nowhere = missing.path().join("admin.sock");
    assert_eq!(
        code(&["status", "--admin-socket", nowhere.to_str().expect("path")]).await,
        Some(3)
    );
    // 7: no answer within --timeout.
    assert_eq!(
        code(&[
            "call",
            "--plain",
            "--timeout",
            "0.3",
            &root,
            "sleep",
            "5000"
        ])
        .await,
        Some(7)
    );
    // 64: usage.
    assert_eq!(code(&["serve", "--nodes", "many"]).await, Some(64));
    assert_eq!(
        code(&["call", "--json", &root, "echo", "not json"]).await,
        Some(64)
    );
    // 74: output that cannot be written (stdout is a pipe nobody reads).
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let status = Command::new(VOLE)
        .arg("man")
        .stdout(Stdio::from(write))
        .stderr(Stdio::null())
        .status()
        .expect("vole man runs");
    assert_eq!(status.code(), Some(74), "{status}");

    // 5: a forced stop cuts a running call, so a node does not drain.
    let c = harness::connect(serve.port()).await.expect("a client");
    let gw = c.gw.clone();
    let call = tokio::spawn(async move { sleep_call(&gw, 20_000).await });
    let admin = serve.admin.to_str().expect("path").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while serve
        .status_nodes()
        .await
        .values()
        .map(|n| n.2)
        .sum::<u64>()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        code(&["stop", "--force", "--admin-socket", &admin]).await,
        Some(0)
    );
    assert_eq!(
        serve.wait_code(Duration::from_secs(15)).await,
        Some(5),
        "serve after a forced stop"
    );
    let _ = call.await;

    // 4: nodes keep dying.
    let crashing = Serve::start(
        Opts::new(1, "grant")
            .env("VOLE_TEST_NODE_FAULT", "exit")
            .args(&["--restart-intensity", "2"])
            .no_wait(),
    )
    .await;
    assert_eq!(crashing.wait_code(Duration::from_secs(20)).await, Some(4));
}
