//! TLS configuration: server identities (PEM files or a generated dev
//! certificate), client trust (CA file, system roots, a pinned certificate
//! fingerprint) and the certificate fingerprints both sides log and compare.
//!
//! Every configuration uses rustls' aws-lc-rs provider and TLS 1.3 only.
//! Nothing here touches sockets; [`crate::stream`] runs the handshakes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::Error;

/// The TLS ALPN protocol by which two vole peers agree on the link's direct
/// handshake (see `vole_link`): vole clients offer it and vole servers
/// accept it. A peer that does not know it (a VPy peer, an older vole)
/// offers or accepts no ALPN protocol, and the link runs the standard
/// handshake.
pub const ALPN_DIRECT: &[u8] = b"vole/1";

/// File name of the dev certificate inside the state directory.
pub const DEV_CERT_FILE: &str = "dev-cert.pem";
/// File name of the dev private key inside the state directory.
pub const DEV_KEY_FILE: &str = "dev-key.pem";

/// A SHA-256 certificate fingerprint.
pub type Fingerprint = [u8; 32];

/// Where a server's certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdentity {
    /// PEM files: a certificate chain (end-entity first) and its private key
    /// (PKCS#8, PKCS#1 or SEC1).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed development certificate for `localhost`, `127.0.0.1`
    /// and `::1`, generated on first use into `state_dir` and reused after.
    Dev {
        /// The directory holding [`DEV_CERT_FILE`] and [`DEV_KEY_FILE`].
        state_dir: PathBuf,
    },
}

/// A ready server configuration and the fingerprint of its certificate.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The rustls configuration (TLS 1.3; client certificates as its
    /// [`ClientAuth`] said).
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the end-entity certificate, for clients to pin.
    pub fingerprint: Fingerprint,
}

/// How a client decides whether to trust a server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// Certificates chaining to a CA in this PEM file, with name and expiry
    /// checks. A self-signed server certificate (such as the dev
    /// certificate) can be its own CA here.
    CaFile(PathBuf),
    /// Certificates chaining to the operating system's roots.
    SystemRoots,
    /// Exactly the certificate with this SHA-256 fingerprint; name, expiry
    /// and issuer are not checked, the handshake signature is.
    Pinned(Fingerprint),
    /// Any certificate at all. The handshake signature is still checked, but
    /// nothing authenticates the server: anyone on the path can impersonate
    /// it. For tests and debugging only.
    DangerAcceptAny,
}

/// Whether a server asks its TLS clients for a certificate, and which it
/// accepts: those chaining to a CA in `ca_pem` (with expiry and key-usage
/// checks). A client whose certificate does not verify fails the
/// handshake either way.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The client CA certificates (PEM text; a node gets them from its
    /// controller this way).
    pub ca_pem: Vec<u8>,
    /// `true`: a client without a certificate fails the handshake.
    /// `false`: it is served, without an identity.
    pub required: bool,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("required", &self.required)
            .finish()
    }
}

impl ClientAuth {
    /// Reads the client CA file; checks that it holds at least one usable
    /// CA certificate.
    pub fn from_file(ca: &Path, required: bool) -> Result<ClientAuth, Error> {
        let auth = ClientAuth {
            ca_pem: read_file(ca)?,
            required,
        };
        auth.verifier_at(ca)?;
        Ok(auth)
    }

    fn verifier_at(
        &self,
        path: &Path,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Error> {
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(parse_certs(&self.ca_pem, path)?);
        if added == 0 {
            return Err(cred(path, "no usable CA certificate"));
        }
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        );
        let builder = if self.required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder
            .build()
            .map_err(|e| cred(path, format!("unusable client CA: {e}")))
    }
}

/// A certificate chain and key a client presents to servers that ask.
#[derive(Clone)]
pub struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        write!(f, "ClientCert({} certificate(s))", self.chain.len())
    }
}

impl ClientCert {
    /// Reads a certificate chain (end-entity first) and its private key
    /// from PEM files, and checks that they match.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ClientCert, Error> {
        let chain = load_certs(cert)?;
        let key_der = load_key(key)?;
        let signing = provider()
            .key_provider
            .load_private_key(key_der.clone_key())
            .map_err(|e| cred(key, format!("unusable private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
        certified.keys_match().map_err(|_| {
            cred(
                key,
                format!(
                    "private key does not match the certificate in {}",
                    cert.display()
                ),
            )
        })?;
        Ok(ClientCert {
            chain,
            key: Arc::new(key_der),
        })
    }
}

/// The crypto provider of every configuration built here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> Fingerprint {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
    let mut out = [0u8; 32];
    // SHA-256 digests are always 32 bytes.
    out.copy_from_slice(digest.as_ref());
    out
}

/// A fingerprint as lowercase hex without separators.
pub fn fingerprint_hex(fp: &Fingerprint) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in fp {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `host` as the name a TLS client verifies the server against and sends
/// as SNI (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| Error::TransportConfig(format!("{host:?} is not a valid TLS server name")))
}

/// Parses a pinned fingerprint: 64 hex digits, optionally separated by `:`
/// and optionally prefixed `sha256:` (any case).
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint, Error> {
    let bad = |why: &str| Error::TlsConfig(format!("invalid certificate pin {s:?}: {why}"));
    let trimmed = s.trim();
    let body = match trimmed.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &trimmed[7..],
        _ => trimmed,
    };
    let digits: Vec<u8> = body.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return Err(bad("expected 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or_else(|| bad("not hex"))?;
        let lo = hex_value(pair[1]).ok_or_else(|| bad("not hex"))?;
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Where vole keeps local state such as the dev certificate:
/// `$VOLE_STATE_DIR`, else `$XDG_STATE_HOME/vole`, else
/// `$HOME/.local/state/vole`, else `/tmp/vole-<uid>`.
pub fn default_state_dir() -> PathBuf {
    state_dir_named("vole")
}

/// The state directory of a service named `name` (a hosted service's dev
/// certificate and admin socket): `$VOLE_STATE_DIR` if set (it applies to
/// every service vole hosts), else `$XDG_STATE_HOME/<name>`, else
/// `$HOME/.local/state/<name>`, else `/tmp/<name>-<uid>`.
pub fn state_dir_named(name: &str) -> PathBuf {
    state_dir_from(name, |var| std::env::var_os(var))
}

/// [`state_dir_named`] with the environment given as a lookup function.
fn state_dir_from(name: &str, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("VOLE_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_STATE_HOME").map(PathBuf::from) {
        // The XDG spec says relative values are to be ignored.
        if dir.is_absolute() {
            return dir.join(name);
        }
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".local/state").join(name);
    }
    match fs::metadata("/proc/self") {
        Ok(meta) => PathBuf::from(format!("/tmp/{name}-{}", meta.uid())),
        Err(_) => PathBuf::from(format!("/tmp/{name}")),
    }
}

fn cred(path: &Path, reason: impl Into<String>) -> Error {
    Error::Credentials {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|e| cred(path, format!("cannot read: {e}")))
}

/// All certificates in a PEM file, in file order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    parse_certs(&read_file(path)?, path)
}

fn parse_certs(data: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cred(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(cred(path, "no certificate found"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    parse_key(&read_file(path)?, path)
}

fn parse_key(data: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(data).map_err(|e| match e {
        pem::Error::NoItemsFound => cred(path, "no private key found"),
        e => cred(path, format!("invalid PEM: {e}")),
    })
}

/// Builds the server configuration for `identity`.
///
/// With [`ServerIdentity::Dev`] the dev certificate is generated first if
/// the state directory has none; its fingerprint is logged at info level.
pub fn server_config(identity: &ServerIdentity) -> Result<ServerTls, Error> {
    server_config_with(identity, None)
}

/// [`server_config`], asking clients for certificates as `client_auth`
/// says (no client authentication if `None`).
pub fn server_config_with(
    identity: &ServerIdentity,
    client_auth: Option<&ClientAuth>,
) -> Result<ServerTls, Error> {
    let (cert_path, key_path) = match identity {
        ServerIdentity::Files { cert, key } => (cert.clone(), key.clone()),
        ServerIdentity::Dev { state_dir } => ensure_dev_identity(state_dir)?,
    };
    let tls = server_config_from_parts(
        &read_file(&cert_path)?,
        &cert_path,
        &read_file(&key_path)?,
        &key_path,
        client_auth,
    )?;
    if let ServerIdentity::Dev { .. } = identity {
        tracing::info!(
            cert = %cert_path.display(),
            fingerprint = %fingerprint_hex(&tls.fingerprint),
            "using the dev certificate"
        );
    }
    Ok(tls)
}

/// Builds a server configuration from PEM text already read (a node gets
/// its certificate and key this way from the controller, so it needs no
/// access to the files after dropping privileges), asking clients for
/// certificates as `client_auth` says.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_auth: Option<&ClientAuth>,
) -> Result<ServerTls, Error> {
    server_config_from_parts(
        cert_pem,
        Path::new("<certificate>"),
        key_pem,
        Path::new("<private key>"),
        client_auth,
    )
}

fn server_config_from_parts(
    cert_pem: &[u8],
    cert_path: &Path,
    key_pem: &[u8],
    key_path: &Path,
    client_auth: Option<&ClientAuth>,
) -> Result<ServerTls, Error> {
    let certs = parse_certs(cert_pem, cert_path)?;
    let key = parse_key(key_pem, key_path)?;
    let provider = provider();
    // Load the key on its own first so that an unusable key is reported
    // against the key file rather than the certificate.
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| cred(key_path, format!("unusable private key: {e}")))?;
    // `certs` is not empty (load_certs refuses that).
    let fp = fingerprint(&certs[0]);
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::TlsConfig(e.to_string()))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            builder.with_client_cert_verifier(auth.verifier_at(Path::new("<client CA>"))?)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => cred(
            key_path,
            format!(
                "private key does not match the certificate in {}",
                cert_path.display()
            ),
        ),
        e => cred(cert_path, format!("unusable certificate: {e}")),
    })?;
    config.alpn_protocols = vec![ALPN_DIRECT.to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint: fp,
    })
}

/// Makes sure `state_dir` holds a dev certificate and key, generating them
/// if the certificate is missing, and returns their paths.
///
/// The directory is created with mode 0700 and the key with mode 0600. A
/// certificate without its key is an error (delete the certificate to get a
/// new pair); a key without a certificate is a leftover of an interrupted
/// run and is replaced.
pub fn ensure_dev_identity(state_dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let cert_path = state_dir.join(DEV_CERT_FILE);
    let key_path = state_dir.join(DEV_KEY_FILE);
    if cert_path.exists() {
        if !key_path.exists() {
            return Err(cred(
                &key_path,
                format!(
                    "missing; delete {} to generate a new dev certificate",
                    cert_path.display()
                ),
            ));
        }
        return Ok((cert_path, key_path));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| cred(state_dir, format!("cannot create directory: {e}")))?;
    let (cert_pem, key_pem) = generate_dev_identity()?;
    // Write each file under a temporary name and rename it into place, the
    // certificate last: a certificate on disk means the pair is complete.
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, cert_pem.as_bytes(), 0o644)?;
    let fp = fingerprint(
        &CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            Error::TlsConfig(format!("generated dev certificate does not parse: {e}"))
        })?,
    );
    tracing::info!(
        cert = %cert_path.display(),
        fingerprint = %fingerprint_hex(&fp),
        "generated a dev certificate"
    );
    Ok((cert_path, key_path))
}

/// A self-signed ECDSA P-256 certificate for the loopback names, as PEM
/// (certificate, key).
fn generate_dev_identity() -> Result<(String, String), Error> {
    let gen_err =
        |e: rcgen::Error| Error::TlsConfig(format!("cannot generate dev certificate: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(gen_err)?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "vole dev certificate");
    params.distinguished_name = name;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `data` to `path` through a temporary file in the same directory,
/// created with `mode`, then renames it into place.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let write = || -> std::io::Result<()> {
        // A stale file of that name (from a crashed process with the same
        // pid) could have a looser mode, so start from nothing.
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        cred(path, format!("cannot write: {e}"))
    })
}

/// The fingerprint of the dev certificate in `state_dir`, if there is one
/// that parses. Clients use it to trust a local server automatically.
pub fn local_dev_pin(state_dir: &Path) -> Option<Fingerprint> {
    let path = state_dir.join(DEV_CERT_FILE);
    match load_certs(&path) {
        Ok(certs) => certs.first().map(|c| fingerprint(c)),
        Err(e) => {
            tracing::debug!(error = %e, "no usable local dev certificate");
            None
        }
    }
}

/// Builds a client configuration trusting servers as `trust` says.
pub fn client_config(trust: &ServerTrust) -> Result<Arc<ClientConfig>, Error> {
    client_config_with(trust, None)
}

/// [`client_config`], presenting `cert` to servers that ask for a client
/// certificate.
pub fn client_config_with(
    trust: &ServerTrust,
    cert: Option<&ClientCert>,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::TlsConfig(e.to_string()))?;
    let config = match trust {
        ServerTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(load_certs(path)?);
            if added == 0 {
                return Err(cred(path, "no usable CA certificate"));
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(Error::TlsConfig(format!(
                    "no system root certificates found ({})",
                    errors.join("; ")
                )));
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FingerprintVerifier {
                pin: Some(*pin),
                algorithms,
            })),
        ServerTrust::DangerAcceptAny => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FingerprintVerifier {
                    pin: None,
                    algorithms,
                }))
        }
    };
    let mut config = match cert {
        None => config.with_no_client_auth(),
        Some(c) => config
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .map_err(|e| Error::TlsConfig(format!("client certificate: {e}")))?,
    };
    config.alpn_protocols = vec![ALPN_DIRECT.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts the server certificate iff its fingerprint is `pin` (any
/// certificate when `pin` is `None`), and checks handshake signatures with
/// the provider's algorithms either way.
#[derive(Debug)]
struct FingerprintVerifier {
    pin: Option<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The error a pin mismatch reports.
#[derive(Debug)]
struct PinMismatch {
    got: Fingerprint,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate fingerprint {} does not match the pin",
            fingerprint_hex(&self.got)
        )
    }
}

impl std::error::Error for PinMismatch {}

/// The fingerprint the server's certificate had, if `err` is a pin
/// mismatch (see [`ServerTrust::Pinned`]).
pub fn pin_mismatch(err: &rustls::Error) -> Option<Fingerprint> {
    match err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<PinMismatch>().map(|m| m.got)
        }
        _ => None,
    }
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let got = fingerprint(end_entity);
        if got == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch { got }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unused (the configurations are TLS 1.3 only), but correct anyway.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("vole-test-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A dev identity in a fresh directory.
    pub(crate) fn dev_server(name: &str) -> (TempDir, ServerTls) {
        let dir = TempDir::new(name);
        let tls = server_config(&ServerIdentity::Dev {
            state_dir: dir.0.join("state"),
        })
        .expect("dev identity");
        (dir, tls)
    }

    /// A test CA (its PEM) and a function issuing client certificates
    /// with the given common name, written as `<name>-cert.pem` and
    /// `<name>-key.pem` into `dir`.
    pub(crate) struct TestCa {
        pub(crate) pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new(name: &str) -> TestCa {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, name);
            params.distinguished_name = dn;
            let pem = params.self_signed(&key).expect("ca").pem();
            TestCa {
                pem,
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        pub(crate) fn issue(&self, dir: &Path, cn: &str) -> ClientCert {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, cn);
            params.distinguished_name = dn;
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &self.issuer).expect("sign");
            fs::create_dir_all(dir).expect("mkdir");
            let (c, k) = (
                dir.join(format!("{cn}-cert.pem")),
                dir.join(format!("{cn}-key.pem")),
            );
            fs::write(&c, cert.pem()).expect("write");
            fs::write(&k, key.serialize_pem()).expect("write");
            ClientCert::from_files(&c, &k).expect("client cert")
        }
    }

    #[test]
    fn client_auth_needs_a_usable_ca_and_a_client_cert_its_own_key() {
        let dir = TempDir::new("client-auth");
        fs::create_dir_all(&dir.0).expect("mkdir");
        let missing = dir.0.join("missing.pem");
        let (path, why) = reason(ClientAuth::from_file(&missing, true).expect_err("missing"));
        assert_eq!(path, missing);
        assert!(why.starts_with("cannot read"), "{why}");
        let junk = dir.0.join("junk.pem");
        fs::write(&junk, b"hello").expect("write");
        let (_, why) = reason(ClientAuth::from_file(&junk, true).expect_err("junk"));
        assert_eq!(why, "no certificate found");
        let ca = TestCa::new("test ca");
        let ca_file = dir.0.join("ca.pem");
        fs::write(&ca_file, &ca.pem).expect("write");
        assert!(ClientAuth::from_file(&ca_file, false).is_ok());
        ca.issue(&dir.0, "alice");
        ca.issue(&dir.0, "bob");
        let (_, why) = reason(
            ClientCert::from_files(&dir.0.join("alice-cert.pem"), &dir.0.join("bob-key.pem"))
                .expect_err("mismatch"),
        );
        assert!(why.starts_with("private key does not match"), "{why}");
    }

    fn reason(e: Error) -> (PathBuf, String) {
        match e {
            Error::Credentials { path, reason } => (path, reason),
            other => panic!("expected a credentials error, got {other:?}"),
        }
    }

    #[test]
    fn dev_identity_is_generated_once_and_reused() {
        let (dir, first) = dev_server("reuse");
        let state = dir.0.join("state");
        let meta = fs::metadata(&state).expect("dir");
        assert_eq!(meta.mode() & 0o777, 0o700);
        let key_meta = fs::metadata(state.join(DEV_KEY_FILE)).expect("key");
        assert_eq!(key_meta.mode() & 0o777, 0o600);
        let second = server_config(&ServerIdentity::Dev {
            state_dir: state.clone(),
        })
        .expect("reuse");
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(local_dev_pin(&state), Some(first.fingerprint));
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&state)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn dev_identity_needs_its_key() {
        let (dir, _) = dev_server("nokey");
        let state = dir.0.join("state");
        fs::remove_file(state.join(DEV_KEY_FILE)).expect("rm");
        let (path, why) = reason(
            server_config(&ServerIdentity::Dev {
                state_dir: state.clone(),
            })
            .expect_err("missing key"),
        );
        assert_eq!(path, state.join(DEV_KEY_FILE));
        assert!(why.contains("missing"), "{why}");
    }

    #[test]
    fn dev_identity_replaces_an_orphan_key() {
        let dir = TempDir::new("orphan");
        fs::create_dir_all(&dir.0).expect("mkdir");
        fs::write(dir.0.join(DEV_KEY_FILE), b"junk").expect("write");
        server_config(&ServerIdentity::Dev {
            state_dir: dir.0.clone(),
        })
        .expect("regenerated");
    }

    #[test]
    fn dev_identity_needs_a_usable_directory() {
        let dir = TempDir::new("nodir");
        fs::create_dir_all(&dir.0).expect("mkdir");
        let file = dir.0.join("file");
        fs::write(&file, b"").expect("write");
        let state = file.join("state");
        let (path, why) = reason(
            server_config(&ServerIdentity::Dev {
                state_dir: state.clone(),
            })
            .expect_err("not a directory"),
        );
        assert_eq!(path, state);
        assert!(why.starts_with("cannot create directory"), "{why}");
    }

    #[test]
    fn no_dev_pin_without_a_certificate() {
        let dir = TempDir::new("nopin");
        assert_eq!(local_dev_pin(&dir.0), None);
    }

    #[test]
    fn pem_errors_name_the_file_and_the_problem() {
        let (dir, _) = dev_server("pem");
        let state = dir.0.join("state");
        let cert = state.join(DEV_CERT_FILE);
        let key = state.join(DEV_KEY_FILE);
        let files = |cert: &Path, key: &Path| {
            server_config(&ServerIdentity::Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        };

        let missing = dir.0.join("missing.pem");
        let (path, why) = reason(files(&missing, &key).expect_err("missing cert"));
        assert_eq!(path, missing);
        assert!(why.starts_with("cannot read"), "{why}");
        let (path, _) = reason(files(&cert, &missing).expect_err("missing key"));
        assert_eq!(path, missing);

        let empty = dir.0.join("empty.pem");
        fs::write(&empty, b"").expect("write");
        let (path, why) = reason(files(&empty, &key).expect_err("empty cert"));
        assert_eq!(
            (path, why.as_str()),
            (empty.clone(), "no certificate found")
        );
        let (path, why) = reason(files(&cert, &empty).expect_err("empty key"));
        assert_eq!(
            (path, why.as_str()),
            (empty.clone(), "no private key found")
        );

        let garbage = dir.0.join("garbage.pem");
        fs::write(
            &garbage,
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let (path, why) = reason(files(&garbage, &key).expect_err("garbage"));
        assert_eq!(path, garbage);
        assert!(why.starts_with("invalid PEM"), "{why}");

        // A key in the certificate's place, and the other way round.
        let (_, why) = reason(files(&key, &key).expect_err("key as cert"));
        assert_eq!(why, "no certificate found");
        let (_, why) = reason(files(&cert, &cert).expect_err("cert as key"));
        assert_eq!(why, "no private key found");

        // A well-formed certificate whose DER is junk.
        let bad_der = dir.0.join("bad-der.pem");
        fs::write(
            &bad_der,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let (path, why) = reason(files(&bad_der, &key).expect_err("bad der"));
        assert_eq!(path, bad_der);
        assert!(why.starts_with("unusable certificate"), "{why}");

        // A key that is not a key.
        let bad_key = dir.0.join("bad-key.pem");
        fs::write(
            &bad_key,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let (path, why) = reason(files(&cert, &bad_key).expect_err("bad key"));
        assert_eq!(path, bad_key);
        assert!(why.starts_with("unusable private key"), "{why}");

        // The key of another dev identity.
        let (other_dir, _) = dev_server("pem-other");
        let other_key = other_dir.0.join("state").join(DEV_KEY_FILE);
        let (path, why) = reason(files(&cert, &other_key).expect_err("mismatch"));
        assert_eq!(path, other_key);
        assert!(why.contains("does not match"), "{why}");
    }

    #[test]
    fn fingerprints_format_and_parse() {
        let fp: Fingerprint = std::array::from_fn(|i| (i * 9) as u8);
        let hex = fingerprint_hex(&fp);
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("0009121b"));
        assert_eq!(parse_fingerprint(&hex).expect("plain"), fp);
        let colons: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        let colons = colons.join(":");
        assert_eq!(parse_fingerprint(&colons).expect("colons"), fp);
        assert_eq!(
            parse_fingerprint(&format!("sha256:{hex}")).expect("prefix"),
            fp
        );
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{colons}")).expect("prefix"),
            fp
        );
        for bad in [
            "",
            "sha256:",
            &hex[..62],
            &format!("{hex}00"),
            &format!("{}zz", &hex[..62]),
            &format!("sha1:{hex}"),
        ] {
            assert!(
                matches!(parse_fingerprint(bad), Err(Error::TlsConfig(_))),
                "{bad:?}"
            );
        }
        // Known vector: SHA-256 of the empty string.
        assert_eq!(
            fingerprint_hex(&fingerprint(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn state_dir_rules_in_order() {
        fn env<'a>(
            pairs: &'a [(&'a str, &'a str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let all = [
            ("VOLE_STATE_DIR", "/v"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(state_dir_from("vole", env(&all)), PathBuf::from("/v"));
        assert_eq!(
            state_dir_from("vole", env(&all[1..])),
            PathBuf::from("/x/vole")
        );
        assert_eq!(
            state_dir_from("vole", env(&all[2..])),
            PathBuf::from("/h/.local/state/vole")
        );
        // Empty and relative values are skipped.
        assert_eq!(
            state_dir_from(
                "vole",
                env(&[
                    ("VOLE_STATE_DIR", ""),
                    ("XDG_STATE_HOME", "rel"),
                    ("HOME", "/h")
                ])
            ),
            PathBuf::from("/h/.local/state/vole")
        );
        let last = state_dir_from("vole", env(&[]));
        let uid = fs::metadata("/proc/self").expect("procfs").uid();
        assert_eq!(last, PathBuf::from(format!("/tmp/vole-{uid}")));
        // A hosted service's name replaces "vole"; VOLE_STATE_DIR applies to
        // every service.
        assert_eq!(
            state_dir_from("greeter", env(&all[1..])),
            PathBuf::from("/x/greeter")
        );
        assert_eq!(
            state_dir_from("greeter", env(&all[2..])),
            PathBuf::from("/h/.local/state/greeter")
        );
        assert_eq!(state_dir_from("greeter", env(&all)), PathBuf::from("/v"));
    }

    #[test]
    fn ca_file_errors() {
        let dir = TempDir::new("ca");
        fs::create_dir_all(&dir.0).expect("mkdir");
        let missing = dir.0.join("none.pem");
        let (path, _) =
            reason(client_config(&ServerTrust::CaFile(missing.clone())).expect_err("missing"));
        assert_eq!(path, missing);
        let bad = dir.0.join("bad.pem");
        fs::write(
            &bad,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let (path, why) =
            reason(client_config(&ServerTrust::CaFile(bad.clone())).expect_err("bad"));
        assert_eq!((path, why.as_str()), (bad, "no usable CA certificate"));
    }

    /// Runs a handshake over an in-memory pipe and one echoed byte.
    async fn handshake(
        server: &ServerTls,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<(), Error> {
        let (c, s) = duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(server.config.clone());
        let server_task = tokio::spawn(async move {
            let mut s = acceptor.accept(s).await?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            s.write_all(&b).await?;
            s.flush().await?;
            Ok::<_, std::io::Error>(())
        });
        let name = ServerName::try_from(name.to_owned()).expect("name");
        let run = async {
            let mut c = TlsConnector::from(client).connect(name, c).await?;
            c.write_all(b"x").await?;
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await?;
            assert_eq!(&b, b"x");
            Ok::<_, std::io::Error>(())
        };
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .expect("bounded");
        let server_result = server_task.await.expect("join");
        match result {
            Ok(()) => {
                server_result.expect("server side");
                Ok(())
            }
            Err(e) => {
                assert!(
                    server_result.is_err(),
                    "server succeeded while client failed"
                );
                Err(crate::stream::map_tls_error(e))
            }
        }
    }

    fn is_bad_cert(e: &Error) -> bool {
        matches!(e, Error::Tls(rustls::Error::InvalidCertificate(_)))
    }

    #[tokio::test]
    async fn pinned_trust_accepts_the_right_pin_only() {
        let (_dir, server) = dev_server("pin");
        let ok = client_config(&ServerTrust::Pinned(server.fingerprint)).expect("config");
        handshake(&server, ok.clone(), "localhost")
            .await
            .expect("right pin");
        // Names are not checked with a pin.
        handshake(&server, ok, "example.com")
            .await
            .expect("any name");
        let mut wrong = server.fingerprint;
        wrong[0] ^= 1;
        let bad = client_config(&ServerTrust::Pinned(wrong)).expect("config");
        let err = handshake(&server, bad, "localhost")
            .await
            .expect_err("wrong pin");
        assert!(is_bad_cert(&err), "{err:?}");
    }

    #[tokio::test]
    async fn ca_file_trusts_the_self_signed_dev_certificate() {
        let (dir, server) = dev_server("cafile");
        let ca = dir.0.join("state").join(DEV_CERT_FILE);
        let config = client_config(&ServerTrust::CaFile(ca)).expect("config");
        handshake(&server, config.clone(), "localhost")
            .await
            .expect("localhost");
        handshake(&server, config.clone(), "127.0.0.1")
            .await
            .expect("ipv4");
        handshake(&server, config.clone(), "::1")
            .await
            .expect("ipv6");
        // The name is checked in this mode.
        let err = handshake(&server, config, "example.com")
            .await
            .expect_err("wrong name");
        assert!(is_bad_cert(&err), "{err:?}");
    }

    #[tokio::test]
    async fn system_roots_do_not_trust_the_dev_certificate() {
        let (_dir, server) = dev_server("sysroots");
        let config = client_config(&ServerTrust::SystemRoots).expect("system roots");
        let err = handshake(&server, config, "localhost")
            .await
            .expect_err("untrusted");
        assert!(is_bad_cert(&err), "{err:?}");
    }

    #[tokio::test]
    async fn accept_any_accepts_anything() {
        let (_dir, server) = dev_server("any");
        let config = client_config(&ServerTrust::DangerAcceptAny).expect("config");
        handshake(&server, config, "example.com")
            .await
            .expect("accepted");
    }

    #[test]
    fn configs_are_tls13_only() {
        let (_dir, server) = dev_server("versions");
        // A TLS 1.2-only client cannot talk to the server.
        let tls12 = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("tls12")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FingerprintVerifier {
                pin: None,
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt
            .block_on(handshake(&server, Arc::new(tls12), "localhost"))
            .expect_err("tls 1.2 refused");
        assert!(matches!(err, Error::Tls(_)), "{err:?}");
    }
}
