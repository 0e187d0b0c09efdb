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
