//! Rule 2 without native evidence: a missing release told from the wrapper lifecycle alone,
//! when the run measured no native memory (`--backend none`). A wrapper class is blamed when
//! its instances are created far more often than released, the instances never released keep
//! growing round after round (not a one-off at start), the class has a release method (one
//! that calls its family's release function) and no finalizer. Instances that a Ruby
//! container keeps are the retention finding's business: the caller folds this finding into
//! it ([`super::fold_release_into_retention`]).
//!
//! The finding says that native memory was not measured, and ranks below one a native report
//! backs. C extension classes are only noted: whether their free function releases what an
//! instance holds (zlib's does, a leaking extension's does not) cannot be told without native
//! evidence.
//!
//! Bare files (heap dumps only) carry no lifecycle: the rule needs a bundle's sidecars and
//! its manifest. Only `--backend none` blames: a bundle made under a native backend of which
//! no report was read ([`NoNativeEvidence::Unread`]: LSan writes nothing when a check finds no
//! leak; a log may be missing or damaged) gets notes, since a clean check says the memory did
//! not leak.
//!
//! Stage: correlator rule. Input: the evidence's sidecars and heap snapshots.

use super::extension_calls;
use super::finding::{Confidence, EvidenceItem, Finding, FindingKind, Source};
use super::release::{self, Blame};
use super::unaccounted::{self, Explained};
use crate::bundle::{ExtensionModule, Lifecycle, Sidecar, WrapperClass};
use crate::evidence::Evidence;
use crate::format::{count, human_bytes, signed};

/// Rounds (sidecar to sidecar) in which the unreleased instances must have grown.
const GROWING_ROUNDS: usize = 2;

/// What a lifecycle-only finding says of native memory: the run chose not to measure it.
pub const NOT_MEASURED: &str = "native memory was not measured (`--backend none`)";

/// Why a run has no native evidence, which decides what the lifecycle alone may tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoNativeEvidence {
    /// `--backend none`: native memory was not measured; the lifecycle alone blames.
    NotMeasured,
    /// A native backend ran (named) and no report of it was read: its checks found nothing
    /// (LSan writes nothing then), or its logs are missing or damaged. A clean check is
    /// evidence of no leak, a damaged one of nothing: the lifecycle only makes notes.
    Unread(String),
}

impl NoNativeEvidence {
    /// Why no native memory backs what the lifecycle tells, as findings and notes say it.
    fn why(&self) -> String {
        match self {
            NoNativeEvidence::NotMeasured => NOT_MEASURED.to_owned(),
            NoNativeEvidence::Unread(backend) => format!(
                "no native report of `--backend {backend}` was read (its checks found nothing, or its logs are missing or damaged)"
            ),
        }
    }
}

/// Why no process of a bundle has native evidence, when none has. Bare files carry no
/// lifecycle, and a bundle without a manifest says nothing of its backend: `None` then.
pub fn no_native_evidence(ev: &Evidence) -> Option<NoNativeEvidence> {
    if ev.each_process().any(|e| !e.native.is_empty()) {
        return None;
    }
    let backend = ev.manifest.as_ref()?.backend.name.as_str();
    Some(match backend {
        "none" => NoNativeEvidence::NotMeasured,
        other => NoNativeEvidence::Unread(other.to_owned()),
    })
}

/// A missing release told from the lifecycle alone: no native site backs it.
pub fn is_lifecycle_only(f: &Finding) -> bool {
    f.kind == FindingKind::MissingRelease && f.native.is_none() && f.bytes == 0
}

/// How a finding made without a native backend was sized (a C extension class's missing
/// release, or a C method's own leak).
pub const MEASURED_BY_MALLOC: &str = "measured by malloc after each GC, `--backend none`";

/// A missing release or an extension's own leak sized by malloc's growth under `--backend
/// none` (no native site, bytes measured): its count is of instances or calls, not blocks.
pub fn is_measured_by_malloc(f: &Finding) -> bool {
    matches!(
        f.kind,
        FindingKind::MissingRelease | FindingKind::ExtensionLeak
    ) && f.native.is_none()
        && f.bytes > 0
}

/// The unreleased instances of `class` in each sidecar, oldest first (0 before the agent
/// counted the class).
fn unreleased_series(ev: &Evidence, class: &str) -> Vec<u64> {
    ev.sidecars
        .iter()
        .map(|sc| release::lifecycle(sc, class).map_or(0, release::unreleased))
        .collect()
}

/// Grew from the first sidecar to the last, in at least [`GROWING_ROUNDS`] rounds: a leak
/// that goes on, not instances made once at start and kept open.
fn keeps_growing(series: &[u64]) -> bool {
    let (Some(first), Some(last)) = (series.first(), series.last()) else {
        return false;
    };
    last > first && series.windows(2).filter(|w| w[1] > w[0]).count() >= GROWING_ROUNDS
}

/// Where the program shows it releases instances of the class: a creation site whose
/// instances are (nearly) all released, or, without per-site counts, a tenth of all instances
/// released. Instances left unreleased beside those may be given away rather than dropped (a
/// message sent through ZeroMQ belongs to it): without native evidence that is no finding.
fn released_elsewhere(life: &Lifecycle) -> Option<String> {
    let mostly = |released: u64, of: u64| released.saturating_mul(10) >= of.saturating_mul(9);
    if let Some(site) = life
        .created_at
        .iter()
        .find(|s| s.count > 0 && s.released.is_some_and(|r| mostly(r, s.count)))
    {
        return Some(format!("created at {}:{}", site.file, site.line));
    }
    let per_site = life.created_at.iter().any(|s| s.released.is_some());
    (!per_site && life.released.saturating_mul(10) >= life.created)
        .then(|| format!("({} of them)", count(life.released)))
}

/// The release method of a wrapper (and the C function it calls), found as the native rule
/// finds it: a method calling a release function of a family the wrapper's methods call into.
fn release_of<'a>(sc: &'a Sidecar, w: &WrapperClass) -> Option<(String, String, &'a str)> {
    for m in &w.methods {
        for call in &m.calls {
            let Some(module) = sc.ffi.iter().find(|f| {
                (call.module.is_empty() || f.name == call.module)
                    && f.functions.iter().any(|fun| fun.symbol == call.function)
            }) else {
                continue;
            };
            let releases = release::family_of(module, &call.function)
                .map(|(_, r)| r)
                .unwrap_or_default();
            if let Some((method, function)) = release::release_method(w, &module.name, &releases) {
                return Some((method.name.clone(), function, module.name.as_str()));
            }
        }
    }
    None
}

/// Missing-release findings from the lifecycle alone, and notes on the classes set aside
/// (all of them when a native backend ran but nothing of it was read). `retained`: Ruby
/// retention was found, which may be what native memory grows with; then growth no class
/// explains blames no C method.
pub fn findings(
    ev: &Evidence,
    no_native: &NoNativeEvidence,
    retained: bool,
    notes: &mut Vec<String>,
) -> Vec<Finding> {
    let Some(sc) = ev.latest_sidecar() else {
        return Vec::new();
    };
    let why = no_native.why();
    let why = why.as_str();
    let mut out = Vec::new();
    for w in &sc.wrappers {
        let Some(life) = release::lifecycle(sc, &w.class) else {
            continue;
        };
        let series = unreleased_series(ev, &w.class);
        if !release::unbalanced(life) || !keeps_growing(&series) {
            continue;
        }
        if w.finalizer {
            notes.push(format!(
                "{}: {}, but {}; {why}",
                w.class,
                tally(life),
                w.finalizer_detail
                    .as_deref()
                    .unwrap_or("released by a finalizer")
            ));
            continue;
        }
        let Some((method, function, module)) = release_of(sc, w) else {
            continue;
        };
        if let NoNativeEvidence::Unread(_) = no_native {
            notes.push(format!(
                "{}: {} by {}#{method}, but {why}: no finding from the lifecycle alone",
                w.class,
                tally(life),
                w.class,
            ));
            continue;
        }
        if let Some(elsewhere) = released_elsewhere(life) {
            notes.push(format!(
                "{}: {}, but the program does call {method} on the instances {elsewhere}: the others may be handed to a function that takes them over (zmq_msg_send frees a message it sends) — {why}, so leakhunt cannot tell whether they leak: rerun with `--backend lsan` (or valgrind)",
                w.class,
                tally(life),
            ));
            continue;
        }
        out.push(finding(
            ev,
            sc,
            w,
            life,
            &series,
            (method, function, module),
        ));
    }
    // A native backend whose checks found nothing saw no extension leak either.
    let extensions = match no_native {
        NoNativeEvidence::NotMeasured => sc.extensions.as_slice(),
        NoNativeEvidence::Unread(_) => &[],
    };
    let mut candidates = Vec::new();
    for ext in extensions {
        for class in ext.modules.iter().filter(|m| m.class) {
            let Some(life) = release::lifecycle(sc, &class.name) else {
                continue;
            };
            if class.release_methods.is_empty()
                || !release::unbalanced(life)
                || !keeps_growing(&unreleased_series(ev, &class.name))
            {
                continue;
            }
            candidates.push((ext, class, life));
        }
    }
    // Under `--backend none` the agent measured malloc after each GC: native memory that rises
    // with one class's dropped instances is what they held.
    let (rounds, how) = match no_native {
        NoNativeEvidence::NotMeasured => unaccounted::rounds(ev, notes),
        NoNativeEvidence::Unread(_) => (Vec::new(), None),
    };
    let native: Vec<i64> = rounds.iter().map(unaccounted::Round::unaccounted).collect();
    let explained: Vec<Option<Explained>> = candidates
        .iter()
        .map(|(_, class, _)| {
            let unreleased: Vec<u64> = rounds
                .iter()
                .map(|r| {
                    ev.sidecars
                        .iter()
                        .find(|s| s.snapshot == r.snapshot)
                        .and_then(|s| release::lifecycle(s, &class.name))
                        .map_or(0, release::unreleased)
                })
                .collect();
            unaccounted::explains(&native, &unreleased)
        })
        .collect();
    let explaining = explained.iter().flatten().count();
    let how = how.unwrap_or_default();
    for ((ext, class, life), explained) in candidates.into_iter().zip(explained) {
        let library = ext.path.rsplit('/').next().unwrap_or(&ext.path);
        let methods = class
            .release_methods
            .iter()
            .map(|m| format!("#{m}"))
            .collect::<Vec<_>>()
            .join("/");
        match explained {
            Some(e) if explaining == 1 => out.push(extension_finding(
                ev,
                sc,
                (library, class),
                life,
                &rounds,
                e,
                &how,
            )),
            _ => notes.push(format!(
                "{} (C extension {library}): {} by {methods}; {why}, and whether the extension frees what a collected instance holds cannot be told without it{}: rerun with `--backend lsan` (or valgrind)",
                class.name,
                tally(life),
                if explained.is_some() {
                    " (native memory grew with the dropped instances of several classes at once)"
                } else {
                    ""
                }
            )),
        }
    }
    if out.is_empty()
        && let Some(grown) = unaccounted::keeps_growing(
            &rounds
                .iter()
                .map(|r| (r.t, r.unaccounted()))
                .collect::<Vec<_>>(),
        )
    {
        // Growth no class explains: one C method whose calls it rises with leaks on its own.
        let by_calls = if retained {
            Vec::new()
        } else {
            extension_calls::explaining(ev, sc, &rounds, &native)
        };
        if let [one] = by_calls.as_slice() {
            out.push(extension_calls::finding(ev, sc, one, &native, &how));
            return out;
        }
        let several = if by_calls.is_empty() {
            String::new()
        } else {
            format!(
                " (it rose with the calls of several C methods at once: {})",
                by_calls
                    .iter()
                    .map(extension_calls::Explaining::label)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        notes.push(format!(
            "native memory no Ruby object holds grew by {} over {} rounds ({}; {how}, minus the heap dump's memsize), and no class's lifecycle explains it{several}: a C extension or library may leak on its own, or it is Ruby's own memory — rerun with `--backend lsan` (or valgrind) to see the native stack that allocates it",
            human_bytes(grown as f64),
            native.len().saturating_sub(1),
            series_text(&native)
        ));
    }
    out
}

/// "3.7 MiB → 3.9 MiB → 4.1 MiB": a series of byte counts.
pub(super) fn series_text(bytes: &[i64]) -> String {
    bytes
        .iter()
        .map(|&b| human_bytes(b as f64))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// A C extension class whose dropped instances keep native memory no Ruby object holds:
/// measured by malloc under `--backend none`.
fn extension_finding(
    ev: &Evidence,
    sc: &Sidecar,
    (library, class): (&str, &ExtensionModule),
    life: &Lifecycle,
    rounds: &[unaccounted::Round],
    explained: Explained,
    how: &str,
) -> Finding {
    let name = class.name.as_str();
    let method = class
        .release_methods
        .first()
        .cloned()
        .unwrap_or_else(|| "close".to_owned());
    let label = format!("{name}#{method}");
    let per = explained.per_instance();
    let mut evidence = vec![
        EvidenceItem::new(
            Source::Lifecycle,
            format!(
                "{name}: {} created, {} released by {} ({} never released)",
                count(life.created),
                count(life.released),
                class
                    .release_methods
                    .iter()
                    .map(|m| format!("#{m}"))
                    .collect::<Vec<_>>()
                    .join("/"),
                count(release::unreleased(life))
            ),
        ),
        EvidenceItem::new(
            Source::Extension,
            format!(
                "{name} is defined by the C extension {library}, whose #{method} releases what an instance holds; dropped without it, the extension's free function leaves that memory allocated"
            ),
        ),
        EvidenceItem::new(
            Source::Native,
            format!(
                "native memory no Ruby object holds, after each round's full GC: {} — it rose with the never-released {name} instances in {} round intervals, by {} for {} instances (about {} each, steady from round to round); measured by {how}, minus the heap dump's memsize",
                series_text(
                    &rounds
                        .iter()
                        .map(unaccounted::Round::unaccounted)
                        .collect::<Vec<_>>()
                ),
                explained.intervals,
                human_bytes(explained.bytes as f64),
                count(explained.instances),
                human_bytes(per),
            ),
        ),
    ];
    let (_, before) = release::first_counts(ev, sc, name);
    let blame = Blame {
        class: name.to_owned(),
        release_method: Some(method.clone()),
        release_function: None,
        evidence: Vec::new(),
        created_at: release::creation_sites(ev, Some(life), before, name),
        confidence: Confidence::Medium,
        by_name: false,
    };
    evidence.extend(release::creation_evidence(&blame));
    evidence.push(EvidenceItem::new(
        Source::Native,
        format!(
            "malloc was measured without a native backend: rerun with `--backend lsan` (or valgrind) to see the native stack that allocates what each {name} keeps"
        ),
    ));
    let headline = format!(
        "{label} is not called: {name} instances (C extension {library}) are dropped unreleased"
    );
    let title = format!(
        "{headline}, native memory grew {} (about {} each) — {MEASURED_BY_MALLOC}",
        human_bytes(explained.bytes as f64),
        human_bytes(per)
    );
    let mut f = Finding::new(FindingKind::MissingRelease, Confidence::Medium, title)
        .headline(headline)
        .identify(&[name]);
    f.class = Some(name.to_owned());
    f.bytes = explained.bytes;
    f.count = i64::try_from(explained.instances).unwrap_or(i64::MAX);
    f.evidence = evidence;
    f.suggestion = Some(release::release_suggestion(&blame, Some(label)));
    f
}

/// "1,100 created, 1,000 never released": how the notes count a class's instances.
fn tally(life: &Lifecycle) -> String {
    format!(
        "{} created, {} never released",
        count(life.created),
        count(release::unreleased(life))
    )
}

fn finding(
    ev: &Evidence,
    sc: &Sidecar,
    w: &WrapperClass,
    life: &Lifecycle,
    series: &[u64],
    (method, function, module): (String, String, &str),
) -> Finding {
    let class = w.class.as_str();
    let label = format!("{class}#{method}");
    let first = series.first().copied().unwrap_or(0);
    let last = series.last().copied().unwrap_or(0);
    let grown = last.saturating_sub(first);
    let mut evidence = vec![EvidenceItem::new(
        Source::Lifecycle,
        format!(
            "{class}: {} created, {} released by {method} ({} never released)",
            count(life.created),
            count(life.released),
            count(release::unreleased(life))
        ),
    )];
    evidence.push(EvidenceItem::new(
        Source::Lifecycle,
        format!(
            "never released at each round: {} ({} instances)",
            series
                .iter()
                .map(|&n| count(n))
                .collect::<Vec<_>>()
                .join(" → "),
            signed(i64::try_from(grown).unwrap_or(i64::MAX))
        ),
    ));
    // Unreleased instances no longer alive were collected without their release: with no
    // finalizer, what they held in native memory is lost.
    let live = ev
        .heap
        .last()
        .map(|h| h.summary.histogram.get(class).map_or(0, |r| r.count));
    let mut confidence = Confidence::Low;
    if let Some(live) = live {
        let live = u64::try_from(live).unwrap_or(0);
        let dropped = last.saturating_sub(live);
        evidence.push(EvidenceItem::new(
            Source::Heap,
            format!(
                "{} alive in the last heap snapshot: the other {} unreleased ones were collected by the GC without {method}",
                count(live),
                count(dropped)
            ),
        ));
        if dropped.saturating_mul(2) >= last {
            confidence = Confidence::Medium;
        }
    }
    for m in w
        .methods
        .iter()
        .filter(|m| release::calls(m, module, &|f| f == function))
    {
        let mut item = EvidenceItem::new(
            Source::Wrapper,
            format!(
                "{} calls {function}, the release of what an instance holds",
                release::method_label(w, m)
            ),
        );
        if let Some(at) = release::method_at(m) {
            item = item.at(at);
        }
        evidence.push(item);
    }
    evidence.push(EvidenceItem::new(
        Source::Wrapper,
        format!("{class} has no finalizer: nothing frees what an instance holds unless {method} is called"),
    ));
    let (_, before) = release::first_counts(ev, sc, class);
    let blame = Blame {
        class: class.to_owned(),
        release_method: Some(method.clone()),
        release_function: Some(function.clone()),
        evidence: Vec::new(),
        created_at: release::creation_sites(ev, Some(life), before, class),
        confidence,
        by_name: false,
    };
    evidence.extend(release::creation_evidence(&blame));
    evidence.push(EvidenceItem::new(
        Source::Native,
        format!(
            "{NOT_MEASURED}: how much each unreleased {class} holds is unknown; rerun with `--backend lsan` (or valgrind) to measure it and see the native stack that allocates it"
        ),
    ));
    let headline = format!("{label} is not called: {class} instances are dropped unreleased");
    let title = format!(
        "{headline}, {} more never released — {NOT_MEASURED}",
        count(grown)
    );
    let mut f = Finding::new(FindingKind::MissingRelease, confidence, title)
        .headline(headline)
        .identify(&[class]);
    f.class = Some(class.to_owned());
    f.count = i64::try_from(grown).unwrap_or(i64::MAX);
    f.evidence = evidence;
    f.suggestion = Some(release::release_suggestion(&blame, Some(label)));
    f
}
