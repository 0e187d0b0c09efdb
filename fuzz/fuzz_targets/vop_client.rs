//! VOP client side (the server's reply): never panics; an accepted reply
//! names a transport the client offered and is exactly the server's line.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vole_transport::fuzzing::vop_client(data));
