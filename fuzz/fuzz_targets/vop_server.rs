//! VOP server side (a client's offer line, then the choice): never panics;
//! an accepted offer is at most 64 bytes with no repeated token, and the
//! transport chosen under any policy is offered, enabled and implemented.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vole_transport::fuzzing::vop_server(data));
