//! `leakhunt histo DUMP [AFTER]`: the class histogram of a heap dump of either format, or the
//! difference between two, in histo.rb's `%10d %30s %d` layout or as JSON.
//!
//! Stage: command. Reads through `heap::histogram_of` (CRuby or Rubinius by content), prints
//! the report (JSON layouts in `report::histo`) on stdout and soft problems on stderr.

use crate::cli::{Format, HistoArgs};
use crate::cmd::{emit_json, emit_report, warn_diagnostics};
use crate::error::{Result, exit};
use crate::heap::histogram::{DiffStatus, Histogram};
use crate::heap::{HistogramRead, histogram_of};
use crate::report;
use crate::report::histo::{DiffJson, HistogramJson};
use std::path::Path;

pub fn run(args: HistoArgs) -> Result<i32> {
    let first = read(&args.dump)?;
    let Some(after_path) = &args.after else {
        let h = &first.histogram;
        match args.format {
            Format::Text => emit_report(|out| h.write_histo_rb(out))?,
            Format::Json => emit_json(&HistogramJson {
                schema: report::histo::SCHEMA,
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
            schema: report::histo::SCHEMA,
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
