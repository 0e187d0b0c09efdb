struct S;

#[vole::service]
impl S {
    #[vole(one_way)]
    fn note(&self, n: i64) {
        let _ = n;
    }
}

fn main() {}
