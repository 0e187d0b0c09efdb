//! Replays the fuzz corpora on stable, without libFuzzer: every input under
//! `fuzz/corpus/<target>/` (the hand-made `seed-*` files and the minimized
//! corpus that fuzzing runs grew) and every regression input under
//! `fuzz/regressions/<target>/` goes through the same entry point its fuzz
//! target calls (`vole_transport::fuzzing`), in a debug build, so with
//! debug assertions and overflow checks on (libFuzzer builds leave them
//! off).

use std::path::{Path, PathBuf};

use vole_transport::fuzzing;

/// The inputs of one target: seeds and regressions.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut found = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs every input of `target` through `entry`; fails naming each input
/// that panics. A target with no seeds fails too: the replay must not pass
/// by finding nothing.
fn replay(target: &str, entry: fn(&[u8])) {
    let inputs = inputs(target);
    let seeds = inputs
        .iter()
        .filter(|p| p.to_string_lossy().contains("seed-"))
        .count();
    assert!(seeds > 0, "no seeds for fuzz target {target}");
    let mut failed = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).expect("readable input");
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
}

#[test]
fn vec_decode_corpus() {
    replay("vec_decode", fuzzing::vec_decode);
}

#[test]
fn vec_hello_corpus() {
    replay("vec_hello", fuzzing::vec_hello);
}

#[test]
fn vop_server_corpus() {
    replay("vop_server", fuzzing::vop_server);
}

#[test]
fn vop_client_corpus() {
    replay("vop_client", fuzzing::vop_client);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", fuzzing::proxy_header);
}

#[test]
fn vts_server_corpus() {
    replay("vts_server", fuzzing::vts_server);
}

#[test]
fn vts_client_corpus() {
    replay("vts_client", fuzzing::vts_client);
}
