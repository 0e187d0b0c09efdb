struct S<T>(T);

#[vole::service]
impl<T: Send + Sync + 'static> S<T> {
    fn get(&self) -> i64 {
        1
    }
}

fn main() {}
