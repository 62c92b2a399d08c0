//! A C extension leaking on its own, without a native backend: under `--backend none` the
//! agent measures malloc after each round's GC ([`super::unaccounted`]) and counts the calls of
//! every third-party extension's C methods. When the native memory no Ruby object holds rises
//! with the calls of one C method — in at least [`unaccounted::GROWING_ROUNDS`] intervals, by
//! a steady number of bytes per call, and no other method's calls fit — that method keeps
//! memory at each call: the finding the native backends give (`Scanner#scan` leaks), sized by
//! malloc and without the native stack.
//!
//! Only when nothing else explains the growth: no class's dropped instances (the missing
//! release rule) and no Ruby retention. The FFI gem's own extension is never blamed: calls
//! through it are bindings, which the FFI rules judge.
//!
//! Stage: correlator rule (called from [`super::unmeasured`]). Input: the sidecars' extension
//! call counts and the malloc rounds.

use super::extension::{
    MAX_CALLER_LINES, call_sites, file_name, own_leak_shapes, sampled_note, why_not_the_program,
};
use super::finding::{Confidence, EvidenceItem, Finding, FindingKind, Source, Suggestion};
use super::unaccounted::{self, Explained};
use crate::bundle::{Extension, ExtensionModule, MethodCalls, Sidecar};
use crate::evidence::{Evidence, SourceLine};
use crate::format::{count, human_bytes};

/// A C method whose calls explain the growth.
pub struct Explaining<'a> {
    ext: &'a Extension,
    module: &'a ExtensionModule,
    calls: &'a MethodCalls,
    explained: Explained,
}

impl Explaining<'_> {
    pub fn label(&self) -> String {
        let sep = if self.calls.singleton { "." } else { "#" };
        format!("{}{sep}{}", self.module.name, self.calls.method)
    }
}

/// FFI's own C extension (`ffi_c.so`): what is called through it is a binding.
fn is_ffi(ext: &Extension) -> bool {
    file_name(&ext.path).starts_with("ffi_c.")
}

/// The calls of one method counted at each round (0 where the sidecar has none yet).
fn calls_series(
    ev: &Evidence,
    rounds: &[unaccounted::Round],
    ext: &Extension,
    module: &ExtensionModule,
    calls: &MethodCalls,
) -> Vec<u64> {
    rounds
        .iter()
        .map(|r| {
            ev.sidecars
                .iter()
                .find(|s| s.snapshot == r.snapshot)
                .and_then(|s| s.extensions.iter().find(|e| e.path == ext.path))
                .and_then(|e| e.modules.iter().find(|m| m.name == module.name))
                .and_then(|m| {
                    m.calls
                        .iter()
                        .find(|c| c.method == calls.method && c.singleton == calls.singleton)
                })
                .map_or(0, |c| c.count)
        })
        .collect()
}

/// Every C method (of the newest sidecar's extensions) whose calls explain the unaccounted
/// growth `native` over `rounds`.
pub fn explaining<'a>(
    ev: &Evidence,
    sc: &'a Sidecar,
    rounds: &[unaccounted::Round],
    native: &[i64],
) -> Vec<Explaining<'a>> {
    let mut out = Vec::new();
    for ext in sc.extensions.iter().filter(|e| !is_ffi(e)) {
        for module in &ext.modules {
            for calls in &module.calls {
                let series = calls_series(ev, rounds, ext, module, calls);
                if let Some(explained) = unaccounted::explains(native, &series) {
                    out.push(Explaining {
                        ext,
                        module,
                        calls,
                        explained,
                    });
                }
            }
        }
    }
    out
}

/// The finding for the one method whose calls explain the growth.
/// `native`: the unaccounted bytes at each round, as [`explaining`] was given them.
pub fn finding(
    ev: &Evidence,
    sc: &Sidecar,
    e: &Explaining<'_>,
    native: &[i64],
    how: &str,
) -> Finding {
    let extension = file_name(&e.ext.path).to_owned();
    let method = e.label();
    let per = e.explained.per_instance();
    let mut evidence = vec![
        EvidenceItem::new(
            Source::Native,
            format!(
                "native memory no Ruby object holds, after each round's full GC: {} — it rose with the calls of {method} in {} round intervals, by {} for {} calls (about {} a call, steady from round to round), and with no class's dropped instances; measured by {how}, minus the heap dump's memsize",
                super::unmeasured::series_text(native),
                e.explained.intervals,
                human_bytes(e.explained.bytes as f64),
                count(e.explained.instances),
                human_bytes(per),
            ),
        ),
        EvidenceItem::new(
            Source::Extension,
            format!(
                "{method} is a C method of the extension {extension}: {} calls{}",
                count(e.calls.count),
                sampled_note(e.calls)
            ),
        ),
    ];
    if e.module.class {
        evidence.push(EvidenceItem::new(
            Source::Extension,
            why_not_the_program(ev, sc, e.module),
        ));
    }
    let callers = call_sites(ev, e.calls);
    for loc in callers.iter().take(MAX_CALLER_LINES) {
        evidence.push(
            EvidenceItem::new(
                Source::Extension,
                format!("{method} is called at {}", loc.site()),
            )
            .at(SourceLine {
                file: loc.file.clone(),
                line: loc.line,
            }),
        );
    }
    evidence.push(EvidenceItem::new(
        Source::Native,
        "malloc was measured without a native backend: rerun with `--backend lsan` (or valgrind) to see the native stack that allocates it, for the gem's maintainers",
    ));
    let headline = format!(
        "C extension {extension} leaks on its own — update or report to the gem: through {method}"
    );
    let title = format!(
        "{headline}, native memory grew {} with its calls (about {} a call) — {}",
        human_bytes(e.explained.bytes as f64),
        human_bytes(per),
        super::unmeasured::MEASURED_BY_MALLOC
    );
    let gem = e
        .ext
        .gem
        .as_deref()
        .map(|g| format!("the gem {g}"))
        .unwrap_or_else(|| format!("the gem that ships {extension}"));
    let text = format!(
        "Update {gem}, or report the leak to its maintainers: each call of {method} keeps native memory (about {} here) that nothing the program can call releases; a run with `--backend lsan` gives the native stack to send them. Until then, call it less often{}.",
        human_bytes(per),
        if callers.is_empty() {
            ""
        } else {
            " (the call sites are listed)"
        }
    );
    let mut f = Finding::new(FindingKind::ExtensionLeak, Confidence::Medium, title)
        .headline(headline)
        .identify(&[extension.as_str(), method.as_str()]);
    f.class = Some(e.module.name.clone());
    f.bytes = e.explained.bytes;
    f.count = i64::try_from(e.explained.instances).unwrap_or(i64::MAX);
    f.evidence = evidence;
    f.suggestion = Some(Suggestion {
        text,
        method: None,
        locations: callers,
        shapes: own_leak_shapes(),
    });
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Origin;

    /// Four rounds of a program whose `Scanner#scan` keeps 208 bytes a call, 1,000 calls a
    /// round; `Scanner#size` is called as often but `scan_twice` is not, and FFI's own `call`
    /// fits as well as `scan` does.
    fn scanner(with_size: bool) -> (Evidence, Vec<unaccounted::Round>) {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        let mut rounds = Vec::new();
        for round in 0..4u32 {
            let n = 1_000 * u64::from(round);
            let calls = |method: &str, count: u64| MethodCalls {
                method: method.into(),
                count,
                ..MethodCalls::default()
            };
            let mut scanner_calls = vec![
                calls("scan", n),
                calls("scan_twice", 5 * u64::from(round) * u64::from(round)),
            ];
            if with_size {
                scanner_calls.push(calls("size", n + 3));
            }
            ev.sidecars.push(Sidecar {
                snapshot: round + 1,
                extensions: vec![
                    Extension {
                        path: "/tmp/cbufs/cbufs.so".into(),
                        gem: None,
                        modules: vec![ExtensionModule {
                            name: "Scanner".into(),
                            class: true,
                            calls: scanner_calls,
                            ..ExtensionModule::default()
                        }],
                    },
                    Extension {
                        path: "/usr/lib/x86_64-linux-gnu/ruby/vendor_ruby/3.1.0/ffi_c.so".into(),
                        gem: None,
                        modules: vec![ExtensionModule {
                            name: "FFI::Function".into(),
                            class: true,
                            calls: vec![calls("call", n)],
                            ..ExtensionModule::default()
                        }],
                    },
                ],
                ..Sidecar::default()
            });
            rounds.push(unaccounted::Round {
                snapshot: round + 1,
                t: f64::from(round),
                in_use: 4_000_000 + 208 * n,
                ruby: 1_000_000,
            });
        }
        (ev, rounds)
    }

    fn labels(ev: &Evidence, rounds: &[unaccounted::Round]) -> Vec<String> {
        let native: Vec<i64> = rounds.iter().map(unaccounted::Round::unaccounted).collect();
        let sc = ev.sidecars.last().unwrap();
        explaining(ev, sc, rounds, &native)
            .iter()
            .map(Explaining::label)
            .collect()
    }

    #[test]
    fn the_one_c_method_whose_calls_the_growth_rises_with_is_named() {
        let (ev, rounds) = scanner(false);
        assert_eq!(labels(&ev, &rounds), ["Scanner#scan"]);
        let native: Vec<i64> = rounds.iter().map(unaccounted::Round::unaccounted).collect();
        let sc = ev.sidecars.last().unwrap();
        let found = explaining(&ev, sc, &rounds, &native);
        let f = finding(&ev, sc, &found[0], &native, "malloc_info");
        assert_eq!(f.kind, FindingKind::ExtensionLeak);
        assert_eq!((f.bytes, f.count), (208 * 3_000, 3_000));
        assert!(
            f.title.starts_with(
                "C extension cbufs.so leaks on its own — update or report to the gem: through Scanner#scan, native memory grew"
            ),
            "{}",
            f.title
        );
        assert!(super::super::unmeasured::is_measured_by_malloc(&f));
    }

    /// Two methods called alike both fit: which one keeps the memory cannot be told.
    #[test]
    fn methods_called_alike_are_all_candidates() {
        let (ev, rounds) = scanner(true);
        assert_eq!(labels(&ev, &rounds), ["Scanner#scan", "Scanner#size"]);
    }

    /// Memory that stays flat explains no calls.
    #[test]
    fn flat_memory_explains_no_calls() {
        let (ev, mut rounds) = scanner(false);
        for r in &mut rounds {
            r.in_use = 4_000_000;
        }
        assert!(labels(&ev, &rounds).is_empty());
    }
}
