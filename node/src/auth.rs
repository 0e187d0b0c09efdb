//! Which clients a service serves: [`Authorize`], asked once per
//! connection after the transport handshake and before the link
//! handshake, and [`AllowList`], the settings file's form of it.
//!
//! An authorizer is a pure decision over what the handshake established
//! (the peer's address, the transport, TLS details and the identity the
//! peer proved, all in a [`LinkInfo`]); it does no I/O. A refused client's
//! connection is closed before the link handshake (a VPy client sees its
//! link fail, as when a VPy service's `auth(link)` refuses), and the
//! refusal is logged and counted as a handshake failure with reason
//! `refused`.

use std::sync::Arc;

use vole_control::control::AccessRules;
use vole_link::LinkInfo;

/// Decides whether a connection is served.
pub trait Authorize: Send + Sync + 'static {
    /// `Ok` serves the connection; `Err` refuses it, saying why (logged
    /// with the peer's address and identity; the client is not told).
    fn authorize(&self, link: &LinkInfo) -> Result<(), String>;
}

impl<F> Authorize for F
where
    F: Fn(&LinkInfo) -> Result<(), String> + Send + Sync + 'static,
{
    fn authorize(&self, link: &LinkInfo) -> Result<(), String> {
        self(link)
    }
}

/// A shared authorizer, as a service holds it.
pub type Authorizer = Arc<dyn Authorize>;

/// Serves exactly the clients whose identity [`AccessRules`] names: a
/// certificate subject in `subjects`, or a certificate or key fingerprint
/// in `keys`. Clients without an identity are refused.
#[derive(Debug, Clone)]
pub struct AllowList {
    rules: AccessRules,
}

impl AllowList {
    /// An allow list of `rules` (fingerprints in lowercase hex, as the
    /// settings normalize them).
    pub fn new(rules: AccessRules) -> Self {
        AllowList { rules }
    }
}

impl Authorize for AllowList {
    fn authorize(&self, link: &LinkInfo) -> Result<(), String> {
        let Some(id) = &link.identity else {
            return Err("no client identity, and the allow lists are set".to_owned());
        };
        let by_subject = id
            .subject()
            .is_some_and(|s| self.rules.subjects.iter().any(|a| a == s));
        let by_key = self.rules.keys.iter().any(|k| k == id.fingerprint());
        if by_subject || by_key {
            Ok(())
        } else {
            Err(format!("{id} is not in the allow lists"))
        }
    }
}

/// Every authorizer of `all` must serve a connection for it to be served
/// (the first refusal is the reason); `None` if there are none.
pub fn all_of(all: impl IntoIterator<Item = Option<Authorizer>>) -> Option<Authorizer> {
    let all: Vec<Authorizer> = all.into_iter().flatten().collect();
    match all.len() {
        0 => None,
        1 => all.into_iter().next(),
        _ => Some(Arc::new(move |link: &LinkInfo| {
            all.iter().try_for_each(|a| a.authorize(link))
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vole_link::PeerIdentity;

    fn link(identity: Option<PeerIdentity>) -> LinkInfo {
        LinkInfo {
            identity,
            ..LinkInfo::default()
        }
    }

    fn cert(subject: &str, fp: &str) -> PeerIdentity {
        PeerIdentity::Certificate {
            subject: subject.to_owned(),
            fingerprint: fp.to_owned(),
            chain: Vec::new(),
        }
    }

    #[test]
    fn the_allow_list_serves_named_subjects_and_fingerprints_only() {
        let list = AllowList::new(AccessRules {
            subjects: vec!["CN=alice".to_owned()],
            keys: vec!["ab".repeat(32)],
        });
        assert_eq!(list.authorize(&link(Some(cert("CN=alice", "00")))), Ok(()));
        assert_eq!(
            list.authorize(&link(Some(cert("CN=carol", &"ab".repeat(32))))),
            Ok(())
        );
        assert_eq!(
            list.authorize(&link(Some(PeerIdentity::key(&[0xab; 32])))),
            Ok(())
        );
        let e = list
            .authorize(&link(Some(cert("CN=bob", "00"))))
            .expect_err("bob");
        assert!(e.contains("CN=bob"), "{e}");
        assert!(list.authorize(&link(None)).is_err());
        // Subjects match whole, not by prefix or case.
        assert!(list
            .authorize(&link(Some(cert("CN=alice, O=X", "00"))))
            .is_err());
        assert!(list.authorize(&link(Some(cert("cn=alice", "00")))).is_err());
    }

    #[test]
    fn all_of_needs_every_one() {
        let yes: Authorizer = Arc::new(|_: &LinkInfo| Ok(()));
        let no: Authorizer = Arc::new(|_: &LinkInfo| Err("no".to_owned()));
        assert!(all_of([None, None]).is_none());
        let one = all_of([Some(yes.clone()), None]).expect("one");
        assert_eq!(one.authorize(&LinkInfo::default()), Ok(()));
        let both = all_of([Some(yes), Some(no)]).expect("both");
        assert_eq!(both.authorize(&LinkInfo::default()), Err("no".to_owned()));
    }
}
