//! Unsupported service definitions fail to compile with a clear message
//! pointing at the offending item; the `.stderr` files under `tests/ui`
//! are the expected compiler output (refresh them with
//! `TRYBUILD=overwrite cargo test -p vole-macros --test compile_fail`).

#[test]
fn unsupported_signatures() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
