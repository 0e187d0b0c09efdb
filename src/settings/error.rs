//! The settings' one error type: a problem, naming the key.

use std::path::PathBuf;

/// A settings problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key has the wrong type or is unknown.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The problem, with the key.
        message: String,
    },
    /// A value is out of range or settings contradict each other.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key (as in the file; flags are named alike).
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

pub(super) fn invalid(key: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        problem: problem.into(),
    }
}
