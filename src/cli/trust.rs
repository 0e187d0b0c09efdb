//! Turning client flags into a [`ClientConfig`].

use std::time::Duration;

use anyhow::Context as _;
use vole_link::resolve::ClientConfig;
use vole_transport::tls::{self, ServerTrust};
use vole_transport::vts::{self, VtsTrust};

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

/// Client connection flags shared by `call`, `describe` and `bench`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Offer only PLAIN (unencrypted); the server must allow it.
    #[arg(long, conflicts_with = "vts")]
    pub plain: bool,
    /// Offer only VTS, the legacy transport of Versile Python services; --pin takes the server key's fingerprint.
    #[arg(long, conflicts_with = "ca")]
    pub vts: bool,
    /// With --vts: authenticate with this RSA key (PEM), as VPy's `key=` does.
    #[arg(long, value_name = "FILE", requires = "vts")]
    pub vts_key: Option<PathBuf>,
    /// Trust servers whose certificate chains to this CA file (PEM).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "insecure"])]
    pub ca: Option<PathBuf>,
    /// Trust exactly the server certificate (with --vts: the server's VTS key) with this SHA-256 fingerprint (hex).
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub pin: Option<String>,
    /// Do not verify the server certificate at all (dangerous).
    #[arg(long)]
    pub insecure: bool,
    /// Present this client certificate chain (PEM) to servers that ask for one (needs --key).
    #[arg(long, value_name = "FILE", requires = "key", conflicts_with = "plain")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where to find the local dev certificate (and VTS key), trusted automatically for localhost.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait for the connection, the handshake and each call.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
}

/// Whether `host` names this machine.
pub fn is_local(host: &str) -> bool {
    matches!(
        host.trim_start_matches('[').trim_end_matches(']'),
        "localhost" | "127.0.0.1" | "::1"
    )
}

/// The client configuration the flags ask for, for connecting to `host`.
///
/// Trust, in order: `--insecure`, `--pin`, `--ca`; otherwise for localhost
/// the local dev certificate if there is one, else the system roots.
pub fn client_config(args: &ClientArgs, host: &str) -> anyhow::Result<ClientConfig> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--timeout must be a positive number of seconds"))?;
    let mut config = if args.plain {
        ClientConfig::plain()
    } else if args.vts {
        vts_config(args, host)?
    } else {
        let trust = if args.insecure {
            ServerTrust::DangerAcceptAny
        } else if let Some(pin) = &args.pin {
            ServerTrust::Pinned(tls::parse_fingerprint(pin).context("--pin")?)
        } else if let Some(ca) = &args.ca {
            ServerTrust::CaFile(ca.clone())
        } else {
            let state_dir = args
                .state_dir
                .clone()
                .unwrap_or_else(tls::default_state_dir);
            match tls::local_dev_pin(&state_dir).filter(|_| is_local(host)) {
                Some(pin) => {
                    tracing::debug!(fingerprint = %tls::fingerprint_hex(&pin), "trusting the local dev certificate");
                    ServerTrust::Pinned(pin)
                }
                None => ServerTrust::SystemRoots,
            }
        };
        let cert = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => {
                Some(tls::ClientCert::from_files(cert, key).context("--cert/--key")?)
            }
            _ => None,
        };
        ClientConfig::tls_with_cert(&trust, cert.as_ref())?
    };
    config.transport.connect_timeout = timeout;
    config.transport.handshake_timeout = timeout;
    config.link.handshake_timeout = timeout;
    Ok(config)
}

/// `--vts`: trust, in order, `--insecure`, `--pin`, then for localhost the
/// local service's generated key; a remote server needs one of the flags.
fn vts_config(args: &ClientArgs, host: &str) -> anyhow::Result<ClientConfig> {
    let trust = if args.insecure {
        VtsTrust::Insecure
    } else if let Some(pin) = &args.pin {
        VtsTrust::Pinned(tls::parse_fingerprint(pin).context("--pin")?)
    } else {
        let state_dir = args
            .state_dir
            .clone()
            .unwrap_or_else(tls::default_state_dir);
        match vts::local_vts_pin(&state_dir).filter(|_| is_local(host)) {
            Some(pin) => {
                tracing::debug!(fingerprint = %tls::fingerprint_hex(&pin), "trusting the local VTS key");
                VtsTrust::Pinned(pin)
            }
            None => anyhow::bail!(
                "VTS cannot verify the server without its key's fingerprint: give --pin SHA256 (vole serve logs it as \"vts key\"), --state-dir of the local service, or --insecure"
            ),
        }
    };
    let mut settings = vts::ClientSettings::new(trust);
    if let Some(path) = &args.vts_key {
        settings.key = Some(Arc::new(vts::VtsKey::load(path).context("--vts-key")?));
    }
    Ok(ClientConfig::vts(settings))
}

/// What a failed connection means in the user's terms, where vole can
/// tell: the server accepted none of the transports offered (it closes
/// without a word during VOP), or the certificate was not trusted (a pin
/// mismatch, or no trust anchor for it); with the flag that helps.
pub fn explain(error: &anyhow::Error, args: &ClientArgs, host: &str) -> Option<String> {
    use vole_transport::Error as TransportError;
    for cause in error.chain() {
        let Some(e) = cause.downcast_ref::<TransportError>() else {
            continue;
        };
        match e {
            TransportError::VtsKeyMismatch { got, want } => {
                return Some(format!(
                    "the server's VTS key has fingerprint {got}, not the pinned {want}; if the server's key changed, pin the new one (vole serve logs it as \"vts key\")"
                ));
            }
            TransportError::ClosedDuring(step) if step.starts_with("vop") && args.vts => {
                return Some("the server does not accept VTS; vole serve needs --vts (or vts = true under [transports])".to_owned());
            }
            TransportError::ClosedDuring(step) if step.starts_with("vop") => {
                return Some(if args.plain {
                    "the server accepted none of the transports offered (PLAIN); it may serve only TLS: drop --plain".to_owned()
                } else {
                    "the server accepted none of the transports offered (TLS); it may serve only PLAIN (unencrypted): add --plain if that is acceptable".to_owned()
                });
            }
            TransportError::Tls(tls_error) => {
                if let Some(got) = tls::pin_mismatch(tls_error) {
                    let pinned = args
                        .pin
                        .clone()
                        .unwrap_or_else(|| "the local dev certificate's".to_owned());
                    return Some(format!(
                        "the server's certificate has fingerprint {}, not the pinned {pinned}; if the server's certificate changed, pin the new one (vole serve logs it at start), or give --state-dir of the local service",
                        tls::fingerprint_hex(&got)
                    ));
                }
                if matches!(
                    tls_error,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                ) {
                    let local = if is_local(host) {
                        let dir = args
                            .state_dir
                            .clone()
                            .unwrap_or_else(tls::default_state_dir);
                        format!(
                            ", --state-dir of the local service (no dev certificate in {})",
                            dir.display()
                        )
                    } else {
                        String::new()
                    };
                    return Some(format!(
                        "the server's certificate is not trusted (no known issuer): give --ca FILE (its CA), --pin SHA256 (the fingerprint vole serve logs){local}; --insecure skips verification"
                    ));
                }
            }
            _ => {}
        }
    }
    match received_alert(error) {
        Some(rustls::AlertDescription::CertificateRequired) => Some(
            "the server asks for a client certificate: give --cert FILE --key FILE".to_owned(),
        ),
        Some(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::UnsupportedCertificate,
        ) if args.cert.is_some() => Some(
            "the server did not accept the client certificate (--cert): it must chain to the server's client CA, be valid now, and allow client authentication".to_owned(),
        ),
        _ => None,
    }
}

/// The TLS alert the server sent, if the connection ended on one. The
/// link reports a failed handshake as text (the cause does not survive
/// it), so this looks for rustls' own words for each alert that matters
/// here, after the typed causes.
fn received_alert(error: &anyhow::Error) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as A;
    let typed = error.chain().find_map(|cause| {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match tls {
            Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
            _ => None,
        }
    });
    if typed.is_some() {
        return typed;
    }
    let text = format!("{error:#}");
    [
        A::CertificateRequired,
        A::BadCertificate,
        A::CertificateUnknown,
        A::UnknownCA,
        A::CertificateExpired,
        A::UnsupportedCertificate,
    ]
    .into_iter()
    .find(|alert| text.contains(&rustls::Error::AlertReceived(*alert).to_string()))
}
