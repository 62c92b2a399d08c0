//! Lookup tables the CRuby dump visitors share: an
//! interner that turns repeated byte strings (file names, IMEMO types, DATA struct names, ROOT
//! categories) into small ids so per-line work never allocates.
//!
//! Stage: parser support. Each chunk has its own tables; [`Interner::remap_into`] merges them.

pub use crate::fasthash::{FastMap, fast_map};

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
}
