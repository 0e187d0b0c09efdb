struct S {
    total: i64,
}

#[vole::service]
impl S {
    fn add(&mut self, n: i64) -> i64 {
        self.total += n;
        self.total
    }
}

fn main() {}
