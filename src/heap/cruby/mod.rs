//! CRuby `ObjectSpace.dump_all` / `dump` JSON-lines reader (FORMATS.md §2), Ruby 2.1 to 4.0.
//!
//! Stage: parser. Bytes in, records out, nothing printed. The layers, innermost first:
//! - [`scan`]: one line → a [`scan::Record`] borrowing from the line (keys matched by name);
//! - [`reader`]: the file → lines, in parallel chunks with bounded buffers, `.gz` transparently,
//!   lines of any length;
//! - [`classes`]: class records → names (§2.5), resolved after the pass;
//! - [`census`]: histogram, allocation sites and version evidence per chunk, merged;
//! - [`version`]: the Ruby version guessed from fingerprints (§2.4).
//!
//! `heap::cruby::diff` and `heap::cruby::retainers` build on the same layers.

pub mod census;
pub mod classes;
pub mod diff;
pub mod reader;
pub mod retainers;
pub mod scan;
pub mod tables;
pub mod version;

use super::{HeapFormat, HeapSummary, HistogramRead};
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use census::{Census, CensusVisitor, Named};
use reader::{ReadOptions, read_lines};
use std::path::Path;

/// The class histogram of a CRuby dump: rows by resolved class name in first-seen order,
/// count of objects and sum of `memsize` (ROOT and SHAPE lines excluded).
pub fn histogram(path: &Path) -> Result<HistogramRead> {
    histogram_with(path, &command_options(path))
}

/// [`histogram`] with explicit read options (tests shrink chunks and buffers).
pub fn histogram_with(path: &Path, opts: &ReadOptions) -> Result<HistogramRead> {
    let named = count(path, opts, false)?;
    Ok(HistogramRead {
        histogram: named.histogram(),
        objects: named.census.objects,
        diagnostics: named.diagnostics,
    })
}

/// The histogram plus allocation sites (top [`census::SITES_PER_CLASS`] per class), the Ruby
/// version guess and the object count: what the correlator needs from each snapshot.
pub fn summarize(path: &Path) -> Result<HeapSummary> {
    summarize_with(path, &ReadOptions::default())
}

pub fn summarize_with(path: &Path, opts: &ReadOptions) -> Result<HeapSummary> {
    let named = count(path, opts, true)?;
    Ok(HeapSummary {
        path: path.to_path_buf(),
        format: HeapFormat::Cruby,
        ruby_version: named.census.version.guess(),
        histogram: named.histogram(),
        alloc_sites: named.alloc_sites(),
        data_types: named.data_types(),
        objects: named.census.objects,
        slot_bytes: named.census.slot_bytes(),
        diagnostics: named.diagnostics,
    })
}

fn count(path: &Path, opts: &ReadOptions, want_sites: bool) -> Result<Named> {
    let outcome = read_lines(path, opts, |_| CensusVisitor(Census::new(want_sites)))?;
    let named = Census::from_outcome(outcome, want_sites);
    if named.census.objects == 0 {
        return Err(nothing_read(path, &named.diagnostics));
    }
    Ok(named)
}

/// The hard error for a dump from which no object could be read: names the first problem.
pub fn nothing_read(path: &Path, diag: &Diagnostics) -> Error {
    match diag.kinds.iter().min_by_key(|k| match k.first {
        Position::Line(l) => l,
        _ => u64::MAX,
    }) {
        Some(k) => {
            let mut message = format!("no heap object could be read: {}", k.what);
            if !k.detail.is_empty() {
                message.push_str(&format!(" ({})", k.detail));
            }
            Error::input(path, k.first, message)
        }
        None => Error::input(path, Position::Whole, "no heap object in this dump"),
    }
}

/// Options for commands: default sizes, a progress bar labelled with the file name.
pub fn command_options(path: &Path) -> ReadOptions {
    ReadOptions {
        progress_label: Some(path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )),
        ..ReadOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(dump: &[u8]) -> HeapSummary {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heap.json");
        std::fs::write(&path, dump).unwrap();
        summarize_with(&path, &ReadOptions::default()).unwrap()
    }

    /// Typed DATA instances of a named class give their struct name; DATA objects without a
    /// class of their own are labelled by it already and are left out.
    #[test]
    fn data_types_name_the_struct_of_each_class() {
        let dump = br#"{"address":"0x1", "type":"CLASS", "name":"RingBuf", "memsize":40}
{"address":"0x10", "type":"DATA", "class":"0x1", "struct":"ringbuf", "memsize":56}
{"address":"0x11", "type":"DATA", "class":"0x1", "struct":"ringbuf", "memsize":56}
{"address":"0x12", "type":"DATA", "struct":"mutex", "memsize":80}
{"address":"0x13", "type":"OBJECT", "class":"0x1", "memsize":40}
"#;
        let s = summary_of(dump);
        assert_eq!(
            s.data_types,
            [crate::heap::DataType {
                class: "RingBuf".into(),
                struct_name: "ringbuf".into(),
                count: 2,
                bytes: 112,
            }]
        );
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/cruby")
            .join(name)
    }

    /// Ruby 3.2+ gives each object's slot size (40 to 640 bytes): the summary sums them over
    /// the objects, SHAPE and ROOT lines left out, in chunks as small as one line.
    #[test]
    fn slot_bytes_are_the_sum_of_the_objects_slot_sizes_on_3_2_and_later() {
        for (file, objects, slots) in [
            // 160 (Foo's CLASS) + 2 × 80 (Foos) + 40 + 80 (Strings) + 40 + 640 (Arrays).
            ("ruby3.3.8-linux-slot-sizes.json", 7, 1120),
            // 26 × 40 + 2 × 80, beside 488 SHAPE lines.
            (
                "ruby3.2dev-partial-since28-retained-heap-profiler.heap",
                28,
                1200,
            ),
        ] {
            for chunk in [1, 32 << 20] {
                let opts = ReadOptions {
                    chunk_bytes: chunk,
                    ..ReadOptions::default()
                };
                let s = summarize_with(&fixture(file), &opts).unwrap();
                assert_eq!((s.objects, s.slot_bytes), (objects, Some(slots)), "{file}");
            }
        }
        let s = summarize(&fixture("ruby3.1.2-linux-since10-traced.json")).unwrap();
        assert!(s.objects > 0);
        assert_eq!(s.slot_bytes, None, "3.1 dumps have no slot_size");
    }

    /// A dump in which some objects do not say their slot size gives no total: a partial sum
    /// would count those objects' slots as part of what they hold.
    #[test]
    fn slot_bytes_need_every_object_s_slot_size() {
        let dump =
            br#"{"address":"0x10", "type":"OBJECT", "slot_size":80, "class":"0x1", "memsize":80}
{"address":"0x11", "type":"OBJECT", "class":"0x1", "memsize":40}
"#;
        assert_eq!(summary_of(dump).slot_bytes, None);
        let dump =
            br#"{"address":"0x10", "type":"OBJECT", "slot_size":80, "class":"0x1", "memsize":80}
{"address":"0x11", "type":"STRING", "slot_size":40, "memsize":72}
"#;
        assert_eq!(summary_of(dump).slot_bytes, Some(120));
    }

    /// Two classes sharing a name whose instances claim `memsize` near `u64::MAX`: the merged
    /// row saturates.
    #[test]
    fn huge_memsize_on_same_named_classes_saturates() {
        let dump = br#"{"address":"0x1", "type":"CLASS", "name":"Foo", "memsize":40}
{"address":"0x2", "type":"CLASS", "name":"Foo", "memsize":40}
{"address":"0x10", "type":"OBJECT", "class":"0x1", "memsize":18446744073709551615}
{"address":"0x11", "type":"OBJECT", "class":"0x2", "memsize":9223372036854775807}
"#;
        let s = summary_of(dump);
        let foo = s.histogram.get("Foo").unwrap();
        assert_eq!((foo.count, foo.bytes), (2, i64::MAX));
        assert_eq!(s.histogram.total_bytes(), i64::MAX);
    }
}
