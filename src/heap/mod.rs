//! Heap evidence: readers for CRuby `ObjectSpace.dump_all` JSON lines and Rubinius
//! `RBXHEAPDUMP` binary dumps, and what is computed from them (class histograms, address diffs,
//! retainer paths).
//!
//! Stage: parsers (bytes in, records out). Nothing here prints; commands and renderers do.

pub mod cruby;
pub mod histogram;
pub mod round_summary;
pub mod rubinius;

use crate::detect::Kind;
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use histogram::Histogram;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeapFormat {
    Cruby,
    Rubinius,
}

/// Where instances of a class were allocated (CRuby dumps made with allocation tracing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocSite {
    pub class: String,
    pub file: String,
    pub line: u32,
    pub count: u64,
    pub bytes: u64,
}

/// Instances of a class that wrap a C struct (CRuby `T_DATA` objects with a typed
/// `rb_data_type_t`): the struct's name as the C extension gave it (`"struct":"ringbuf"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataType {
    pub class: String,
    pub struct_name: String,
    pub count: u64,
    pub bytes: u64,
}

/// One heap snapshot reduced to what the correlator needs: the class histogram by name and,
/// when the dump carries allocation info, the allocation sites per class.
#[derive(Debug, Clone, Serialize)]
pub struct HeapSummary {
    pub path: PathBuf,
    pub format: HeapFormat,
    /// Ruby version as far as the dump tells it (fingerprints in FORMATS.md §2.4), e.g. "≥ 3.1".
    pub ruby_version: Option<String>,
    /// Rows merged by class name, first-seen order.
    pub histogram: Histogram,
    /// Allocation sites, largest count first; empty when the dump has no allocation info.
    pub alloc_sites: Vec<AllocSite>,
    /// Named classes whose instances wrap a typed C struct, by class then struct name (CRuby).
    pub data_types: Vec<DataType>,
    /// Objects counted (ROOT and SHAPE lines excluded).
    pub objects: u64,
    /// The bytes of the heap slots those objects occupy, part of their `memsize`, when the dump
    /// says each object's slot size (CRuby 3.2+, variable-width slots); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_bytes: Option<u64>,
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

/// A histogram as read from one dump, with what went wrong on the way.
#[derive(Debug, Clone)]
pub struct HistogramRead {
    /// CRuby: keyed by class name. Rubinius: keyed by class object (names may repeat).
    pub histogram: Histogram,
    /// Objects counted (ROOT and SHAPE lines excluded).
    pub objects: u64,
    pub diagnostics: Diagnostics,
}

/// The class histogram of a heap dump of either format (`leakhunt histo`).
pub fn histogram_of(path: &Path) -> Result<HistogramRead> {
    match crate::detect::detect_path(path)? {
        Kind::CrubyDump => cruby::histogram(path),
        Kind::RubiniusDump => rubinius::histogram(path),
        other => Err(not_a_heap_dump(path, other)),
    }
}

fn not_a_heap_dump(path: &Path, kind: Kind) -> Error {
    Error::input(
        path,
        Position::Whole,
        format!("a {}, not a heap dump", kind.describe()),
    )
}

/// Reads a heap dump of either format into a [`HeapSummary`]; `kind` is what
/// [`crate::detect`] found the file to be.
pub fn summarize(path: &Path, kind: Kind) -> Result<HeapSummary> {
    match kind {
        Kind::CrubyDump => cruby::summarize(path),
        Kind::RubiniusDump => rubinius::summarize(path),
        other => Err(not_a_heap_dump(path, other)),
    }
}
