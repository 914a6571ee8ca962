//! A negative filter (a Bloom filter) over the keys of the random-keyed tables, tokens and
//! fingerprints. "No" means the key was never written, so tokenizing a new card skips the two
//! B-tree lookups that would only find nothing (8% of the server's CPU per new card, profiled
//! in BENCHMARKS.md). "Maybe" means a real lookup, as before. A deleted key stays "maybe".
//!
//! It is built at open from the engine's keys, with room for twice as many (at least 1M keys,
//! 2 MiB). A full filter answers "maybe" for 1.2% of new keys; past full the rate rises (9%
//! at twice full), which costs only lookups, until the next open sizes it again. The hash is
//! keyed per process (`RandomState`), so nobody can choose keys that all collide.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Table;

/// Bits set per key.
const PROBES: u64 = 4;
/// Bits per key at the size it is built for (at least: the size is rounded up to a power of 2).
const BITS_PER_KEY: usize = 10;
/// Keys it has room for at least: 1M keys (2 MiB once rounded up).
const MIN_KEYS: usize = 1 << 20;
/// Its largest size in bits.
const MAX_BITS: usize = 1 << 33;

/// Which tables the filter covers.
pub(super) fn covers(table: Table) -> bool {
    matches!(table, Table::Tokens | Table::Fingerprints)
}

/// The filter itself: one bit array for every covered table, set with atomic ORs so it needs
/// no lock of its own.
pub(super) struct KeyFilter {
    words: Vec<AtomicU64>,
    /// Bits - 1 (the bit count is a power of 2).
    mask: u64,
    hasher: RandomState,
}

impl KeyFilter {
    /// Room for `keys` keys now and as many again, or [`MIN_KEYS`].
    pub(super) fn for_keys(keys: u64) -> Self {
        let keys = usize::try_from(keys).unwrap_or(usize::MAX / 4);
        let want = keys
            .saturating_mul(2)
            .max(MIN_KEYS)
            .saturating_mul(BITS_PER_KEY);
        // At most 2^33 bits (1 GiB, room for 800M keys); beyond that it answers "maybe" more.
        let bits = want
            .checked_next_power_of_two()
            .unwrap_or(MAX_BITS)
            .min(MAX_BITS);
        KeyFilter {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits as u64 - 1,
            hasher: RandomState::new(),
        }
    }

    fn bits(&self, table: Table, key: &[u8]) -> impl Iterator<Item = u64> + use<> {
        // Double hashing: bit i is h1 + i * h2 (h2 odd, so the probes are distinct).
        let h1 = self.hasher.hash_one((table.index(), key));
        let h2 = h1.rotate_left(32) | 1;
        let mask = self.mask;
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & mask)
    }

    /// Records that `key` was written to `table`; from then on the filter answers "maybe" for it.
    pub(super) fn insert(&self, table: Table, key: &[u8]) {
        for bit in self.bits(table, key) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    /// False only if `key` was never inserted.
    pub(super) fn may_contain(&self, table: Table, key: &[u8]) -> bool {
        self.bits(table, key).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    /// Bytes held.
    #[cfg(test)]
    fn size(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_inserted_key_is_found_and_few_others() {
        let f = KeyFilter::for_keys(0);
        assert_eq!(
            f.size(),
            2 << 20,
            "1M keys at 10 bits, rounded up to 2^24 bits"
        );
        let key = |i: u32| format!("41XYZW{i:06}1111").into_bytes();
        for i in 0..200_000 {
            f.insert(Table::Tokens, &key(i));
        }
        assert!((0..200_000).all(|i| f.may_contain(Table::Tokens, &key(i))));
        // The same key in the other table is another key.
        let other = (0..10_000)
            .filter(|&i| f.may_contain(Table::Fingerprints, &key(i)))
            .count();
        let unseen = (200_000..300_000)
            .filter(|&i| f.may_contain(Table::Tokens, &key(i)))
            .count();
        // At a tenth of its size the rate is about 0.01%.
        assert!(other < 20, "{other}");
        assert!(unseen < 200, "{unseen}");
    }

    #[test]
    fn it_is_sized_for_twice_the_keys() {
        let f = KeyFilter::for_keys(3_000_000);
        assert_eq!(f.size() * 8, (6_000_000 * BITS_PER_KEY).next_power_of_two());
        assert!(covers(Table::Tokens) && covers(Table::Fingerprints));
        assert!(!covers(Table::Audit) && !covers(Table::Meta));
    }
}
