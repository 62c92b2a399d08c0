//! The correlator: lines up Ruby class growth, native leak sites, the FFI inventory and wrapper
//! lifecycles, and says what leaks, why, and what to change — ranked [`Finding`]s with their
//! evidence, plus the tables and time series the report shows.
//!
//! Stage: correlator. Reads only [`crate::evidence::Evidence`]; renderers read the
//! [`Analysis`] ([`analysis`]) it returns. This file runs the rules and merges what they find;
//! the rules live one per file: [`retention`] (Ruby retention), [`release`] (missing release on
//! an FFI wrapper), [`extension`] (native sites inside C extensions: a missing release on an
//! extension class, or the extension leaking on its own), [`native`] (native leaks without a
//! Ruby owner) and [`noise`] (what is left of the native sites); without native evidence,
//! [`unmeasured`] tells a missing release from the wrapper lifecycle alone; [`timeline`] charts
//! the result.

pub mod analysis;
pub mod classes;
pub mod extension;
pub mod extension_calls;
pub mod finding;
pub mod fingerprint;
pub mod names;
pub mod native;
pub mod noise;
pub mod processes;
pub mod release;
pub mod retention;
pub mod sites;
pub mod source_hint;
pub mod timeline;
pub mod unaccounted;
pub mod unmeasured;

use crate::evidence::{Evidence, Origin};
use crate::heap::histogram::Histogram;
pub use analysis::{
    Analysis, ClassGrowthTable, ClassLine, FootprintPoint, InputInfo, LeakRate, NativePoint,
    NativeSiteRow, ProcessLine, ProcessRef, ProcessSummary, ProgramInfo, REPORT_SCHEMA, SiteStatus,
    SnapshotPoint, Timeline, Verdict,
};
pub use finding::{Confidence, Finding, FindingKind};
use finding::{EvidenceItem, Source};
pub use timeline::footprint_slope;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Keep string contents from dumps (quoted text in labels); redacted otherwise.
    pub include_strings: bool,
}

/// Runs every rule over the evidence; with several processes, over each one, and merges what
/// they found ([`processes`]).
pub fn correlate(ev: &Evidence, options: &Options) -> Analysis {
    // A run that read no native report in any process: the wrapper lifecycle alone may tell a
    // missing release then ([`unmeasured`]).
    let no_native = unmeasured::no_native_evidence(ev);
    let unmeasured = no_native.as_ref();
    let main = correlate_one(ev, options, unmeasured);
    if ev.processes.is_empty() {
        return main;
    }
    processes::merge(ev, main, &|e| correlate_one(e, options, unmeasured))
}

/// Runs every rule over one process's evidence; `unmeasured` says why no process of the run
/// has native evidence, when none has.
fn correlate_one(
    ev: &Evidence,
    options: &Options,
    unmeasured: Option<&unmeasured::NoNativeEvidence>,
) -> Analysis {
    // The agent's own objects are not the program's: out of every table, chart and rule.
    let all_series = classes::class_series(&ev.heap);
    let agent_classes = classes::agent_classes(&ev.heap, &all_series);
    let program_series = |series: Vec<classes::ClassSeries>| -> Vec<classes::ClassSeries> {
        series
            .into_iter()
            .filter(|s| !agent_classes.contains(&s.class))
            .collect()
    };
    // Charts show every snapshot; growth is judged once the program stopped loading code.
    let charted = program_series(all_series);
    let series = program_series(classes::class_series(ev.judged_heap()));
    let groups = classes::growth_groups(&series, &|c| retention::growth_holder(ev, c));
    let mut notes = Vec::new();
    if let Some((first, settled)) = ev.loading_at_start() {
        notes.push(format!(
            "the program was still loading code at heap snapshot 1 ({first} features loaded, {settled} by snapshot {}): class growth is judged from snapshot {}",
            ev.settled + 1,
            ev.settled + 1
        ));
    }
    if !ev.footprint.is_empty()
        && ev
            .manifest
            .as_ref()
            .is_some_and(|m| m.backend.name == "leaks")
    {
        notes.push(
            "the footprint includes MallocStackLogging's own records on macOS 13 and later (the \
             program's stderr says \"could not tag MSL-related memory as no_footprint\"): it \
             grows with the live allocations being logged, so it overstates the program's own \
             growth; the native leak sites measure leaks"
                .to_owned(),
        );
    }
    let mut findings = retention::findings(ev, &groups, options.include_strings, &mut notes);
    let sites = sites::site_series(&ev.native);
    let (mut native_findings, native_rows) = native::native_findings(ev, &sites, &mut notes);
    if let Some(no_native) = unmeasured {
        let retained = findings
            .iter()
            .any(|f| f.kind == FindingKind::RubyRetention);
        native_findings.extend(unmeasured::findings(ev, no_native, retained, &mut notes));
    }
    // In one run (a bundle), native memory of instances that are still retained cannot be lost
    // apart from them: one finding. Loose files may come from different runs (the seed's heap
    // dumps and its `leaks` report do): each finding stands on its own.
    let one_run = matches!(ev.origin, Origin::Bundle(_));
    for f in native_findings {
        let head = f.class.as_deref().filter(|_| one_run).and_then(|c| {
            groups
                .iter()
                .find(|g| g.head.class == c || g.members.iter().any(|m| m.class == c))
                .map(|g| g.head.class.as_str())
        });
        match head.and_then(|h| {
            findings
                .iter_mut()
                .find(|r| r.kind == FindingKind::RubyRetention && r.class.as_deref() == Some(h))
        }) {
            Some(retention) if f.kind == FindingKind::MissingRelease => {
                fold_release_into_retention(retention, f)
            }
            _ => findings.push(f),
        }
    }
    findings.sort_by(finding::rank);

    let verdict = if findings.iter().any(|f| f.kind.is_leak()) {
        Verdict::Leak
    } else if ev.heap.len() >= 2 || !ev.native.is_empty() {
        Verdict::NoLeak
    } else {
        Verdict::Inconclusive
    };
    let timeline = timeline::timeline(ev, &charted, &findings, &sites);
    let leak_rate = timeline::leak_rate(ev, &findings, &sites);
    let judged = ev.judged_heap();
    let class_growth = match (judged.first(), judged.last()) {
        (Some(a), Some(b)) if judged.len() >= 2 => {
            let (agent_rows, rows) = Histogram::diff(&a.summary.histogram, &b.summary.histogram)
                .rows
                .into_iter()
                .partition(|r| agent_classes.contains(&r.name));
            Some(ClassGrowthTable {
                from: ev.settled + 1,
                to: ev.heap.len(),
                rows,
                agent_rows,
            })
        }
        _ => None,
    };
    let manifest = ev.manifest.as_ref();
    let mut warnings = ev.warnings.clone();
    if let Some(m) = manifest {
        for w in &m.warnings {
            if !warnings.contains(w) {
                warnings.push(w.clone());
            }
        }
    }
    Analysis {
        schema: REPORT_SCHEMA,
        leakhunt_version: env!("CARGO_PKG_VERSION"),
        verdict,
        input: match &ev.origin {
            Origin::Bundle(p) => InputInfo {
                kind: "bundle",
                paths: vec![p.display().to_string()],
            },
            Origin::Files(ps) => InputInfo {
                kind: "files",
                paths: ps.iter().map(|p| p.display().to_string()).collect(),
            },
        },
        program: manifest.map(|m| ProgramInfo {
            command: m.command.clone(),
            ruby: m.ruby.clone(),
            outcome: m.outcome.clone(),
        }),
        backend: manifest
            .map(|m| m.backend.name.clone())
            .filter(|b| !b.is_empty()),
        heap_snapshots: ev.heap.len(),
        native_snapshots: ev.native.len(),
        duration_seconds: manifest.map(|m| m.duration_seconds).filter(|d| *d > 0.0),
        leak_rate,
        findings,
        class_growth,
        native_sites: native_rows,
        tables_of: None,
        timeline,
        processes: Vec::new(),
        notes,
        warnings,
    }
}

/// The instances a retention finding is about also own native memory whose release is never
/// called: while they are kept alive that memory is held, not lost, so it is one finding —
/// stop keeping them, then release each one.
fn fold_release_into_retention(retention: &mut Finding, release: Finding) {
    retention.evidence.push(EvidenceItem::new(
        Source::Native,
        format!(
            "these instances also hold native memory, released only by an explicit call: {}",
            release.title
        ),
    ));
    retention
        .evidence
        .extend(release.evidence.into_iter().filter(|e| {
            matches!(
                e.source,
                Source::Native | Source::Lifecycle | Source::Wrapper
            )
        }));
    if let (Some(mine), Some(theirs)) = (retention.suggestion.as_mut(), release.suggestion) {
        if let Some(method) = &theirs.method {
            mine.shapes.push(format!(
                "then call `{method}` after the last use of each one, or the native memory leaks instead (see the created-at lines)"
            ));
            mine.method = Some(method.clone());
        }
        mine.locations.extend(theirs.locations);
    }
    retention.native = release.native;
}

#[cfg(test)]
pub(crate) mod tests;
