struct S;

type Result = std::result::Result<i64, vole::link::CallError>;

#[vole::service]
impl S {
    fn get(&self) -> Result {
        Ok(1)
    }
}

fn main() {}
