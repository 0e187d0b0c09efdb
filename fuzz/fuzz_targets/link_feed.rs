//! The VOL link core, fed arbitrary bytes after a valid VEC/VOL
//! hello/handshake prefix: never panics, and what it keeps (tables,
//! buffered input) and produces (output) stays bounded by the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vole_link::fuzzing::feed(data);
});
