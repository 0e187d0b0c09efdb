use std::sync::Mutex;

struct S {
    total: Mutex<i64>,
}

#[vole::service]
impl S {
    async fn add(&self, n: i64) -> i64 {
        let mut total = self.total.lock().unwrap_or_else(|e| e.into_inner());
        tokio::task::yield_now().await;
        *total += n;
        *total
    }
}

fn main() {}
