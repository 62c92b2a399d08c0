//! Runs of several processes (pre-forking servers, fork pools): every process is correlated on
//! its own — its growth is its own, between its own snapshots — and the findings are merged by
//! fingerprint, saying where they hold. Processes with the same parent and program are one role
//! (the workers); the master is another. A finding reads "Widget#close is not called: … · in 2
//! of 2 workers · +6,974 blocks / +3,679,200 bytes in total", with each process's share and
//! series; a leak seen in one worker of two is still reported.
//!
//! A process other than the main one with fewer than two heap snapshots (a worker that crashed
//! after one round, one forked just before the last) cannot show growth: it is listed, not
//! judged, and its evidence stays in the bundle.
//!
//! Stage: correlator (after the rules of each process).

use super::analysis::{Analysis, LeakRate, ProcessLine, ProcessRef, ProcessSummary, Verdict};
use super::finding::{self, EvidenceItem, Finding, FindingKind, FindingProcess, Location};
use super::finding::{SeriesPoint, Source};
use crate::bundle::{ProcessEntry, ROLE_CHILD, ROLE_MAIN, ROLE_NO_AGENT, ROLE_WORKER};
use crate::evidence::Evidence;
use crate::format::{count, signed};

/// Heap snapshots a process other than the main one needs to be judged.
const JUDGED_FROM: usize = 2;

/// A role: processes with the same parent and program, started the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Role {
    key: (String, Option<u32>, Vec<String>),
    /// "the master", "worker", "ruby process".
    singular: String,
    /// "workers", "workers of 4242", "ruby processes".
    plural: String,
    /// The main process's role: one process, named without a count.
    main: bool,
    /// Its processes whose growth was judged.
    judged: Vec<u32>,
}

impl Role {
    /// How the report names one of its processes: "the master", "worker".
    fn label(&self) -> &str {
        &self.singular
    }
}

/// One process whose growth was judged, with its own analysis.
struct Judged {
    pid: u32,
    role: usize,
    analysis: Analysis,
}

/// The roles of a run's processes, in the manifest's order (the main one first).
fn roles(entries: &[ProcessEntry], main_pid: u32) -> (Vec<Role>, Vec<(u32, usize)>) {
    let has_workers = entries
        .iter()
        .any(|e| e.role == ROLE_WORKER && e.ppid == Some(main_pid));
    let mut roles: Vec<Role> = Vec::new();
    let mut of: Vec<(u32, usize)> = Vec::new();
    for e in entries.iter().filter(|e| e.role != ROLE_NO_AGENT) {
        let main = e.pid == main_pid || e.role == ROLE_MAIN;
        let key = if main {
            (ROLE_MAIN.to_owned(), None, Vec::new())
        } else {
            (e.role.clone(), e.ppid, e.command.clone())
        };
        let at = match roles.iter().position(|r| r.key == key) {
            Some(at) => at,
            None => {
                let (singular, plural) = if main {
                    let name = if has_workers {
                        "the master"
                    } else {
                        "the main process"
                    };
                    (name.to_owned(), name.to_owned())
                } else if e.role == ROLE_WORKER && e.ppid == Some(main_pid) {
                    ("worker".to_owned(), "workers".to_owned())
                } else if e.role == ROLE_WORKER {
                    let of = e.ppid.map(|p| format!(" of {p}")).unwrap_or_default();
                    (format!("worker{of}"), format!("workers{of}"))
                } else {
                    let program = e
                        .command
                        .first()
                        .and_then(|c| c.rsplit('/').next())
                        .filter(|c| !c.is_empty())
                        .unwrap_or(ROLE_CHILD);
                    (format!("{program} process"), format!("{program} processes"))
                };
                roles.push(Role {
                    key,
                    singular,
                    plural,
                    main,
                    judged: Vec::new(),
                });
                roles.len() - 1
            }
        };
        of.push((e.pid, at));
    }
    (roles, of)
}

/// Merges the main process's analysis with those of the other processes of `ev` (each made by
/// `correlate`).
pub fn merge(
    ev: &Evidence,
    main_analysis: Analysis,
    correlate: &dyn Fn(&Evidence) -> Analysis,
) -> Analysis {
    let manifest = ev.manifest.as_ref();
    let entries: Vec<ProcessEntry> = manifest.map(|m| m.processes.clone()).unwrap_or_default();
    let main = main_pid(ev);
    let (mut roles, role_of) = roles(&entries, main);
    let role = |pid: u32| role_of.iter().find(|(p, _)| *p == pid).map(|(_, r)| *r);

    let Some(main_role) = role(main) else {
        // No main process to speak of (its agent never said hello): nothing to merge into.
        return Analysis {
            processes: summaries(ev, &entries, &roles, &role_of, &[], &[]),
            ..main_analysis
        };
    };
    // The main process is always judged, and first.
    let mut judged: Vec<Judged> = vec![Judged {
        pid: main,
        role: main_role,
        analysis: main_analysis,
    }];
    let mut notes: Vec<String> = Vec::new();
    for p in &ev.processes {
        let Some(r) = role(p.entry.pid) else { continue };
        if p.evidence.heap.len() < JUDGED_FROM {
            notes.push(format!(
                "pid {} ({}) was in {} with a heap snapshot: too few to show growth; its evidence stays in the bundle",
                p.entry.pid,
                roles[r].label(),
                crate::format::quantity(p.evidence.heap.len(), "round")
            ));
            continue;
        }
        judged.push(Judged {
            pid: p.entry.pid,
            role: r,
            analysis: correlate(&p.evidence),
        });
    }
    for j in &judged {
        roles[j.role].judged.push(j.pid);
    }
    let mut findings = merged_findings(&judged, &roles);
    findings.sort_by(finding::rank);
    // The first leak's largest share (the first on a tie).
    let focus = findings
        .iter()
        .find(|f| f.kind.is_leak())
        .and_then(|f| {
            f.processes
                .iter()
                .fold(None, |best: Option<&FindingProcess>, p| match best {
                    Some(b) if b.bytes >= p.bytes => Some(b),
                    _ => Some(p),
                })
        })
        .and_then(|p| judged.iter().position(|j| j.pid == p.pid))
        .unwrap_or(0);

    for j in &judged {
        for n in &j.analysis.notes {
            if !notes.contains(n) {
                notes.push(n.clone());
            }
        }
    }
    let verdict = if findings.iter().any(|f| f.kind.is_leak()) {
        Verdict::Leak
    } else if judged
        .iter()
        .any(|j| j.analysis.verdict != Verdict::Inconclusive)
    {
        Verdict::NoLeak
    } else {
        Verdict::Inconclusive
    };
    let leak_rate = leak_rate(&judged);
    let lines = process_lines(ev, &judged, &roles, &role_of);
    let processes = summaries(ev, &entries, &roles, &role_of, &findings, &judged);
    let heap_snapshots = ev.each_process().map(|e| e.heap.len()).sum();
    let native_snapshots = ev.each_process().map(|e| e.native.len()).sum();
    let focus_ref = (judged.len() > 1).then(|| ProcessRef {
        pid: judged[focus].pid,
        group: roles[judged[focus].role].label().to_owned(),
    });
    let shown = judged[focus].analysis.clone();
    let mut timeline = shown.timeline;
    timeline.processes = lines;
    Analysis {
        verdict,
        heap_snapshots,
        native_snapshots,
        leak_rate,
        findings,
        class_growth: shown.class_growth,
        native_sites: shown.native_sites,
        tables_of: focus_ref,
        timeline,
        processes,
        notes,
        ..judged.swap_remove(0).analysis
    }
}

/// Findings of the same fingerprint in several processes become one, saying where it holds.
fn merged_findings(judged: &[Judged], roles: &[Role]) -> Vec<Finding> {
    // Fingerprint → (process, finding), in the order they first appear.
    let mut buckets: Vec<(String, Vec<(&Judged, &Finding)>)> = Vec::new();
    for j in judged {
        for f in &j.analysis.findings {
            match buckets.iter_mut().find(|(fp, _)| *fp == f.fingerprint) {
                Some((_, b)) => b.push((j, f)),
                None => buckets.push((f.fingerprint.clone(), vec![(j, f)])),
            }
        }
    }
    buckets
        .into_iter()
        .filter_map(|(_, bucket)| merge_bucket(&bucket, roles))
        .collect()
}

fn merge_bucket(bucket: &[(&Judged, &Finding)], roles: &[Role]) -> Option<Finding> {
    // The largest share (the first on a tie) speaks for the finding.
    let (rep_process, rep) =
        bucket
            .iter()
            .fold(None, |best: Option<&(&Judged, &Finding)>, x| match best {
                Some(b) if (b.1.bytes, b.1.confidence) >= (x.1.bytes, x.1.confidence) => Some(b),
                _ => Some(x),
            })?;
    let mut f = (*rep).clone();
    let bytes = bucket
        .iter()
        .fold(0i64, |s, (_, g)| s.saturating_add(g.bytes));
    let blocks = bucket
        .iter()
        .fold(0i64, |s, (_, g)| s.saturating_add(g.count));
    f.bytes = bytes;
    f.count = blocks;
    f.confidence = bucket.iter().map(|(_, g)| g.confidence).max()?;
    let place = where_text(bucket, roles);
    let sized = Sized::of(rep);
    f.title = format!(
        "{} · {place} · {}",
        rep.headline,
        measure(f.kind, sized, blocks, bytes)
    );
    match sized {
        Sized::LifecycleOnly => {
            f.title = format!("{} — {}", f.title, super::unmeasured::NOT_MEASURED);
        }
        Sized::Malloc => {
            f.title = format!("{} — {}", f.title, super::unmeasured::MEASURED_BY_MALLOC);
        }
        Sized::Native => {}
    }
    f.processes = bucket
        .iter()
        .map(|(j, g)| FindingProcess {
            pid: j.pid,
            role: roles[j.role].label().to_owned(),
            bytes: g.bytes,
            count: g.count,
            series: series(&j.analysis, g),
        })
        .collect();
    let most = match f.kind {
        FindingKind::RubyRetention => ", where it piled up most",
        FindingKind::RuntimeNoise => "",
        _ => ", where it grew most",
    };
    let mut shares: Vec<EvidenceItem> = vec![EvidenceItem::new(
        Source::Processes,
        format!(
            "holds {place}; the evidence below is from pid {} ({}){most}",
            rep_process.pid,
            roles[rep_process.role].label()
        ),
    )];
    shares.extend(f.processes.iter().map(|p| {
        EvidenceItem::new(
            Source::Processes,
            format!(
                "pid {} ({}): {}",
                p.pid,
                p.role,
                measure(f.kind, sized, p.count, p.bytes).trim_end_matches(" in total")
            ),
        )
    }));
    for (i, item) in shares.into_iter().enumerate() {
        f.evidence.insert(i, item);
    }
    if let Some(s) = f.suggestion.as_mut() {
        s.locations = merged_locations(bucket);
    }
    Some(f)
}

/// "in 2 of 2 workers", "in the master", "in the master and 1 of 2 workers".
fn where_text(bucket: &[(&Judged, &Finding)], roles: &[Role]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (at, role) in roles.iter().enumerate() {
        let k = bucket.iter().filter(|(j, _)| j.role == at).count();
        if k == 0 {
            continue;
        }
        parts.push(if role.main {
            role.singular.clone()
        } else {
            let n = role.judged.len();
            let noun = if n == 1 { &role.singular } else { &role.plural };
            format!("{k} of {n} {noun}")
        });
    }
    format!("in {}", parts.join(" and "))
}

/// How a finding's size was measured, which decides what its count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sized {
    /// Native blocks and bytes (a backend's report), or Ruby instances (retention).
    Native,
    /// A missing release told from the lifecycle alone: instances, no bytes.
    LifecycleOnly,
    /// A missing release sized by malloc's growth under `--backend none`: instances and bytes.
    Malloc,
}

impl Sized {
    fn of(f: &Finding) -> Sized {
        if super::unmeasured::is_lifecycle_only(f) {
            Sized::LifecycleOnly
        } else if super::unmeasured::is_measured_by_malloc(f) {
            Sized::Malloc
        } else {
            Sized::Native
        }
    }
}

/// "+6,974 blocks / +3,679,200 bytes in total", "+1,200 instances in total"; a missing
/// release told from the lifecycle alone measured no bytes: "+1,200 instances never released
/// in total"; one sized by malloc counts instances: "+2,552 instances never released /
/// +783,565 bytes in total".
fn measure(kind: FindingKind, sized: Sized, blocks: i64, bytes: i64) -> String {
    let noun = |n: i64, one: &str, many: &str| {
        if n.abs() == 1 {
            one.to_owned()
        } else {
            many.to_owned()
        }
    };
    match kind {
        FindingKind::MissingRelease if sized == Sized::LifecycleOnly => format!(
            "{} {} never released in total",
            signed(blocks),
            noun(blocks, "instance", "instances")
        ),
        FindingKind::ExtensionLeak if sized == Sized::Malloc => format!(
            "{} {} / {} bytes in total",
            signed(blocks),
            noun(blocks, "call", "calls"),
            signed(bytes)
        ),
        FindingKind::MissingRelease if sized == Sized::Malloc => format!(
            "{} {} never released / {} bytes in total",
            signed(blocks),
            noun(blocks, "instance", "instances"),
            signed(bytes)
        ),
        FindingKind::RubyRetention => format!(
            "{} {} in total",
            signed(blocks),
            noun(blocks, "instance", "instances")
        ),
        FindingKind::RuntimeNoise => format!(
            "{} {} / {} bytes in total",
            count(blocks),
            noun(blocks, "block", "blocks"),
            count(bytes)
        ),
        _ => format!(
            "{} {} / {} bytes in total",
            signed(blocks),
            noun(blocks, "block", "blocks"),
            signed(bytes)
        ),
    }
}

/// The finding's measure at each of the process's snapshots: the native site's bytes, or the
/// class's instances.
fn series(a: &Analysis, f: &Finding) -> Vec<SeriesPoint> {
    if f.kind == FindingKind::RubyRetention {
        let Some(line) = a
            .timeline
            .classes
            .iter()
            .find(|c| Some(&c.class) == f.class.as_ref())
        else {
            return Vec::new();
        };
        return line
            .counts
            .iter()
            .enumerate()
            .map(|(i, &value)| SeriesPoint {
                t: a.timeline.heap_snapshots.get(i).and_then(|s| s.t),
                value,
            })
            .collect();
    }
    let Some(native) = &f.native else {
        return Vec::new();
    };
    let Some(row) = a
        .native_sites
        .iter()
        .find(|r| r.function == native.function && r.library == native.library)
    else {
        return Vec::new();
    };
    row.bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| SeriesPoint {
            t: a.timeline.native.get(i).and_then(|n| n.t),
            value: crate::num::saturating_i64(b),
        })
        .collect()
}

/// The suggestion's locations over every process: one per site and role, counts added up.
fn merged_locations(bucket: &[(&Judged, &Finding)]) -> Vec<Location> {
    let mut out: Vec<Location> = Vec::new();
    for (_, f) in bucket {
        let Some(s) = &f.suggestion else { continue };
        for l in &s.locations {
            match out
                .iter_mut()
                .find(|o| o.file == l.file && o.line == l.line && o.role == l.role)
            {
                Some(o) => {
                    o.count = add(o.count, l.count);
                    o.released = add(o.released, l.released);
                }
                None => out.push(l.clone()),
            }
        }
    }
    out
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

/// The processes' leak rates added up, when native growth measured them; else the main one's.
fn leak_rate(judged: &[Judged]) -> Option<LeakRate> {
    let native: Vec<LeakRate> = judged
        .iter()
        .filter_map(|j| j.analysis.leak_rate)
        .filter(|r| r.source == "native growth")
        .collect();
    if native.is_empty() {
        return judged.first().and_then(|j| j.analysis.leak_rate);
    }
    Some(LeakRate {
        bytes_per_second: native.iter().map(|r| r.bytes_per_second).sum(),
        source: "native growth",
    })
}

/// The main process's pid, as the manifest names it (0 without one).
fn main_pid(ev: &Evidence) -> u32 {
    ev.manifest
        .as_ref()
        .and_then(|m| m.main_process())
        .map_or(0, |m| m.pid)
}

/// One chart line per process with evidence: its footprint and native bytes.
fn process_lines(
    ev: &Evidence,
    judged: &[Judged],
    roles: &[Role],
    role_of: &[(u32, usize)],
) -> Vec<ProcessLine> {
    let evidence = std::iter::once((main_pid(ev), ev))
        .chain(ev.processes.iter().map(|p| (p.entry.pid, &p.evidence)));
    evidence
        .filter_map(|(pid, e)| {
            let role = role_of.iter().find(|(p, _)| *p == pid)?.1;
            let analysis = judged.iter().find(|j| j.pid == pid).map(|j| &j.analysis);
            Some(ProcessLine {
                pid,
                label: format!("pid {pid} ({})", roles[role].label()),
                footprint: match analysis {
                    Some(a) => a.timeline.footprint.clone(),
                    None => e
                        .footprint
                        .iter()
                        .map(|s| super::FootprintPoint {
                            t: s.t,
                            bytes: s.bytes,
                        })
                        .collect(),
                },
                native: analysis
                    .map(|a| a.timeline.native.clone())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Every process of the manifest, as the report lists it.
fn summaries(
    ev: &Evidence,
    entries: &[ProcessEntry],
    roles: &[Role],
    role_of: &[(u32, usize)],
    findings: &[Finding],
    judged: &[Judged],
) -> Vec<ProcessSummary> {
    let main_pid = main_pid(ev);
    entries
        .iter()
        .map(|e| {
            let evidence = if e.pid == main_pid {
                Some(ev)
            } else {
                ev.processes
                    .iter()
                    .find(|p| p.entry.pid == e.pid)
                    .map(|p| &p.evidence)
            };
            let group = role_of
                .iter()
                .find(|(p, _)| *p == e.pid)
                .map_or(ROLE_NO_AGENT, |(_, r)| roles[*r].label());
            ProcessSummary {
                pid: e.pid,
                ppid: e.ppid,
                role: e.role.clone(),
                group: group.to_owned(),
                command: e.command.clone(),
                first_round: e.first_round,
                last_round: e.last_round,
                heap_snapshots: evidence.map_or(0, |v| v.heap.len()),
                native_snapshots: evidence.map_or(0, |v| v.native.len()),
                judged: judged.iter().any(|j| j.pid == e.pid),
                outcome: e.outcome.clone(),
                findings: findings
                    .iter()
                    .filter(|f| f.kind.is_leak() && f.processes.iter().any(|p| p.pid == e.pid))
                    .map(|f| f.fingerprint.clone())
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::finding::Confidence;

    /// A missing release merged over workers counts in the units it was measured in: instances
    /// alone from the lifecycle, instances and bytes from malloc's growth under `--backend
    /// none` (not "blocks": no native report counted any).
    #[test]
    fn a_missing_release_is_merged_in_the_units_it_was_measured_in() {
        let mut f = Finding::new(FindingKind::MissingRelease, Confidence::Medium, "t");
        assert_eq!(Sized::of(&f), Sized::LifecycleOnly);
        assert_eq!(
            measure(f.kind, Sized::of(&f), 2_000, 0),
            "+2,000 instances never released in total"
        );
        f.bytes = 783_565;
        assert_eq!(Sized::of(&f), Sized::Malloc);
        assert_eq!(
            measure(f.kind, Sized::of(&f), 2_552, 783_565),
            "+2,552 instances never released / +783,565 bytes in total"
        );
        assert_eq!(
            measure(FindingKind::NativeLeak, Sized::Native, 6_974, 3_679_200),
            "+6,974 blocks / +3,679,200 bytes in total"
        );
    }
}
