//! Stable fingerprints for findings: a 64-bit FNV-1a hash of the finding's kind and identity
//! (class name, site key), never of counts, byte totals or file paths, so the same leak keeps
//! the same fingerprint from run to run and machine to machine.
//!
//! Stage: correlator (identity of a finding, used by CI baselines and by humans to match runs).

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `parts`, each followed by a 0 byte so `["ab", "c"]` and `["a", "bc"]` differ.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for &b in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

/// The fingerprint as printed in reports: 16 lowercase hex digits.
pub fn fingerprint(kind: &str, identity: &[&str]) -> String {
    let mut parts = Vec::with_capacity(identity.len() + 1);
    parts.push(kind);
    parts.extend_from_slice(identity);
    format!("{:016x}", fnv1a(&parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_fnv1a_values() {
        // Reference values of 64-bit FNV-1a for "" and "a" (without our separator byte).
        let raw = |s: &[u8]| {
            s.iter().fold(FNV_OFFSET, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
            })
        };
        assert_eq!(raw(b""), 0xcbf29ce484222325);
        assert_eq!(raw(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(&["a"]), raw(b"a\0"));
    }

    #[test]
    fn separates_parts_and_kinds() {
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_ne!(
            fingerprint("ruby_retention", &["ZMQ::Message"]),
            fingerprint("missing_release", &["ZMQ::Message"])
        );
        assert_eq!(fingerprint("x", &["y"]).len(), 16);
        assert_eq!(fingerprint("x", &["y"]), fingerprint("x", &["y"]));
    }
}
