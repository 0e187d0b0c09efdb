struct S;

#[vole::service]
impl S {
    #[vole(oneway)]
    fn note(&self, n: i64) -> i64 {
        n
    }
}

fn main() {}
