//! VEC hello parsing: never panics; an accepted line is at most 32 bytes,
//! its prefixes are "need more", and the codec found round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vole_transport::fuzzing::vec_hello(data));
