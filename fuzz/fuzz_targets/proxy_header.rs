//! PROXY protocol header (v1, v2) at the start of a connection: never
//! panics; a header is within the cap and the input, parses the same on its
//! own, and its prefixes ask for more.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vole_transport::fuzzing::proxy_header(data));
