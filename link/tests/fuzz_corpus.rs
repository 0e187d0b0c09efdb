//! Replays the VOL link fuzz corpus on stable, without libFuzzer: every
//! seed under `fuzz/corpus/link_feed/seed-*` and every regression input
//! under `fuzz/regressions/link_feed/` goes through
//! `vole_link::fuzzing::feed`, the entry point the fuzz target calls. With
//! `VOLE_FUZZ_ALL=1` every file of a local corpus is replayed.

use std::path::Path;

#[test]
fn link_feed_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    // VOLE_FUZZ_ALL=1 replays a whole local corpus (what fuzzing runs
    // added too), e.g. to re-check it with debug assertions and overflow
    // checks, which libFuzzer builds leave off by default.
    let all = std::env::var_os("VOLE_FUZZ_ALL").is_some();
    for (dir, seeds_only) in [("corpus", true), ("regressions", false)] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("link_feed")) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_file() && (!seeds_only || all || name.starts_with("seed-")) {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    assert!(
        inputs.iter().any(|p| p.to_string_lossy().contains("seed-")),
        "no seeds for fuzz target link_feed"
    );
    let (mut failed, mut refused) = (Vec::new(), 0);
    for path in &inputs {
        let data = std::fs::read(path).expect("readable input");
        // The core may refuse the input (the link would close); only a
        // panic is a failure.
        match std::panic::catch_unwind(|| vole_link::fuzzing::feed(&data)) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => refused += 1,
            Err(_) => failed.push(path.display().to_string()),
        }
    }
    println!("{} inputs, {refused} refused by the core", inputs.len());
    assert!(failed.is_empty(), "inputs that fail: {failed:#?}");
}
