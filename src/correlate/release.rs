//! Rule 2, missing release on an FFI wrapper: a native site that grows (or, in a single
//! report, leaks) is tied to the FFI module bound to its library, to the attached function on
//! its stack and that function's family (`zmq_msg_`), to the wrapper class whose methods call
//! the family, to the wrapper's release method (the one calling the family's release function)
//! and to the wrapper's lifecycle counts. A wrapper whose memory a finalizer releases is never
//! blamed.
//!
//! With agent sidecars every link is read from the agent's inventory. With bare files the links
//! are made by name (function families ↔ class names in the heap histograms, release functions
//! from the library's exported symbols on this machine) and the confidence says so.
//!
//! Stage: correlator rule. Input: [`super::sites::SiteSeries`] and the evidence.

use super::classes::{ClassRole, class_role};
use super::finding::{
    Confidence, EvidenceItem, Finding, FindingKind, Location, LocationRole, Source, Suggestion,
};
use super::names;
use super::sites::SiteSeries;
use crate::bundle::{FfiModule, Lifecycle, MethodRole, Sidecar, WrapperClass, WrapperMethod};
use crate::evidence::{Evidence, SourceLine};
use crate::format::{count, quantity, signed};

/// Who a native site belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribution {
    /// A wrapper class left unreleased: a missing-release finding.
    Wrapper(Blame),
    /// The memory belongs to a wrapper whose finalizer releases it: not a finding.
    Finalized { class: String, detail: String },
    /// Bound by a known FFI module or named like Ruby classes, but no wrapper is to blame.
    Module {
        evidence: Vec<EvidenceItem>,
        confidence: Confidence,
    },
    /// Nothing in Ruby is known to own it.
    Unowned,
}

/// A wrapper class blamed for a site.
#[derive(Debug, Clone, PartialEq)]
pub struct Blame {
    pub class: String,
    /// Ruby method that releases (`close`), when found.
    pub release_method: Option<String>,
    /// C function it calls (`zmq_msg_close`), when found.
    pub release_function: Option<String>,
    pub evidence: Vec<EvidenceItem>,
    /// Where unreleased instances are created: the site the fix names first, then the others.
    pub created_at: Vec<Location>,
    pub confidence: Confidence,
    /// True when the links were made by name, without agent data.
    pub by_name: bool,
}

/// Attributes a site, from the newest sidecar when there is one, by name otherwise.
pub fn attribute(ev: &Evidence, site: &SiteSeries) -> Attribution {
    match ev.latest_sidecar() {
        Some(sc) => attribute_with_sidecar(ev, sc, site),
        None => attribute_by_name(ev, site),
    }
}

fn module_binds(m: &FfiModule, library: &str) -> bool {
    let want = names::library_stem(library);
    let base = library.rsplit('/').next().unwrap_or(library);
    m.libraries.iter().any(|l| {
        l.path
            .as_deref()
            .is_some_and(|p| p.rsplit('/').next() == Some(base))
            || names::library_stem(&l.name) == want
            || l.path
                .as_deref()
                .is_some_and(|p| names::library_stem(p) == want)
    })
}

pub(super) fn method_label(w: &WrapperClass, m: &WrapperMethod) -> String {
    let sep = if m.singleton { "." } else { "#" };
    format!("{}{sep}{}", w.class, m.name)
}

pub(super) fn method_at(m: &WrapperMethod) -> Option<SourceLine> {
    Some(SourceLine {
        file: m.file.clone()?,
        line: m.line?,
    })
}

/// The family of an attached symbol within its module and the family's release functions:
/// the longest `_` prefix under which the module attaches a release (`zmq_msg_` → `zmq_msg_close`).
pub(super) fn family_of(m: &FfiModule, symbol: &str) -> Option<(String, Vec<String>)> {
    names::family_prefixes(symbol)
        .into_iter()
        .find_map(|prefix| {
            let releases: Vec<String> = m
                .functions
                .iter()
                .filter(|f| names::release_verb(&f.symbol, prefix).is_some())
                .map(|f| f.symbol.clone())
                .collect();
            (!releases.is_empty()).then(|| (prefix.to_owned(), releases))
        })
}

pub(super) fn calls(m: &WrapperMethod, module: &str, pred: &dyn Fn(&str) -> bool) -> bool {
    m.calls
        .iter()
        .any(|c| (c.module.is_empty() || c.module == module) && pred(&c.function))
}

/// The wrapper's method that releases: one calling a family release function, else (family
/// unknown) one the agent marked as release or that calls a release-named function.
pub(super) fn release_method<'a>(
    w: &'a WrapperClass,
    module: &str,
    releases: &[String],
) -> Option<(&'a WrapperMethod, String)> {
    let found = |m: &&WrapperMethod| -> Option<String> {
        m.calls
            .iter()
            .filter(|c| c.module.is_empty() || c.module == module)
            .find(|c| {
                if releases.is_empty() {
                    m.role == MethodRole::Release || names::is_release_name(&c.function)
                } else {
                    releases.contains(&c.function)
                }
            })
            .map(|c| c.function.clone())
    };
    let mut methods: Vec<&WrapperMethod> = w.methods.iter().collect();
    // Instance methods the agent marked as release first, then release-named ones.
    methods.sort_by_key(|m| {
        (
            m.singleton,
            m.role != MethodRole::Release,
            !names::is_release_name(&m.name),
        )
    });
    methods.into_iter().find_map(|m| found(&m).map(|f| (m, f)))
}

pub(super) fn lifecycle<'a>(sc: &'a Sidecar, class: &str) -> Option<&'a Lifecycle> {
    sc.lifecycle.iter().find(|l| l.class == class)
}

pub(super) fn unreleased(l: &Lifecycle) -> u64 {
    l.created.saturating_sub(l.released)
}

/// Created ≫ released: at least a tenth of the instances were never released.
pub(super) fn unbalanced(l: &Lifecycle) -> bool {
    let u = unreleased(l);
    u > 0 && u.saturating_mul(10) >= l.created
}

fn attribute_with_sidecar(ev: &Evidence, sc: &Sidecar, site: &SiteSeries) -> Attribution {
    let library = site.library();
    let attached = site.outward().find_map(|f| {
        let name = f.function.as_deref()?;
        sc.ffi
            .iter()
            .find(|m| m.functions.iter().any(|fun| fun.symbol == name))
            .map(|m| (m, name))
    });
    let bound: Vec<&FfiModule> = match library {
        Some(l) => sc.ffi.iter().filter(|m| module_binds(m, l)).collect(),
        None => Vec::new(),
    };
    let module = match (attached, bound.first()) {
        (Some((m, _)), _) => m,
        (None, Some(m)) => *m,
        (None, None) => return Attribution::Unowned,
    };
    let mut evidence = Vec::new();
    let lib_text = module
        .libraries
        .iter()
        .map(|l| match &l.path {
            Some(p) => format!("{} ({p})", l.name),
            None => l.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let family = attached.and_then(|(m, sym)| family_of(m, sym));
    let (family_prefix, releases) = family.clone().unwrap_or_default();
    match (attached, &family) {
        (Some((_, sym)), Some((prefix, rel))) => evidence.push(EvidenceItem::new(
            Source::Ffi,
            format!(
                "{sym} is on the leak's stack: {} (bound to {lib_text}) attaches it; its family {prefix}* is released by {}",
                module.name,
                rel.join(", ")
            ),
        )),
        (Some((_, sym)), None) => evidence.push(EvidenceItem::new(
            Source::Ffi,
            format!(
                "{sym} is on the leak's stack: {} (bound to {lib_text}) attaches it, but no release function of its family",
                module.name
            ),
        )),
        (None, _) => evidence.push(EvidenceItem::new(
            Source::Ffi,
            format!(
                "no attached function on the leak's stack ({} allocates on its own, or is stripped): attributed by library — {} is bound to {lib_text}",
                library.unwrap_or("the library"),
                module.name
            ),
        )),
    }

    // Wrappers that call into the family (or, family unknown, into the module).
    let in_family = |f: &str| family_prefix.is_empty() || f.starts_with(family_prefix.as_str());
    let candidates: Vec<&WrapperClass> = sc
        .wrappers
        .iter()
        .filter(|w| w.methods.iter().any(|m| calls(m, &module.name, &in_family)))
        .collect();

    // Memory a finalizer releases is not a missing release — unless another wrapper of the
    // family has a release method of its own and leaves its instances unreleased: that one's
    // memory no finalizer frees. (ffi-rzmq: ZMQ::ManagedMessage frees in a finalizer, the plain
    // ZMQ::Message a program makes has only `close`; with an FFI::AutoPointer the class the
    // program makes has no release method, the pointer class frees.)
    let finalizing = candidates.iter().find(|w| {
        w.finalizer
            && (releases.is_empty()
                || w.methods
                    .iter()
                    .any(|m| calls(m, &module.name, &|f| releases.iter().any(|r| r == f))))
    });
    let released_by_hand_yet_left = candidates.iter().any(|w| {
        !w.finalizer
            && release_method(w, &module.name, &releases).is_some()
            && lifecycle(sc, &w.class).is_some_and(unbalanced)
    });
    if let Some(w) = finalizing
        && !family_prefix.is_empty()
        && !released_by_hand_yet_left
    {
        return finalized(w);
    }

    let mut ranked: Vec<(&WrapperClass, Option<&Lifecycle>)> = candidates
        .iter()
        .filter(|w| !w.finalizer)
        .map(|w| (*w, lifecycle(sc, &w.class)))
        .collect();
    let attached_sym = attached.map(|(_, s)| s);
    ranked.sort_by_key(|(w, l)| {
        let calls_attached = attached_sym.is_some_and(|s| {
            w.methods
                .iter()
                .any(|m| calls(m, &module.name, &|f| f == s))
        });
        (
            std::cmp::Reverse(l.map(unreleased).unwrap_or(0)),
            !calls_attached,
        )
    });
    let Some(&(wrapper, life)) = ranked.first() else {
        if let Some(w) = candidates.iter().find(|w| w.finalizer) {
            return finalized(w);
        }
        return Attribution::Module {
            evidence,
            confidence: Confidence::Medium,
        };
    };
    if let Some(l) = life
        && !unbalanced(l)
    {
        evidence.push(EvidenceItem::new(
            Source::Lifecycle,
            format!(
                "{}: {} created, {} released — released as often as created, so not the owner",
                l.class,
                count(l.created),
                count(l.released)
            ),
        ));
        return Attribution::Module {
            evidence,
            confidence: Confidence::Medium,
        };
    }
    if family_prefix.is_empty() && life.is_none() {
        // Attributed by library only, and nothing says this wrapper is left unreleased.
        return Attribution::Module {
            evidence,
            confidence: Confidence::Medium,
        };
    }

    // The wrapper's methods that call into the family, its release and allocating ones first.
    let release = release_method(wrapper, &module.name, &releases);
    let mut shown: Vec<&WrapperMethod> = wrapper
        .methods
        .iter()
        .filter(|m| calls(m, &module.name, &in_family))
        .collect();
    shown.sort_by_key(|m| {
        let is_release = release.as_ref().is_some_and(|(r, _)| std::ptr::eq(*r, *m));
        (!is_release, m.role != MethodRole::Allocate)
    });
    for m in shown.into_iter().take(4) {
        let called: Vec<&str> = m.calls.iter().map(|c| c.function.as_str()).collect();
        let mut item = EvidenceItem::new(
            Source::Wrapper,
            format!("{} calls {}", method_label(wrapper, m), called.join(", ")),
        );
        if let Some(at) = method_at(m) {
            item = item.at(at);
        }
        evidence.push(item);
    }
    if release.is_none() {
        evidence.push(EvidenceItem::new(
            Source::Wrapper,
            format!(
                "{} has no method that calls {}",
                wrapper.class,
                if releases.is_empty() {
                    "a release function".to_owned()
                } else {
                    releases.join(" or ")
                }
            ),
        ));
    }

    let (earlier, before) = first_counts(ev, sc, &wrapper.class);
    let mut proportional = false;
    if let Some(l) = life {
        let (items, moves_together) = lifecycle_evidence(l, earlier, before, site);
        evidence.extend(items);
        proportional = moves_together;
    }

    let mut confidence = Confidence::Medium;
    let linked = attached.is_some() || proportional;
    if site.is_growing() && linked && release.is_some() && life.is_some() {
        confidence = Confidence::High;
    }
    if release.is_none() || life.is_none() {
        confidence = confidence.lowered();
    }
    let created_at = creation_sites(ev, life, before, &wrapper.class);
    Attribution::Wrapper(Blame {
        class: wrapper.class.clone(),
        release_method: release.as_ref().map(|(m, _)| m.name.clone()),
        release_function: release.map(|(_, f)| f),
        evidence,
        created_at,
        confidence,
        by_name: false,
    })
}

/// Whether an earlier sidecar than `sc` exists, and the class's counts in the first one. A
/// sidecar taken before the agent found the class (the program was still loading) has none,
/// which means nothing counted yet: zero.
pub(super) fn first_counts<'a>(
    ev: &'a Evidence,
    sc: &Sidecar,
    class: &str,
) -> (bool, Option<&'a Lifecycle>) {
    let earlier = ev.sidecars.first().filter(|f| !std::ptr::eq(*f, sc));
    (earlier.is_some(), earlier.and_then(|f| lifecycle(f, class)))
}

/// The lifecycle counts of a class, and how its unreleased instances grew next to the site's
/// blocks between the first and the last snapshot; true when the two move together (between a
/// quarter and four blocks per instance).
pub(super) fn lifecycle_evidence(
    l: &Lifecycle,
    earlier: bool,
    before: Option<&Lifecycle>,
    site: &SiteSeries,
) -> (Vec<EvidenceItem>, bool) {
    let methods = if l.release_methods.is_empty() {
        "release".to_owned()
    } else {
        l.release_methods.join("/")
    };
    let mut evidence = vec![EvidenceItem::new(
        Source::Lifecycle,
        format!(
            "{}: {} created, {} released by {methods} ({} never released)",
            l.class,
            count(l.created),
            count(l.released),
            count(unreleased(l))
        ),
    )];
    let mut proportional = false;
    if earlier {
        // Sidecar counts are whatever the file says: the difference saturates.
        let du = i64::try_from(unreleased(l))
            .unwrap_or(i64::MAX)
            .saturating_sub(before.map_or(0, |b| i64::try_from(unreleased(b)).unwrap_or(i64::MAX)));
        let db = site.delta_blocks();
        if du > 0 && db > 0 {
            let ratio = db as f64 / du as f64;
            proportional = (0.25..=4.0).contains(&ratio);
            evidence.push(EvidenceItem::new(
                Source::Lifecycle,
                format!(
                    "unreleased {} grew by {} between the first and last snapshot while the site gained {} blocks ({ratio:.2} blocks per instance{})",
                    l.class,
                    count(du),
                    count(db),
                    if proportional { ": they move together" } else { "" }
                ),
            ));
        }
    }
    (evidence, proportional)
}

fn finalized(w: &WrapperClass) -> Attribution {
    Attribution::Finalized {
        class: w.class.clone(),
        detail: w
            .finalizer_detail
            .clone()
            .unwrap_or_else(|| "released by a finalizer".to_owned()),
    }
}

/// Where unreleased instances are created, the leading site first (role
/// [`LocationRole::Created`]), every other one after it ([`LocationRole::AlsoCreated`]).
///
/// The leading site is the one whose unreleased instances best explain the native growth:
/// the most instances left unreleased between the first and the last snapshot (the agent's
/// per-site `created`/`released` counts in the first and the newest sidecar; unreleased in the
/// newest alone when there is one), then the most created, then file order. Sites whose
/// instances were all released are left out. Without lifecycle counts, the heap's allocation
/// sites stand in (live instances, no releases known).
pub(super) fn creation_sites(
    ev: &Evidence,
    life: Option<&Lifecycle>,
    before: Option<&Lifecycle>,
    class: &str,
) -> Vec<Location> {
    struct Site<'a> {
        file: &'a str,
        line: u32,
        created: u64,
        released: Option<u64>,
        unreleased: u64,
        grown: u64,
        /// Counted from a heap dump's sites traced in sampled windows.
        sampled: bool,
    }
    let unreleased_at = |l: &Lifecycle, file: &str, line: u32| -> u64 {
        l.created_at
            .iter()
            .find(|s| s.file == file && s.line == line)
            .map_or(0, |s| s.count.saturating_sub(s.released.unwrap_or(0)))
    };
    let mut sites: Vec<Site> = life
        .map(|l| {
            l.created_at
                .iter()
                .map(|s| {
                    let unreleased = s.count.saturating_sub(s.released.unwrap_or(0));
                    let earlier = before.map_or(0, |b| unreleased_at(b, &s.file, s.line));
                    Site {
                        file: s.file.as_str(),
                        line: s.line,
                        created: s.count,
                        released: s.released,
                        unreleased,
                        grown: unreleased.saturating_sub(earlier),
                        sampled: false,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if sites.is_empty()
        && let Some(h) = ev
            .heap
            .iter()
            .rev()
            .find(|h| !h.summary.alloc_sites.is_empty())
    {
        sites = h
            .summary
            .alloc_sites
            .iter()
            .filter(|s| s.class == class)
            .map(|s| Site {
                file: s.file.as_str(),
                line: s.line,
                created: s.count,
                released: None,
                unreleased: s.count,
                grown: s.count,
                sampled: ev.alloc_sites_sampled,
            })
            .collect();
    }
    sites.retain(|s| s.unreleased > 0);
    sites.sort_by(|a, b| {
        (b.grown, b.created)
            .cmp(&(a.grown, a.created))
            .then_with(|| (a.file, a.line).cmp(&(b.file, b.line)))
    });
    // Sites within 1% of the leader in growth and in instances made are a tie, whatever the
    // exact counts: a snapshot can fall between a receive and the send it causes, one message
    // apart. The first of them in the source leads, so the fix names the same line every run.
    let near = |a: u64, b: u64| a.abs_diff(b) <= a.max(b) / 100;
    if let Some((grown, created)) = sites.first().map(|s| (s.grown, s.created))
        && let Some(lead) = (0..sites.len())
            .filter(|&i| near(sites[i].grown, grown) && near(sites[i].created, created))
            .min_by_key(|&i| (sites[i].file, sites[i].line))
    {
        let site = sites.remove(lead);
        sites.insert(0, site);
    }
    sites
        .into_iter()
        .enumerate()
        .map(|(i, s)| Location {
            file: s.file.to_owned(),
            line: s.line,
            role: if i == 0 {
                LocationRole::Created
            } else {
                LocationRole::AlsoCreated
            },
            count: Some(s.created),
            released: s.released,
            sampled: s.sampled,
            code: ev
                .sources
                .get(s.file)
                .and_then(|src| super::source_hint::line_text(src, s.line)),
        })
        .collect()
}

/// Classes of the heap histograms, with their newest count.
fn heap_classes(ev: &Evidence) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = Vec::new();
    for h in ev.heap.iter().rev() {
        for row in &h.summary.histogram.rows {
            if !out.iter().any(|(n, _)| *n == row.name) {
                out.push((row.name.clone(), row.count));
            }
        }
    }
    out
}

/// The C function a site is about by name: the site's own symbol, or the first exported
/// function of the site's library on the way outward.
fn named_function(ev: &Evidence, site: &SiteSeries) -> Option<String> {
    let exports = site
        .library()
        .and_then(|l| ev.library_exports.iter().find(|e| e.library == l));
    let library = site.library();
    site.outward().find_map(|f| {
        let name = f.function.as_deref()?;
        if f.library().is_some() && f.library() != library {
            return None;
        }
        let exported = exports.is_none_or(|e| e.symbols.iter().any(|s| s == name));
        (exported && name.contains('_') && !name.contains("::") && !name.contains(' '))
            .then(|| name.to_owned())
    })
}

fn attribute_by_name(ev: &Evidence, site: &SiteSeries) -> Attribution {
    let Some(function) = named_function(ev, site) else {
        return attribute_by_library_name(ev, site);
    };
    let classes = heap_classes(ev);
    // The longest family under which the heap has classes named alike.
    let mut chosen: Option<(&str, Vec<&(String, i64)>)> = None;
    for prefix in names::family_prefixes(&function) {
        let matches: Vec<&(String, i64)> = classes
            .iter()
            .filter(|(c, _)| {
                class_role(c) >= ClassRole::Binding && names::family_match(c, prefix).is_some()
            })
            .collect();
        if !matches.is_empty() {
            chosen = Some((prefix, matches));
            break;
        }
    }
    let Some((prefix, mut matches)) = chosen else {
        return Attribution::Unowned;
    };
    matches.sort_by(|a, b| {
        class_role(&b.0)
            .cmp(&class_role(&a.0))
            .then_with(|| b.1.cmp(&a.1))
    });
    let all: Vec<&str> = matches.iter().map(|(c, _)| c.as_str()).collect();
    let modules: Vec<&str> = all
        .iter()
        .filter(|c| class_role(c) == ClassRole::Binding && !c.starts_with("FFI::"))
        .filter_map(|c| c.split("::").next())
        .collect();
    let mut evidence = vec![
        EvidenceItem::new(
            Source::Names,
            format!(
                "{function} belongs to the {prefix}* family; heap classes named like it: {}{}",
                all.join(", "),
                if modules.is_empty() {
                    String::new()
                } else {
                    format!(" (FFI module {} by its name)", modules[0])
                }
            ),
        )
        .heuristic(),
    ];
    let (class, _) = matches[0];
    if class_role(class) != ClassRole::User {
        return Attribution::Module {
            evidence,
            confidence: Confidence::Low,
        };
    }
    // The release function from the library's exports on this machine.
    let stem = site
        .library()
        .map(names::library_stem)
        .or_else(|| names::words(prefix).into_iter().next());
    let exports = ev
        .library_exports
        .iter()
        .find(|e| stem.as_deref() == Some(names::library_stem(&e.library).as_str()));
    let mut release_function = None;
    let mut release_method = None;
    match exports {
        Some(e) => {
            if let Some((sym, verb)) = e
                .symbols
                .iter()
                .find_map(|s| names::release_verb(s, prefix).map(|v| (s.clone(), v.to_owned())))
            {
                evidence.push(
                    EvidenceItem::new(
                        Source::Symbols,
                        format!(
                            "{} ({}) exports {sym}: the {prefix}* release, which a binding calls from `{verb}`",
                            e.library,
                            e.path.display()
                        ),
                    )
                    .heuristic(),
                );
                release_function = Some(sym);
                release_method = Some(verb);
            } else {
                evidence.push(EvidenceItem::new(
                    Source::Symbols,
                    format!("{} exports no release function for {prefix}*", e.library),
                ));
            }
        }
        None => evidence.push(EvidenceItem::new(
            Source::Symbols,
            format!(
                "the library behind {prefix}* is not on this machine: its release function is unknown"
            ),
        )),
    }
    let created_at = creation_sites(ev, None, None, class);
    Attribution::Wrapper(Blame {
        class: class.clone(),
        release_method,
        release_function,
        evidence,
        created_at,
        confidence: Confidence::Low,
        by_name: true,
    })
}

/// No C function to go by (a stripped library): only the library's name, matched against the
/// heap's class names. Never enough to blame one class.
fn attribute_by_library_name(ev: &Evidence, site: &SiteSeries) -> Attribution {
    let Some(library) = site.library() else {
        return Attribution::Unowned;
    };
    let stem = names::library_stem(library);
    let classes: Vec<String> = heap_classes(ev)
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| class_role(c) >= ClassRole::Binding && names::family_match(c, &stem).is_some())
        .take(6)
        .collect();
    if classes.is_empty() {
        return Attribution::Unowned;
    }
    Attribution::Module {
        evidence: vec![
            EvidenceItem::new(
                Source::Names,
                format!(
                    "no named function on the stack; {library} is named like these heap classes: {} (a bundle from `leakhunt run` would say which one owns it)",
                    classes.join(", ")
                ),
            )
            .heuristic(),
        ],
        confidence: Confidence::Low,
    }
}

/// A short stack for evidence: the site and up to `n` frames outward, site last.
/// When the site's own frame has no name, its library has no symbols for it (Debian's libzmq
/// is stripped): how to get the names.
pub fn unnamed_site_hint(site: &SiteSeries) -> Option<EvidenceItem> {
    if site.frame.function.is_some() {
        return None;
    }
    let lib = site.library()?;
    Some(EvidenceItem::new(
        Source::Native,
        format!(
            "{lib} has no symbol for the allocating frame (stripped): install its debug symbols (on Linux a -dbgsym or -dbg package, read from /usr/lib/debug/.build-id) or build it with -g, and leakhunt names these frames"
        ),
    ))
}

pub fn short_stack(site: &SiteSeries, n: usize) -> String {
    let mut frames: Vec<String> = site.outward().take(n).map(|f| f.label()).collect();
    frames.reverse();
    frames.join(" → ")
}

/// How a site grew, in words, for evidence lists.
pub fn site_text(site: &SiteSeries) -> String {
    let lib = site
        .library()
        .map(|l| format!(" in {l}"))
        .unwrap_or_default();
    if site.blocks.len() >= 2 {
        let blocks: Vec<String> = site.blocks.iter().map(|&b| count(b)).collect();
        format!(
            "{}{lib}: {} leaked blocks per snapshot ({} blocks, {} bytes)",
            site.key.function,
            blocks.join(" → "),
            signed(site.delta_blocks()),
            signed(site.delta_bytes())
        )
    } else {
        format!(
            "{}{lib}: {} for {} bytes",
            site.key.function,
            quantity(site.last_blocks(), "leak"),
            count(site.last_bytes())
        )
    }
}

/// Creation sites shown one by one in a missing-release finding's evidence; JSON's
/// `suggestion.locations` keeps them all.
const MAX_CREATION_LINES: usize = 6;

/// "W instances created at f.rb:37 (…)" for the leading site, "also created at" for the
/// others, then a count of those past [`MAX_CREATION_LINES`].
pub(super) fn creation_evidence(blame: &Blame) -> Vec<EvidenceItem> {
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
                    count(c),
                    count(c.saturating_sub(r))
                ),
                (Some(_), None) => format!(" ({})", loc.count_text().unwrap_or_default()),
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
                quantity(rest.len(), "site")
            ),
        ));
    }
    out
}

pub fn missing_release(blame: &Blame, sites: &[&SiteSeries], over_time: bool) -> Finding {
    let top = sites[0];
    let (bytes, blocks) = super::sites::measure_all(sites, over_time);
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
    // The claim, then its measure: a finding merged over several processes keeps the claim.
    let headline = match (&method, blame.by_name) {
        (Some(m), false) => format!("{m} is not called: {lib}memory from {}", top.key.function),
        (Some(m), true) => format!(
            "{m} is probably not called (matched by name): {lib}memory from {}",
            top.key.function
        ),
        (None, _) => format!(
            "{} instances are not released: {lib}memory from {}",
            blame.class, top.key.function
        ),
    };
    let title = format!("{headline} {how}");
    let mut evidence: Vec<EvidenceItem> = Vec::new();
    for s in sites {
        evidence.push(EvidenceItem::new(Source::Native, site_text(s)));
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!("stack: {}", short_stack(s, 6)),
        ));
    }
    evidence.extend(unnamed_site_hint(top));
    evidence.extend(blame.evidence.iter().cloned());
    evidence.extend(creation_evidence(blame));
    let mut f = Finding::new(FindingKind::MissingRelease, blame.confidence, title)
        .headline(headline)
        .identify(&[blame.class.as_str()]);
    f.class = Some(blame.class.clone());
    f.native = Some(top.owner());
    f.bytes = bytes;
    f.count = blocks;
    f.evidence = evidence;
    f.suggestion = Some(release_suggestion(blame, method));
    f
}

/// The fix for a missing release: call the release method after the last use of each instance,
/// at the leading creation site, and the shapes that call can take.
pub(super) fn release_suggestion(blame: &Blame, method: Option<String>) -> Suggestion {
    let var = names::instance_variable(&blame.class);
    // The fix names the leading site only; the others are evidence lines.
    let where_created = blame
        .created_at
        .first()
        .map(|l| format!(" created at {}", l.site()))
        .unwrap_or_default();
    let text = match (method.as_deref(), &blame.release_function) {
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
    Suggestion {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::sites::{site_series, tests::frame, tests::report};
    use crate::evidence::NativeSnapshot;

    /// Two sites of one family whose sizes each fill most of the u64 range: their sum
    /// saturates instead of overflowing (a panic in debug builds, a negative size in release
    /// builds).
    #[test]
    fn two_huge_sites_of_one_family_saturate() {
        let stack = |f: &str| {
            vec![
                frame("ffi_call_unix64", Some("/usr/lib/libffi.so.8")),
                frame(f, Some("/tmp/libzmq.so.5")),
                frame("malloc", Some("/usr/lib/liblsan.so.0")),
            ]
        };
        let huge = u64::MAX - 1;
        let native = vec![NativeSnapshot {
            t: None,
            snapshot: None,
            at_exit: false,
            report: report(
                1,
                &[
                    (stack("zmq_msg_init_size"), huge, huge),
                    (stack("zmq_msg_init"), huge, huge),
                ],
            ),
        }];
        let sites = site_series(&native);
        assert_eq!(sites.len(), 2);
        let blame = Blame {
            class: "ZMQ::Message".into(),
            release_method: Some("close".into()),
            release_function: Some("zmq_msg_close".into()),
            evidence: Vec::new(),
            created_at: Vec::new(),
            confidence: Confidence::High,
            by_name: false,
        };
        let f = missing_release(&blame, &sites.iter().collect::<Vec<_>>(), false);
        assert_eq!(f.bytes, i64::MAX);
        assert_eq!(f.count, i64::MAX);
        assert!(
            f.title.ends_with(
                "leaks 9,223,372,036,854,775,807 blocks / 9,223,372,036,854,775,807 bytes"
            ),
            "{}",
            f.title
        );
    }
}
