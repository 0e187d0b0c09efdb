struct S;

#[vole::service]
impl S {
    fn sum(&self, #[vole(rest)] rest: Vec<vole::link::Value>, first: i64) -> i64 {
        let _ = rest;
        first
    }
}

fn main() {}
