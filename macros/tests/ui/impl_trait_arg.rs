struct S;

#[vole::service]
impl S {
    fn show(&self, value: impl std::fmt::Display) -> String {
        value.to_string()
    }
}

fn main() {}
