//! The demo gateway `vole serve` runs by default.
//!
//! | path | methods |
//! |---|---|
//! | `/` | `echo(x)`, `invoke(object, method, args...)`, `raise_exception(args...)`, `sleep(ms)`, `consume(data, ms)`, `consumed()`, `whoami()`, `urlget(path)` |
//! | `/text/echo/` | `echo(x)` |
//! | `/math/adder/` | `add(n)`, `result()`, `reset()` |
//!
//! Like VPy's demo `SimpleGateway`, every resolution of a path gets a new
//! object, so each client's adder has its own sum.
//!
//! The objects are written with [`macro@crate::service`], so each has a
//! typed client too: [`DemoGatewayClient`], [`EchoerClient`],
//! [`AdderClient`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use num_bigint::BigInt;
use vole_link::router::Router;
use vole_link::service::Service;
use vole_link::{CallContext, CallError, Entity, Object, Value};

/// The root gateway of the demo service.
pub fn gateway() -> Arc<dyn Object> {
    Router::new(DemoGateway.publish())
        .route(["text", "echo"], |_| echoer())
        .route(["math", "adder"], |_| adder())
        .into_object()
}

/// An object with one method, `echo`.
pub fn echoer() -> Arc<dyn Object> {
    Echoer.into_object()
}

/// An object that sums numbers.
pub fn adder() -> Arc<dyn Object> {
    Adder {
        sum: Mutex::new(Sum::Int(BigInt::from(0))),
    }
    .into_object()
}

struct DemoGateway;

/// vole demo gateway: an echo at the root, /text/echo/ and /math/adder/.
#[vole::service(name = "DemoGateway")]
impl DemoGateway {
    /// Returns its argument.
    fn echo(&self, x: Value) -> Value {
        x
    }

    /// invoke(object, method, args...): calls method(args...) on an object you pass and returns its result.
    async fn invoke(
        &self,
        object: Arc<dyn Object>,
        method: String,
        #[vole(rest)] args: Vec<Value>,
    ) -> Result<Value, CallError> {
        let mut call = Vec::with_capacity(1 + args.len());
        call.push(Value::Str(method));
        call.extend(args);
        object.call(CallContext::detached(), call).await
    }

    /// raise_exception(args...): fails on purpose with a VException carrying the arguments.
    fn raise_exception(&self, #[vole(rest)] args: Vec<Value>) -> Result<(), CallError> {
        Err(CallError::Exception(args))
    }

    /// sleep(ms): waits ms milliseconds (at most 60 000), then returns ms.
    async fn sleep(&self, ms: u64) -> u64 {
        let ms = ms.min(60_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// consume(data, ms): holds data for ms milliseconds (at most 60 000), then returns its length; counted by consumed().
    async fn consume(&self, data: Value, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        let len = match &data {
            Entity::Bytes(b) => b.len(),
            Entity::Str(s) => s.len(),
            _ => 0,
        };
        CONSUMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        len as u64
    }

    /// consumed(): how many consume() calls this process has finished.
    fn consumed(&self) -> u64 {
        CONSUMED.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// whoami(): (transport, address, identity, balancer): "TLS" or "PLAIN", your address as the service sees it (behind a balancer, as its PROXY header said), your client certificate's subject (a key's fingerprint) or None, and the balancer's address or None.
    fn whoami(
        &self,
        cx: &CallContext,
    ) -> (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        (
            cx.transport().map(str::to_owned),
            cx.peer_addr().map(|a| a.to_string()),
            cx.identity().map(|i| i.name().to_owned()),
            cx.proxy_addr().map(|a| a.to_string()),
        )
    }
}

/// consume() calls finished in this process.
static CONSUMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Echoer;

/// Echoes what it receives.
#[vole::service(name = "Echoer")]
impl Echoer {
    /// Returns its argument.
    fn echo(&self, x: Value) -> Value {
        x
    }
}

struct Adder {
    sum: Mutex<Sum>,
}

/// Adds numbers and tracks their sum.
#[vole::service(name = "Adder")]
impl Adder {
    /// add(n): adds n (an integer or a float) and returns the sum so far.
    fn add(&self, n: Value) -> Result<Value, CallError> {
        let mut sum = lock(&self.sum)?;
        let next = match (&*sum, n) {
            (Sum::Int(a), Entity::Int(b)) => Sum::Int(a + b),
            (Sum::Int(a), Entity::BigInt(b)) => Sum::Int(a + b),
            (current, Entity::Float(f)) => {
                let b = f
                    .to_f64()
                    .ok_or_else(|| CallError::exception("float out of range"))?;
                Sum::Float(as_f64(current) + b)
            }
            (Sum::Float(a), Entity::Int(b)) => Sum::Float(a + b as f64),
            (Sum::Float(a), Entity::BigInt(b)) => {
                Sum::Float(a + num_traits::ToPrimitive::to_f64(&b).unwrap_or(f64::NAN))
            }
            (_, other) => {
                return Err(CallError::failed(format!(
                    "add takes a number, not a {}",
                    other.kind()
                )))
            }
        };
        *sum = next;
        sum.to_value()
    }

    /// Returns the sum.
    fn result(&self) -> Result<Value, CallError> {
        lock(&self.sum)?.to_value()
    }

    /// Sets the sum to zero.
    fn reset(&self) -> Result<(), CallError> {
        *lock(&self.sum)? = Sum::Int(BigInt::from(0));
        Ok(())
    }
}

/// The adder's running sum: exact for integers, a float once a float is
/// added.
#[derive(Debug, Clone)]
enum Sum {
    Int(BigInt),
    Float(f64),
}

impl Sum {
    fn to_value(&self) -> Result<Value, CallError> {
        match self {
            Sum::Int(n) => Ok(Value::int(n.clone())),
            Sum::Float(f) => {
                Value::float(*f).ok_or_else(|| CallError::exception("sum is not finite"))
            }
        }
    }
}

fn lock(state: &Mutex<Sum>) -> Result<std::sync::MutexGuard<'_, Sum>, CallError> {
    state
        .lock()
        .map_err(|_| CallError::failed("adder state poisoned"))
}

fn as_f64(s: &Sum) -> f64 {
    match s {
        Sum::Int(n) => num_traits::ToPrimitive::to_f64(n).unwrap_or(f64::NAN),
        Sum::Float(f) => *f,
    }
}
