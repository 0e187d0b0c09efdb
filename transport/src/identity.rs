//! Who the peer of a connection proved to be: [`PeerIdentity`].
//!
//! A TLS client that presents a certificate the server's client CA
//! verifies has a [`PeerIdentity::Certificate`]; a peer that proves it
//! holds a key (VTS client keys) has a [`PeerIdentity::Key`]. A peer that
//! proved nothing has no identity (`None` where one is carried).
//!
//! Fingerprints are SHA-256 in lowercase hex without separators, the form
//! `vole call --pin` takes and `vole serve` logs. Subjects are the
//! certificate's distinguished name, its attributes in certificate order
//! as `TYPE=value` joined by `", "` (`"CN=alice, O=Example"`).

use rustls::pki_types::CertificateDer;

use crate::tls::{fingerprint, fingerprint_hex};

/// What a peer proved about itself during the transport handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerIdentity {
    /// A certificate chain a trusted CA verified.
    Certificate {
        /// The end-entity certificate's subject (`"CN=alice, O=Example"`);
        /// empty if the certificate names none.
        subject: String,
        /// SHA-256 of the end-entity certificate, lowercase hex.
        fingerprint: String,
        /// The chain as sent, end-entity first, DER.
        chain: Vec<Vec<u8>>,
    },
    /// A public key the peer proved it holds.
    Key {
        /// SHA-256 of the key as its transport encodes it, lowercase hex.
        fingerprint: String,
    },
}

impl PeerIdentity {
    /// The identity a verified certificate chain gives (end-entity first);
    /// `None` for an empty chain.
    ///
    /// A subject that cannot be read (the chain was verified, so this is
    /// a certificate webpki accepts but this parser does not) is left
    /// empty: the fingerprint still identifies the peer.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<PeerIdentity> {
        let end = chain.first()?;
        Some(PeerIdentity::Certificate {
            subject: subject_of(end).unwrap_or_default(),
            fingerprint: fingerprint_hex(&fingerprint(end)),
            chain: chain.iter().map(|c| c.as_ref().to_vec()).collect(),
        })
    }

    /// The identity of a proved key, given its fingerprint.
    pub fn key(fp: &crate::tls::Fingerprint) -> PeerIdentity {
        PeerIdentity::Key {
            fingerprint: fingerprint_hex(fp),
        }
    }

    /// The fingerprint: the certificate's or the key's.
    pub fn fingerprint(&self) -> &str {
        match self {
            PeerIdentity::Certificate { fingerprint, .. } | PeerIdentity::Key { fingerprint } => {
                fingerprint
            }
        }
    }

    /// The certificate's subject, for a certificate identity.
    pub fn subject(&self) -> Option<&str> {
        match self {
            PeerIdentity::Certificate { subject, .. } => Some(subject),
            PeerIdentity::Key { .. } => None,
        }
    }

    /// What to call the peer in logs and answers: the subject of a
    /// certificate (its fingerprint if the subject is empty), a key's
    /// fingerprint.
    pub fn name(&self) -> &str {
        match self {
            PeerIdentity::Certificate { subject, .. } if !subject.is_empty() => subject,
            other => other.fingerprint(),
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Certificate { .. } => write!(f, "certificate {:?}", self.name()),
            PeerIdentity::Key { fingerprint } => write!(f, "key {fingerprint}"),
        }
    }
}

/// The subject of a DER certificate as `TYPE=value, ...`, or `None` if it
/// does not parse.
pub fn subject_of(cert_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    Some(cert.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[(rcgen::DnType, &str)]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut dn = rcgen::DistinguishedName::new();
        for (t, v) in names {
            dn.push(t.clone(), *v);
        }
        params.distinguished_name = dn;
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn a_chain_gives_its_end_entity_subject_and_fingerprint() {
        let end = cert(&[
            (rcgen::DnType::CommonName, "alice"),
            (rcgen::DnType::OrganizationName, "Example"),
        ]);
        let other = cert(&[(rcgen::DnType::CommonName, "ca")]);
        let id = PeerIdentity::from_chain(&[end.clone(), other]).expect("identity");
        assert_eq!(id.subject(), Some("CN=alice, O=Example"));
        assert_eq!(id.name(), "CN=alice, O=Example");
        assert_eq!(id.fingerprint(), fingerprint_hex(&fingerprint(&end)));
        assert_eq!(id.fingerprint().len(), 64);
        match &id {
            PeerIdentity::Certificate { chain, .. } => assert_eq!(chain.len(), 2),
            other => panic!("expected a certificate, got {other:?}"),
        }
        assert_eq!(id.to_string(), "certificate \"CN=alice, O=Example\"");
    }

    #[test]
    fn no_chain_no_identity_and_a_nameless_certificate_goes_by_fingerprint() {
        assert_eq!(PeerIdentity::from_chain(&[]), None);
        let id = PeerIdentity::from_chain(&[cert(&[])]).expect("identity");
        assert_eq!(id.subject(), Some(""));
        assert_eq!(id.name(), id.fingerprint());
    }

    #[test]
    fn a_key_goes_by_its_fingerprint() {
        let id = PeerIdentity::key(&[0xab; 32]);
        assert_eq!(id.fingerprint(), "ab".repeat(32));
        assert_eq!(id.subject(), None);
        assert_eq!(id.name(), id.fingerprint());
        assert_eq!(id.to_string(), format!("key {}", "ab".repeat(32)));
    }

    #[test]
    fn junk_has_no_subject() {
        assert_eq!(subject_of(b"not a certificate"), None);
        assert_eq!(subject_of(&[]), None);
    }
}
