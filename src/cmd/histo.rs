//! `leakhunt histo DUMP [AFTER]`: the class histogram of a heap dump of either format, or the
//! difference between two, in histo.rb's `%10d %30s %d` layout or as JSON.
//!
//! Stage: command. Reads through `heap::histogram_of` (CRuby or Rubinius by content), prints
//! the report on stdout and soft problems on stderr.

use crate::cli::{Format, HistoArgs};
use crate::cmd::{emit_json, emit_report, warn_diagnostics};
use crate::error::{Result, exit};
use crate::heap::histogram::{ClassRow, DiffRow, DiffStatus, Histogram};
use crate::heap::{HistogramRead, histogram_of};
use serde::Serialize;
use std::path::Path;

/// Version of the JSON layouts below.
pub const SCHEMA: u32 = 1;

#[derive(Serialize)]
struct HistogramJson<'a> {
    schema: u32,
    dump: &'a Path,
    objects: u64,
    total_count: i64,
    total_bytes: i64,
    /// Sorted as the text table: descending count, ties in first-seen order.
    rows: Vec<&'a ClassRow>,
}

#[derive(Serialize)]
struct DiffJson<'a> {
    schema: u32,
    before: &'a Path,
    after: &'a Path,
    before_objects: u64,
    after_objects: u64,
    /// AFTER − BEFORE by class name, descending count delta; `status` says how the row came
    /// about (`changed`, `new`, `vanished`).
    rows: Vec<&'a DiffRow>,
}

pub fn run(args: HistoArgs) -> Result<i32> {
    let first = read(&args.dump)?;
    let Some(after_path) = &args.after else {
        let h = &first.histogram;
        match args.format {
            Format::Text => emit_report(|out| h.write_histo_rb(out))?,
            Format::Json => emit_json(&HistogramJson {
                schema: SCHEMA,
                dump: &args.dump,
                objects: first.objects,
                total_count: h.total_count(),
                total_bytes: h.total_bytes(),
                rows: h.sorted(),
            })?,
        }
        return Ok(exit::OK);
    };
    let after = read(after_path)?;
    let diff = Histogram::diff(&first.histogram, &after.histogram);
    match args.format {
        Format::Text => emit_report(|out| diff.write_histo_rb(out, args.histo_rb))?,
        Format::Json => emit_json(&DiffJson {
            schema: SCHEMA,
            before: &args.dump,
            after: after_path,
            before_objects: first.objects,
            after_objects: after.objects,
            rows: diff
                .rows
                .iter()
                .filter(|r| !(args.histo_rb && r.status == DiffStatus::Vanished))
                .collect(),
        })?,
    }
    Ok(exit::OK)
}

fn read(path: &Path) -> Result<HistogramRead> {
    let read = histogram_of(path)?;
    warn_diagnostics(&read.diagnostics);
    Ok(read)
}
