struct S;

#[vole::service]
impl Default for S {
    fn default() -> Self {
        S
    }
}

fn main() {}
