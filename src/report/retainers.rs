//! The `leakhunt retainers` output: why objects are alive, as shortest paths from GC roots
//! (grouped for a class) — as text, or as JSON with a `schema` version.
//!
//! Stage: renderer. Reads computed retainer paths; never parses.

use crate::format::count;
use crate::heap::cruby::retainers::{
    AddressRetainers, ClassRetainers, EdgeKind, RetainerGroup, RetainerStep,
};
use serde::Serialize;
use std::io::{self, Write};

/// Version of the JSON layouts.
pub const SCHEMA: u32 = 1;

#[derive(Serialize)]
pub struct Json<'a, T: Serialize> {
    schema: u32,
    #[serde(flatten)]
    report: &'a T,
}

impl<'a, T: Serialize> Json<'a, T> {
    pub fn new(report: &'a T) -> Json<'a, T> {
        Json {
            schema: SCHEMA,
            report,
        }
    }
}

pub fn write_class(out: &mut dyn Write, r: &ClassRetainers) -> io::Result<()> {
    let dump = r.dump.display();
    if r.instances == 0 {
        writeln!(out, "No object of class `{}` in {dump}.", r.class)?;
        if !r.similar.is_empty() {
            writeln!(out, "Classes with similar names: {}", r.similar.join(", "))?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{} {} in {dump}: {} reachable from a root, {} not.",
        count(r.instances),
        r.class,
        count(r.reachable),
        count(r.unreachable)
    )?;
    if !r.groups.is_empty() {
        writeln!(
            out,
            "Shortest paths from a root, grouped ({} of {} groups):",
            r.groups.len(),
            r.groups_total
        )?;
        for g in &r.groups {
            writeln!(out, "{:>12} {}{}", count(g.count), r.class, path_text(g))?;
        }
    }
    if r.unreachable > 0 {
        let why = if r.has_roots {
            "garbage not yet collected, or held through references the dump does not record"
        } else {
            "the dump has no ROOT lines; a partial `since:` dump has none"
        };
        writeln!(
            out,
            "No path from a root: {} instances ({why}).",
            count(r.unreachable)
        )?;
    }
    Ok(())
}

pub fn write_address(out: &mut dyn Write, r: &AddressRetainers) -> io::Result<()> {
    let dump = r.dump.display();
    if !r.found {
        return writeln!(out, "No object at 0x{:x} in {dump}.", r.address);
    }
    let mut what = vec![r.obj_type.unwrap_or("?").to_string()];
    if let Some(site) = &r.site {
        what.push(format!("allocated at {site}"));
    }
    writeln!(
        out,
        "0x{:x} {} ({}) in {dump}",
        r.address,
        r.class.as_deref().unwrap_or("?"),
        what.join(", ")
    )?;
    match &r.path {
        Some(p) => {
            for s in &p.steps {
                writeln!(out, "  <- {}", step_text(s))?;
            }
            if p.elided_steps > 0 {
                writeln!(out, "  <- … {} more steps", count(p.elided_steps))?;
            }
            writeln!(out, "  <- ROOT {}", p.root)
        }
        None if r.has_roots => writeln!(
            out,
            "  no path from a root (garbage not yet collected, or held through references the dump does not record)"
        ),
        None => writeln!(
            out,
            "  no path: the dump has no ROOT lines (a partial `since:` dump?)"
        ),
    }
}

/// ` <- Array 0x7f… (allocated at leak.rb:28, 5 elements) <- ROOT global_tbl`.
fn path_text(g: &RetainerGroup) -> String {
    let mut s = String::new();
    for step in &g.steps {
        s.push_str(" <- ");
        s.push_str(&step_text(step));
    }
    if g.elided_steps > 0 {
        s.push_str(&format!(" <- … {} more steps", count(g.elided_steps)));
    }
    s.push_str(" <- ROOT ");
    s.push_str(&g.root);
    s
}

fn step_text(step: &RetainerStep) -> String {
    let mut head = step.class.clone();
    if let Some(name) = &step.name {
        head.push(' ');
        head.push_str(name);
    }
    if step.repeat > 1 {
        head.push_str(&format!(" ×{}", count(step.repeat)));
    }
    let mut details = Vec::new();
    if step.distinct > step.repeat {
        details.push(format!(
            "{} objects, e.g. 0x{:x}",
            count(step.distinct),
            step.address
        ));
    } else {
        head.push_str(&format!(" 0x{:x}", step.address));
    }
    if step.edge == EdgeKind::Class {
        details.push("holds it as its class".to_string());
    }
    if let Some(site) = &step.site {
        details.push(format!("allocated at {site}"));
    }
    if let Some(len) = step.length {
        let unit = match step.obj_type {
            "ARRAY" => "elements",
            "HASH" => "entries",
            _ => "bytes",
        };
        details.push(format!("{} {unit}", count(len)));
    }
    if details.is_empty() {
        head
    } else {
        format!("{head} ({})", details.join(", "))
    }
}
