//! The demo gateway `vole serve` runs by default.
//!
//! | path | methods |
//! |---|---|
//! | `/` | `echo(x)`, `invoke(object, method, args...)`, `raise_exception(args...)`, `sleep(ms)`, `urlget(path)` |
//! | `/text/echo/` | `echo(x)` |
//! | `/math/adder/` | `add(n)`, `result()`, `reset()` |
//!
//! Like VPy's demo `SimpleGateway`, every resolution of a path gets a new
//! object, so each client's adder has its own sum.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use num_bigint::BigInt;
use vole_link::publish::Published;
use vole_link::router::Router;
use vole_link::{CallError, Entity, Object, Value};

/// The root gateway of the demo service.
pub fn gateway() -> Arc<dyn Object> {
    let root = Published::new("DemoGateway")
        .doc("vole demo gateway: an echo at the root, /text/echo/ and /math/adder/.")
        .method("echo", "Returns its argument.", echo)
        .method(
            "invoke",
            "invoke(object, method, args...): calls method(args...) on an object you pass and returns its result.",
            invoke,
        )
        .method(
            "raise_exception",
            "raise_exception(args...): fails on purpose with a VException carrying the arguments.",
            raise_exception,
        )
        .method("sleep", "sleep(ms): waits ms milliseconds (at most 60 000), then returns ms.", sleep);
    Router::new(root)
        .route(["text", "echo"], |_| echoer())
        .route(["math", "adder"], |_| adder())
        .into_object()
}

/// An object with one method, `echo`.
pub fn echoer() -> Arc<dyn Object> {
    Published::new("Echoer")
        .doc("Echoes what it receives.")
        .method("echo", "Returns its argument.", echo)
        .into_object()
}

/// An object that sums numbers.
pub fn adder() -> Arc<dyn Object> {
    Published::with_state("Adder", Mutex::new(Sum::Int(BigInt::from(0))))
        .doc("Adds numbers and tracks their sum.")
        .method(
            "add",
            "add(n): adds n (an integer or a float) and returns the sum so far.",
            add,
        )
        .method("result", "Returns the sum.", result)
        .method("reset", "Sets the sum to zero.", reset)
        .into_object()
}

async fn echo((value,): (Value,)) -> Result<Value, CallError> {
    Ok(value)
}

async fn invoke(args: Vec<Value>) -> Result<Value, CallError> {
    let mut args = args.into_iter();
    let (Some(Entity::Ref(target)), Some(Entity::Str(method))) = (args.next(), args.next()) else {
        return Err(CallError::failed(
            "invoke takes (object, method name, args...)",
        ));
    };
    let target = target.as_object();
    let mut call = vec![Value::Str(method)];
    call.extend(args);
    target.call(vole_link::CallContext::detached(), call).await
}

async fn raise_exception(args: Vec<Value>) -> Result<Value, CallError> {
    Err(CallError::Exception(args))
}

async fn sleep((ms,): (u64,)) -> Result<u64, CallError> {
    let ms = ms.min(60_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
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

async fn add(state: Arc<Mutex<Sum>>, (n,): (Value,)) -> Result<Value, CallError> {
    let mut sum = lock(&state)?;
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

fn as_f64(s: &Sum) -> f64 {
    match s {
        Sum::Int(n) => num_traits::ToPrimitive::to_f64(n).unwrap_or(f64::NAN),
        Sum::Float(f) => *f,
    }
}

async fn result(state: Arc<Mutex<Sum>>, (): ()) -> Result<Value, CallError> {
    lock(&state)?.to_value()
}

async fn reset(state: Arc<Mutex<Sum>>, (): ()) -> Result<Value, CallError> {
    *lock(&state)? = Sum::Int(BigInt::from(0));
    Ok(Value::None)
}
