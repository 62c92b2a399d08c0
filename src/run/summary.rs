//! The short summary `leakhunt run` prints of a bundle: where it is, what happened, and what each
//! snapshot holds (heap objects, native leaks, files), plus the wrapper classes' lifecycle counts.
//!
//! Stage: a renderer over the bundle (it reads only the bundle, like `analyze`). The correlator's
//! full report replaces it as the last step of `cmd::run`.

use crate::bundle::{Manifest, NativeRef, Sidecar, Snapshot};
use crate::cmd::thousands;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes the summary of the bundle at `dir`.
pub fn write(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let manifest = Manifest::load(dir)?;
    let io = |e: std::io::Error| Error::Run(format!("cannot write the summary: {e}"));
    writeln!(out, "bundle    {}", dir.display()).map_err(io)?;
    writeln!(out, "command   {}", manifest.command.join(" ")).map_err(io)?;
    let tool = manifest
        .backend
        .version
        .as_deref()
        .or(manifest.backend.tool.as_deref())
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    writeln!(out, "backend   {}{tool}", manifest.backend.name).map_err(io)?;
    if let Some(ruby) = &manifest.ruby {
        writeln!(out, "ruby      {ruby}").map_err(io)?;
    }
    writeln!(
        out,
        "outcome   {} — {}",
        manifest.outcome.kind, manifest.outcome.detail
    )
    .map_err(io)?;
    if let Some(line) = footprint_line(dir, &manifest) {
        writeln!(out, "footprint {line}").map_err(io)?;
    }
    writeln!(out).map_err(io)?;
    writeln!(
        out,
        "{:>3}  {:<9} {:>7}  {:>13}  {:<28}  files",
        "#", "reason", "t (s)", "heap objects", "native leaks"
    )
    .map_err(io)?;
    for s in &manifest.snapshots {
        writeln!(
            out,
            "{:>3}  {:<9} {:>7.1}  {:>13}  {:<28}  {}",
            s.index,
            s.reason,
            s.t,
            heap_objects(dir, s),
            native_totals(dir, s),
            files(s)
        )
        .map_err(io)?;
    }
    if manifest.snapshots.is_empty() {
        writeln!(out, "  (no snapshot was taken)").map_err(io)?;
    }
    if let Some(sidecar) = latest_sidecar(dir, &manifest) {
        write_lifecycle(&sidecar, out).map_err(io)?;
    }
    for w in &manifest.warnings {
        writeln!(out, "warning: {w}").map_err(io)?;
    }
    Ok(())
}

fn footprint_line(dir: &Path, manifest: &Manifest) -> Option<String> {
    let name = manifest.main_process()?.footprint.as_ref()?;
    let bytes = std::fs::read(dir.join(name)).ok()?;
    let mut diag = crate::diag::Diagnostics::new(name);
    let samples = crate::bundle::parse_footprint(&bytes, &mut diag);
    let first = samples.first()?;
    let last = samples.last()?;
    let peak = samples.iter().map(|s| s.bytes).max()?;
    Some(format!(
        "{} → {} (peak {}, {} samples)",
        super::footprint::human_bytes(first.bytes),
        super::footprint::human_bytes(last.bytes),
        super::footprint::human_bytes(peak),
        samples.len()
    ))
}

fn heap_objects(dir: &Path, s: &Snapshot) -> String {
    let Some(heap) = &s.heap else {
        return "-".into();
    };
    match crate::heap::summarize(&dir.join(heap)) {
        Ok(summary) => thousands(summary.objects),
        Err(_) => "n/a".into(),
    }
}

/// "1,234,567 B in 89" (bytes and blocks of every leak record of the snapshot's report).
fn native_totals(dir: &Path, s: &Snapshot) -> String {
    let Some(native) = &s.native else {
        return "-".into();
    };
    match read_native(dir, native) {
        Some(Ok(reports)) => {
            let bytes: u64 = reports.iter().map(|r| r.total_bytes()).sum();
            let blocks: u64 = reports.iter().map(|r| r.total_blocks()).sum();
            format!("{} B in {}", thousands(bytes), thousands(blocks))
        }
        Some(Err(_)) => "n/a".into(),
        None => "none found".into(),
    }
}

/// The native reports of one snapshot; `None` when its part of the log is empty (no leak).
fn read_native(dir: &Path, native: &NativeRef) -> Option<Result<Vec<crate::native::NativeReport>>> {
    let path = dir.join(&native.file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return Some(Err(Error::io(&path, e))),
    };
    let start = native.start.unwrap_or(0) as usize;
    let end = native
        .end
        .map_or(bytes.len(), |e| e as usize)
        .min(bytes.len());
    let slice = bytes.get(start..end).unwrap_or_default();
    if slice.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let kind = crate::detect::detect_bytes(slice)?;
    Some(crate::native::parse_bytes(&path, kind, slice))
}

fn files(s: &Snapshot) -> String {
    let mut names: Vec<String> = [&s.heap, &s.sidecar, &s.maps]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if let Some(n) = &s.native {
        names.push(match (n.start, n.end) {
            (Some(a), Some(b)) => format!("{}[{a}..{b}]", n.file),
            _ => n.file.clone(),
        });
    }
    if !s.errors.is_empty() {
        names.push(format!("({})", s.errors.join("; ")));
    }
    names.join(" ")
}

fn latest_sidecar(dir: &Path, manifest: &Manifest) -> Option<Sidecar> {
    let name = manifest
        .snapshots
        .iter()
        .rev()
        .find_map(|s| s.sidecar.as_ref())?;
    let bytes = std::fs::read(dir.join(name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_lifecycle(sidecar: &Sidecar, out: &mut dyn Write) -> std::io::Result<()> {
    if !sidecar.ffi.is_empty() {
        writeln!(out)?;
        for m in &sidecar.ffi {
            let libs: Vec<String> = m
                .libraries
                .iter()
                .map(|l| match &l.path {
                    Some(p) => format!("{} ({p})", l.name),
                    None => l.name.clone(),
                })
                .collect();
            writeln!(
                out,
                "FFI {} → {}: {} function(s)",
                m.name,
                libs.join(", "),
                m.functions.len()
            )?;
        }
    }
    let mut rows: Vec<_> = sidecar.lifecycle.iter().filter(|l| l.created > 0).collect();
    rows.sort_by_key(|l| std::cmp::Reverse(l.created.saturating_sub(l.released)));
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<28} {:>12} {:>12}  release methods / created at",
        "wrapper class", "created", "released"
    )?;
    for l in rows.iter().take(8) {
        let site = l
            .created_at
            .first()
            .map(|s| format!(" / {}:{} ×{}", s.file, s.line, thousands(s.count)))
            .unwrap_or_default();
        writeln!(
            out,
            "{:<28} {:>12} {:>12}  {}{site}",
            l.class,
            thousands(l.created),
            thousands(l.released),
            if l.release_methods.is_empty() {
                "-".to_owned()
            } else {
                l.release_methods.join(", ")
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Outcome, Snapshot};

    #[test]
    fn a_bundle_without_snapshots_still_summarizes() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            leakhunt_bundle: 1,
            command: vec!["early.rb".into()],
            outcome: Outcome {
                kind: "exited".into(),
                code: Some(3),
                detail: "exited with status 3 after 0 snapshot(s)".into(),
                ..Outcome::default()
            },
            snapshots: vec![Snapshot {
                index: 1,
                reason: "exit".into(),
                errors: vec!["the program ended during the snapshot".into()],
                ..Snapshot::default()
            }],
            warnings: vec!["something".into()],
            ..Manifest::default()
        };
        m.save(dir.path()).unwrap();
        let mut out = Vec::new();
        write(dir.path(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("outcome   exited — exited with status 3"),
            "{text}"
        );
        assert!(
            text.contains("(the program ended during the snapshot)"),
            "{text}"
        );
        assert!(text.contains("warning: something"), "{text}");
    }
}
