//! Replays the settings-file fuzz corpus on stable, without libFuzzer:
//! every input under `fuzz/corpus/settings/` (the hand-made `seed-*` files
//! and the minimized corpus that fuzzing runs grew) and under
//! `fuzz/regressions/settings/` goes through `vole::fuzzing::settings`, the
//! entry point the fuzz target calls.

use std::path::Path;

#[test]
fn settings_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("settings")) else {
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
        "no seeds for fuzz target settings"
    );
    let mut failed = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).expect("readable input");
        if std::panic::catch_unwind(|| vole::fuzzing::settings(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    println!("settings: {} inputs", inputs.len());
    assert!(failed.is_empty(), "inputs that fail: {failed:#?}");
}
