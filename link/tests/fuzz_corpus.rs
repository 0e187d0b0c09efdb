//! Replays the VOL link fuzz corpora on stable, without libFuzzer: every
//! committed input under `fuzz/corpus/<target>/` (the hand-made `seed-*`
//! files and the minimized corpus that fuzzing runs grew) and every
//! regression input under `fuzz/regressions/<target>/` goes through the
//! entry point the fuzz target calls: `vole_link::fuzzing::feed` for
//! `link_feed` (the service's side), `feed_client` for `link_client`.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8]) -> Result<(), vole_link::Error>) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    assert!(
        inputs.iter().any(|p| p.to_string_lossy().contains("seed-")),
        "no seeds for fuzz target {target}"
    );
    let (mut failed, mut refused) = (Vec::new(), 0);
    for path in &inputs {
        let data = std::fs::read(path).expect("readable input");
        // The core may refuse the input (the link would close); only a
        // panic is a failure.
        match std::panic::catch_unwind(|| entry(&data)) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => refused += 1,
            Err(_) => failed.push(path.display().to_string()),
        }
    }
    println!(
        "{target}: {} inputs, {refused} refused by the core",
        inputs.len()
    );
    assert!(failed.is_empty(), "inputs that fail: {failed:#?}");
}

#[test]
fn link_feed_corpus() {
    replay("link_feed", vole_link::fuzzing::feed);
}

#[test]
fn link_client_corpus() {
    replay("link_client", vole_link::fuzzing::feed_client);
}
