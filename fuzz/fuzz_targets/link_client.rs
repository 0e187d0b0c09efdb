//! The VOL link core of a client, fed arbitrary bytes after a valid
//! opening while it has calls of every kind waiting: forged results,
//! exceptions, errors and references never panic it, and what it keeps and
//! produces stays bounded by the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vole_link::fuzzing::feed_client(data);
});
