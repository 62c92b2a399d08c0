//! `leakhunt retainers DUMP --class NAME | --address 0xADDR`: why objects are alive, as
//! shortest paths from GC roots (grouped for a class).
//!
//! Stage: command. Computation in `heap::cruby::retainers`, rendering in `report::retainers`.

use crate::cli::{Format, RetainersArgs};
use crate::cmd::{emit_json, emit_report, require_cruby_dump, warn_diagnostics};
use crate::error::{Error, Result, exit};
use crate::heap::cruby::retainers::{for_address, for_class, parse_address};
use crate::report;
use serde::Serialize;
use std::io::{self, Write};

pub fn run(args: RetainersArgs) -> Result<i32> {
    require_cruby_dump(&args.dump, "retainers")?;
    if let Some(text) = &args.address {
        let address = parse_address(text).ok_or_else(|| {
            Error::Usage(format!(
                "`{text}` is not an address (hexadecimal, e.g. 0x7f3a2b1c0d08)"
            ))
        })?;
        let r = for_address(&args.dump, address)?;
        warn_diagnostics(&r.diagnostics);
        emit(args.format, &r, |out| {
            report::retainers::write_address(out, &r)
        })?;
    } else {
        let class = args.class.as_deref().unwrap_or_default();
        let r = for_class(&args.dump, class, args.top.max(1))?;
        warn_diagnostics(&r.diagnostics);
        emit(args.format, &r, |out| {
            report::retainers::write_class(out, &r)
        })?;
    }
    Ok(exit::OK)
}

/// The report as JSON (with the schema number) or as text.
fn emit<T: Serialize>(
    format: Format,
    report: &T,
    text: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    match format {
        Format::Json => emit_json(&report::retainers::Json::new(report)),
        Format::Text => emit_report(text),
    }
}
