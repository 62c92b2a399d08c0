//! Rule 3, C extensions: a native site whose stack passes through a C extension the agent saw
//! loaded belongs to that extension, and — where the stack names the C function it was entered
//! by — to the class whose method that function implements (`ringbuf_initialize` →
//! `RingBuf#initialize`, matched against the C methods the extension defined and the struct
//! names of its DATA objects in the heap). Without a name (a stripped `.so`), the extension's
//! one class whose unreleased instances grew takes it.
//!
//! With unreleased instances of that class growing while it has a release method: a missing
//! release, built like an FFI wrapper's ([`release::missing_release`]). Otherwise the extension
//! leaks on its own, which the program cannot fix by calling anything: the finding names the
//! gem, the method and the Ruby lines that call it. Memory the extension's free function
//! releases never grows, so objects left to the GC (`Zlib::Deflate`) are no finding.
//!
//! Stage: correlator rule. Input: a [`SiteSeries`] and the evidence's sidecars and heaps.

use super::finding::{
    Confidence, EvidenceItem, Finding, FindingKind, Location, LocationRole, Source, Suggestion,
};
use super::names;
use super::release::{self, Blame};
use super::sites::{SiteSeries, is_ffi_frame};
use crate::bundle::{Extension, ExtensionModule, MethodCalls, Sidecar};
use crate::evidence::{Evidence, SourceLine};
use crate::format::{count, quantity};
use crate::native::Frame;

/// Who, in a C extension, a native site belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum Ownership {
    /// Instances of an extension class are left unreleased: a missing release.
    Release(Blame),
    /// The extension leaks with nothing the program could call to release it.
    OnItsOwn(OwnLeak),
}

/// A leak inside a C extension.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnLeak {
    /// The extension's file name (`ringbuf.so`).
    pub extension: String,
    pub path: String,
    /// `"sqlite3 1.4.2"`, when known.
    pub gem: Option<String>,
    /// `Leaky#fill` or `Leaky.fill`, when the stack says which method.
    pub method: Option<String>,
    pub class: Option<String>,
    pub evidence: Vec<EvidenceItem>,
    /// Where the program calls the method (or creates the instances the memory belongs to).
    pub callers: Vec<Location>,
    pub confidence: Confidence,
}

/// The Ruby method a C function implements.
#[derive(Debug, Clone, Copy)]
struct Implemented<'a> {
    module: &'a ExtensionModule,
    method: &'a str,
    singleton: bool,
    function: &'a str,
    /// Letters of the function's name that spell the class (0: the method name alone).
    score: usize,
}

impl Implemented<'_> {
    fn label(&self) -> String {
        let sep = if self.singleton { "." } else { "#" };
        format!("{}{sep}{}", self.module.name, self.method)
    }
}

/// Attributes a site to a C extension, from the newest sidecar; `None` when its stack passes
/// through no extension the agent saw (or reaches it through FFI, the FFI rule's domain).
pub fn attribute(ev: &Evidence, site: &SiteSeries) -> Option<Ownership> {
    let sc = ev.latest_sidecar()?;
    let (ext, frames) = entered(ev, sc, site)?;
    let name = file_name(&ext.path);
    let mut evidence = vec![EvidenceItem::new(
        Source::Extension,
        format!(
            "the stack enters the C extension {name} ({}{}), which defines {}",
            ext.path,
            ext.gem
                .as_deref()
                .map(|g| format!(", gem {g}"))
                .unwrap_or_default(),
            defined_list(ext)
        ),
    )];
    if site.kinds.iter().all(|k| !k.is_primary()) {
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!(
                "every block of this site is an indirect leak and no direct site of {name} grows: its objects point to each other in a leaked cycle, which the tools report as indirect"
            ),
        ));
    }
    let implemented = implemented(ev, ext, &frames);
    let chosen: Option<&ExtensionModule> = match implemented.as_slice() {
        [] => None,
        [one, ..] => {
            let others: Vec<String> = implemented[1..]
                .iter()
                .filter(|i| i.score == one.score)
                .map(Implemented::label)
                .collect();
            let mut text = format!(
                "{} (the frame the extension was entered by) implements {}, by its name",
                one.function,
                one.label()
            );
            if !others.is_empty() {
                text.push_str(&format!(" (or {}: as good a match)", others.join(", ")));
            }
            evidence.push(EvidenceItem::new(Source::Extension, text).heuristic());
            Some(one.module)
        }
    };
    // Ties and stripped extensions: the class whose unreleased instances grew.
    let tied: Vec<&ExtensionModule> = match implemented.first() {
        Some(first) => implemented
            .iter()
            .filter(|i| i.score == first.score)
            .map(|i| i.module)
            .collect(),
        None => ext.modules.iter().collect(),
    };
    let growing = tied
        .iter()
        .copied()
        .filter(|m| !m.release_methods.is_empty())
        .filter_map(|m| unreleased_growth(ev, sc, &m.name).map(|g| (m, g)))
        .max_by_key(|&(_, g)| g);
    let owner = match (chosen, growing) {
        (Some(_), Some((g, _))) if tied.len() > 1 => Some(g),
        (Some(c), _) => Some(c),
        (None, Some((g, _))) => {
            evidence.push(
                EvidenceItem::new(
                    Source::Extension,
                    format!(
                        "no function of {name} on the stack has a name (stripped); {} is its class whose unreleased instances grew",
                        g.name
                    ),
                )
                .heuristic(),
            );
            Some(g)
        }
        (None, None) => None,
    };
    let entry = implemented
        .iter()
        .find(|i| owner.is_some_and(|o| std::ptr::eq(i.module, o)));

    if let Some(class) = owner
        && let Some(blame) = missing_release(ev, sc, site, class, entry.is_some(), &evidence)
    {
        return Some(Ownership::Release(blame));
    }
    Some(Ownership::OnItsOwn(on_its_own(
        ev, sc, site, ext, owner, entry, evidence,
    )))
}

/// The path of the C extension a site's stack passes through (not through FFI), if any.
pub fn entered_path<'a>(ev: &'a Evidence, site: &SiteSeries) -> Option<&'a str> {
    let sc = ev.latest_sidecar()?;
    entered(ev, sc, site).map(|(ext, _)| ext.path.as_str())
}

/// The extension the stack passes through, nearest the site, and its frames there from the
/// innermost to the one the extension was entered by. An FFI frame on the way means the site
/// was reached through FFI: not an extension's.
fn entered<'a, 's>(
    ev: &Evidence,
    sc: &'a Sidecar,
    site: &'s SiteSeries,
) -> Option<(&'a Extension, Vec<&'s Frame>)> {
    let mut frames = site.outward().peekable();
    while let Some(f) = frames.next() {
        if is_ffi_frame(f) {
            return None;
        }
        let Some(ext) = sc.extensions.iter().find(|e| holds(ev, e, f)) else {
            continue;
        };
        let mut inside = vec![f];
        while let Some(next) = frames.next_if(|n| holds(ev, ext, n)) {
            inside.push(next);
        }
        return Some((ext, inside));
    }
    None
}

/// Whether a frame lies in the extension's file: the same path (or the same real path), or
/// the same file name when the report names no directory.
fn holds(ev: &Evidence, ext: &Extension, frame: &Frame) -> bool {
    let Some(module) = frame.module.as_deref() else {
        return false;
    };
    if module == ext.path {
        return true;
    }
    let real = |p: &str| {
        ev.real_modules
            .get(p)
            .cloned()
            .unwrap_or_else(|| p.to_owned())
    };
    if module.contains('/') {
        return real(module) == real(&ext.path);
    }
    module == file_name(&ext.path)
}

pub(super) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// "RingBuf" / "SQLite3::Database, SQLite3::Statement and 3 more".
fn defined_list(ext: &Extension) -> String {
    let mut named: Vec<&str> = ext
        .modules
        .iter()
        .filter(|m| !m.methods.is_empty() || !m.singleton_methods.is_empty())
        .map(|m| m.name.as_str())
        .collect();
    if named.is_empty() {
        named = ext.modules.iter().map(|m| m.name.as_str()).collect();
    }
    match named.len() {
        0 => "nothing the agent saw".to_owned(),
        n if n <= 4 => named.join(", "),
        n => format!(
            "{} and {n_more} more",
            named[..3].join(", "),
            n_more = n - 3
        ),
    }
}

/// The methods the named frames implement, best match first: the frame the extension was
/// entered by counts first (a helper deeper in is not a method), then how much of the
/// function's name spells the class.
fn implemented<'a>(
    ev: &Evidence,
    ext: &'a Extension,
    frames: &[&'a Frame],
) -> Vec<Implemented<'a>> {
    for f in frames.iter().rev() {
        let Some(function) = f.function.as_deref() else {
            continue;
        };
        let mut found: Vec<Implemented<'a>> = Vec::new();
        for m in &ext.modules {
            let struct_name = data_struct(ev, &m.name);
            let methods = m
                .methods
                .iter()
                .map(|x| (x, false))
                .chain(m.singleton_methods.iter().map(|x| (x, true)));
            for (method, singleton) in methods {
                if let Some(score) = names::implements(function, &m.name, struct_name, method) {
                    found.push(Implemented {
                        module: m,
                        method,
                        singleton,
                        function,
                        score,
                    });
                }
            }
        }
        if !found.is_empty() {
            found.sort_by(|a, b| {
                b.score
                    .cmp(&a.score)
                    .then_with(|| a.module.name.cmp(&b.module.name))
            });
            return found;
        }
    }
    Vec::new()
}

/// The C struct a class's instances wrap, from the newest heap snapshot that has one.
fn data_struct<'a>(ev: &'a Evidence, class: &str) -> Option<&'a str> {
    ev.heap.iter().rev().find_map(|h| {
        h.summary
            .data_types
            .iter()
            .find(|d| d.class == class)
            .map(|d| d.struct_name.as_str())
    })
}

/// How many more instances of `class` were unreleased at the newest sidecar than at the first
/// (all of them with one sidecar); `None` when they did not grow or are not counted.
fn unreleased_growth(ev: &Evidence, sc: &Sidecar, class: &str) -> Option<u64> {
    let life = release::lifecycle(sc, class)?;
    let (_, before) = release::first_counts(ev, sc, class);
    let grown = release::unreleased(life).saturating_sub(before.map_or(0, release::unreleased));
    (grown > 0 && release::unbalanced(life)).then_some(grown)
}

/// A missing release when the class has a release method and its unreleased instances grew;
/// `None` otherwise.
fn missing_release(
    ev: &Evidence,
    sc: &Sidecar,
    site: &SiteSeries,
    class: &ExtensionModule,
    named: bool,
    found: &[EvidenceItem],
) -> Option<Blame> {
    let method = class.release_methods.first()?;
    unreleased_growth(ev, sc, &class.name)?;
    let life = release::lifecycle(sc, &class.name)?;
    let (earlier, before) = release::first_counts(ev, sc, &class.name);
    let mut evidence = found.to_vec();
    evidence.push(EvidenceItem::new(
        Source::Extension,
        format!(
            "{} releases what it holds in C by {} (a C method of the extension)",
            class.name,
            class
                .release_methods
                .iter()
                .map(|m| format!("#{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    let (items, proportional) = release::lifecycle_evidence(life, earlier, before, site);
    evidence.extend(items);
    let confidence = if site.is_growing() && (named || proportional) {
        Confidence::High
    } else {
        Confidence::Medium
    };
    Some(Blame {
        class: class.name.clone(),
        release_method: Some(method.clone()),
        release_function: None,
        evidence,
        created_at: release::creation_sites(ev, Some(life), before, &class.name),
        confidence,
        by_name: false,
    })
}

/// Call sites shown one by one as evidence; the suggestion keeps them all.
pub(super) const MAX_CALLER_LINES: usize = 6;

fn on_its_own(
    ev: &Evidence,
    sc: &Sidecar,
    site: &SiteSeries,
    ext: &Extension,
    owner: Option<&ExtensionModule>,
    entry: Option<&Implemented<'_>>,
    mut evidence: Vec<EvidenceItem>,
) -> OwnLeak {
    if let Some(class) = owner {
        evidence.push(EvidenceItem::new(
            Source::Extension,
            why_not_the_program(ev, sc, class),
        ));
    }
    let mut callers: Vec<Location> = Vec::new();
    let mut sampled = false;
    if let (Some(class), Some(entry)) = (owner, entry) {
        if let Some(calls) = class
            .calls
            .iter()
            .find(|c| c.method == entry.method && c.singleton == entry.singleton)
        {
            callers = call_sites(ev, calls);
            sampled = calls.sampled;
            evidence.push(EvidenceItem::new(
                Source::Extension,
                format!(
                    "{}: {} calls{}",
                    entry.label(),
                    count(calls.count),
                    sampled_note(calls)
                ),
            ));
        } else if entry.method == "initialize" && !entry.singleton {
            // A class whose lifecycle is counted: its creation sites are the calls.
            callers =
                release::creation_sites(ev, release::lifecycle(sc, &class.name), None, &class.name);
        }
    }
    for loc in callers.iter().take(MAX_CALLER_LINES) {
        let what = entry.map_or_else(|| "the extension".to_owned(), Implemented::label);
        let counted = match (loc.count, sampled) {
            (Some(c), true) => format!(" ({} sampled)", quantity(c, "call")),
            (Some(c), false) => format!(" ({})", quantity(c, "call")),
            (None, _) => String::new(),
        };
        evidence.push(
            EvidenceItem::new(
                Source::Extension,
                format!("{what} is called at {}{counted}", loc.site()),
            )
            .at(SourceLine {
                file: loc.file.clone(),
                line: loc.line,
            }),
        );
    }
    let confidence = if site.grows_at_every_step() && entry.is_some() {
        Confidence::High
    } else if site.is_growing() {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    OwnLeak {
        extension: file_name(&ext.path).to_owned(),
        path: ext.path.clone(),
        gem: ext.gem.clone(),
        method: entry.map(Implemented::label),
        class: owner.map(|o| o.name.clone()),
        evidence,
        callers,
        confidence,
    }
}

/// What a method's call count says of the call sites listed after it.
pub(super) fn sampled_note(calls: &MethodCalls) -> &'static str {
    if calls.sampled {
        " (call sites below sampled: every call up to 256, then one in 32)"
    } else {
        ""
    }
}

/// Where the program calls a C method, most calls first, with the line's code.
pub(super) fn call_sites(ev: &Evidence, calls: &MethodCalls) -> Vec<Location> {
    calls
        .called_at
        .iter()
        .map(|s| Location {
            file: s.file.clone(),
            line: s.line,
            role: LocationRole::Called,
            count: Some(s.count),
            released: None,
            sampled: false,
            code: ev
                .sources
                .get(&s.file)
                .and_then(|src| super::source_hint::line_text(src, s.line)),
        })
        .collect()
}

/// Why the program cannot release it: the class has no release method, or every instance
/// was released and the memory grew all the same.
pub(super) fn why_not_the_program(ev: &Evidence, sc: &Sidecar, class: &ExtensionModule) -> String {
    if class.release_methods.is_empty() {
        return format!(
            "{} has no release method (close, finish, free, destroy, … none defined in C): nothing the program could call frees this memory",
            class.name
        );
    }
    match release::lifecycle(sc, &class.name) {
        Some(l) if unreleased_growth(ev, sc, &class.name).is_none() => format!(
            "{}: {} created, {} released by {} — the program releases them, and the memory grows all the same",
            class.name,
            count(l.created),
            count(l.released),
            class.release_methods.join("/")
        ),
        _ => format!(
            "{} has {} but its instances are not what grows",
            class.name,
            class
                .release_methods
                .iter()
                .map(|m| format!("#{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The finding for a leak inside an extension, over its sites.
pub fn extension_leak(leak: &OwnLeak, sites: &[&SiteSeries], over_time: bool) -> Finding {
    let top = sites[0];
    let (bytes, blocks) = super::sites::measure_all(sites, over_time);
    let how = if over_time { "grows by" } else { "leaks" };
    let through = leak
        .method
        .as_deref()
        .map(|m| format!(" through {m}"))
        .unwrap_or_default();
    let title = format!(
        "C extension {} leaks on its own — update or report to the gem: {}{through} {how} {} / {} bytes",
        leak.extension,
        top.key.function,
        quantity(blocks, "block"),
        count(bytes)
    );
    let mut evidence: Vec<EvidenceItem> = Vec::new();
    for s in sites {
        evidence.push(EvidenceItem::new(Source::Native, release::site_text(s)));
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!("stack: {}", release::short_stack(s, 8)),
        ));
    }
    evidence.extend(release::unnamed_site_hint(top));
    evidence.extend(leak.evidence.iter().cloned());
    let gem = leak
        .gem
        .as_deref()
        .map(|g| format!("the gem {g}"))
        .unwrap_or_else(|| format!("the gem that ships {}", leak.extension));
    let what = leak
        .method
        .as_deref()
        .map(|m| format!("{m} leaks"))
        .unwrap_or_else(|| format!("{} leaks", leak.extension));
    let text = format!(
        "Update {gem}, or report the leak to its maintainers with this finding's stack: {what} the memory {} allocates, and no method of it releases that memory. Until then, call it less often{}.",
        top.key.function,
        if leak.callers.is_empty() {
            String::new()
        } else {
            " (the call sites are listed)".to_owned()
        }
    );
    let headline = format!(
        "C extension {} leaks on its own — update or report to the gem: {}{through}",
        leak.extension, top.key.function
    );
    let mut f = Finding::new(FindingKind::ExtensionLeak, leak.confidence, title)
        .headline(headline)
        .identify(&[leak.extension.as_str(), top.key.function.as_str()]);
    f.class = leak.class.clone();
    f.native = Some(top.owner());
    f.bytes = bytes;
    f.count = blocks;
    f.evidence = evidence;
    f.suggestion = Some(Suggestion {
        text,
        method: None,
        locations: leak.callers.clone(),
        shapes: own_leak_shapes(),
    });
    f
}

/// What a program can do about an extension that leaks on its own.
pub(super) fn own_leak_shapes() -> Vec<String> {
    vec![
        "check the gem's changelog for a fixed leak, and update".to_owned(),
        "cache or reuse what the call returns instead of calling it again".to_owned(),
        "run the work in a child process that exits (or is restarted) after a while".to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use crate::bundle::{Extension, ExtensionModule, Lifecycle, MethodCalls, Sidecar, SiteCount};
    use crate::correlate::sites::tests::{frame, report};
    use crate::correlate::{Options, correlate};
    use crate::evidence::{Evidence, NativeSnapshot, Origin};
    use crate::native::{Frame, LeakKind, NativeFormat, ReportBuilder};

    const CBUFS: &str = "/app/ext/cbufs.so";

    fn class(name: &str, methods: &[&str], release: &[&str]) -> ExtensionModule {
        ExtensionModule {
            name: name.into(),
            class: true,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            release_methods: release.iter().map(|m| m.to_string()).collect(),
            ..ExtensionModule::default()
        }
    }

    fn sidecar(n: u32, ringbufs: (u64, u64), scans: u64) -> Sidecar {
        let mut scanner = class("Scanner", &["scan"], &[]);
        scanner.calls = vec![MethodCalls {
            method: "scan".into(),
            singleton: false,
            count: scans,
            sampled: false,
            called_at: vec![SiteCount {
                file: "/app/scan.rb".into(),
                line: 9,
                count: scans,
                released: None,
            }],
        }];
        Sidecar {
            snapshot: n,
            extensions: vec![Extension {
                path: CBUFS.into(),
                gem: Some("cbufs 0.1.0".into()),
                modules: vec![
                    class("RingBuf", &["close", "initialize", "size"], &["close"]),
                    scanner,
                    class("Tidy", &["initialize", "size"], &[]),
                ],
            }],
            lifecycle: vec![Lifecycle {
                class: "RingBuf".into(),
                created: ringbufs.0,
                released: ringbufs.1,
                release_methods: vec!["close".into()],
                created_at: vec![SiteCount {
                    file: "/app/ring.rb".into(),
                    line: 6,
                    count: ringbufs.0,
                    released: Some(ringbufs.1),
                }],
                since: 0.0,
            }],
            ..Sidecar::default()
        }
    }

    /// Ruby calling into the extension's `entry`, which allocates in `site` (both in cbufs.so
    /// when `stripped` is false; `None` names for a stripped build).
    fn stack(entry: &str, site: &str, stripped: bool) -> Vec<Frame> {
        let ext = |name: &str, offset: u64| Frame {
            function: (!stripped).then(|| name.to_owned()),
            module: Some(CBUFS.into()),
            module_offset: Some(offset),
            ..Frame::default()
        };
        vec![
            frame("rb_vm_exec", Some("/usr/lib/libruby-3.1.so.3.1")),
            ext(entry, 0x1200),
            ext(site, 0x1100),
            frame("malloc", Some("/usr/lib/liblsan.so.0")),
        ]
    }

    fn evidence(sidecars: Vec<Sidecar>, leaks: &[Vec<(Vec<Frame>, u64, u64)>]) -> Evidence {
        let mut ev = Evidence::empty(Origin::Bundle("bundle".into()));
        ev.sidecars = sidecars;
        ev.native = leaks
            .iter()
            .enumerate()
            .map(|(i, l)| NativeSnapshot {
                t: Some(i as f64),
                snapshot: Some(i as u32 + 1),
                at_exit: false,
                report: report(i as u32, l),
            })
            .collect();
        ev
    }

    /// A site on `stack` growing from 100 to 300 blocks of `size` bytes while RingBufs go
    /// from `ringbufs[0]` to `ringbufs[1]` (created, released) and scans from 100 to 300.
    fn grown(stack: Vec<Frame>, ringbufs: [(u64, u64); 2], size: u64) -> Evidence {
        evidence(
            vec![sidecar(1, ringbufs[0], 100), sidecar(2, ringbufs[1], 300)],
            &[
                vec![(stack.clone(), 100, 100 * size)],
                vec![(stack, 300, 300 * size)],
            ],
        )
    }

    fn top(ev: &Evidence) -> crate::correlate::Finding {
        let a = correlate(ev, &Options::default());
        a.findings
            .into_iter()
            .find(|f| f.kind.is_leak())
            .unwrap_or_else(|| panic!("no leak finding"))
    }

    #[test]
    fn unreleased_instances_of_an_extension_class_are_its_missing_release() {
        let ev = grown(
            stack("ringbuf_initialize", "ringbuf_initialize", false),
            [(100, 0), (300, 0)],
            256,
        );
        let f = top(&ev);
        assert_eq!(f.kind, crate::correlate::FindingKind::MissingRelease);
        assert_eq!(f.class.as_deref(), Some("RingBuf"));
        let s = f.suggestion.as_ref().unwrap();
        assert_eq!(s.method.as_deref(), Some("RingBuf#close"));
        assert_eq!(s.locations[0].site(), "/app/ring.rb:6");
        assert_eq!(f.confidence, crate::correlate::Confidence::High);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.text.contains("implements RingBuf#initialize")),
            "{:#?}",
            f.evidence
        );
    }

    #[test]
    fn a_leak_with_no_release_method_is_the_extensions_own_with_its_call_sites() {
        let ev = grown(
            stack("scanner_scan", "scanner_copy_token", false),
            [(0, 0), (0, 0)],
            90,
        );
        let f = top(&ev);
        assert_eq!(f.kind, crate::correlate::FindingKind::ExtensionLeak);
        assert_eq!(f.class.as_deref(), Some("Scanner"));
        assert!(
            f.title.starts_with(
                "C extension cbufs.so leaks on its own — update or report to the gem: scanner_copy_token through Scanner#scan grows by 200 blocks"
            ),
            "{}",
            f.title
        );
        let s = f.suggestion.as_ref().unwrap();
        assert!(
            s.text.starts_with("Update the gem cbufs 0.1.0"),
            "{}",
            s.text
        );
        assert_eq!(s.locations[0].site(), "/app/scan.rb:9");
        assert_eq!(
            s.locations[0].role,
            crate::correlate::finding::LocationRole::Called
        );
        assert!(s.method.is_none());
    }

    #[test]
    fn released_instances_and_growing_memory_are_the_extensions_leak() {
        let ev = grown(
            stack("ringbuf_initialize", "ringbuf_initialize", false),
            [(100, 100), (300, 300)],
            256,
        );
        let f = top(&ev);
        assert_eq!(f.kind, crate::correlate::FindingKind::ExtensionLeak);
        assert!(
            f.evidence.iter().any(|e| e
                .text
                .contains("the program releases them, and the memory grows all the same")),
            "{:#?}",
            f.evidence
        );
    }

    /// A stripped extension names no function: the class whose unreleased instances grew.
    #[test]
    fn a_stripped_extension_is_owned_by_its_class_whose_unreleased_instances_grew() {
        let ev = grown(stack("", "", true), [(100, 0), (300, 0)], 256);
        let f = top(&ev);
        assert_eq!(f.kind, crate::correlate::FindingKind::MissingRelease);
        assert_eq!(
            f.suggestion.as_ref().unwrap().method.as_deref(),
            Some("RingBuf#close")
        );
        assert_eq!(f.confidence, crate::correlate::Confidence::High);
    }

    /// A library reached through FFI (the ffi gem's ffi_c.so, then libffi) is the FFI rule's,
    /// even when ffi_c.so is listed as an extension.
    #[test]
    fn a_site_reached_through_ffi_is_not_an_extensions() {
        let ffi_c = "/usr/lib/ruby/vendor_ruby/3.1.0/ffi_c.so";
        let through_ffi = vec![
            frame("rb_vm_exec", Some("/usr/lib/libruby-3.1.so.3.1")),
            frame("rbffi_CallFunction", Some(ffi_c)),
            frame("ffi_call_unix64", Some("/usr/lib/libffi.so.8")),
            frame("widget_create", Some("/app/libwidget.so")),
            frame("malloc", Some("/usr/lib/liblsan.so.0")),
        ];
        let mut ev = grown(through_ffi, [(100, 0), (300, 0)], 256);
        for sc in &mut ev.sidecars {
            sc.extensions.push(Extension {
                path: ffi_c.into(),
                gem: None,
                modules: vec![class("FFI::Pointer", &["free"], &["free"])],
            });
        }
        assert_eq!(top(&ev).kind, crate::correlate::FindingKind::NativeLeak);
    }

    /// A leaked cycle is all indirect blocks: inside an extension with no growing direct site
    /// it is judged; with one, it hangs from that leak and is set aside.
    #[test]
    fn indirect_growth_inside_an_extension_is_a_cycle_unless_a_direct_site_grows() {
        let indirect = |blocks: u64, direct: Option<u64>| {
            let mut b = ReportBuilder::new("lsan.log", NativeFormat::Lsan, 0);
            let mut add = |frames: Vec<Frame>, kind: LeakKind, n: u64| {
                let ids = frames.into_iter().map(|f| b.intern_frame(f)).collect();
                let s = b.intern_stack(ids);
                b.add_leak(Some(s), kind, None, n, n * 64, None);
            };
            add(
                stack("ringbuf_initialize", "ringbuf_grow", false),
                LeakKind::Indirect,
                blocks,
            );
            if let Some(d) = direct {
                add(
                    stack("ringbuf_initialize", "ringbuf_initialize", false),
                    LeakKind::Direct,
                    d,
                );
            }
            b.finish()
        };
        let run = |direct: [Option<u64>; 2]| {
            let mut ev = evidence(
                vec![sidecar(1, (100, 0), 0), sidecar(2, (300, 0), 0)],
                &[vec![], vec![]],
            );
            ev.native[0].report = indirect(100, direct[0]);
            ev.native[1].report = indirect(300, direct[1]);
            correlate(&ev, &Options::default())
        };
        let cycle = run([None, None]);
        let row = cycle
            .native_sites
            .iter()
            .find(|r| r.function == "ringbuf_grow")
            .unwrap();
        assert_eq!(row.status, crate::correlate::SiteStatus::MissingRelease);
        let hanging = run([Some(100), Some(300)]);
        let row = hanging
            .native_sites
            .iter()
            .find(|r| r.function == "ringbuf_grow")
            .unwrap();
        assert_eq!(row.status, crate::correlate::SiteStatus::Secondary);
    }
}
