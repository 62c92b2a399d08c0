//! The `leakhunt diff` output: objects of B that were not in A (and, with C, are still in C),
//! by type and allocation site and by class — as text, or as JSON with a `schema` version.
//!
//! Stage: renderer. Reads a computed [`AddressDiff`]; never parses.

use crate::format::count;
use crate::heap::cruby::diff::{AddressDiff, CAVEAT, ClassCount, DiffInput, DiffKind, SiteGroup};
use serde::Serialize;
use std::io::{self, Write};

/// Version of the JSON layout.
pub const SCHEMA: u32 = 1;

#[derive(Serialize)]
pub struct DiffJson<'a> {
    schema: u32,
    kind: DiffKind,
    caveat: &'static str,
    a: &'a DiffInput,
    b: &'a DiffInput,
    c: Option<&'a DiffInput>,
    objects: u64,
    bytes: u64,
    /// The `--top` largest groups.
    groups: &'a [SiteGroup],
    groups_total: usize,
    classes: &'a [ClassCount],
    classes_total: usize,
}

/// The JSON layout of a diff, its groups and classes cut to the `top` largest.
pub fn json(d: &AddressDiff, top: usize) -> DiffJson<'_> {
    DiffJson {
        schema: SCHEMA,
        kind: d.kind,
        caveat: CAVEAT,
        a: &d.a,
        b: &d.b,
        c: d.c.as_ref(),
        objects: d.objects,
        bytes: d.bytes,
        groups: &d.groups[..d.groups.len().min(top)],
        groups_total: d.groups.len(),
        classes: &d.classes[..d.classes.len().min(top)],
        classes_total: d.classes.len(),
    }
}

pub fn write_text(out: &mut dyn Write, d: &AddressDiff, top: usize) -> io::Result<()> {
    let what = match d.kind {
        DiffKind::Allocated => "allocated: in B, not in A",
        DiffKind::Retained => "retained: in B, not in A, still in C",
    };
    writeln!(
        out,
        "{} objects, {} bytes {what}",
        count(d.objects),
        count(d.bytes)
    )?;
    for (tag, input) in [("A", Some(&d.a)), ("B", Some(&d.b)), ("C", d.c.as_ref())] {
        if let Some(i) = input {
            writeln!(
                out,
                "  {tag}  {}  ({} objects)",
                i.path.display(),
                count(i.objects)
            )?;
        }
    }
    writeln!(out, "Caution: {CAVEAT}.")?;
    writeln!(out)?;
    let shown = d.groups.len().min(top);
    writeln!(
        out,
        "By type and allocation site ({shown} of {} groups):",
        d.groups.len()
    )?;
    writeln!(
        out,
        "{:>12} {:>14}  {:<8}  {:<40}  classes",
        "count", "bytes", "type", "site"
    )?;
    for g in &d.groups[..shown] {
        let site = match (&g.file, g.line) {
            (Some(f), Some(l)) if l > 0 => format!("{f}:{l}"),
            (Some(f), _) => f.clone(),
            _ => "(no allocation info)".to_string(),
        };
        let mut classes: Vec<&str> = g.classes.iter().map(|c| c.class.as_str()).collect();
        if classes.is_empty() {
            classes.push("-");
        }
        writeln!(
            out,
            "{:>12} {:>14}  {:<8}  {:<40}  {}",
            count(g.count),
            count(g.bytes),
            g.obj_type,
            site,
            classes.join(", ")
        )?;
    }
    if shown < d.groups.len() {
        let rest: u64 = d.groups[shown..].iter().map(|g| g.count).sum();
        writeln!(
            out,
            "  … {} more groups with {} objects (--top N shows more)",
            d.groups.len() - shown,
            count(rest)
        )?;
    }
    writeln!(out)?;
    let shown = d.classes.len().min(top);
    writeln!(out, "By class ({shown} of {} classes):", d.classes.len())?;
    writeln!(out, "{:>12} {:>14}  class", "count", "bytes")?;
    for c in &d.classes[..shown] {
        writeln!(
            out,
            "{:>12} {:>14}  {}",
            count(c.count),
            count(c.bytes),
            c.class
        )?;
    }
    Ok(())
}
