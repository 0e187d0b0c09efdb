struct S;

#[vole::service(nmae = "S")]
impl S {
    fn get(&self) -> i64 {
        1
    }
}

fn main() {}
