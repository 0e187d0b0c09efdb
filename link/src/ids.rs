//! Hashing for integer keys this side chooses: [`IdHasher`] and
//! [`IdMap`], used by the link core's object tables and by
//! [`SeqMap`](crate::seqmap::SeqMap).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes the integer keys of maps whose keys this side chooses: its
/// message ids, its object ids, object addresses. A multiply is enough there
/// and costs a fraction of SipHash, which these maps paid on every call.
/// Maps keyed by ids the peer chooses keep the default, keyed hasher.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Swap the halves: the table indexes by the low bits, and the high
        // bits of the product are the well-mixed ones (addresses, for one,
        // have zero low bits).
        self.0.rotate_left(32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A map keyed by integers this side chooses (see [`IdHasher`]).
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn buckets(keys: impl Iterator<Item = u64>, mask: u64) -> usize {
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            seen.insert(build.hash_one(k) & mask);
        }
        seen.len()
    }

    #[test]
    fn id_hasher_spreads_sequential_ids_and_addresses() {
        // 1024 keys over 1024 buckets: a good spread fills most of them.
        let sequential = buckets(1..=1024, 1023);
        let addresses = buckets((0..1024).map(|i| 0x7f00_0000_0000 + i * 64), 1023);
        assert!(sequential > 600, "{sequential}");
        assert!(addresses > 600, "{addresses}");
        // Byte-wise input (other key types) still hashes by value.
        let build = BuildHasherDefault::<IdHasher>::default();
        assert_eq!(build.hash_one("ab"), build.hash_one("ab"));
        assert_ne!(build.hash_one("ab"), build.hash_one("ba"));
        assert_eq!(build.hash_one(5i64), build.hash_one(5u64));
        assert_eq!(build.hash_one(5usize), build.hash_one(5u64));
    }

    #[test]
    fn id_maps_work_as_maps() {
        let mut m: IdMap<i64, i64> = IdMap::default();
        for i in -500..500 {
            m.insert(i, i * 2);
        }
        assert!((-500..500).all(|i| m.get(&i) == Some(&(i * 2))));
        assert_eq!(m.remove(&7), Some(14));
        assert_eq!(m.get(&7), None);
    }
}
