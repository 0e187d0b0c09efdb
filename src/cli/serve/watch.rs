//! `[tls] watch`: the TLS files (certificate, key, ticket-key file) are
//! checked every so often, and a change reloads the service through its
//! admin socket, as `vole reload` would. The reload checks the new files
//! before any node uses them: a half-written or mismatched pair is refused
//! and the current one keeps serving (and the next change is tried again).
//! For cert-manager, which swaps a Secret's files in place.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vole_controller::admin::{self, AdminRequest};

use crate::settings::{Settings, TlsSetting};

/// The files `s` serves TLS from, if it watches any.
pub fn watched(s: &Settings) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let TlsSetting::Files { cert, key } = &s.tls {
        files.push(cert.clone());
        files.push(key.clone());
    }
    files.extend(s.ticket_key_file.clone());
    files
}

/// What the files hold now (a missing file counts as empty).
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// Checks `files` every `every`; on a change, asks the service at `admin`
/// to reload. Runs until aborted.
pub async fn run(files: Vec<PathBuf>, every: Duration, admin: PathBuf) {
    let mut last = fingerprint(&files);
    loop {
        tokio::time::sleep(every).await;
        let now = fingerprint(&files);
        if now == last {
            continue;
        }
        last = now;
        reload(&admin).await;
    }
}

async fn reload(admin: &Path) {
    tracing::info!("the TLS files changed: reloading");
    match admin::request(admin, &AdminRequest::Reload, Duration::from_secs(300)).await {
        Ok(r) if r.ok => tracing::info!("reloaded with the new TLS files"),
        Ok(r) => tracing::error!(
            error = r.error.as_deref().unwrap_or("refused"),
            "the changed TLS files were not taken; the current ones keep serving"
        ),
        Err(e) => tracing::error!(error = %e, "cannot ask for a reload"),
    }
}
