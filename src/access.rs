//! Settings of client identity: the TLS client CA (`[tls] client-ca`,
//! `client-auth`) and the allow lists (`[auth] allow-subjects`,
//! `allow-keys`), resolved and checked for [`crate::settings`].

use std::path::PathBuf;

use serde::Deserialize;
use vole_control::control::AccessRules;

/// Whether a service with a client CA refuses clients without a
/// certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// A client without a verified certificate fails the TLS handshake.
    Required,
    /// A client without a certificate is served, without an identity; one
    /// with a certificate that does not verify still fails.
    Optional,
}

impl ClientAuthMode {
    /// The name used in settings.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuthMode::Required => "required",
            ClientAuthMode::Optional => "optional",
        }
    }
}

impl std::str::FromStr for ClientAuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(ClientAuthMode::Required),
            "optional" => Ok(ClientAuthMode::Optional),
            other => Err(format!(
                "unknown client-auth mode {other:?} (required, optional)"
            )),
        }
    }
}

/// TLS client authentication, as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSetting {
    /// The CA file (PEM) client certificates must chain to.
    pub ca: PathBuf,
    /// Required or optional.
    pub mode: ClientAuthMode,
}

impl ClientAuthSetting {
    /// Reads and checks the CA file; errors name `tls.client-ca`.
    pub fn load(&self) -> anyhow::Result<vole_transport::tls::ClientAuth> {
        vole_transport::tls::ClientAuth::from_file(&self.ca, self.mode == ClientAuthMode::Required)
            .map_err(|e| anyhow::Error::new(e).context("tls.client-ca"))
    }
}

/// The `[auth]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthSection {
    allow_subjects: Option<Vec<String>>,
    allow_keys: Option<Vec<String>>,
}

/// What the command line and the file say about client identity.
#[derive(Debug, Default)]
pub struct Written {
    /// `--tls-client-ca` or `tls.client-ca`.
    pub client_ca: Option<PathBuf>,
    /// `--tls-client-auth` or `tls.client-auth`.
    pub client_auth: Option<ClientAuthMode>,
    /// `--auth-allow-subject` (all of them) or `auth.allow-subjects`.
    pub allow_subjects: Option<Vec<String>>,
    /// `--auth-allow-key` (all of them) or `auth.allow-keys`.
    pub allow_keys: Option<Vec<String>>,
}

impl Written {
    /// The command line's values over the file's: a list given on the
    /// command line replaces the file's.
    pub fn merge(
        flags: Written,
        tls_ca: Option<PathBuf>,
        tls_mode: Option<ClientAuthMode>,
        auth: Option<AuthSection>,
    ) -> Written {
        let auth = auth.unwrap_or_default();
        Written {
            client_ca: flags.client_ca.or(tls_ca),
            client_auth: flags.client_auth.or(tls_mode),
            allow_subjects: flags.allow_subjects.or(auth.allow_subjects),
            allow_keys: flags.allow_keys.or(auth.allow_keys),
        }
    }
}

/// A bad setting: its key and what is wrong (the settings turn it into
/// their error).
pub type Invalid = (&'static str, String);

fn invalid(key: &'static str, problem: impl Into<String>) -> Invalid {
    (key, problem.into())
}

/// Checks what was written against whether vole's TLS serves
/// (`tls_enabled`) and whether VTS does (`vts_enabled`: a VTS client may
/// prove a key), and resolves it (`client-auth` is `default_mode` when
/// not written).
pub fn resolve(
    w: Written,
    tls_enabled: bool,
    vts_enabled: bool,
    default_mode: ClientAuthMode,
) -> Result<(Option<ClientAuthSetting>, Option<AccessRules>), Invalid> {
    let client_auth = match (w.client_ca, w.client_auth) {
        (None, Some(_)) => {
            return Err(invalid(
                "tls.client-auth",
                "needs tls.client-ca (the CA client certificates must chain to)",
            ))
        }
        (None, None) => None,
        (Some(_), _) if !tls_enabled => {
            return Err(invalid(
                "tls.client-ca",
                "client certificates need vole's TLS, which does not serve here (TLS disabled, or external nodes serving their own transports)",
            ))
        }
        (Some(ca), mode) => Some(ClientAuthSetting {
            ca,
            mode: mode.unwrap_or(default_mode),
        }),
    };
    if w.allow_subjects.is_none() && w.allow_keys.is_none() {
        return Ok((client_auth, None));
    }
    let subjects = w.allow_subjects.unwrap_or_default();
    let mut keys = Vec::new();
    for k in w.allow_keys.unwrap_or_default() {
        let fp = vole_transport::tls::parse_fingerprint(&k)
            .map_err(|e| invalid("auth.allow-keys", e.to_string()))?;
        keys.push(vole_transport::tls::fingerprint_hex(&fp));
    }
    if subjects.is_empty() && keys.is_empty() {
        return Err(invalid(
            "auth",
            "allow-subjects and allow-keys are both empty: every client would be refused",
        ));
    }
    if let Some(s) = subjects.iter().find(|s| s.trim().is_empty()) {
        return Err(invalid(
            "auth.allow-subjects",
            format!("{s:?} is not a subject (write it as whoami shows it, e.g. \"CN=alice, O=Example\")"),
        ));
    }
    // Without a client CA only a VTS client key can prove an identity: an
    // allow list of keys is then usable, subjects never are.
    if client_auth.is_none() && !(vts_enabled && subjects.is_empty()) {
        return Err(invalid(
            if subjects.is_empty() {
                "auth.allow-keys"
            } else {
                "auth.allow-subjects"
            },
            "needs tls.client-ca (or, for allow-keys alone, VTS): without it no client proves an identity, so every client would be refused",
        ));
    }
    Ok((client_auth, Some(AccessRules { subjects, keys })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(e: Invalid) -> &'static str {
        e.0
    }

    fn ca() -> Option<PathBuf> {
        Some(PathBuf::from("ca.pem"))
    }

    #[test]
    fn client_auth_needs_a_ca_and_tls_and_defaults_to_required() {
        let w = |ca, mode| Written {
            client_ca: ca,
            client_auth: mode,
            ..Written::default()
        };
        assert_eq!(
            resolve(w(None, None), true, false, ClientAuthMode::Required).expect("none"),
            (None, None)
        );
        let (auth, _) = resolve(w(ca(), None), true, false, ClientAuthMode::Required).expect("ca");
        assert_eq!(auth.expect("auth").mode, ClientAuthMode::Required);
        let (auth, _) = resolve(
            w(ca(), Some(ClientAuthMode::Optional)),
            true,
            false,
            ClientAuthMode::Required,
        )
        .expect("opt");
        assert_eq!(auth.expect("auth").mode, ClientAuthMode::Optional);
        assert_eq!(
            key_of(
                resolve(
                    w(None, Some(ClientAuthMode::Required)),
                    true,
                    false,
                    ClientAuthMode::Required
                )
                .expect_err("no ca")
            ),
            "tls.client-auth"
        );
        assert_eq!(
            key_of(
                resolve(w(ca(), None), false, false, ClientAuthMode::Required).expect_err("no tls")
            ),
            "tls.client-ca"
        );
        assert_eq!("optional".parse(), Ok(ClientAuthMode::Optional));
        assert!("maybe".parse::<ClientAuthMode>().is_err());
    }

    #[test]
    fn allow_lists_are_checked_and_keys_normalized() {
        let w = |subjects: Option<Vec<&str>>, keys: Option<Vec<&str>>, ca| Written {
            client_ca: ca,
            client_auth: None,
            allow_subjects: subjects.map(|v| v.into_iter().map(str::to_owned).collect()),
            allow_keys: keys.map(|v| v.into_iter().map(str::to_owned).collect()),
        };
        let upper = "AB".repeat(32);
        let (_, rules) = resolve(
            w(Some(vec!["CN=alice"]), Some(vec![&upper]), ca()),
            true,
            false,
            ClientAuthMode::Required,
        )
        .expect("ok");
        assert_eq!(
            rules,
            Some(AccessRules {
                subjects: vec!["CN=alice".to_owned()],
                keys: vec!["ab".repeat(32)],
            })
        );
        assert_eq!(
            key_of(
                resolve(
                    w(None, Some(vec!["xyz"]), ca()),
                    true,
                    false,
                    ClientAuthMode::Required
                )
                .expect_err("bad key")
            ),
            "auth.allow-keys"
        );
        assert_eq!(
            key_of(
                resolve(
                    w(Some(vec![]), Some(vec![]), ca()),
                    true,
                    false,
                    ClientAuthMode::Required
                )
                .expect_err("empty")
            ),
            "auth"
        );
        assert_eq!(
            key_of(
                resolve(
                    w(Some(vec![" "]), None, ca()),
                    true,
                    false,
                    ClientAuthMode::Required
                )
                .expect_err("blank")
            ),
            "auth.allow-subjects"
        );
        assert_eq!(
            key_of(
                resolve(
                    w(Some(vec!["CN=a"]), None, None),
                    true,
                    false,
                    ClientAuthMode::Required
                )
                .expect_err("no ca")
            ),
            "auth.allow-subjects"
        );
    }

    /// Without a client CA, a list of keys is usable when VTS serves (a VTS
    /// client proves its key); subjects never are.
    #[test]
    fn vts_clients_prove_keys_without_a_client_ca() {
        let w =
            |subjects: Option<Vec<&str>>, keys: Option<Vec<&str>>, ca: Option<PathBuf>| Written {
                client_ca: ca,
                client_auth: None,
                allow_subjects: subjects.map(|v| v.into_iter().map(str::to_owned).collect()),
                allow_keys: keys.map(|v| v.into_iter().map(str::to_owned).collect()),
            };
        let key = "ab".repeat(32);
        let (auth, rules) = resolve(
            w(None, Some(vec![&key]), None),
            true,
            true,
            ClientAuthMode::Required,
        )
        .expect("keys with VTS");
        assert!(auth.is_none());
        assert_eq!(rules.expect("rules").keys, vec![key.clone()]);
        assert_eq!(
            key_of(
                resolve(
                    w(None, Some(vec![&key]), None),
                    true,
                    false,
                    ClientAuthMode::Required
                )
                .expect_err("keys without VTS or a CA")
            ),
            "auth.allow-keys"
        );
        assert_eq!(
            key_of(
                resolve(
                    w(Some(vec!["CN=a"]), None, None),
                    true,
                    true,
                    ClientAuthMode::Required
                )
                .expect_err("subjects need a CA")
            ),
            "auth.allow-subjects"
        );
    }
}
