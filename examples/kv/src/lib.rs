//! A key-value service hosted by vole: the service (`kv`, in `main.rs`), and
//! the types its client (`kv-client`) shares with it.
//!
//! What it shows:
//!
//! * `#[vole::service]` on plain Rust methods: doc comments become
//!   `meta.doc`, signatures `meta.signature`, and a typed client
//!   ([`KeyValueClient`]) comes with the service;
//! * `vole::Host::with_init`: a typed `[service]` table of the settings
//!   file ([`Settings`]) and an async per-node init ([`Store::open`])
//!   whose result, the node's [`Store`], every link's gateway gets without
//!   globals;
//! * a method that fails on purpose (`put` on a full store raises a
//!   VException the client sees as `Error::Exception`);
//! * a long call (`scan`) that reports progress to a callback
//!   object the client passes in ([`Progress`]).
//!
//! Each node has its own store: keys put through one link are visible to
//! links served by the same node (`node()` says which). A real service
//! would keep its data in a database the init opens.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vole::link::{CallContext, CallError, RemoteObject, Value};

/// The service's own settings: the `[service]` table of the settings
/// file (`kv serve --config kv.toml`). Every key is optional.
///
/// ```toml
/// [service]
/// max-keys = 100000
/// max-value-bytes = 65536
/// scan-batch = 100
/// scan-pause-ms = 5
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Most keys a node's store holds.
    pub max_keys: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// `scan` reports progress after this many keys.
    pub scan_batch: usize,
    /// `scan` pauses this long between batches (it stands for real work).
    pub scan_pause_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_keys: 100_000,
            max_value_bytes: 64 * 1024,
            scan_batch: 100,
            scan_pause_ms: 5,
        }
    }
}

/// A node's data: made once per node by [`Store::open`], shared by every
/// link the node serves.
#[derive(Debug)]
pub struct Store {
    map: Mutex<BTreeMap<String, String>>,
    settings: Settings,
    node_id: u32,
}

impl Store {
    /// The per-node init: checks the settings and opens the store. (A real
    /// service would open its database pool here; an error ends the node
    /// and the controller's restart policy takes over.)
    pub async fn open(init: vole::host::Init<Settings>) -> Result<Store, String> {
        let settings = init.settings;
        if settings.max_keys == 0 || settings.scan_batch == 0 {
            return Err("max-keys and scan-batch must be at least 1".to_owned());
        }
        Ok(Store {
            map: Mutex::new(BTreeMap::new()),
            settings,
            node_id: init.node_id,
        })
    }

    fn map(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, String>>, CallError> {
        self.map
            .lock()
            .map_err(|_| CallError::failed("the store is poisoned"))
    }
}

/// The gateway every link gets: a view of its node's [`Store`].
pub struct KeyValue {
    store: Arc<Store>,
}

impl KeyValue {
    /// The gateway for one link.
    pub fn new(store: Arc<Store>) -> Self {
        KeyValue { store }
    }
}

/// A key-value store (one per node).
#[vole::service(name = "KeyValue")]
impl KeyValue {
    /// get(key): the value, or None.
    fn get(&self, key: String) -> Result<Option<String>, CallError> {
        Ok(self.store.map()?.get(&key).cloned())
    }

    /// put(key, value): stores the value; fails with ("full", max-keys) or
    /// ("too large", max-value-bytes).
    fn put(&self, key: String, value: String) -> Result<(), CallError> {
        let limits = &self.store.settings;
        if value.len() > limits.max_value_bytes {
            return Err(CallError::Exception(vec![
                Value::str("too large"),
                Value::Int(limits.max_value_bytes as i64),
            ]));
        }
        let mut map = self.store.map()?;
        if map.len() >= limits.max_keys && !map.contains_key(&key) {
            return Err(CallError::Exception(vec![
                Value::str("full"),
                Value::Int(limits.max_keys as i64),
            ]));
        }
        map.insert(key, value);
        Ok(())
    }

    /// delete(key): whether the key was there.
    fn delete(&self, key: String) -> Result<bool, CallError> {
        Ok(self.store.map()?.remove(&key).is_some())
    }

    /// keys(prefix): the keys that start with prefix, in order.
    fn keys(&self, prefix: String) -> Result<Vec<String>, CallError> {
        Ok(self
            .store
            .map()?
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    /// node(): [node id, pid] of the node that serves this link.
    fn node(&self, cx: &CallContext) -> (u32, u32) {
        (
            cx.link().node_id.unwrap_or(self.store.node_id),
            std::process::id(),
        )
    }

    /// scan(prefix, progress): the total size in bytes of the values under
    /// prefix. Takes a while; calls progress.report(done, total) after each
    /// batch of keys. The client passes the progress object.
    ///
    /// A scan its caller gives up (a deadline, a disconnect, the service's
    /// `max-call-time`) is cancelled: the handler is dropped at its next
    /// await, and the batch in progress, which runs on a blocking thread,
    /// watches the call's context and stops early.
    async fn scan(
        &self,
        prefix: String,
        progress: RemoteObject,
        cx: &CallContext,
    ) -> Result<u64, CallError> {
        let keys = self.keys(prefix)?;
        let total = keys.len() as u64;
        let progress = ProgressClient::new(progress);
        let (batch, pause) = (
            self.store.settings.scan_batch,
            Duration::from_millis(self.store.settings.scan_pause_ms),
        );
        let mut bytes = 0u64;
        for (done, chunk) in keys.chunks(batch).enumerate() {
            {
                let map = self.store.map()?;
                bytes += chunk
                    .iter()
                    .filter_map(|k| map.get(k))
                    .map(|v| v.len() as u64)
                    .sum::<u64>();
            }
            // The pause stands for real work, done off the link's task.
            let cx = cx.clone();
            let worked = tokio::task::spawn_blocking(move || work_unless_cancelled(pause, &cx))
                .await
                .map_err(|e| CallError::failed(format!("scan batch: {e}")))?;
            if !worked {
                return Err(CallError::cancelled("scan cancelled"));
            }
            let done = ((done + 1) * batch).min(keys.len()) as u64;
            // A client that went away ends the scan.
            progress
                .report(done, total)
                .await
                .map_err(|e| CallError::failed(format!("progress callback: {e}")))?;
        }
        Ok(bytes)
    }
}

/// Works (sleeps) for `time` in slices, stopping early if the call is
/// cancelled; returns whether it did all of it.
fn work_unless_cancelled(time: Duration, cx: &CallContext) -> bool {
    let slice = Duration::from_millis(1);
    let end = std::time::Instant::now() + time;
    loop {
        if cx.is_cancelled() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep(slice.min(end - now));
    }
}

/// The callback a client passes to `scan`: told how far it got. Clones
/// share what they were told, so the client keeps one and passes another.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    reports: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl Progress {
    /// A progress object that keeps what it is told.
    pub fn new() -> Self {
        Progress::default()
    }

    /// The reports so far: (done, total).
    pub fn reports(&self) -> Vec<(u64, u64)> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Progress of a long call.
#[vole::service(name = "Progress")]
impl Progress {
    /// report(done, total): how far the call got.
    fn report(&self, done: u64, total: u64) {
        if let Ok(mut r) = self.reports.lock() {
            r.push((done, total));
        }
    }
}
