//! `leakhunt diff A B [C]`: objects of B that were not in A (and, with C, are still in C), by
//! type and allocation site and by class: heapy's diff, over CRuby dumps.
//!
//! Stage: command. Computation in `heap::cruby::diff`, rendering in `report::diff`.

use crate::cli::{DiffArgs, Format};
use crate::cmd::{emit_json, emit_report, require_cruby_dump, warn_diagnostics};
use crate::error::{Result, exit};
use crate::heap::cruby::diff::diff;
use crate::report;

pub fn run(args: DiffArgs) -> Result<i32> {
    let mut paths = vec![&args.a, &args.b];
    paths.extend(args.c.as_ref());
    for p in &paths {
        require_cruby_dump(p, "diff")?;
    }
    let d = diff(&args.a, &args.b, args.c.as_deref())?;
    for input in [Some(&d.a), Some(&d.b), d.c.as_ref()].into_iter().flatten() {
        warn_diagnostics(&input.diagnostics);
    }
    let top = args.top.max(1);
    match args.format {
        Format::Json => emit_json(&report::diff::json(&d, top))?,
        Format::Text => emit_report(|out| report::diff::write_text(out, &d, top))?,
    }
    Ok(exit::OK)
}
