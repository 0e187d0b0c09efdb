//! VEC decoding: arbitrary bytes, fed in arbitrary chunk sizes into the
//! incremental `Decoder`, never panic; the result does not depend on the
//! chunking; every entity decoded encodes again and decodes to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vole_transport::fuzzing::vec_decode(data));
