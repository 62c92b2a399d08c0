//! `summary-NNN.json`: one round's heap dump reduced to what the analysis reads from a round
//! (the class histogram with counts and bytes, allocation sites, typed C structs, the problems
//! met reading it), so that a long run can remove the dumps growth analysis no longer needs
//! (`--keep-dumps`) and still judge every round.
//!
//! Stage: parsers. The heap reader owns this format because it is a [`HeapSummary`] written
//! down; the bundle only names the file (`ProcessFiles::summary`), `run` writes it once a round
//! is compressed, and the loader reads it where the snapshot's dump was removed.

use super::histogram::Histogram;
use super::{AllocSite, DataType, HeapFormat, HeapSummary};
use crate::diag::{Diagnostics, Position, display_name};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The version of the summary file this leakhunt writes and reads.
pub const SUMMARY_SCHEMA: u32 = 1;

/// What the analysis reads of one round's heap dump.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoundSummary {
    /// Always [`SUMMARY_SCHEMA`]; first key of the file.
    pub leakhunt_summary: u32,
    /// The dump it was computed from, as the snapshot names it.
    pub heap_dump: String,
    pub format: Option<HeapFormat>,
    pub ruby_version: Option<String>,
    pub objects: u64,
    /// The objects' slot bytes when the dump gave each object's slot size (CRuby 3.2+);
    /// absent otherwise, and in summaries written before leakhunt read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_bytes: Option<u64>,
    pub histogram: Histogram,
    pub alloc_sites: Vec<AllocSite>,
    pub data_types: Vec<DataType>,
    /// The reader's soft problems with the dump, one line each, as a reading of the dump
    /// would report them after the file's name (`1 invalid line at line 12 (…)`): the
    /// loader names the dump where the bundle is now.
    pub problems: Vec<String>,
}

impl RoundSummary {
    /// The summary of dump `heap_dump`, as read into `summary`.
    pub fn of(heap_dump: &str, summary: &HeapSummary) -> RoundSummary {
        let name = format!("{}: ", display_name(&summary.diagnostics.file));
        let problems = summary
            .diagnostics
            .lines()
            .into_iter()
            .map(|l| l.strip_prefix(&name).map(str::to_owned).unwrap_or(l))
            .collect();
        RoundSummary {
            leakhunt_summary: SUMMARY_SCHEMA,
            heap_dump: heap_dump.to_owned(),
            format: Some(summary.format),
            ruby_version: summary.ruby_version.clone(),
            objects: summary.objects,
            slot_bytes: summary.slot_bytes,
            histogram: summary.histogram.clone(),
            alloc_sites: summary.alloc_sites.clone(),
            data_types: summary.data_types.clone(),
            problems,
        }
    }

    /// Reads a summary file; a newer schema is refused with advice.
    pub fn load(path: &Path) -> Result<RoundSummary> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let s: RoundSummary = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(path, Position::Line(e.line() as u64), e.to_string()))?;
        if s.leakhunt_summary > SUMMARY_SCHEMA || s.leakhunt_summary == 0 {
            return Err(Error::input(
                path,
                Position::Whole,
                format!(
                    "heap summary schema {} is not one this leakhunt understands ({SUMMARY_SCHEMA}); upgrade leakhunt",
                    s.leakhunt_summary
                ),
            ));
        }
        Ok(s)
    }

    /// The heap summary it stands for, as if `dump` (the removed dump's path) had been read,
    /// with the reader's problems as lines.
    pub fn into_heap_summary(self, dump: PathBuf) -> (HeapSummary, Vec<String>) {
        let name = display_name(&dump);
        let problems = self
            .problems
            .into_iter()
            .map(|p| format!("{name}: {p}"))
            .collect();
        let summary = HeapSummary {
            diagnostics: Diagnostics::new(&dump),
            path: dump,
            format: self.format.unwrap_or(HeapFormat::Cruby),
            ruby_version: self.ruby_version,
            histogram: self.histogram,
            alloc_sites: self.alloc_sites,
            data_types: self.data_types,
            objects: self.objects,
            slot_bytes: self.slot_bytes,
        };
        (summary, problems)
    }

    /// The file's bytes (JSON, [`SUMMARY_SCHEMA`] first); the caller writes them privately.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::Run(format!("cannot encode a heap summary: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(dump: &[u8], dir: &Path) -> HeapSummary {
        let path = dir.join("heap-001.json");
        std::fs::write(&path, dump).unwrap();
        super::super::summarize(&path, crate::detect::Kind::CrubyDump).unwrap()
    }

    #[test]
    fn a_summary_read_back_stands_for_its_dump_with_the_dump_s_problems_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let dump = b"{\"address\":\"0x1\", \"type\":\"OBJECT\", \"class\":\"0x9\", \"memsize\":40}\n\
                     {\"address\":\"0x9\", \"type\":\"CLASS\", \"name\":\"Invoice\", \"memsize\":400}\n\
                     not json\n";
        let read = summary_of(dump, dir.path());
        assert_eq!(read.diagnostics.lines().len(), 1, "{:?}", read.diagnostics);
        let saved = RoundSummary::of("heap-001.json.zst", &read);
        assert!(saved.problems[0].starts_with("1 "), "{:?}", saved.problems);
        let file = dir.path().join("summary-001.json");
        std::fs::write(&file, saved.to_bytes().unwrap()).unwrap();
        assert!(
            std::fs::read(&file)
                .unwrap()
                .starts_with(b"{\"leakhunt_summary\":1,")
        );

        let moved = PathBuf::from("/elsewhere/heap-001.json.zst");
        let (back, problems) = RoundSummary::load(&file)
            .unwrap()
            .into_heap_summary(moved.clone());
        assert_eq!(back.path, moved);
        assert_eq!(
            (&back.histogram, back.objects, back.format),
            (&read.histogram, read.objects, read.format)
        );
        let original = read.diagnostics.lines()[0].clone();
        let tail = original.split_once(": ").unwrap().1;
        assert_eq!(problems, [format!("/elsewhere/heap-001.json.zst: {tail}")]);
    }

    /// A 3.2+ dump's slot total is written down and read back (the unaccounted-memory rule
    /// needs it when the dump is gone); a summary written without it reads as `None`.
    #[test]
    fn the_slot_total_of_a_3_3_dump_survives_the_summary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dump = b"{\"address\":\"0x1\", \"type\":\"OBJECT\", \"slot_size\":80, \"class\":\"0x9\", \"memsize\":80}\n\
                     {\"address\":\"0x9\", \"type\":\"CLASS\", \"slot_size\":160, \"name\":\"Invoice\", \"memsize\":400}\n";
        let read = summary_of(dump, dir.path());
        assert_eq!(read.slot_bytes, Some(240));
        let file = dir.path().join("summary-001.json");
        let saved = RoundSummary::of("heap-001.json.zst", &read);
        std::fs::write(&file, saved.to_bytes().unwrap()).unwrap();
        let (back, _) = RoundSummary::load(&file)
            .unwrap()
            .into_heap_summary(dir.path().join("heap-001.json.zst"));
        assert_eq!(back.slot_bytes, Some(240));

        std::fs::write(&file, b"{\"leakhunt_summary\":1, \"objects\":2}").unwrap();
        let (old, _) = RoundSummary::load(&file)
            .unwrap()
            .into_heap_summary(dir.path().join("heap-001.json.zst"));
        assert_eq!(old.slot_bytes, None);
    }

    #[test]
    fn a_newer_or_missing_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        for (text, says) in [
            (&b"{\"leakhunt_summary\":2}"[..], "upgrade leakhunt"),
            (b"{\"objects\":3}", "schema 0"),
            (b"{\"leakhunt_summary\":1,", "EOF"),
        ] {
            let file = dir.path().join("summary-001.json");
            std::fs::write(&file, text).unwrap();
            let e = RoundSummary::load(&file).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("summary-001.json"), "{e}");
        }
    }
}
