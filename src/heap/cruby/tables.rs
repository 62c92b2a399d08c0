//! Lookup tables the CRuby dump visitors share: a fast hasher for address-like keys, and an
//! interner that turns repeated byte strings (file names, IMEMO types, DATA struct names, ROOT
//! categories) into small ids so per-line work never allocates.
//!
//! Stage: parser support. Each chunk has its own tables; [`Interner::remap_into`] merges them.

use std::collections::HashMap;
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

pub fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(FastHash::default())
}

/// Byte strings to dense ids. Id 0 means "none"; real ids start at 1.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: FastMap<Box<[u8]>, u32>,
    names: Vec<Box<[u8]>>,
}

impl Interner {
    pub fn new() -> Self {
        Interner::default()
    }

    pub fn intern(&mut self, bytes: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(bytes) {
            return id;
        }
        self.names.push(bytes.into());
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.ids.insert(bytes.into(), id);
        id
    }

    /// The bytes of an id; empty for 0 or an unknown id.
    pub fn get(&self, id: u32) -> &[u8] {
        match (id as usize).checked_sub(1) {
            Some(i) => self.names.get(i).map_or(&[][..], |b| &b[..]),
            None => &[],
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Interns every string of `self` into `global`; returns local id → global id (index 0 → 0).
    pub fn remap_into(&self, global: &mut Interner) -> Vec<u32> {
        let mut map = Vec::with_capacity(self.names.len() + 1);
        map.push(0);
        for n in &self.names {
            map.push(global.intern(n));
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn interner_ids_and_remap() {
        let mut a = Interner::new();
        assert_eq!(a.intern(b"env"), 1);
        assert_eq!(a.intern(b"ment"), 2);
        assert_eq!(a.intern(b"env"), 1);
        assert_eq!(a.get(2), b"ment");
        assert_eq!(a.get(0), b"");
        let mut global = Interner::new();
        global.intern(b"ment");
        assert_eq!(a.remap_into(&mut global), vec![0, 2, 1]);
    }

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
