//! Fuzz targets for every reader of leakhunt, and the properties each input must keep.
//!
//! One function per target in [`targets`]; the libFuzzer binaries in `fuzz_targets/` and the
//! corpus replay in `src/bin/smoke.rs` call the same functions. Every input must:
//! - not panic (overflow checks and debug assertions are on in the fuzz profile);
//! - finish within the per-input time bound (libFuzzer's `-timeout`, the replay's watchdog);
//! - keep the heap under [`alloc::LIMIT`]: the counting allocator below aborts the process when
//!   an input makes leakhunt hold more, so libFuzzer records the input as a crash.
//!
//! Readers that take a path get the input written to a file in a private scratch directory on
//! tmpfs (see [`scratch`]); inputs for several files are cut at [`SEPARATOR`].

pub mod alloc;
pub mod scratch;
pub mod seeds;
pub mod targets;

/// Cuts a fuzz input into the files of a multi-file target (diff, bundle, analyze).
pub const SEPARATOR: &[u8] = b"\n%%file%%\n";

/// A fuzz target: takes any bytes, keeps the properties above.
pub type Target = fn(&[u8]);

/// The table of targets, each named as its function in [`targets`].
macro_rules! by_name {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), targets::$name as Target)),*]
    };
}

/// Every target by name, as `fuzz_targets/NAME.rs` and the corpus folder `corpus/NAME` call it.
pub const TARGETS: &[(&str, Target)] = by_name![
    detect,
    cruby,
    zst,
    rubinius,
    diff,
    retainers,
    leaks,
    lsan,
    valgrind_xml,
    valgrind_text,
    maps,
    bundle_json,
    analyze_bundle,
    analyze_files,
];

/// The parts of a multi-file input, at most `max` (the last part keeps any further separators).
pub fn split(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match find(rest, SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Declares a libFuzzer target that runs one function of [`targets`].
#[cfg(feature = "libfuzzer")]
#[macro_export]
macro_rules! fuzz_target_for {
    ($target:path) => {
        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            $crate::alloc::start_input();
            $target(data);
        });
    };
}

#[cfg(feature = "libfuzzer")]
pub use libfuzzer_sys;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_libfuzzer_binary_and_seeds() {
        let manifest = include_str!("../Cargo.toml");
        for (name, _) in TARGETS {
            let bin = format!("name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"");
            assert!(manifest.contains(&bin), "no [[bin]] for {name}");
            let source = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("fuzz_targets/{name}.rs")),
            )
            .unwrap();
            assert!(source.contains(&format!("targets::{name});")), "{name}.rs");
            assert!(!seeds::for_target(name).is_empty(), "no seeds for {name}");
        }
        assert_eq!(manifest.matches("[[bin]]").count(), TARGETS.len());
    }

    #[test]
    fn split_keeps_extra_separators_in_the_last_part() {
        let input = b"a\n%%file%%\nb\n%%file%%\nc";
        assert_eq!(split(input, 2), vec![&b"a"[..], &b"b\n%%file%%\nc"[..]]);
        assert_eq!(split(input, 5), vec![&b"a"[..], &b"b"[..], &b"c"[..]]);
        assert_eq!(split(b"", 3), vec![&b""[..]]);
    }
}
