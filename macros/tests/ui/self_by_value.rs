struct S;

#[vole::service]
impl S {
    fn consume(self, n: i64) -> i64 {
        n
    }
}

fn main() {}
