struct S;

#[vole::service]
impl S {
    fn get<T: serde::de::DeserializeOwned>(&self, value: T) -> i64 {
        let _ = value;
        1
    }
}

fn main() {}
