//! The correlator: lines up Ruby class growth, native leak sites, the FFI inventory and wrapper
//! lifecycles, and says what leaks, why, and what to change — ranked [`Finding`]s with their
//! evidence, plus the tables and time series the report shows.
//!
//! Stage: correlator. Reads only [`crate::evidence::Evidence`]; renderers read the
//! [`Analysis`] it returns. The rules live one per file: [`retention`] (Ruby retention),
//! [`release`] (missing release on an FFI wrapper), and in this file the native leaks without a
//! Ruby owner and the runtime noise, which are what is left of the native sites.

pub mod classes;
pub mod finding;
pub mod fingerprint;
pub mod names;
pub mod release;
pub mod retention;
pub mod sites;
pub mod source_hint;

use crate::bundle::Outcome;
use crate::evidence::{Evidence, Origin};
use crate::heap::histogram::{DiffRow, Histogram};
pub use finding::{Confidence, Finding, FindingKind};
use finding::{EvidenceItem, NativeOwner, Source, Suggestion};
use release::Attribution;
use serde::Serialize;
use sites::SiteSeries;

/// Version of the JSON report (`schema` key); bumped on incompatible changes.
pub const REPORT_SCHEMA: u32 = 1;

/// Native-leak findings shown one by one; further unowned sites are counted in one line.
const MAX_NATIVE_FINDINGS: usize = 5;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Keep string contents from dumps (quoted text in labels); redacted otherwise.
    pub include_strings: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At least one leak finding.
    Leak,
    /// Evidence over time, and nothing leaks.
    NoLeak,
    /// Not enough evidence to tell (no snapshot pair, no native report).
    Inconclusive,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    /// "bundle" or "files".
    pub kind: &'static str,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgramInfo {
    pub command: Vec<String>,
    pub ruby: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LeakRate {
    pub bytes_per_second: f64,
    /// "native growth" or "footprint slope".
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassGrowthTable {
    /// 1-based heap snapshots compared (first and last).
    pub from: usize,
    pub to: usize,
    /// histo.rb diff rows: count and bytes deltas, descending.
    pub rows: Vec<DiffRow>,
    /// Rows left out of `rows` (and of the charts and the findings) because leakhunt's own
    /// agent made those objects: see [`classes::agent_classes`].
    pub agent_rows: Vec<DiffRow>,
}

/// Agent rows named one by one in the note; the rest are counted.
const AGENT_ROWS_NAMED: usize = 5;

impl ClassGrowthTable {
    /// The one line a report shows about the rows it left out, when it left any out.
    pub fn left_out_note(&self) -> Option<String> {
        if self.agent_rows.is_empty() {
            return None;
        }
        let mut named: Vec<String> = self
            .agent_rows
            .iter()
            .take(AGENT_ROWS_NAMED)
            .map(|r| format!("{} {}", r.name, signed(r.count)))
            .collect();
        if self.agent_rows.len() > AGENT_ROWS_NAMED {
            named.push(format!("{} more", self.agent_rows.len() - AGENT_ROWS_NAMED));
        }
        Some(format!(
            "{} left out: objects of leakhunt's own agent ({}), not the program's; the charts and findings leave them out too",
            quantity(self.agent_rows.len() as i64, "row"),
            named.join(", ")
        ))
    }
}

/// What a native site turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteStatus {
    /// Part of a missing-release finding.
    MissingRelease,
    /// A native leak without a Ruby owner.
    Leak,
    /// Owned by a wrapper whose finalizer releases it.
    Finalized,
    /// The Ruby runtime's own allocations.
    Runtime,
    /// Did not grow between snapshots.
    Static,
    /// Only reachable through another leaked block.
    Secondary,
    /// An unowned site past the ones shown as findings.
    Minor,
}

#[derive(Debug, Clone, Serialize)]
pub struct NativeSiteRow {
    pub function: String,
    pub library: Option<String>,
    pub status: SiteStatus,
    /// The class blamed for it, when there is one.
    pub owner: Option<String>,
    pub blocks: Vec<u64>,
    pub bytes: Vec<u64>,
    pub delta_blocks: i64,
    pub delta_bytes: i64,
    /// Site and frames outward, outermost first.
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FootprintPoint {
    pub t: f64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPoint {
    /// 1-based position.
    pub index: usize,
    pub t: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassLine {
    pub class: String,
    pub counts: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NativePoint {
    pub index: usize,
    pub t: Option<f64>,
    /// All leaked bytes the report counts (its own summary when it lists fewer).
    pub leaked_bytes: u64,
    /// Bytes of the sites that are leak findings.
    pub finding_bytes: u64,
}

/// Series over time, for charts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub footprint: Vec<FootprintPoint>,
    pub heap_snapshots: Vec<SnapshotPoint>,
    pub classes: Vec<ClassLine>,
    pub native: Vec<NativePoint>,
}

/// Everything the report shows; serialized as is for `--format json`.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub schema: u32,
    pub leakhunt_version: &'static str,
    pub verdict: Verdict,
    pub input: InputInfo,
    pub program: Option<ProgramInfo>,
    pub backend: Option<String>,
    pub heap_snapshots: usize,
    pub native_snapshots: usize,
    pub duration_seconds: Option<f64>,
    pub leak_rate: Option<LeakRate>,
    pub findings: Vec<Finding>,
    pub class_growth: Option<ClassGrowthTable>,
    pub native_sites: Vec<NativeSiteRow>,
    pub timeline: Timeline,
    /// What was looked at and set aside (finalizer-released wrappers, …).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

impl Analysis {
    pub fn leak_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.kind.is_leak())
    }
}

/// Runs every rule over the evidence.
pub fn correlate(ev: &Evidence, options: &Options) -> Analysis {
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
    let groups = classes::growth_groups(&series, &|c| retention::main_container(ev, c));
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
    let (native_findings, native_rows) = native_findings(ev, &sites, &mut notes);
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
    let timeline = timeline(ev, &charted, &findings, &sites);
    let leak_rate = leak_rate(ev, &findings, &sites);
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
        timeline,
        notes,
        warnings,
    }
}

/// What each native site is, and the findings made of them.
fn native_findings(
    ev: &Evidence,
    sites: &[SiteSeries],
    notes: &mut Vec<String>,
) -> (Vec<Finding>, Vec<NativeSiteRow>) {
    let over_time = ev.native.len() >= 2;
    let mut statuses: Vec<(SiteStatus, Option<String>)> = Vec::with_capacity(sites.len());
    // Missing-release blames grouped by class: (blame, site indexes).
    let mut blamed: Vec<(release::Blame, Vec<usize>)> = Vec::new();
    let mut unowned: Vec<(usize, Vec<EvidenceItem>, Confidence)> = Vec::new();
    let mut finalized: Vec<(String, String, usize)> = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let status = if site.is_runtime() {
            SiteStatus::Runtime
        } else if over_time && !site.is_growing() {
            SiteStatus::Static
        } else if site.kinds.iter().all(|k| !k.is_primary()) {
            SiteStatus::Secondary
        } else {
            match release::attribute(ev, site) {
                Attribution::Wrapper(b) => {
                    let class = b.class.clone();
                    match blamed.iter_mut().find(|(x, _)| x.class == b.class) {
                        Some((_, idx)) => idx.push(i),
                        None => blamed.push((b, vec![i])),
                    }
                    statuses.push((SiteStatus::MissingRelease, Some(class)));
                    continue;
                }
                Attribution::Finalized { class, detail } => {
                    finalized.push((class.clone(), detail, i));
                    statuses.push((SiteStatus::Finalized, Some(class)));
                    continue;
                }
                Attribution::Module {
                    evidence,
                    confidence,
                } => {
                    unowned.push((i, evidence, confidence));
                    SiteStatus::Leak
                }
                Attribution::Unowned => {
                    unowned.push((i, Vec::new(), Confidence::High));
                    SiteStatus::Leak
                }
            }
        };
        statuses.push((status, None));
    }

    let mut findings = Vec::new();
    for (blame, idx) in blamed {
        findings.push(missing_release(
            &blame,
            &idx.iter().map(|&i| &sites[i]).collect::<Vec<_>>(),
            over_time,
        ));
    }
    unowned.sort_by(|a, b| {
        measure(&sites[b.0], over_time)
            .0
            .cmp(&measure(&sites[a.0], over_time).0)
    });
    for (n, (i, evidence, confidence)) in unowned.into_iter().enumerate() {
        if n >= MAX_NATIVE_FINDINGS {
            statuses[i].0 = SiteStatus::Minor;
            continue;
        }
        findings.push(native_leak(&sites[i], evidence, confidence, over_time));
    }
    for (class, detail, i) in &finalized {
        notes.push(format!(
            "{} ({}) belongs to {class}, whose native memory is {detail}: not a missing release",
            sites[*i].key.function,
            sites[*i].library().unwrap_or("?")
        ));
    }
    // A single report that lists fewer leaks than it counts (an excerpt, a cut report).
    let unlisted = match ev.native.as_slice() {
        [one] => one.report.unlisted().zip(one.report.summary),
        _ => None,
    };
    if let Some(((blocks, bytes), summary)) = unlisted {
        for f in findings.iter_mut().filter(|f| f.native.is_some()) {
            f.title.push_str(&format!(
                " (the report counts {} leaks, {} bytes in all)",
                count(summary.leaks as i64),
                count(summary.bytes as i64)
            ));
            f.evidence.insert(
                1,
                EvidenceItem::new(
                    Source::Native,
                    format!(
                        "the report counts {} leaks for {} bytes but lists only {}: {} leaks ({} bytes) are not in it (an excerpt or a cut report), so their sites are unknown",
                        count(summary.leaks as i64),
                        count(summary.bytes as i64),
                        count(summary.leaks.saturating_sub(blocks) as i64),
                        count(blocks as i64),
                        count(bytes as i64)
                    ),
                ),
            );
        }
    }
    if let Some(noise) = noise_finding(ev, sites, &statuses, over_time) {
        findings.push(noise);
    }

    let mut rows: Vec<NativeSiteRow> = sites
        .iter()
        .zip(&statuses)
        .map(|(s, (status, owner))| NativeSiteRow {
            function: s.key.function.clone(),
            library: s.library().map(str::to_owned),
            status: *status,
            owner: owner.clone(),
            blocks: s.blocks.clone(),
            bytes: s.bytes.clone(),
            delta_blocks: s.delta_blocks(),
            delta_bytes: s.delta_bytes(),
            stack: {
                let mut v: Vec<String> = s.outward().take(8).map(|f| f.label()).collect();
                v.reverse();
                v
            },
        })
        .collect();
    rows.sort_by_key(|r| {
        let noise = matches!(
            r.status,
            SiteStatus::Runtime | SiteStatus::Static | SiteStatus::Minor
        );
        (
            noise,
            std::cmp::Reverse(r.delta_bytes),
            std::cmp::Reverse(r.bytes.last().copied().unwrap_or(0)),
        )
    });
    (findings, rows)
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

/// Creation sites shown one by one in a missing-release finding's evidence; JSON's
/// `suggestion.locations` keeps them all.
const MAX_CREATION_LINES: usize = 6;

/// "W instances created at f.rb:37 (…)" for the leading site, "also created at" for the
/// others, then a count of those past [`MAX_CREATION_LINES`].
fn creation_evidence(blame: &release::Blame) -> Vec<EvidenceItem> {
    let source = if blame.by_name {
        Source::Heap
    } else {
        Source::Lifecycle
    };
    let mut out: Vec<EvidenceItem> = blame
        .created_at
        .iter()
        .take(MAX_CREATION_LINES)
        .map(|loc| {
            let counts = match (loc.count, loc.released) {
                (Some(c), Some(r)) => format!(
                    " ({} created, {} never released)",
                    count(c as i64),
                    count(c.saturating_sub(r) as i64)
                ),
                (Some(c), None) => format!(" ({})", count(c as i64)),
                (None, _) => String::new(),
            };
            EvidenceItem::new(
                source,
                format!(
                    "{} instances {} {}{counts}",
                    blame.class,
                    loc.role.label(),
                    loc.site()
                ),
            )
            .at(crate::evidence::SourceLine {
                file: loc.file.clone(),
                line: loc.line,
            })
        })
        .collect();
    let rest = &blame.created_at[blame.created_at.len().min(MAX_CREATION_LINES)..];
    if !rest.is_empty() {
        out.push(EvidenceItem::new(
            source,
            format!(
                "{} instances also created at {} more (the JSON report lists them all)",
                blame.class,
                quantity(rest.len() as i64, "site")
            ),
        ));
    }
    out
}

/// (bytes, blocks) a site accounts for: growth over time, or the single report's total.
fn measure(site: &SiteSeries, over_time: bool) -> (i64, i64) {
    if over_time {
        (site.delta_bytes(), site.delta_blocks())
    } else {
        (site.last_bytes() as i64, site.last_blocks() as i64)
    }
}

fn missing_release(blame: &release::Blame, sites: &[&SiteSeries], over_time: bool) -> Finding {
    let top = sites[0];
    let (bytes, blocks) = sites
        .iter()
        .map(|s| measure(s, over_time))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let method = blame
        .release_method
        .as_ref()
        .map(|m| format!("{}#{m}", blame.class));
    let lib = top.library().map(|l| format!("{l} ")).unwrap_or_default();
    let how = if over_time {
        format!(
            "grows by {} / {} bytes",
            quantity(blocks, "block"),
            count(bytes)
        )
    } else {
        format!(
            "leaks {} / {} bytes",
            quantity(blocks, "block"),
            count(bytes)
        )
    };
    let title = match (&method, blame.by_name) {
        (Some(m), false) => format!(
            "{m} is not called: {lib}memory from {} {how}",
            top.key.function
        ),
        (Some(m), true) => format!(
            "{m} is probably not called (matched by name): {lib}memory from {} {how}",
            top.key.function
        ),
        (None, _) => format!(
            "{} instances are not released: {lib}memory from {} {how}",
            blame.class, top.key.function
        ),
    };
    let mut evidence: Vec<EvidenceItem> = Vec::new();
    for s in sites {
        evidence.push(EvidenceItem::new(Source::Native, release::site_text(s)));
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!("stack: {}", release::short_stack(s, 6)),
        ));
    }
    evidence.extend(release::unnamed_site_hint(top));
    evidence.extend(blame.evidence.iter().cloned());
    evidence.extend(creation_evidence(blame));
    let var = names::instance_variable(&blame.class);
    // The fix names the leading site only; the others are evidence lines.
    let where_created = blame
        .created_at
        .first()
        .map(|l| format!(" created at {}", l.site()))
        .unwrap_or_default();
    let text = match (&method, &blame.release_function) {
        (Some(m), Some(f)) if blame.by_name => format!(
            "Call the method of {} that calls {f} — by its name, `{m}` — after the last use of each instance{where_created}, so the native memory is freed.",
            blame.class
        ),
        (Some(m), Some(f)) => format!(
            "Call `{m}` after the last use of each {}{where_created}: it calls {f}, which frees the native memory.",
            blame.class
        ),
        (Some(m), None) => format!(
            "Call `{m}` after the last use of each {}{where_created}.",
            blame.class
        ),
        (None, _) => format!(
            "Release the native memory of each {}{where_created} after its last use: no method of it was found that does (add one that calls the library's release function).",
            blame.class
        ),
    };
    let release_call = blame.release_method.as_deref().unwrap_or("close");
    let mut f = Finding::new(FindingKind::MissingRelease, blame.confidence, title)
        .identify(&[blame.class.as_str()]);
    f.class = Some(blame.class.clone());
    f.native = Some(NativeOwner {
        function: top.key.function.clone(),
        library: top.library().map(str::to_owned),
    });
    f.bytes = bytes;
    f.count = blocks;
    f.evidence = evidence;
    f.suggestion = Some(Suggestion {
        text,
        method,
        locations: blame.created_at.clone(),
        shapes: vec![
            format!(
                "`{var}.{release_call}` right after the last use of `{var}` (not before: the memory is freed at once)"
            ),
            format!("`begin … ensure {var}.{release_call} end`, so an exception does not skip it"),
            format!(
                "a block form that releases for you: `{}.open(…) {{ |{var}| … }}` calling `{release_call}` in an ensure",
                blame.class
            ),
        ],
    });
    f
}

fn native_leak(
    site: &SiteSeries,
    mut module_evidence: Vec<EvidenceItem>,
    module_confidence: Confidence,
    over_time: bool,
) -> Finding {
    let (bytes, blocks) = measure(site, over_time);
    let by_growth = if site.grows_at_every_step() {
        Confidence::High
    } else if over_time {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    let confidence = by_growth.min(module_confidence);
    let lib = site
        .library()
        .map(|l| format!(" in {l}"))
        .unwrap_or_default();
    let title = if over_time {
        format!(
            "{}{lib} grows by {} / {} bytes with no Ruby object to blame",
            site.key.function,
            quantity(blocks, "block"),
            count(bytes)
        )
    } else {
        format!(
            "{}{lib} leaks {} / {} bytes with no Ruby object to blame",
            site.key.function,
            quantity(blocks, "block"),
            count(bytes)
        )
    };
    let mut evidence = vec![
        EvidenceItem::new(Source::Native, release::site_text(site)),
        EvidenceItem::new(
            Source::Native,
            format!("stack: {}", release::short_stack(site, 10)),
        ),
    ];
    evidence.extend(release::unnamed_site_hint(site));
    evidence.append(&mut module_evidence);
    let mut f = Finding::new(FindingKind::NativeLeak, confidence, title).identify(&[
        site.key.function.as_str(),
        site.key.library.as_deref().unwrap_or(""),
    ]);
    f.native = Some(NativeOwner {
        function: site.key.function.clone(),
        library: site.library().map(str::to_owned),
    });
    f.bytes = bytes;
    f.count = blocks;
    f.evidence = evidence;
    f.suggestion = Some(Suggestion {
        text: format!(
            "Look at what frees the memory {} allocates{lib}: no Ruby wrapper owns it, so the leak is in native code or in a binding the agent did not see.",
            site.key.function
        ),
        method: None,
        locations: Vec::new(),
        shapes: Vec::new(),
    });
    f
}

/// Why the runtime's own blocks show up as leaks, as far as the Ruby version tells.
fn runtime_noise_reason(ev: &Evidence) -> &'static str {
    let version = ev
        .latest_sidecar()
        .map(|s| s.ruby.version.as_str())
        .filter(|v| !v.is_empty());
    let at_least_3_4 = version.is_some_and(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (3, 4)
    });
    if at_least_3_4 {
        "memory the runtime keeps where the native tool does not look for pointers"
    } else {
        "Ruby before 3.4 does not free its own memory at exit"
    }
}

fn noise_finding(
    ev: &Evidence,
    sites: &[SiteSeries],
    statuses: &[(SiteStatus, Option<String>)],
    over_time: bool,
) -> Option<Finding> {
    let mut runtime = (0usize, 0u64, 0u64);
    let mut still = (0usize, 0u64, 0u64);
    let mut minor = (0usize, 0u64, 0u64);
    let mut runtime_growth = 0i64;
    for (s, (status, _)) in sites.iter().zip(statuses) {
        let bucket = match status {
            SiteStatus::Runtime => {
                runtime_growth = runtime_growth.saturating_add(s.delta_bytes().max(0));
                &mut runtime
            }
            SiteStatus::Static | SiteStatus::Secondary => &mut still,
            SiteStatus::Minor => &mut minor,
            _ => continue,
        };
        bucket.0 += 1;
        bucket.1 = bucket.1.saturating_add(s.last_blocks());
        bucket.2 = bucket.2.saturating_add(s.last_bytes());
    }
    let total = (
        runtime.0 + still.0 + minor.0,
        runtime.1.saturating_add(still.1).saturating_add(minor.1),
        runtime.2.saturating_add(still.2).saturating_add(minor.2),
    );
    if total.0 == 0 {
        return None;
    }
    let mut evidence = Vec::new();
    if runtime.0 > 0 {
        let mut text = format!(
            "{} in the Ruby runtime (libruby, the ruby binary) with no FFI call on the stack: {} blocks, {} bytes — {}",
            quantity(runtime.0 as i64, "site"),
            count(runtime.1 as i64),
            count(runtime.2 as i64),
            runtime_noise_reason(ev)
        );
        if runtime_growth > 0 {
            text.push_str(&format!(
                "; they grew by {} bytes, which Ruby-level growth (the class table) explains",
                count(runtime_growth)
            ));
        }
        evidence.push(EvidenceItem::new(Source::Native, text));
    }
    if still.0 > 0 {
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!(
                "{} that {}: {} blocks, {} bytes",
                quantity(still.0 as i64, "site"),
                if over_time {
                    "did not grow between snapshots, or are reachable only through another leaked block"
                } else {
                    "are reachable only through another leaked block"
                },
                count(still.1 as i64),
                count(still.2 as i64)
            ),
        ));
    }
    if minor.0 > 0 {
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!(
                "{} past the {MAX_NATIVE_FINDINGS} shown: {} blocks, {} bytes (see the native sites table)",
                quantity(minor.0 as i64, "smaller unowned site"),
                count(minor.1 as i64),
                count(minor.2 as i64)
            ),
        ));
    }
    let mut f = Finding::new(
        FindingKind::RuntimeNoise,
        Confidence::High,
        format!(
            "{} set aside as noise: {} blocks, {} bytes",
            quantity(total.0 as i64, "native site"),
            count(total.1 as i64),
            count(total.2 as i64)
        ),
    )
    .identify(&["runtime"]);
    f.bytes = saturating_i64(total.2);
    f.count = saturating_i64(total.1);
    f.evidence = evidence;
    Some(f)
}

fn timeline(
    ev: &Evidence,
    series: &[classes::ClassSeries],
    findings: &[Finding],
    sites: &[SiteSeries],
) -> Timeline {
    let mut chosen: Vec<&classes::ClassSeries> = Vec::new();
    for f in findings {
        if let Some(c) = &f.class
            && let Some(s) = series.iter().find(|s| &s.class == c)
            && !chosen.iter().any(|x| x.class == s.class)
        {
            chosen.push(s);
        }
    }
    let mut by_growth: Vec<&classes::ClassSeries> = series.iter().collect();
    by_growth.sort_by_key(|s| std::cmp::Reverse(s.delta().abs()));
    for s in by_growth {
        if chosen.len() >= 6 {
            break;
        }
        if !chosen.iter().any(|x| x.class == s.class) {
            chosen.push(s);
        }
    }
    let finding_sites: Vec<&str> = findings
        .iter()
        .filter(|f| f.kind.is_leak())
        .filter_map(|f| f.native.as_ref().map(|n| n.function.as_str()))
        .collect();
    Timeline {
        footprint: ev
            .footprint
            .iter()
            .map(|s| FootprintPoint {
                t: s.t,
                bytes: s.bytes,
            })
            .collect(),
        heap_snapshots: ev
            .heap
            .iter()
            .enumerate()
            .map(|(i, h)| SnapshotPoint {
                index: i + 1,
                t: h.t,
            })
            .collect(),
        classes: chosen
            .into_iter()
            .map(|s| ClassLine {
                class: s.class.clone(),
                counts: s.counts.clone(),
            })
            .collect(),
        native: ev
            .native
            .iter()
            .enumerate()
            .map(|(i, n)| NativePoint {
                index: i + 1,
                t: n.t,
                leaked_bytes: n
                    .report
                    .total_bytes()
                    .max(n.report.summary.map(|s| s.bytes).unwrap_or(0)),
                finding_bytes: sites
                    .iter()
                    .filter(|s| finding_sites.contains(&s.key.function.as_str()))
                    .map(|s| s.bytes.get(i).copied().unwrap_or(0))
                    .fold(0u64, u64::saturating_add),
            })
            .collect(),
    }
}

/// Leaked bytes per second: from the growth of the native sites that are findings when the
/// snapshots have times, else the slope of the footprint timeline.
fn leak_rate(ev: &Evidence, findings: &[Finding], sites: &[SiteSeries]) -> Option<LeakRate> {
    let times: Vec<f64> = ev.native.iter().filter_map(|n| n.t).collect();
    if times.len() == ev.native.len() && times.len() >= 2 {
        let span = times[times.len() - 1] - times[0];
        let grown: i64 = findings
            .iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    FindingKind::MissingRelease | FindingKind::NativeLeak
                )
            })
            .filter_map(|f| f.native.as_ref())
            .filter_map(|n| sites.iter().find(|s| s.key.function == n.function))
            .map(|s| s.delta_bytes())
            .fold(0i64, i64::saturating_add);
        if span > 0.0 && grown > 0 {
            return Some(LeakRate {
                bytes_per_second: grown as f64 / span,
                source: "native growth",
            });
        }
    }
    // The footprint only tells a rate between snapshots of a settled program: before them it
    // is start-up (loading Ruby and the program's code), and one snapshot compares nothing.
    let judged = ev.judged_heap();
    if judged.len() < 2 {
        return None;
    }
    let from = judged[0].t.unwrap_or(f64::NEG_INFINITY);
    let settled: Vec<_> = ev
        .footprint
        .iter()
        .filter(|s| s.t >= from)
        .copied()
        .collect();
    footprint_slope(&settled).map(|slope| LeakRate {
        bytes_per_second: slope,
        source: "footprint slope",
    })
}

/// Least-squares slope of bytes over seconds.
pub fn footprint_slope(samples: &[crate::bundle::FootprintSample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.t).sum::<f64>() / n;
    let mean_b = samples.iter().map(|s| s.bytes as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t - mean_t) * (s.bytes as f64 - mean_b);
        den += (s.t - mean_t) * (s.t - mean_t);
    }
    (den > 0.0).then(|| num / den)
}

/// A size or count read from an input, as the i64 findings carry: past `i64::MAX` it saturates.
pub fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `1234567` → `1,234,567`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 block`, `2 blocks`, `1,234 blocks`.
pub fn quantity(n: i64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", count(n))
    }
}

/// `1234` → `+1,234`; `-5` → `-5`; `0` → `0`.
pub fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{}", count(n))
    } else {
        count(n)
    }
}

/// `263427072` → `251.2 MiB`.
pub fn human_bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.abs();
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    let sign = if n < 0.0 { "-" } else { "" };
    if u == 0 {
        format!("{sign}{v:.0} B")
    } else {
        format!("{sign}{v:.1} {}", units[u])
    }
}

/// Replaces the contents of every double-quoted part of a dump-derived label with a note of its
/// length, unless string contents were asked for: `String "secret"` → `String "‹6 bytes›"`.
pub fn redact(label: &str, include_strings: bool) -> String {
    if include_strings || !label.contains('"') {
        return label.to_owned();
    }
    let mut out = String::with_capacity(label.len());
    let mut parts = label.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    for (i, part) in rest.iter().enumerate() {
        out.push('"');
        let inside = i % 2 == 0;
        if inside && i + 1 < rest.len() {
            out.push_str(&format!("‹{} bytes›", part.len()));
        } else if inside {
            // An unclosed quote: redact to the end.
            out.push_str(&format!("‹{} bytes›", part.len()));
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
