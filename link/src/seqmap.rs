//! A map for keys that count up: the ids of calls this side sends (and,
//! outside the link, anything keyed the same way, such as a
//! [`Pipeline`](crate::Pipeline)'s tickets).
//!
//! Every call inserts its id when sent and removes it when the answer
//! arrives. In a hash map that churn leaves tombstones, which force a
//! rehash every so often (measured: ~200 instructions per call for the two
//! maps on a client's path). Here the entries live in a ring indexed by the
//! key's low bits; an entry whose slot is needed while it is still there (a
//! slow answer) moves to a hash map beside it, and the ring doubles when it
//! is half full, so the common case never hashes.

use crate::ids::IdMap;

/// The ring's first size.
const FIRST: usize = 64;
/// The ring grows no further (entries beyond it go to the map).
const MAX_RING: usize = 1 << 16;

/// A map from increasing `u64` keys to `V` (see the module documentation).
#[derive(Debug)]
pub struct SeqMap<V> {
    ring: Vec<Option<(u64, V)>>,
    /// Entries moved out of the ring.
    late: IdMap<u64, V>,
    /// Entries in the ring.
    in_ring: usize,
}

impl<V> Default for SeqMap<V> {
    fn default() -> Self {
        SeqMap {
            ring: Vec::new(),
            late: IdMap::default(),
            in_ring: 0,
        }
    }
}

impl<V> SeqMap<V> {
    fn slot(&self, key: u64) -> usize {
        // The ring's length is a power of two: the mask keeps the index
        // below it, so it fits a usize.
        (key & (self.ring.len() as u64).wrapping_sub(1)) as usize
    }

    /// Inserts `value` at `key`, replacing (and returning) any value there.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if self.ring.is_empty() {
            self.ring.resize_with(FIRST, || None);
        }
        let i = self.slot(key);
        let can_grow = self.in_ring * 2 >= self.ring.len() && self.ring.len() < MAX_RING;
        match &mut self.ring[i] {
            Some((k, v)) if *k == key => return Some(std::mem::replace(v, value)),
            Some(_) if can_grow => {
                self.grow();
                return self.insert(key, value);
            }
            _ => {}
        }
        let old = if self.late.is_empty() {
            None
        } else {
            self.late.remove(&key)
        };
        match self.ring[i].replace((key, value)) {
            Some((k, v)) => {
                self.late.insert(k, v);
            }
            None => self.in_ring += 1,
        }
        old
    }

    /// Removes and returns the value at `key`.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        if self.ring.is_empty() {
            return None;
        }
        let i = self.slot(key);
        match &self.ring[i] {
            Some((k, _)) if *k == key => {
                self.in_ring -= 1;
                self.ring[i].take().map(|(_, v)| v)
            }
            _ if self.late.is_empty() => None,
            _ => self.late.remove(&key),
        }
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.in_ring + self.late.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, mutably, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut V)> + '_ {
        self.ring
            .iter_mut()
            .filter_map(|e| e.as_mut().map(|(k, v)| (*k, v)))
            .chain(self.late.iter_mut().map(|(k, v)| (*k, v)))
    }

    /// Removes and returns every entry, in no particular order.
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.in_ring = 0;
        self.ring
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.late.drain())
    }

    /// Gives back the ring's and the map's memory if there are no
    /// entries (for an idle link; the next insert allocates the ring again).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.ring = Vec::new();
            self.late = IdMap::default();
        }
    }

    /// Doubles the ring, moving its entries to their new slots.
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.ring);
        self.ring.resize_with(old.len() * 2, || None);
        self.in_ring = 0;
        for (k, v) in old.into_iter().flatten() {
            let i = self.slot(k);
            // Two keys that shared a slot of the old ring can still share
            // one here; the later one goes to the map.
            match &self.ring[i] {
                None => {
                    self.ring[i] = Some((k, v));
                    self.in_ring += 1;
                }
                Some(_) => {
                    self.late.insert(k, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn an_empty_map_gives_back_its_memory() {
        let mut m = SeqMap::default();
        m.insert(1, "a");
        m.release_if_empty();
        assert_eq!(m.ring.len(), FIRST, "kept while it holds an entry");
        assert_eq!(m.remove(1), Some("a"));
        m.release_if_empty();
        assert_eq!(m.ring.capacity(), 0);
        // Usable again.
        assert_eq!(m.insert(2, "b"), None);
        assert_eq!(m.remove(2), Some("b"));
    }

    /// Random-ish operations against a `HashMap` model.
    #[test]
    fn behaves_like_a_map() {
        let mut m = SeqMap::default();
        let mut model = HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = 0u64;
        for step in 0..200_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match rng % 10 {
                // Mostly new keys, counting up, as calls are sent.
                0..=4 => {
                    assert_eq!(m.insert(next, step), model.insert(next, step));
                    next += 1;
                }
                // Answers: a recent key, or an old one (a slow answer).
                5..=8 => {
                    let back = if rng.is_multiple_of(97) {
                        rng % 5_000
                    } else {
                        rng % 40
                    };
                    let k = next.saturating_sub(back + 1);
                    assert_eq!(m.remove(k), model.remove(&k), "step {step} key {k}");
                }
                // Now and then, an existing key again, or a foreign one.
                _ => {
                    let k = rng % (next + 10);
                    assert_eq!(m.insert(k, step), model.insert(k, step), "step {step}");
                }
            }
            assert_eq!(m.len(), model.len(), "step {step}");
        }
        let mut drained: Vec<_> = m.drain().collect();
        drained.sort_unstable();
        let mut expected: Vec<_> = model.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(drained, expected);
        assert!(m.is_empty());
        assert_eq!(m.remove(3), None);
    }

    #[test]
    fn many_outstanding_keys_grow_the_ring() {
        let mut m = SeqMap::default();
        for k in 0..10_000u64 {
            m.insert(k, k);
        }
        assert_eq!(m.len(), 10_000);
        assert!(m.ring.len() >= 16_384, "{}", m.ring.len());
        assert!(m.late.len() < 100, "{} in the map", m.late.len());
        for k in (0..10_000u64).rev() {
            assert_eq!(m.remove(k), Some(k));
        }
        assert!(m.is_empty());
        m.insert(5, 1);
        assert_eq!(m.drain().collect::<Vec<_>>(), vec![(5, 1)]);
        assert!(m.is_empty());
        assert_eq!(m.remove(5), None);
    }

    #[test]
    fn an_empty_map_answers_without_allocating() {
        let mut m: SeqMap<u8> = SeqMap::default();
        assert_eq!(m.remove(0), None);
        assert!(m.is_empty());
        assert_eq!(m.drain().count(), 0);
        assert!(m.ring.is_empty());
    }
}
