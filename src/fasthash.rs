//! One fast hasher for the parsers' internal tables (addresses, object ids, interned lines).
//!
//! Stage: parser support. The keys are our own inputs' addresses and byte strings, not chosen
//! to collide by anyone; the worst a crafted input can do is slow its own parse down.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-and-fold hasher (FxHash's mixing plus a final fold, so that the low bits of the
/// hash depend on every input bit: heap addresses end in zero bits, and hashbrown indexes its
/// buckets with the low bits). Not for untrusted keys that could be chosen to collide; dump
/// addresses are not chosen by anyone.
#[derive(Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash ^ (self.hash >> 29)
    }
}

pub type FastHash = BuildHasherDefault<FastHasher>;
pub type FastMap<K, V> = HashMap<K, V, FastHash>;
pub type FastSet<K> = HashSet<K, FastHash>;

pub fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(FastHash::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn aligned_addresses_spread_over_low_bits() {
        let build = FastHash::default();
        let mut low = std::collections::HashSet::new();
        for i in 0..1024u64 {
            low.insert(build.hash_one(0x7f00_0000_0000 + i * 40) & 0xff);
        }
        assert!(low.len() > 200, "only {} distinct low bytes", low.len());
    }
}
