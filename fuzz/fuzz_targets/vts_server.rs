//! VTS server side (the peer's bytes after VOP, `data[0]` picks the
//! chunking): never panics; sends at most a handshake's worth of bytes;
//! the outcome does not depend on the chunking.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vole_transport::fuzzing::vts_server(data));
