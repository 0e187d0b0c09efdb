//! Entry point for the settings-file fuzz target in `fuzz/` and for the
//! test that replays its corpus on stable (`tests/fuzz_settings.rs`). Not
//! part of the API: hidden from the docs and free to change.
//!
//! A settings file is input from a file the operator (or a deployment
//! tool) wrote: whatever it holds, `serve` and `config check` must answer
//! with an error naming the problem on one line, never a panic, and what
//! they accept must hold the invariants the rest of vole relies on.

use std::path::Path;

use vole_control::control::Balance;

use crate::settings::{Defaults, FileConfig, Overrides, Settings, SettingsError, TlsSetting};

/// Parses `data` as a settings file and resolves it with no command-line
/// overrides, as `vole serve --config F` and `vole config check F` do.
///
/// Invariants: never panics; an error's message is one non-empty line that
/// names the file (a parse error) or the key (a bad value); accepted
/// settings listen somewhere, have a positive backlog, a message cap of at
/// least 1 KiB, no zero durations, a backoff base within its maximum, a
/// usable log filter, something to serve, and external nodes only in the
/// balance modes that do not need a control link.
pub fn settings(data: &[u8]) {
    // A file that is not UTF-8 fails when it is read, before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = FileConfig::parse(text, Path::new("fuzz.toml"))
        .and_then(|file| Settings::merge(&Overrides::default(), file, &Defaults::default()));
    match result {
        Err(e) => check_error(&e),
        Ok(s) => check_settings(&s),
    }
}

fn check_error(e: &SettingsError) {
    let message = e.to_string();
    assert!(!message.trim().is_empty(), "an empty error: {e:?}");
    assert!(
        !message.contains('\n'),
        "an error over several lines: {message:?}"
    );
    match e {
        SettingsError::Parse { path, .. } => assert_eq!(path, Path::new("fuzz.toml")),
        SettingsError::Invalid { key, .. } => assert!(!key.is_empty(), "no key: {message}"),
        _ => {}
    }
}

fn check_settings(s: &Settings) {
    assert!(!s.listen.is_empty(), "no listen address");
    assert!(s.backlog >= 1, "backlog {}", s.backlog);
    assert!(s.max_message >= 1024, "max-message {}", s.max_message);
    assert_ne!(s.threads, Some(0), "zero threads");
    for (name, d) in [
        ("handshake-timeout", s.handshake_timeout),
        ("write-timeout", s.write_timeout),
        ("heartbeat.interval", s.heartbeat_interval),
        ("heartbeat.timeout", s.heartbeat_timeout),
        ("ticket-rotation", s.ticket_rotation),
        ("restart.backoff-base", s.restart.base),
        ("restart.period", s.restart.period),
    ] {
        assert!(!d.is_zero(), "{name} is zero");
    }
    assert!(s.restart.base <= s.restart.max, "backoff base over its max");
    assert!(
        s.keep_alive
            .is_none_or(|p| p >= std::time::Duration::from_millis(100)),
        "keep-alive {:?} under 100 ms",
        s.keep_alive
    );
    assert_ne!(s.idle_timeout, Some(std::time::Duration::ZERO));
    assert!(
        tracing_subscriber::EnvFilter::try_new(&s.log_level).is_ok(),
        "log filter {:?} accepted but unusable",
        s.log_level
    );
    match &s.node_command {
        Some(argv) => {
            assert!(!argv.is_empty(), "an empty node command");
            assert!(
                matches!(s.balance, Balance::Shared | Balance::Reuseport),
                "external nodes in {:?}",
                s.balance
            );
            assert!(s.nodes >= 1, "external nodes with nodes = 0");
        }
        None => assert!(s.tls != TlsSetting::Disabled || s.plain, "nothing to serve"),
    }
    if s.client_auth.is_some() {
        assert!(
            s.tls != TlsSetting::Disabled,
            "client certificates without TLS"
        );
    }
    if let Some(rules) = &s.access {
        assert!(s.client_auth.is_some(), "allow lists without a client CA");
        assert!(
            !(rules.subjects.is_empty() && rules.keys.is_empty()),
            "allow lists that refuse everyone"
        );
        for k in &rules.keys {
            assert!(
                k.len() == 64
                    && k.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "a fingerprint not normalized: {k:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_files_hold_the_invariants() {
        for text in [
            "",
            "nodes = 3\nbalance = \"dispatch\"\n",
            "listen = []\n",
            "grace = -1\n",
            "max-message = 10\n",
            "[restart]\nbackoff-base = 1e308\n",
            "[log]\nlevel = \"=[\"\n",
            "node-command = \"'\"\n",
            "unknown = 1\n",
            "nodes = \"many\"\n",
            "[tls]\nclient-auth = \"optional\"\n",
            "[tls]\nclient-ca = \"ca.pem\"\nclient-auth = \"maybe\"\n",
            "[tls]\nclient-ca = \"ca.pem\"\n[auth]\nallow-keys = [\"AB:CD\"]\n",
            "[tls]\nclient-ca = \"ca.pem\"\n[auth]\nallow-subjects = [\"CN=a\"]\nallow-keys = []\n",
            "[transports]\ntls = false\nplain = true\n[tls]\nclient-ca = \"ca.pem\"\n",
            "[[[",
        ] {
            settings(text.as_bytes());
        }
        settings(&[0xff, 0xfe]);
    }
}
