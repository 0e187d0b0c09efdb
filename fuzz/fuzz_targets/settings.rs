//! The settings file (`vole serve --config`, `vole config check`): any
//! bytes give accepted settings that hold vole's invariants or a one-line
//! error naming the file or the key, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vole::fuzzing::settings(data);
});
