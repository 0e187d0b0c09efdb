#[vole::service]
struct S;

fn main() {}
