struct S;

#[vole::service]
impl S {
    async fn greet(&self, name: &str) -> String {
        format!("hello, {name}")
    }
}

fn main() {}
