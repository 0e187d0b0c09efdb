struct S;

#[vole::service]
impl S {
    fn resolve(&self, path: String) -> String {
        path
    }
}

fn main() {}
