struct S;

#[vole::service]
impl S {
    fn get(&self) -> i64 {
        1
    }

    #[vole(name = "get")]
    fn get_again(&self) -> i64 {
        2
    }
}

fn main() {}
