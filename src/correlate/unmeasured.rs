//! Rule 2 without native evidence: a missing release told from the wrapper lifecycle alone,
//! when the run measured no native memory (`--backend none`). A wrapper class is blamed when
//! its instances are created far more often than released, the instances never released keep
//! growing round after round (not a one-off at start), the class has a release method (one
//! that calls its family's release function) and no finalizer. Instances that a Ruby
//! container keeps are the retention finding's business: the caller folds this finding into
//! it ([`super::fold_release_into_retention`]).
//!
//! Under `--backend none` the agent also measured malloc after each round's full GC
//! ([`super::unaccounted`]): when the native memory no Ruby object holds rises with the
//! wrapper's unreleased instances the GC collected, and with no other candidate's, the
//! finding is sized by that growth ([`MEASURED_BY_MALLOC`]); else it says that native memory
//! was not measured. Either way it ranks below one a native report backs. C extension classes
//! are sized the same way, or only noted: whether their free function releases what an
//! instance holds (zlib's does, a leaking extension's does not) cannot be told without a
//! measure.
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

/// How a finding made without a native backend was sized (an FFI wrapper's or a C extension
/// class's missing release, or a C method's own leak).
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

/// The unreleased instances of `class` at a malloc round (its sidecar's lifecycle; 0 when the
/// agent did not count the class then).
fn unreleased_at(ev: &Evidence, round: &unaccounted::Round, class: &str) -> u64 {
    ev.sidecars
        .iter()
        .find(|s| s.snapshot == round.snapshot)
        .and_then(|s| release::lifecycle(s, class))
        .map_or(0, release::unreleased)
}

/// Whether the unaccounted native memory rose with the unreleased instances of an FFI wrapper
/// `class` that the GC collected (unreleased, less those alive in the round's heap dump).
/// Instances still alive keep what they hold: when they pile up too (Ruby retains them, the
/// retention finding's business), the growth cannot be told apart from what they keep, and
/// nothing is explained.
fn explained_by_dropped(
    ev: &Evidence,
    rounds: &[unaccounted::Round],
    native: &[i64],
    class: &str,
) -> Option<Explained> {
    let judged = ev.judged_heap();
    let (alive, dropped): (Vec<u64>, Vec<u64>) = rounds
        .iter()
        .map(|r| {
            let unreleased = unreleased_at(ev, r, class);
            let alive = judged
                .iter()
                .find(|h| h.snapshot == Some(r.snapshot))
                .and_then(|h| h.summary.histogram.get(class))
                .map_or(0, |row| u64::try_from(row.count).unwrap_or(0));
            (alive, unreleased.saturating_sub(alive))
        })
        .unzip();
    let explained = unaccounted::explains(native, &dropped)?;
    let kept = match (alive.first(), alive.last()) {
        (Some(first), Some(last)) => last.saturating_sub(*first),
        _ => 0,
    };
    (kept.saturating_mul(RETAINED_SHARE) <= explained.instances).then_some(explained)
}

/// Instances kept alive may grow by at most one for this many dropped ones: more, and what
/// they hold is part of the growth.
const RETAINED_SHARE: u64 = 10;

/// What malloc's growth says of a wrapper's dropped instances under `--backend none`, when
/// they alone explain it.
struct Measured<'a> {
    explained: Explained,
    rounds: &'a [unaccounted::Round],
    /// The unaccounted bytes of each round.
    native: &'a [i64],
    how: &'a str,
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
    // Under `--backend none` the agent measured malloc after each GC: native memory that rises
    // with one class's dropped instances is what they held.
    let (rounds, how) = match no_native {
        NoNativeEvidence::NotMeasured => unaccounted::rounds(ev, notes),
        NoNativeEvidence::Unread(_) => (Vec::new(), None),
    };
    let native: Vec<i64> = rounds.iter().map(unaccounted::Round::unaccounted).collect();
    let mut wrappers = Vec::new();
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
        wrappers.push((w, life, series, (method, function, module)));
    }
    // An FFI wrapper's instances that are still alive hold their memory (Ruby keeps them, the
    // retention finding's business); the ones collected unreleased lost it.
    let wrappers_explained: Vec<Option<Explained>> = wrappers
        .iter()
        .map(|(w, ..)| explained_by_dropped(ev, &rounds, &native, &w.class))
        .collect();
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
    let explained: Vec<Option<Explained>> = candidates
        .iter()
        .map(|(_, class, _)| {
            let unreleased: Vec<u64> = rounds
                .iter()
                .map(|r| unreleased_at(ev, r, &class.name))
                .collect();
            unaccounted::explains(&native, &unreleased)
        })
        .collect();
    // The growth is one class's only when no other candidate, wrapper or extension class,
    // explains it too.
    let explaining =
        explained.iter().flatten().count() + wrappers_explained.iter().flatten().count();
    let how = how.unwrap_or_default();
    for ((w, life, series, release), explained) in wrappers.into_iter().zip(wrappers_explained) {
        let sized = explained.filter(|_| explaining == 1).map(|e| Measured {
            explained: e,
            rounds: &rounds,
            native: &native,
            how: &how,
        });
        out.push(finding(ev, sc, w, life, &series, release, sized));
    }
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

/// A wrapper's missing release told from its lifecycle; `measured`: sized by the malloc
/// growth its dropped instances explain, else native memory was not measured.
fn finding(
    ev: &Evidence,
    sc: &Sidecar,
    w: &WrapperClass,
    life: &Lifecycle,
    series: &[u64],
    (method, function, module): (String, String, &str),
    measured: Option<Measured>,
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
    if let Some(m) = &measured {
        evidence.push(malloc_evidence(class, m));
    }
    evidence.extend(release::creation_evidence(&blame));
    let headline = format!("{label} is not called: {class} instances are dropped unreleased");
    let (title, bytes, instances) = match &measured {
        Some(m) => {
            evidence.push(EvidenceItem::new(
                Source::Native,
                format!(
                    "malloc was measured without a native backend: rerun with `--backend lsan` (or valgrind) to see the native stack that allocates what each {class} keeps"
                ),
            ));
            let e = m.explained;
            let title = format!(
                "{headline}, native memory grew {} (about {} each) — {MEASURED_BY_MALLOC}",
                human_bytes(e.bytes as f64),
                human_bytes(e.per_instance())
            );
            (title, e.bytes, e.instances)
        }
        None => {
            evidence.push(EvidenceItem::new(
                Source::Native,
                format!(
                    "{NOT_MEASURED}: how much each unreleased {class} holds is unknown; rerun with `--backend lsan` (or valgrind) to measure it and see the native stack that allocates it"
                ),
            ));
            let title = format!(
                "{headline}, {} more never released — {NOT_MEASURED}",
                count(grown)
            );
            (title, 0, grown)
        }
    };
    let mut f = Finding::new(FindingKind::MissingRelease, confidence, title)
        .headline(headline)
        .identify(&[class]);
    f.class = Some(class.to_owned());
    f.bytes = bytes;
    f.count = i64::try_from(instances).unwrap_or(i64::MAX);
    f.evidence = evidence;
    f.suggestion = Some(release::release_suggestion(&blame, Some(label)));
    f
}

/// The malloc series an FFI wrapper's dropped instances explain: how much, how fast, how much
/// each.
fn malloc_evidence(class: &str, m: &Measured) -> EvidenceItem {
    let (e, native) = (m.explained, m.native);
    let seconds = match (m.rounds.first(), m.rounds.last()) {
        (Some(a), Some(b)) => b.t - a.t,
        _ => 0.0,
    };
    // The pace over all the rounds (the explained bytes count only the intervals in which
    // instances were dropped).
    let grown = match (native.first(), native.last()) {
        (Some(first), Some(last)) => last.saturating_sub(*first),
        _ => 0,
    };
    let rate = if seconds > 0.0 && grown > 0 {
        format!(
            "; {}/s from the first round to the last",
            human_bytes(grown as f64 / seconds)
        )
    } else {
        String::new()
    };
    EvidenceItem::new(
        Source::Native,
        format!(
            "native memory no Ruby object holds, after each round's full GC: {} — it rose with the {class} instances collected unreleased in {} round intervals, by {} for {} instances (about {} each, steady from round to round{rate}); measured by {}, minus the heap dump's memsize (the wrapper's own Ruby objects included)",
            series_text(native),
            e.intervals,
            human_bytes(e.bytes as f64),
            count(e.instances),
            human_bytes(e.per_instance()),
            m.how,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::MallocMeasure;
    use crate::correlate::tests::unmeasured_widgets;

    /// A malloc_info document whose totals say `in_use` bytes are in use.
    fn malloc(in_use: u64) -> MallocMeasure {
        MallocMeasure {
            how: "glibc malloc_info(0, FILE*) after the round's full GC".into(),
            xml: format!(
                r#"<malloc version="1"><total type="fast" count="0" size="0"/><total type="rest" count="1" size="1000"/><total type="mmap" count="0" size="0"/><system type="current" size="{}"/></malloc>"#,
                in_use + 1000
            ),
            ..Default::default()
        }
    }

    /// widget-leak.rb under `--backend none`: `widgets[i]` Widgets made and none closed by
    /// round i, `alive[i]` of them alive in its heap dump, `in_use[i]` bytes malloc'd after its
    /// GC. The dump's rows hold nothing outside their slots: the unaccounted memory is `in_use`.
    fn widgets(widgets: &[u64], alive: &[i64], in_use: &[u64]) -> Evidence {
        let mut ev = unmeasured_widgets(widgets, false, 0);
        for (i, sc) in ev.sidecars.iter_mut().enumerate() {
            sc.snapshot = i as u32 + 1;
            sc.t = i as f64;
            sc.malloc = Some(malloc(in_use[i]));
        }
        for (h, &n) in ev.heap.iter_mut().zip(alive) {
            let row = h
                .summary
                .histogram
                .rows
                .iter_mut()
                .find(|r| r.name == "Widget");
            let row = row.expect("a Widget row");
            (row.count, row.bytes) = (n, n * 40);
        }
        ev
    }

    fn judge(ev: &Evidence) -> (Vec<Finding>, Vec<String>) {
        let mut notes = Vec::new();
        let found = findings(ev, &NoNativeEvidence::NotMeasured, false, &mut notes);
        (found, notes)
    }

    /// Each dropped Widget keeps its handle and 256-byte payload (300 bytes with malloc's
    /// headers): malloc grows with them, and the finding is sized by it.
    #[test]
    fn unclosed_widgets_whose_dropped_instances_explain_malloc_growth_are_sized_by_it() {
        let ev = widgets(
            &[100, 600, 1100, 1600],
            &[3, 3, 3, 3],
            &[2_000_000, 2_150_000, 2_300_000, 2_450_000],
        );
        let (found, notes) = judge(&ev);
        let [f] = found.as_slice() else {
            panic!("{found:#?}\n{notes:?}")
        };
        assert_eq!(f.class.as_deref(), Some("Widget"));
        assert!(is_measured_by_malloc(f), "{f:#?}");
        assert!(!is_lifecycle_only(f));
        assert_eq!((f.bytes, f.count), (450_000, 1_500));
        assert_eq!(
            f.title,
            format!(
                "Widget#close is not called: Widget instances are dropped unreleased, native memory grew 439.5 KiB (about 300 B each) — {MEASURED_BY_MALLOC}"
            )
        );
        assert!(
            f.evidence.iter().any(|e| e.source == Source::Native
                && e.text.contains("1.9 MiB → 2.1 MiB → 2.2 MiB → 2.3 MiB")
                && e.text.contains("about 300 B each")
                && e.text
                    .contains("; 146.5 KiB/s from the first round to the last")),
            "{:#?}",
            f.evidence
        );
        assert!(!f.evidence.iter().any(|e| e.text.contains(NOT_MEASURED)));
        let s = f.suggestion.as_ref().unwrap();
        assert_eq!(s.method.as_deref(), Some("Widget#close"));
        assert_eq!(s.locations[0].site(), "widget-leak.rb:7");
    }

    /// objspace's records, which the agent counts under `--backend none` when the free hook is
    /// off between phases, come and go with every window: malloc's bytes with them in are
    /// unsteady, and only once they are taken off does the Widgets' growth show.
    #[test]
    fn objspace_records_counted_by_the_agent_are_taken_off_the_malloc_measure() {
        let records = [1_000u64, 6_000, 2_500, 9_000];
        let mut ev = widgets(
            &[100, 600, 1100, 1600],
            &[3, 3, 3, 3],
            &[2_000_000, 2_150_000, 2_300_000, 2_450_000],
        );
        let (found, _) = judge(&ev);
        assert_eq!(found[0].bytes, 450_000, "{found:#?}");
        for (sc, &n) in ev.sidecars.iter_mut().zip(&records) {
            let m = sc.malloc.take().unwrap();
            let totals = crate::native::malloc_info::parse(m.xml.as_bytes()).unwrap();
            sc.malloc = Some(MallocMeasure {
                records: n,
                record_bytes: 80,
                ..malloc(totals.in_use() + n * 80)
            });
        }
        let (found, notes) = judge(&ev);
        let [f] = found.as_slice() else {
            panic!("{found:#?}\n{notes:?}")
        };
        assert!(is_measured_by_malloc(f), "{f:#?}");
        assert_eq!((f.bytes, f.count), (450_000, 1_500));
        // Without the count, the same bytes are no steady growth.
        for sc in &mut ev.sidecars {
            sc.malloc.as_mut().unwrap().records = 0;
        }
        let (found, _) = judge(&ev);
        assert!(
            found.iter().all(|f| !is_measured_by_malloc(f)),
            "{found:#?}"
        );
    }

    /// Flat malloc (the library frees what a dropped instance holds, or it holds nothing):
    /// today's lifecycle-only finding.
    #[test]
    fn unclosed_widgets_beside_flat_malloc_stay_lifecycle_only() {
        let ev = widgets(
            &[100, 600, 1100, 1600],
            &[3, 3, 3, 3],
            &[2_000_000, 2_000_800, 1_999_500, 2_000_300],
        );
        let (found, _) = judge(&ev);
        let [f] = found.as_slice() else {
            panic!("{found:#?}")
        };
        assert!(is_lifecycle_only(f), "{f:#?}");
        assert_eq!((f.bytes, f.count), (0, 1_500));
        assert!(f.title.ends_with(NOT_MEASURED), "{}", f.title);
    }

    /// Like the seed's leak.rb: half the unreleased instances are kept alive (an Array holds
    /// them) and pile up beside the dropped ones; what the live ones hold grows the memory
    /// as much, so the dropped ones are not what it measures.
    #[test]
    fn unclosed_widgets_that_pile_up_alive_are_not_sized_by_malloc() {
        let ev = widgets(
            &[200, 1200, 2200, 3200],
            &[100, 600, 1100, 1600],
            &[2_000_000, 2_300_000, 2_600_000, 2_900_000],
        );
        let (found, _) = judge(&ev);
        let [f] = found.as_slice() else {
            panic!("{found:#?}")
        };
        assert!(is_lifecycle_only(f), "{f:#?}");
        // Had they been dropped, the same growth would have sized them.
        let dropped = widgets(
            &[200, 1200, 2200, 3200],
            &[100, 100, 100, 100],
            &[2_000_000, 2_300_000, 2_600_000, 2_900_000],
        );
        assert!(is_measured_by_malloc(&judge(&dropped).0[0]));
    }

    /// A C extension class dropped unreleased in step with the Widgets: the growth fits both,
    /// so it sizes neither.
    #[test]
    fn growth_that_an_extension_class_explains_too_sizes_no_wrapper() {
        let mut ev = widgets(
            &[100, 600, 1100, 1600],
            &[3, 3, 3, 3],
            &[2_000_000, 2_150_000, 2_300_000, 2_450_000],
        );
        for sc in &mut ev.sidecars {
            let n = sc.lifecycle[0].created;
            sc.extensions = vec![crate::correlate::tests::ringbuf_extension()];
            let mut ring = sc.lifecycle[0].clone();
            ring.class = "RingBuf".into();
            ring.created = n;
            sc.lifecycle.push(ring);
        }
        let (found, notes) = judge(&ev);
        let [f] = found.as_slice() else {
            panic!("{found:#?}")
        };
        assert_eq!(f.class.as_deref(), Some("Widget"));
        assert!(is_lifecycle_only(f), "{f:#?}");
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("RingBuf (C extension cbufs.so)")
                    && n.contains("several classes at once")),
            "{notes:?}"
        );
    }
}
