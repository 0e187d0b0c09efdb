//! The two object id spaces of a link and their reference counts: which
//! of this side's objects the peer holds (and how many references were
//! sent), which of the peer's objects this side holds (and how many were
//! received), and the NOTIFY_DEREF / CONFIRM_DEREF bookkeeping that
//! releases an object exactly when no reference to it remains or is in
//! flight. [`RefTable`] is also the reference encoder and decoder of the
//! link's VEC codec.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use vole_transport::vec::RefDecoder;
use vole_transport::{Owner, RefEncoder, WireRef};

use crate::ids::IdMap;
use crate::model::{Object, ObjectRef, RemoteInner, RemoteObject, Shared};
use crate::violation::ProtocolViolation;

/// An object of this side's that the peer was sent.
pub(super) struct LocalEntry {
    pub(super) object: Arc<dyn Object>,
    /// Its address (see [`object_key`]), the key of `local_ids`.
    pub(super) key: usize,
    /// References sent and not yet dereferenced by the peer.
    pub(super) sends: u64,
}

/// An object of the peer's that this side received.
pub(super) struct PeerEntry {
    /// This side's proxy for it, while one lives.
    proxy: Weak<RemoteInner>,
    /// References received since the last deref notice.
    recvs: u64,
    /// A deref notice was sent and not yet confirmed.
    deref_sent: bool,
}

/// The two id spaces of a link.
pub(super) struct RefTable {
    shared: Arc<Shared>,
    /// This side's objects the peer holds, by id.
    pub(super) local: IdMap<i64, LocalEntry>,
    /// Their ids, by address.
    pub(super) local_ids: IdMap<usize, i64>,
    next_id: i64,
    /// The peer's objects this side holds, by the peer's id.
    pub(super) peer: HashMap<i64, PeerEntry>,
    /// Local ids whose send count the current encode raised, to undo on
    /// failure.
    pub(super) journal: Vec<i64>,
}

impl RefTable {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        RefTable {
            shared,
            local: IdMap::default(),
            local_ids: IdMap::default(),
            next_id: 1,
            peer: HashMap::new(),
            journal: Vec::new(),
        }
    }

    /// The id of `object` (whose address is `key`), registered if new.
    pub(super) fn register_local(&mut self, object: Arc<dyn Object>, key: usize) -> i64 {
        if let Some(id) = self.local_ids.get(&key) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.local_ids.insert(key, id);
        self.local.insert(
            id,
            LocalEntry {
                object,
                key,
                sends: 0,
            },
        );
        id
    }

    /// Registers `object` (whose address is `key`) as sent once, though
    /// no reference went on the wire: the gateway of a direct handshake.
    pub(super) fn register_sent(&mut self, object: Arc<dyn Object>, key: usize) -> i64 {
        let id = self.register_local(object, key);
        if let Some(entry) = self.local.get_mut(&id) {
            entry.sends += 1;
        }
        id
    }

    /// A proxy for the peer's object `id`, counted as received once more
    /// (a direct handshake's peer gateway is received so, though no
    /// reference came on the wire).
    pub(super) fn received(&mut self, id: i64) -> RemoteObject {
        let entry = self.peer.entry(id).or_insert(PeerEntry {
            proxy: Weak::new(),
            recvs: 0,
            deref_sent: false,
        });
        entry.recvs += 1;
        match RemoteObject::upgrade(&entry.proxy) {
            Some(p) => p,
            None => {
                let p = RemoteObject::new(id, self.shared.clone());
                entry.proxy = p.downgrade();
                entry.deref_sent = false;
                p
            }
        }
    }

    /// Undoes the send counts raised by an encode that failed.
    pub(super) fn rollback(&mut self) {
        for id in self.journal.drain(..) {
            if let Some(entry) = self.local.get_mut(&id) {
                entry.sends -= 1;
                if entry.sends == 0 {
                    let key = entry.key;
                    self.local.remove(&id);
                    self.local_ids.remove(&key);
                }
            }
        }
    }

    /// Whether neither side holds a reference to the other's objects.
    pub(super) fn is_empty(&self) -> bool {
        self.local.is_empty() && self.peer.is_empty()
    }

    /// The peer's NOTIFY_DEREF (message `msg_id`): it has dropped the
    /// `claimed` references it received of object `id`. Returns whether
    /// the object is now released (every reference sent is accounted for:
    /// confirm it), or false if more are still in flight to the peer.
    pub(super) fn notify_deref(
        &mut self,
        msg_id: i64,
        id: i64,
        claimed: i64,
    ) -> Result<bool, ProtocolViolation> {
        let Some(entry) = self.local.get(&id) else {
            return Err(ProtocolViolation::DerefOfUnknownObject {
                msg_id,
                object_id: id,
            });
        };
        match u64::try_from(claimed) {
            Ok(count) if count == entry.sends => {}
            // More references are in flight to the peer; it will notify
            // again.
            Ok(count) if count < entry.sends => return Ok(false),
            _ => {
                return Err(ProtocolViolation::ReferenceUnderflow {
                    msg_id,
                    object_id: id,
                    claimed,
                    sent: entry.sends,
                })
            }
        }
        let key = entry.key;
        self.local.remove(&id);
        self.local_ids.remove(&key);
        Ok(true)
    }

    /// The peer's CONFIRM_DEREF (message `msg_id`) of object `id`, whose
    /// release this side asked for.
    pub(super) fn confirm_deref(&mut self, msg_id: i64, id: i64) -> Result<(), ProtocolViolation> {
        match self.peer.get(&id) {
            Some(entry) if entry.deref_sent && entry.proxy.strong_count() == 0 => {
                self.peer.remove(&id);
                Ok(())
            }
            Some(_) => Err(ProtocolViolation::UnrequestedDerefConfirmation {
                msg_id,
                object_id: id,
            }),
            None => Err(ProtocolViolation::ConfirmOfUnknownObject {
                msg_id,
                object_id: id,
            }),
        }
    }

    /// The last proxy for the peer's object `id` was dropped. Returns the
    /// receive count to send in a NOTIFY_DEREF, or `None` if there is
    /// nothing to release (unknown id, or a new proxy was made since).
    pub(super) fn release(&mut self, id: i64) -> Option<i64> {
        let entry = self.peer.get_mut(&id)?;
        if entry.proxy.strong_count() > 0 {
            // A new proxy was made since; its drop will release.
            return None;
        }
        entry.deref_sent = true;
        Some(entry.recvs as i64)
    }
}

/// The address of an object: what identifies it in `local_ids`.
pub(super) fn object_key(object: &Arc<dyn Object>) -> usize {
    Arc::as_ptr(object) as *const () as usize
}

impl RefEncoder<ObjectRef> for RefTable {
    fn encode_ref(&mut self, r: &ObjectRef) -> Result<WireRef, vole_transport::Error> {
        let id = match r {
            ObjectRef::Remote(remote) if remote.link_id() == self.shared.id => {
                return Ok(WireRef {
                    owner: Owner::Receiver,
                    id: remote.id(),
                });
            }
            ObjectRef::Remote(remote) => {
                // A proxy from another link: serve it as a local object that
                // forwards calls.
                let key = remote.inner_key();
                let forward: Arc<dyn Object> = Arc::new(remote.clone());
                self.register_local(forward, key)
            }
            ObjectRef::Local(object) => self.register_local(object.clone(), object_key(object)),
        };
        if let Some(entry) = self.local.get_mut(&id) {
            entry.sends += 1;
        }
        self.journal.push(id);
        Ok(WireRef {
            owner: Owner::Sender,
            id,
        })
    }
}

impl RefDecoder<ObjectRef> for RefTable {
    fn decode_ref(&mut self, wire: WireRef) -> Result<ObjectRef, vole_transport::Error> {
        match wire.owner {
            Owner::Receiver => self
                .local
                .get(&wire.id)
                .map(|e| ObjectRef::Local(e.object.clone()))
                .ok_or(vole_transport::Error::UnknownObject { id: wire.id }),
            Owner::Sender => Ok(ObjectRef::Remote(self.received(wire.id))),
        }
    }
}
