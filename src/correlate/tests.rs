//! Unit tests of the rules on hand-built evidence (no files, no parsers).

use super::*;
use crate::bundle::{
    FfiCall, FfiFunction, FfiLibrary, FfiModule, Lifecycle, MethodRole, Sidecar, SiteCount,
    WrapperClass, WrapperMethod,
};
use crate::evidence::{LibraryExports, NativeSnapshot};
use crate::native::Frame;
use finding::LocationRole;
use sites::tests::{frame, report};

fn module(name: &str, lib: &str, path: &str, functions: &[&str]) -> FfiModule {
    FfiModule {
        name: name.into(),
        libraries: vec![FfiLibrary {
            name: lib.into(),
            path: Some(path.into()),
        }],
        functions: functions
            .iter()
            .map(|f| FfiFunction {
                name: f.to_string(),
                symbol: f.to_string(),
                ..FfiFunction::default()
            })
            .collect(),
    }
}

fn method(name: &str, module: &str, calls: &[&str], role: MethodRole) -> WrapperMethod {
    WrapperMethod {
        name: name.into(),
        singleton: false,
        file: Some("ffi-rzmq/message.rb".into()),
        line: Some(10),
        calls: calls
            .iter()
            .map(|f| FfiCall {
                module: module.into(),
                function: f.to_string(),
            })
            .collect(),
        role,
    }
}

fn wrapper(class: &str, methods: Vec<WrapperMethod>, finalizer: bool) -> WrapperClass {
    WrapperClass {
        class: class.into(),
        methods,
        finalizer,
        ..WrapperClass::default()
    }
}

fn life(class: &str, created: u64, released: u64, at: &[(&str, u32, u64)]) -> Lifecycle {
    Lifecycle {
        class: class.into(),
        created,
        released,
        release_methods: vec!["close".into()],
        created_at: at
            .iter()
            .map(|&(f, l, c)| SiteCount {
                file: f.into(),
                line: l,
                count: c,
                released: Some(0),
            })
            .collect(),
        since: 0.0,
    }
}

const LIBZMQ: &str = "/usr/lib/x86_64-linux-gnu/libzmq.so.5";

fn zmq_sidecar(snapshot: u32, created: u64) -> Sidecar {
    Sidecar {
        snapshot,
        ffi: vec![module(
            "LibZMQ",
            "libzmq.so.5",
            LIBZMQ,
            &[
                "zmq_msg_init",
                "zmq_msg_init_size",
                "zmq_msg_close",
                "zmq_msg_data",
                "zmq_msg_size",
                "zmq_msg_send",
                "zmq_msg_recv",
                "zmq_socket",
                "zmq_close",
                "zmq_ctx_new",
                "zmq_ctx_term",
            ],
        )],
        wrappers: vec![
            wrapper(
                "ZMQ::Message",
                vec![
                    method(
                        "initialize",
                        "LibZMQ",
                        &["zmq_msg_init", "zmq_msg_init_size"],
                        MethodRole::Allocate,
                    ),
                    method(
                        "copy_out_string",
                        "LibZMQ",
                        &["zmq_msg_data", "zmq_msg_size"],
                        MethodRole::Other,
                    ),
                    method("close", "LibZMQ", &["zmq_msg_close"], MethodRole::Release),
                ],
                false,
            ),
            wrapper(
                "ZMQ::Socket",
                vec![
                    method(
                        "initialize",
                        "LibZMQ",
                        &["zmq_socket"],
                        MethodRole::Allocate,
                    ),
                    method("sendmsg", "LibZMQ", &["zmq_msg_send"], MethodRole::Other),
                    method("recvmsg", "LibZMQ", &["zmq_msg_recv"], MethodRole::Other),
                    method("close", "LibZMQ", &["zmq_close"], MethodRole::Release),
                ],
                false,
            ),
            wrapper(
                "ZMQ::Context",
                vec![
                    method(
                        "initialize",
                        "LibZMQ",
                        &["zmq_ctx_new"],
                        MethodRole::Allocate,
                    ),
                    method(
                        "terminate",
                        "LibZMQ",
                        &["zmq_ctx_term"],
                        MethodRole::Release,
                    ),
                ],
                true,
            ),
        ],
        lifecycle: vec![
            life(
                "ZMQ::Message",
                created,
                0,
                &[("leak.rb", 40, created / 2), ("leak.rb", 37, created / 2)],
            ),
            life(
                "ZMQ::Socket",
                2,
                0,
                &[("leak.rb", 14, 1), ("leak.rb", 15, 1)],
            ),
        ],
        ..Sidecar::default()
    }
}

/// libzmq is stripped on Debian and allocates message bodies on its I/O thread: no attached
/// function is on the stack.
fn stripped_zmq_stack() -> Vec<Frame> {
    let off = |o: u64| Frame {
        module: Some(LIBZMQ.into()),
        module_offset: Some(o),
        ..Frame::default()
    };
    vec![
        frame("start_thread", Some("/lib/x86_64-linux-gnu/libc.so.6")),
        off(0x5a210),
        off(0x3194a),
        frame("malloc", Some("/usr/lib/x86_64-linux-gnu/liblsan.so.0")),
    ]
}

/// The seed's `leaks` call stack below `outer` frames (no library names in leaks 2.0).
fn seed_leaks_stack(outer: &[&str]) -> Vec<Frame> {
    let inner = [
        "zmq::decoder_t::eight_byte_size_ready()",
        "zmq_msg_init_size",
        "malloc",
        "malloc_zone_malloc",
    ];
    outer.iter().chain(&inner).map(|n| frame(n, None)).collect()
}

fn runtime_stack() -> Vec<Frame> {
    vec![
        frame(
            "ruby_init",
            Some("/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1"),
        ),
        frame(
            "objspace_xmalloc0",
            Some("/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1"),
        ),
        frame("malloc", Some("/usr/lib/x86_64-linux-gnu/liblsan.so.0")),
    ]
}

fn snapshots(per_snapshot: &[Vec<(Vec<Frame>, u64, u64)>]) -> Vec<NativeSnapshot> {
    per_snapshot
        .iter()
        .enumerate()
        .map(|(i, leaks)| NativeSnapshot {
            t: Some(1.0 + 2.0 * i as f64),
            snapshot: Some(i as u32 + 1),
            at_exit: false,
            report: report(i as u32, leaks),
        })
        .collect()
}

pub(crate) fn seed_b() -> Evidence {
    let mut ev = Evidence::empty(Origin::Bundle("bundle".into()));
    ev.sidecars = vec![
        zmq_sidecar(1, 40_000),
        zmq_sidecar(2, 120_000),
        zmq_sidecar(3, 200_000),
    ];
    ev.native = snapshots(&[
        vec![
            (stripped_zmq_stack(), 20_000, 20_000 * 1088),
            (runtime_stack(), 5000, 900_000_000),
        ],
        vec![
            (stripped_zmq_stack(), 60_000, 60_000 * 1088),
            (runtime_stack(), 5000, 900_000_000),
        ],
        vec![
            (stripped_zmq_stack(), 100_000, 100_000 * 1088),
            (runtime_stack(), 5000, 900_000_000),
        ],
    ]);
    ev
}

/// Seed B with its program in `dir` (absolute creation paths, as a real bundle has them).
pub(crate) fn seed_b_in(dir: &str) -> Evidence {
    let mut ev = seed_b();
    for l in ev.sidecars.iter_mut().flat_map(|s| s.lifecycle.iter_mut()) {
        for site in &mut l.created_at {
            site.file = format!("{dir}/{}", site.file);
        }
    }
    ev
}

#[test]
fn seed_b_blames_zmq_message_close_with_its_creation_line() {
    let a = correlate(&seed_b(), &Options::default());
    let top = &a.findings[0];
    assert_eq!(top.kind, FindingKind::MissingRelease, "{:#?}", a.findings);
    assert_eq!(top.class.as_deref(), Some("ZMQ::Message"));
    assert_eq!(top.confidence, Confidence::High);
    let s = top.suggestion.as_ref().unwrap();
    assert_eq!(s.method.as_deref(), Some("ZMQ::Message#close"));
    // Both sites leave as many instances unreleased: the first by count, then by file order
    // leads; JSON keeps the other one.
    let created: Vec<(String, LocationRole)> =
        s.locations.iter().map(|l| (l.site(), l.role)).collect();
    assert_eq!(
        created,
        [
            ("leak.rb:37".to_owned(), LocationRole::Created),
            ("leak.rb:40".to_owned(), LocationRole::AlsoCreated)
        ]
    );
    assert_eq!(
        s.text,
        "Call `ZMQ::Message#close` after the last use of each ZMQ::Message created at leak.rb:37: it calls zmq_msg_close, which frees the native memory."
    );
    let lifecycle: Vec<&str> = top
        .evidence
        .iter()
        .filter(|e| e.source == finding::Source::Lifecycle && e.location.is_some())
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(
        lifecycle,
        [
            "ZMQ::Message instances created at leak.rb:37 (100,000 created, 100,000 never released)",
            "ZMQ::Message instances also created at leak.rb:40 (100,000 created, 100,000 never released)"
        ]
    );
    let owner = top.native.as_ref().unwrap();
    assert_eq!(owner.library.as_deref(), Some("libzmq.so.5"));
    assert_eq!(owner.function, "libzmq.so.5+0x3194a");
    assert_eq!((top.count, top.bytes), (80_000, 80_000 * 1088));
    assert_eq!(a.verdict, Verdict::Leak);
    // The runtime's site is folded into one noise line, last.
    let last = a.findings.last().unwrap();
    assert_eq!(last.kind, FindingKind::RuntimeNoise);
    assert_eq!(a.findings.len(), 2);
    let rate = a.leak_rate.unwrap();
    assert_eq!(rate.source, "native growth");
    assert!((rate.bytes_per_second - 80_000.0 * 1088.0 / 4.0).abs() < 1.0);
}

/// Per-site counts of `ZMQ::Message` in the first and the last sidecar: (line, created, released).
fn message_sites(ev: &mut Evidence, first: &[(u32, u64, u64)], last: &[(u32, u64, u64)]) {
    let n = ev.sidecars.len();
    for (i, sites) in [(0, first), (n - 1, last)] {
        let l = &mut ev.sidecars[i].lifecycle[0];
        l.created_at = sites
            .iter()
            .map(|&(line, count, released)| SiteCount {
                file: "leak.rb".into(),
                line,
                count,
                released: Some(released),
            })
            .collect();
        l.created = sites.iter().map(|s| s.1).sum();
        l.released = sites.iter().map(|s| s.2).sum();
    }
}

fn created_sites(a: &Analysis) -> Vec<(String, LocationRole)> {
    let s = a.findings[0].suggestion.as_ref().unwrap();
    s.locations.iter().map(|l| (l.site(), l.role)).collect()
}

#[test]
fn the_fix_names_the_site_whose_unreleased_instances_grew() {
    let mut ev = seed_b();
    // :12 made its instances before the first snapshot; :37 closes every one; :40 leaks.
    message_sites(
        &mut ev,
        &[(12, 5000, 0), (37, 1000, 1000)],
        &[(12, 5000, 0), (37, 60_000, 60_000), (40, 50_000, 0)],
    );
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.findings[0].kind, FindingKind::MissingRelease);
    assert_eq!(
        created_sites(&a),
        [
            ("leak.rb:40".to_owned(), LocationRole::Created),
            ("leak.rb:12".to_owned(), LocationRole::AlsoCreated)
        ]
    );
    let s = a.findings[0].suggestion.as_ref().unwrap();
    assert!(
        s.text.contains("each ZMQ::Message created at leak.rb:40:"),
        "{}",
        s.text
    );
    assert!(a.findings[0].evidence.iter().any(|e| e.text
        == "ZMQ::Message instances also created at leak.rb:12 (5,000 created, 5,000 never released)"));
}

#[test]
fn on_equal_growth_the_busier_site_leads() {
    let mut ev = seed_b();
    message_sites(&mut ev, &[], &[(37, 100, 0), (40, 150, 50), (26, 1, 0)]);
    let a = correlate(&ev, &Options::default());
    assert_eq!(
        created_sites(&a),
        [
            ("leak.rb:40".to_owned(), LocationRole::Created),
            ("leak.rb:37".to_owned(), LocationRole::AlsoCreated),
            ("leak.rb:26".to_owned(), LocationRole::AlsoCreated)
        ]
    );
}

/// A snapshot can fall between a receive (:37) and the send it causes (:40): the two sites
/// differ by one instance either way from run to run, and the fix must still name the same line.
#[test]
fn sites_one_instance_apart_lead_in_source_order() {
    for (received, sent) in [(14_205, 14_204), (14_204, 14_205)] {
        let mut ev = seed_b();
        message_sites(
            &mut ev,
            &[(37, 1, 0), (40, 0, 0)],
            &[(37, received, 0), (40, sent, 0), (26, 1, 0)],
        );
        let a = correlate(&ev, &Options::default());
        assert_eq!(
            created_sites(&a),
            [
                ("leak.rb:37".to_owned(), LocationRole::Created),
                ("leak.rb:40".to_owned(), LocationRole::AlsoCreated),
                ("leak.rb:26".to_owned(), LocationRole::AlsoCreated)
            ],
            "{received} received, {sent} sent"
        );
    }
}

#[test]
fn an_attached_function_on_the_stack_names_the_family() {
    let mut ev = seed_b();
    let seed_stack = seed_leaks_stack(&["thread_start"]);
    ev.native = snapshots(&[
        vec![(seed_stack.clone(), 10, 15_360)],
        vec![(seed_stack, 1000, 1_536_000)],
    ]);
    // No lifecycle growth information this time: the stack alone links site and family.
    ev.sidecars.truncate(1);
    let a = correlate(&ev, &Options::default());
    let top = &a.findings[0];
    assert_eq!(top.kind, FindingKind::MissingRelease);
    assert_eq!(top.native.as_ref().unwrap().function, "zmq_msg_init_size");
    assert_eq!(top.confidence, Confidence::High);
    assert!(top.evidence.iter().any(|e| e.text.contains(
        "zmq_msg_init_size is on the leak's stack: LibZMQ (bound to libzmq.so.5 (/usr/lib/x86_64-linux-gnu/libzmq.so.5)) attaches it; its family zmq_msg_* is released by zmq_msg_close"
    )), "{:#?}", top.evidence);
}

#[test]
fn a_finalizing_sibling_does_not_excuse_instances_left_unclosed() {
    // ffi-rzmq also defines ZMQ::ManagedMessage, which closes in a finalizer; the program
    // makes plain ZMQ::Messages and never closes them. macOS `leaks` names zmq_msg_init_size
    // on the stack (libzmq has its symbols there), which brings the whole family in.
    let mut ev = seed_b();
    for sidecar in &mut ev.sidecars {
        sidecar.wrappers.push(wrapper(
            "ZMQ::ManagedMessage",
            vec![method(
                "close",
                "LibZMQ",
                &["zmq_msg_close"],
                MethodRole::Release,
            )],
            true,
        ));
    }
    let seed_stack = seed_leaks_stack(&["thread_start"]);
    ev.native = snapshots(&[
        vec![(seed_stack.clone(), 10, 15_360)],
        vec![(seed_stack.clone(), 1000, 1_536_000)],
        vec![(seed_stack, 2000, 3_072_000)],
    ]);
    let a = correlate(&ev, &Options::default());
    let top = &a.findings[0];
    assert_eq!(top.kind, FindingKind::MissingRelease, "{:#?}", a);
    let s = top.suggestion.as_ref().unwrap();
    assert_eq!(s.method.as_deref(), Some("ZMQ::Message#close"));
    // The same sidecars with every ZMQ::Message closed: the finalizer's class is the owner.
    for sidecar in &mut ev.sidecars {
        for l in &mut sidecar.lifecycle {
            l.released = l.created;
        }
    }
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
    assert_eq!(a.native_sites[0].status, SiteStatus::Finalized);
}

#[test]
fn a_balanced_wrapper_is_not_blamed() {
    let mut ev = seed_b();
    for sc in &mut ev.sidecars {
        let created = sc.lifecycle[0].created;
        sc.lifecycle[0].released = created;
        sc.lifecycle[1].released = 2;
    }
    let a = correlate(&ev, &Options::default());
    assert!(
        a.findings
            .iter()
            .all(|f| f.kind != FindingKind::MissingRelease)
    );
    let top = &a.findings[0];
    assert_eq!(top.kind, FindingKind::NativeLeak);
    assert!(
        top.evidence
            .iter()
            .any(|e| e.text.contains("released as often as created"))
    );
}

fn widget_sidecar(created: u64, released: u64, gadgets: u64) -> Sidecar {
    Sidecar {
        ffi: vec![module(
            "LibWidget",
            "/tmp/w/libwidget.so",
            "/tmp/w/libwidget.so",
            &[
                "widget_create",
                "widget_destroy",
                "widget_size",
                "gadget_new",
                "gadget_free",
                "gadget_serial",
            ],
        )],
        wrappers: vec![
            wrapper(
                "Widget",
                vec![
                    method(
                        "initialize",
                        "LibWidget",
                        &["widget_create"],
                        MethodRole::Allocate,
                    ),
                    method("size", "LibWidget", &["widget_size"], MethodRole::Other),
                    method(
                        "close",
                        "LibWidget",
                        &["widget_destroy"],
                        MethodRole::Release,
                    ),
                ],
                false,
            ),
            wrapper(
                "Gadget",
                vec![
                    method(
                        "initialize",
                        "LibWidget",
                        &["gadget_new"],
                        MethodRole::Allocate,
                    ),
                    method("serial", "LibWidget", &["gadget_serial"], MethodRole::Other),
                ],
                false,
            ),
            WrapperClass {
                finalizer_detail: Some(
                    "released by FFI::AutoPointer (GadgetPointer.release)".into(),
                ),
                ..wrapper(
                    "GadgetPointer",
                    vec![WrapperMethod {
                        singleton: true,
                        ..method(
                            "release",
                            "LibWidget",
                            &["gadget_free"],
                            MethodRole::Release,
                        )
                    }],
                    true,
                )
            },
        ],
        lifecycle: vec![
            life(
                "Widget",
                created,
                released,
                &[("widget-leak.rb", 7, created)],
            ),
            life("Gadget", gadgets, 0, &[("gadget-finalized.rb", 7, gadgets)]),
        ],
        ..Sidecar::default()
    }
}

fn ffi_stack(function: &str) -> Vec<Frame> {
    vec![
        frame(
            "rb_funcallv",
            Some("/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1"),
        ),
        frame(
            "ffi_call_unix64",
            Some("/usr/lib/x86_64-linux-gnu/libffi.so.8"),
        ),
        frame(function, Some("/tmp/w/libwidget.so")),
        frame("malloc", Some("/usr/lib/x86_64-linux-gnu/liblsan.so.0")),
    ]
}

/// Widgets created and never closed; the library has symbols (widget_create is on the stack).
fn widget_leak() -> Evidence {
    let mut ev = Evidence::empty(Origin::Bundle("b".into()));
    ev.sidecars = vec![widget_sidecar(100, 0, 0), widget_sidecar(600, 0, 0)];
    ev.native = snapshots(&[
        vec![(ffi_stack("widget_create"), 200, 100 * 272)],
        vec![(ffi_stack("widget_create"), 1200, 600 * 272)],
    ]);
    ev
}

#[test]
fn widget_leak_names_widget_close_and_is_not_zmq_specific() {
    let a = correlate(&widget_leak(), &Options::default());
    assert_eq!(a.findings.len(), 1, "{:#?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(f.kind, FindingKind::MissingRelease);
    let s = f.suggestion.as_ref().unwrap();
    assert_eq!(s.method.as_deref(), Some("Widget#close"));
    assert_eq!(s.locations[0].site(), "widget-leak.rb:7");
    assert!(s.text.contains("widget_destroy"));
    assert_eq!(
        f.native.as_ref().unwrap().library.as_deref(),
        Some("libwidget.so")
    );
}

#[test]
fn a_finalizer_released_wrapper_is_not_reported() {
    let mut ev = Evidence::empty(Origin::Bundle("b".into()));
    ev.sidecars = vec![widget_sidecar(0, 0, 100), widget_sidecar(0, 0, 900)];
    // Gadgets dropped but not yet finalized at the check: their memory looks leaked and grows.
    ev.native = snapshots(&[
        vec![(ffi_stack("gadget_new"), 10, 560)],
        vec![(ffi_stack("gadget_new"), 90, 5040)],
    ]);
    let a = correlate(&ev, &Options::default());
    assert!(a.findings.is_empty(), "{:#?}", a.findings);
    assert_eq!(a.verdict, Verdict::NoLeak);
    assert_eq!(a.native_sites[0].status, SiteStatus::Finalized);
    assert!(a.notes[0].contains("GadgetPointer"), "{:?}", a.notes);
}

#[test]
fn a_fixed_program_has_no_finding() {
    let mut ev = Evidence::empty(Origin::Bundle("b".into()));
    ev.sidecars = vec![widget_sidecar(100, 100, 0), widget_sidecar(600, 600, 0)];
    ev.native = snapshots(&[
        vec![(runtime_stack(), 5000, 900_000)],
        vec![(runtime_stack(), 5000, 900_000)],
    ]);
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0);
    assert_eq!(a.verdict, Verdict::NoLeak);
    assert_eq!(a.findings.len(), 1);
    assert_eq!(a.findings[0].kind, FindingKind::RuntimeNoise);
}

#[test]
fn runtime_noise_never_outranks_a_real_finding() {
    let mut ev = Evidence::empty(Origin::Files(vec![]));
    // One exit-time report: a huge runtime site and a tiny unowned one.
    ev.native = snapshots(&[vec![
        (runtime_stack(), 1_000_000, 1 << 36),
        (ffi_stack("widget_create"), 1, 16),
    ]]);
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.findings.len(), 2);
    assert_eq!(a.findings[0].kind, FindingKind::NativeLeak);
    assert_eq!(a.findings[0].confidence, Confidence::Low);
    assert_eq!(a.findings[1].kind, FindingKind::RuntimeNoise);
}

/// The seed's own evidence, offline: one `leaks` report (no library names) and heap
/// histograms in which ZMQ::Message and LibZMQ::Msg appear.
fn seed_offline(with_library: bool) -> Evidence {
    let mut ev = Evidence::empty(Origin::Files(vec!["leak.out".into()]));
    let stack = seed_leaks_stack(&[
        "thread_start",
        "_pthread_start",
        "thread_routine",
        "zmq::kqueue_t::loop()",
        "zmq::zmq_engine_t::in_event()",
    ]);
    ev.native = vec![NativeSnapshot {
        t: None,
        snapshot: None,
        at_exit: false,
        report: report(0, &[(stack, 171_502, 263_427_072)]),
    }];
    for rows in [
        &[
            ("Rubinius::CompactLookupTable", 3000),
            ("ZMQ::Message", 12),
            ("LibZMQ::Msg", 12),
            ("FFI::MemoryPointer", 17),
        ],
        &[
            ("Rubinius::CompactLookupTable", 3000),
            ("ZMQ::Message", 14),
            ("LibZMQ::Msg", 14),
            ("FFI::MemoryPointer", 19),
        ],
    ] {
        ev.heap.push(retention::tests::heap(rows, &[]));
    }
    if with_library {
        ev.library_exports.push(LibraryExports {
            library: "libzmq.so.5".into(),
            path: LIBZMQ.into(),
            symbols: [
                "zmq_msg_init_size",
                "zmq_msg_close",
                "zmq_msg_data",
                "zmq_close",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        });
    }
    ev
}

#[test]
fn bare_seed_evidence_recommends_zmq_message_close_with_low_confidence() {
    let a = correlate(&seed_offline(true), &Options::default());
    let top = &a.findings[0];
    assert_eq!(top.kind, FindingKind::MissingRelease, "{:#?}", a.findings);
    assert_eq!(top.confidence, Confidence::Low);
    assert_eq!(
        top.suggestion.as_ref().unwrap().method.as_deref(),
        Some("ZMQ::Message#close")
    );
    assert_eq!((top.count, top.bytes), (171_502, 263_427_072));
    assert!(
        top.evidence
            .iter()
            .any(|e| e.heuristic && e.text.contains("FFI module LibZMQ"))
    );
    // Without the library on this machine the class is still named, the method is not.
    let a = correlate(&seed_offline(false), &Options::default());
    let top = &a.findings[0];
    assert_eq!(top.class.as_deref(), Some("ZMQ::Message"));
    assert_eq!(top.suggestion.as_ref().unwrap().method, None);
}

#[test]
fn bare_files_give_lower_confidence_than_a_bundle() {
    // The same native and heap evidence, with and without the agent's sidecar.
    let mut ev = seed_offline(true);
    ev.sidecars = vec![zmq_sidecar(1, 200_000)];
    let bundle = correlate(&ev, &Options::default());
    ev.sidecars.clear();
    let bare = correlate(&ev, &Options::default());
    let top = |a: &Analysis| a.findings[0].clone();
    assert_eq!(top(&bundle).kind, FindingKind::MissingRelease);
    assert_eq!(top(&bare).kind, FindingKind::MissingRelease);
    let method = |a: &Analysis| top(a).suggestion.and_then(|s| s.method);
    assert_eq!(method(&bundle).as_deref(), Some("ZMQ::Message#close"));
    assert_eq!(method(&bare), method(&bundle));
    assert!(
        top(&bare).confidence < top(&bundle).confidence,
        "{:?} vs {:?}",
        top(&bare).confidence,
        top(&bundle).confidence
    );
}

#[test]
fn a_stripped_library_without_sidecars_is_only_matched_by_name() {
    let mut ev = seed_b();
    ev.sidecars.clear();
    ev.heap = seed_offline(true).heap;
    let a = correlate(&ev, &Options::default());
    let top = &a.findings[0];
    assert_eq!(top.kind, FindingKind::NativeLeak);
    assert_eq!(top.confidence, Confidence::Low);
    assert!(
        top.evidence.iter().any(|e| e.heuristic
            && e.text.contains(
                "libzmq.so.5 is named like these heap classes: ZMQ::Message, LibZMQ::Msg"
            )),
        "{:#?}",
        top.evidence
    );
}

#[test]
fn fingerprints_ignore_counts_and_paths() {
    let a = correlate(&seed_b(), &Options::default());
    let mut ev = seed_b();
    ev.origin = Origin::Bundle("elsewhere".into());
    ev.native.truncate(2);
    let b = correlate(&ev, &Options::default());
    assert_eq!(a.findings[0].fingerprint, b.findings[0].fingerprint);
    assert_ne!(a.findings[0].fingerprint, a.findings[1].fingerprint);
}

#[test]
fn native_memory_of_retained_instances_folds_into_the_retention_finding() {
    // Seed A with a sidecar: messages are kept in an Array and never closed, and the native
    // report counts their bodies as leaked as they grow.
    let mut ev = retention::tests::seed_a();
    ev.sidecars = vec![zmq_sidecar(1, 20_000), zmq_sidecar(3, 140_000)];
    ev.native = snapshots(&[
        vec![(stripped_zmq_stack(), 10_000, 10_000 * 1088)],
        vec![(stripped_zmq_stack(), 40_000, 40_000 * 1088)],
        vec![(stripped_zmq_stack(), 70_000, 70_000 * 1088)],
    ]);
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 1, "{:#?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(f.kind, FindingKind::RubyRetention);
    assert_eq!(f.class.as_deref(), Some("ZMQ::Message"));
    let s = f.suggestion.as_ref().unwrap();
    assert_eq!(s.locations[0].site(), "leak.rb:29");
    assert_eq!(s.method.as_deref(), Some("ZMQ::Message#close"));
    assert!(
        f.evidence
            .iter()
            .any(|e| e.text.contains("also hold native memory"))
    );
}

/// A program whose Widgets pile up, with the agent's own objects growing beside them.
pub(crate) fn with_agent_objects() -> Evidence {
    use retention::tests::heap;
    const AGENT: &str = "/tmp/leakhunt-x/leakhunt_agent.rb";
    let mut ev = Evidence::empty(Origin::Bundle("b".into()));
    for n in [0i64, 3, 9] {
        ev.heap.push(heap(
            &[
                ("Widget", 100 + 1000 * n),
                ("LeakhuntAgent::MethodFacts", 1136 + n),
                // Every new one made by the agent (its LSan check through Fiddle).
                ("Fiddle::Function", 100 * n),
                // Partly the agent's, partly the program's: kept.
                ("Hash", 600 + 3 * n),
                ("String", 9000),
            ],
            &[
                ("Widget", "app.rb", 4, 100 + 1000 * n as u64),
                ("Fiddle::Function", AGENT, 120, 100 * n as u64),
                ("Hash", AGENT, 380, 2 * n as u64),
                ("Hash", "app.rb", 9, n as u64),
            ],
        ));
    }
    ev
}

#[test]
fn the_agents_own_objects_are_left_out_of_the_class_growth_and_the_charts() {
    let a = correlate(&with_agent_objects(), &Options::default());
    let g = a.class_growth.as_ref().unwrap();
    let shown: Vec<&str> = g.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(shown, ["Widget", "Hash"]);
    let left: Vec<(&str, i64)> = g
        .agent_rows
        .iter()
        .map(|r| (r.name.as_str(), r.count))
        .collect();
    assert_eq!(
        left,
        [("Fiddle::Function", 900), ("LeakhuntAgent::MethodFacts", 9)]
    );
    let charted: Vec<&str> = a
        .timeline
        .classes
        .iter()
        .map(|c| c.class.as_str())
        .collect();
    assert!(
        !charted
            .iter()
            .any(|c| c.starts_with("LeakhuntAgent") || *c == "Fiddle::Function"),
        "{charted:?}"
    );
    // Fiddle::Function would look like the program's retention otherwise.
    let retained: Vec<Option<&str>> = a.leak_findings().map(|f| f.class.as_deref()).collect();
    assert_eq!(retained, [Some("Widget")]);
    assert_eq!(
        g.left_out_note().as_deref(),
        Some(
            "2 rows left out: objects of leakhunt's own agent (Fiddle::Function +900, LeakhuntAgent::MethodFacts +9), not the program's; the charts and findings leave them out too"
        )
    );
}

/// Three snapshots: `require` still running at the first (gem specs and strings appear), then
/// a steady program. `loading` decides whether the sidecars say so.
fn loading_then_steady(loading: bool) -> Evidence {
    let mut ev = Evidence::empty(Origin::Bundle("b".into()));
    let rows: [&[(&str, i64)]; 3] = [
        &[("String", 11_300), ("Gem::Specification", 20)],
        &[("String", 12_080), ("Gem::Specification", 60)],
        &[("String", 12_120), ("Gem::Specification", 60)],
    ];
    for (i, r) in rows.iter().enumerate() {
        let mut h = retention::tests::heap(r, &[]);
        h.snapshot = Some(i as u32 + 1);
        ev.heap.push(h);
        let features = if i == 0 && loading { 93 } else { 111 };
        ev.sidecars.push(Sidecar {
            snapshot: i as u32 + 1,
            loaded_features: (0..features).map(|f| format!("/lib/{f}.rb")).collect(),
            ..Sidecar::default()
        });
    }
    ev.settled = crate::evidence::settled_from(&ev.heap, &ev.sidecars);
    ev
}

#[test]
fn growth_while_the_program_loads_code_is_not_retention() {
    let a = correlate(&loading_then_steady(true), &Options::default());
    assert!(a.leak_findings().next().is_none(), "{:#?}", a.findings);
    let table = a.class_growth.as_ref().unwrap();
    assert_eq!((table.from, table.to), (2, 3));
    assert!(
        a.notes.iter().any(|n| n.contains(
            "still loading code at heap snapshot 1 (93 features loaded, 111 by snapshot 2)"
        )),
        "{:#?}",
        a.notes
    );
    // The charts still show every snapshot.
    assert_eq!(a.timeline.heap_snapshots.len(), 3);
    assert!(a.timeline.classes.iter().any(|c| c.counts.len() == 3));

    // The same counts with no code loaded in between are judged over all three snapshots.
    let a = correlate(&loading_then_steady(false), &Options::default());
    assert_eq!(a.class_growth.as_ref().unwrap().from, 1);
    assert!(
        a.leak_findings()
            .any(|f| f.class.as_deref() == Some("String")),
        "{:#?}",
        a.findings
    );
}

#[test]
fn a_first_sidecar_taken_before_the_wrapper_was_found_counts_as_zero_instances() {
    // The first snapshot came while the program was still loading ffi-rzmq: no wrappers, no
    // lifecycle counts yet. Instances and blocks still move together from there.
    let mut ev = seed_b();
    ev.sidecars[0].wrappers.clear();
    ev.sidecars[0].lifecycle.clear();
    let a = correlate(&ev, &Options::default());
    let top = &a.findings[0];
    assert_eq!(top.kind, FindingKind::MissingRelease, "{:#?}", a.findings);
    assert!(
        top.evidence.iter().any(|e| e.text
            == "unreleased ZMQ::Message grew by 200,000 between the first and last snapshot while the site gained 80,000 blocks (0.40 blocks per instance: they move together)"),
        "{:#?}",
        top.evidence
    );
    assert_eq!(top.confidence, Confidence::High);
}

#[test]
fn the_runtime_noise_reason_follows_the_ruby_version() {
    let reason = |version: Option<&str>| {
        let mut ev = seed_b();
        for sc in &mut ev.sidecars {
            sc.ruby.version = version.unwrap_or_default().to_owned();
        }
        let a = correlate(&ev, &Options::default());
        let noise = a
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::RuntimeNoise)
            .expect("seed B has a runtime site");
        noise.evidence[0].text.clone()
    };
    assert!(
        reason(Some("3.1.2")).ends_with("Ruby before 3.4 does not free its own memory at exit")
    );
    assert!(reason(None).ends_with("Ruby before 3.4 does not free its own memory at exit"));
    for newer in ["3.4.1", "4.0.0"] {
        let text = reason(Some(newer));
        assert!(!text.contains("before 3.4"), "{newer}: {text}");
        assert!(
            text.contains("where the native tool does not look for pointers"),
            "{text}"
        );
    }
}

#[test]
fn the_footprint_rate_starts_at_the_first_snapshot_and_needs_two() {
    // Start-up climbs 50 MB in the first second; from the first snapshot on the program is flat.
    let mut ev = Evidence::empty(Origin::Bundle("b".into()));
    ev.footprint = (0..=40)
        .map(|i| {
            let t = i as f64 * 0.1;
            let bytes = if t < 1.0 { t * 50e6 } else { 50e6 } as u64;
            crate::bundle::FootprintSample { t, bytes }
        })
        .collect();
    let snapshot = |t: f64| {
        let mut h = retention::tests::heap(&[("String", 500)], &[]);
        h.t = Some(t);
        h
    };
    ev.heap.push(snapshot(1.0));
    let one = correlate(&ev, &Options::default());
    assert_eq!(one.leak_rate, None, "one snapshot compares nothing");
    ev.heap.push(snapshot(4.0));
    let rate = correlate(&ev, &Options::default()).leak_rate.unwrap();
    assert_eq!(rate.source, "footprint slope");
    assert!(rate.bytes_per_second.abs() < 1.0, "{rate:?}");
}

#[test]
fn a_stripped_site_says_how_to_get_its_frames_named() {
    let hint = |a: &Analysis| {
        a.findings[0].evidence.iter().any(|e| {
            e.text
                .contains("has no symbol for the allocating frame (stripped)")
        })
    };
    let stripped = correlate(&seed_b(), &Options::default());
    assert_eq!(stripped.findings[0].kind, FindingKind::MissingRelease);
    assert!(hint(&stripped), "{:#?}", stripped.findings[0].evidence);
    let named = correlate(&widget_leak(), &Options::default());
    assert_eq!(named.findings[0].kind, FindingKind::MissingRelease);
    assert!(!hint(&named), "{:#?}", named.findings[0].evidence);
}

/// Sidecar lifecycle counts near `u64::MAX`: the "unbalanced" test and the growth of unreleased
/// instances saturate. A sidecar says whatever it says; the analysis and every renderer get
/// through.
#[test]
fn huge_lifecycle_counts_do_not_overflow() {
    for (first, last) in [
        (40_000u64, 1u64 << 63),
        (u64::MAX, 1),
        (0, u64::MAX),
        (1 << 63, (1 << 63) + 5),
    ] {
        let mut ev = seed_b();
        ev.sidecars[0].lifecycle[0].created = first;
        let n = ev.sidecars.len();
        ev.sidecars[n - 1].lifecycle[0].created = last;
        for s in &mut ev.sidecars {
            for l in &mut s.lifecycle {
                for c in &mut l.created_at {
                    c.count = last;
                    c.released = Some(first);
                }
            }
        }
        let a = correlate(&ev, &Options::default());
        render_every_format(&a);
    }
}

/// Native reports whose sizes reach `u64::MAX`: the correlator's sums and differences — the
/// noise finding's totals, the timeline's finding bytes, the leak rate's growth, a site's delta
/// — saturate, and every analysis and rendering gets through.
#[test]
fn native_sizes_near_u64_max_do_not_overflow_the_analysis() {
    let big = u64::MAX / 2;
    for sizes in [
        [0u64, big, u64::MAX],
        [u64::MAX, 0, u64::MAX],
        [1, u64::MAX, 1],
        [1, 2, 1 << 63],
        [1 << 63, 5, 1],
    ] {
        let mut ev = Evidence::empty(Origin::Files(vec![]));
        ev.native = snapshots(
            &sizes
                .iter()
                .map(|&b| {
                    vec![
                        (ffi_stack("widget_create"), b, b),
                        (ffi_stack("gadget_create"), b, b),
                        (ffi_stack("thing_create"), b, b),
                        (stripped_zmq_stack(), b, b),
                        (runtime_stack(), b, b),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        for with_sidecars in [false, true] {
            if with_sidecars {
                ev.sidecars = vec![
                    widget_sidecar(u64::MAX, 0, u64::MAX),
                    widget_sidecar(1, u64::MAX, 0),
                    zmq_sidecar(3, u64::MAX),
                ];
            }
            let a = correlate(&ev, &Options::default());
            render_every_format(&a);
        }
    }
}

/// Heap dumps whose `memsize` saturates a class's bytes: the retention finding's byte total
/// over its group of classes saturates too.
#[test]
fn heap_bytes_near_i64_max_do_not_overflow_the_analysis() {
    let mut ev = Evidence::empty(Origin::Files(vec![]));
    let classes = [
        "ZMQ::Message",
        "LibZMQ::Msg",
        "FFI::MemoryPointer",
        "Array",
        "String",
    ];
    for (i, n) in [100i64, 50_000, 100_000].iter().enumerate() {
        let rows: Vec<(&str, i64)> = classes.iter().map(|c| (*c, *n)).collect();
        let mut h = crate::correlate::retention::tests::heap(
            &rows,
            &[
                ("ZMQ::Message", "leak.rb", 37, *n as u64),
                (
                    "ZMQ::Message",
                    "/tmp/leakhunt-x/leakhunt_agent.rb",
                    235,
                    u64::MAX / 64,
                ),
            ],
        );
        for r in &mut h.summary.histogram.rows {
            r.bytes = if i == 0 { 0 } else { i64::MAX };
        }
        for s in &mut h.summary.alloc_sites {
            s.bytes = u64::MAX;
        }
        h.t = Some(i as f64);
        ev.heap.push(h);
    }
    for with_sidecars in [false, true] {
        if with_sidecars {
            ev.sidecars = vec![
                zmq_sidecar(1, u64::MAX),
                zmq_sidecar(2, 1),
                zmq_sidecar(3, u64::MAX),
            ];
        }
        let a = correlate(&ev, &Options::default());
        render_every_format(&a);
    }
}

/// Renders the analysis in `format` to a string.
fn rendered(a: &Analysis, format: crate::report::ReportFormat) -> String {
    let mut out = Vec::new();
    crate::report::renderer(format, Default::default())
        .render(a, &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// With sites traced in sampled windows, a site's count is of the traced objects only: the
/// evidence line says so, in the text report and the JSON alike; with every allocation traced
/// (or an older bundle), the line reads as before.
#[test]
fn sampled_allocation_sites_say_their_counts_are_of_traced_objects() {
    for sampled in [false, true] {
        let mut ev = retention::tests::seed_a();
        ev.alloc_sites_sampled = sampled;
        let a = correlate(&ev, &Options::default());
        let expected = if sampled {
            "ZMQ::Message allocated at leak.rb:37: +60,000 of the traced objects (70,000 traced alive now; allocation sites sampled)"
        } else {
            "ZMQ::Message allocated at leak.rb:37: +60,000 (70,000 alive now)"
        };
        let texts: Vec<&str> = a.findings[0]
            .evidence
            .iter()
            .map(|e| e.text.as_str())
            .collect();
        assert!(texts.contains(&expected), "sampled: {sampled}: {texts:#?}");
        assert!(rendered(&a, crate::report::ReportFormat::Text).contains(expected));
        let json = rendered(&a, crate::report::ReportFormat::Json);
        assert!(json.contains(&format!("\"{expected}\"")), "{json}");
    }
}

/// One heap snapshot with sites: the line gives the count alive, of the traced objects when
/// sampled.
#[test]
fn one_sampled_heap_snapshot_says_its_sites_count_traced_objects() {
    for sampled in [false, true] {
        let mut ev = retention::tests::seed_a();
        for h in &mut ev.heap[..2] {
            h.summary.alloc_sites.clear();
        }
        ev.alloc_sites_sampled = sampled;
        let a = correlate(&ev, &Options::default());
        let expected = if sampled {
            "ZMQ::Message allocated at leak.rb:37: 70,000 traced objects alive (allocation sites sampled)"
        } else {
            "ZMQ::Message allocated at leak.rb:37: 70,000 alive"
        };
        assert!(
            a.findings[0].evidence.iter().any(|e| e.text == expected),
            "sampled: {sampled}: {:#?}",
            a.findings[0].evidence
        );
    }
}

/// Without the agent's lifecycle counts, a missing-release finding gives the heap's allocation
/// sites as creation sites: their count is of the traced objects when sites were sampled, in
/// the evidence, the fix's location and the JSON.
#[test]
fn creation_sites_from_sampled_heap_sites_say_so() {
    for sampled in [false, true] {
        let mut ev = seed_offline(true);
        let last = ev.heap.len() - 1;
        ev.heap[last].summary.alloc_sites =
            retention::tests::heap(&[], &[("ZMQ::Message", "leak.rb", 37, 14)])
                .summary
                .alloc_sites;
        ev.alloc_sites_sampled = sampled;
        let a = correlate(&ev, &Options::default());
        let top = &a.findings[0];
        assert_eq!(top.kind, FindingKind::MissingRelease, "{:#?}", a.findings);
        let (evidence, fix) = if sampled {
            (
                "ZMQ::Message instances created at leak.rb:37 (14 traced; allocation sites sampled)",
                "     created at leak.rb:37 (14 traced; allocation sites sampled)",
            )
        } else {
            (
                "ZMQ::Message instances created at leak.rb:37 (14)",
                "     created at leak.rb:37 (14)",
            )
        };
        assert!(
            top.evidence.iter().any(|e| e.text == evidence),
            "sampled: {sampled}: {:#?}",
            top.evidence
        );
        let location = &top.suggestion.as_ref().unwrap().locations[0];
        assert_eq!(location.sampled, sampled);
        let text = rendered(&a, crate::report::ReportFormat::Text);
        assert!(text.lines().any(|l| l == fix), "{text}");
        let json = rendered(&a, crate::report::ReportFormat::Json);
        assert_eq!(json.contains("\"sampled\": true"), sampled, "{json}");
    }
}

/// Renders the analysis as text, JSON and HTML: none of them may fail or panic.
fn render_every_format(a: &Analysis) {
    for r in [
        crate::report::ReportFormat::Text,
        crate::report::ReportFormat::Json,
        crate::report::ReportFormat::Html,
    ] {
        let mut out = Vec::new();
        crate::report::renderer(r, Default::default())
            .render(a, &mut out)
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Runs of several processes: a fork pool whose master loads the code and whose workers leak.

/// `heaps` heap snapshots with no class changing.
fn steady_heap(heaps: usize) -> Vec<crate::evidence::HeapSnapshot> {
    (1..=heaps)
        .map(|i| crate::evidence::HeapSnapshot {
            snapshot: Some(i as u32),
            t: Some(i as f64),
            ..retention::tests::heap(&[("String", 1000)], &[])
        })
        .collect()
}

/// A worker whose Widgets leak (`leaks`) or are all closed.
fn worker(leaks: bool) -> Evidence {
    let mut ev = if leaks {
        widget_leak()
    } else {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        ev.sidecars = vec![widget_sidecar(100, 100, 0), widget_sidecar(600, 600, 0)];
        ev.native = snapshots(&[
            vec![(runtime_stack(), 50, 9_000)],
            vec![(runtime_stack(), 50, 9_000)],
        ]);
        ev
    };
    ev.heap = steady_heap(2);
    ev
}

/// The master (nothing leaks in it) and workers 11 and 12, forked by it; worker 13 was in one
/// round only. `leaking` says which of 11 and 12 leak Widgets.
fn pool(leaking: &[u32]) -> Evidence {
    use crate::bundle::{Manifest, ProcessEntry, ROLE_MAIN, ROLE_WORKER};
    use crate::evidence::ProcessEvidence;
    let entry = |pid: u32, role: &str, rounds: u32| ProcessEntry {
        pid,
        ppid: Some(if pid == 10 { 1 } else { 10 }),
        command: vec!["pool.rb".into()],
        role: role.into(),
        first_round: Some(1),
        last_round: Some(rounds),
        ..ProcessEntry::default()
    };
    let mut ev = worker(false);
    ev.manifest = Some(Manifest {
        pid: Some(10),
        processes: vec![
            entry(10, ROLE_MAIN, 2),
            entry(11, ROLE_WORKER, 2),
            entry(12, ROLE_WORKER, 2),
            entry(13, ROLE_WORKER, 1),
        ],
        ..Manifest::default()
    });
    for pid in [11, 12] {
        ev.processes.push(ProcessEvidence {
            entry: entry(pid, ROLE_WORKER, 2),
            evidence: worker(leaking.contains(&pid)),
        });
    }
    let mut once = worker(true);
    once.heap.truncate(1);
    once.native.truncate(1);
    ev.processes.push(ProcessEvidence {
        entry: entry(13, ROLE_WORKER, 1),
        evidence: once,
    });
    ev
}

#[test]
fn a_leak_in_every_worker_is_one_finding_saying_where_it_holds() {
    let a = correlate(&pool(&[11, 12]), &Options::default());
    let leaks: Vec<&Finding> = a.leak_findings().collect();
    assert_eq!(leaks.len(), 1, "{:#?}", a.findings);
    let f = leaks[0];
    assert_eq!(f.kind, FindingKind::MissingRelease);
    assert_eq!(
        f.title,
        "Widget#close is not called: libwidget.so memory from widget_create · in 2 of 2 workers · +2,000 blocks / +272,000 bytes in total"
    );
    assert_eq!((f.count, f.bytes), (2000, 272_000));
    let shares: Vec<(u32, &str, i64)> = f
        .processes
        .iter()
        .map(|p| (p.pid, p.role.as_str(), p.count))
        .collect();
    assert_eq!(shares, [(11, "worker", 1000), (12, "worker", 1000)]);
    assert!(f.processes.iter().all(|p| p.series.len() == 2));
    assert_eq!(f.processes[0].series[1].value, 600 * 272);
    // The fix still names the method and the creation line, counted over both workers.
    let s = f.suggestion.as_ref().unwrap();
    assert_eq!(s.method.as_deref(), Some("Widget#close"));
    assert_eq!(s.locations[0].site(), "widget-leak.rb:7");
    assert_eq!(s.locations[0].count, Some(1200));
    assert_eq!(a.verdict, Verdict::Leak);
    // The tables are those of a worker where it grew; every process is listed.
    assert_eq!(
        a.tables_of.as_ref().map(|t| t.group.as_str()),
        Some("worker")
    );
    let listed: Vec<(u32, &str, bool, usize)> = a
        .processes
        .iter()
        .map(|p| (p.pid, p.group.as_str(), p.judged, p.findings.len()))
        .collect();
    assert_eq!(
        listed,
        [
            (10, "the master", true, 0),
            (11, "worker", true, 1),
            (12, "worker", true, 1),
            (13, "worker", false, 0)
        ]
    );
    assert!(
        a.notes
            .iter()
            .any(|n| n.starts_with("pid 13 (worker) was in 1 round")),
        "{:?}",
        a.notes
    );
    assert_eq!(a.timeline.processes.len(), 4);
    assert_eq!(a.heap_snapshots, 2 + 2 + 2 + 1);
}

#[test]
fn a_leak_in_one_worker_of_two_is_still_reported() {
    let a = correlate(&pool(&[12]), &Options::default());
    let leaks: Vec<&Finding> = a.leak_findings().collect();
    assert_eq!(leaks.len(), 1, "{:#?}", a.findings);
    assert!(
        leaks[0]
            .title
            .contains(" · in 1 of 2 workers · +1,000 blocks")
    );
    assert_eq!(leaks[0].processes.len(), 1);
    assert_eq!(a.tables_of.as_ref().map(|t| t.pid), Some(12));
}

#[test]
fn a_pool_whose_workers_close_their_widgets_has_no_leak() {
    let a = correlate(&pool(&[]), &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
    assert_eq!(a.verdict, Verdict::NoLeak);
    // Worker 13 leaked in its one round, but one round cannot show growth.
    assert!(
        a.findings
            .iter()
            .all(|f| !f.processes.iter().any(|p| p.pid == 13))
    );
}

#[test]
fn the_text_and_json_reports_list_the_processes() {
    let a = correlate(&pool(&[11, 12]), &Options::default());
    let mut text = Vec::new();
    crate::report::renderer(crate::cli::ReportFormat::Text, Default::default())
        .render(&a, &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(" · 4 processes (the master, 3 workers)"),
        "{text}"
    );
    assert!(text.contains("Native sites of pid 11 (worker)"), "{text}");
    assert!(text.contains("\nProcesses\n  pid 10 "), "{text}");
    assert!(
        text.contains("pid 13       worker             round 1      not judged"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::to_value(&a).unwrap();
    assert_eq!(json["processes"].as_array().unwrap().len(), 4);
    assert_eq!(json["findings"][0]["processes"][1]["pid"], 12);
    assert_eq!(json["timeline"]["processes"][1]["label"], "pid 11 (worker)");
}

// ---------------------------------------------------------------------------------------------
// No native backend: a missing release told from the wrapper lifecycle alone.

/// A `--backend none` bundle: `widgets[i]` Widgets created (none closed unless `closed`) by
/// sidecar i, and a heap snapshot per sidecar where `alive` Widgets are still live.
pub(crate) fn unmeasured_widgets(widgets: &[u64], closed: bool, alive: i64) -> Evidence {
    let mut ev = Evidence::empty(Origin::Bundle("b".into()));
    ev.manifest = Some(crate::bundle::Manifest {
        backend: crate::bundle::Backend {
            name: "none".into(),
            ..Default::default()
        },
        ..Default::default()
    });
    for (i, &n) in widgets.iter().enumerate() {
        ev.sidecars
            .push(widget_sidecar(n, if closed { n } else { 0 }, 0));
        ev.heap.push(crate::evidence::HeapSnapshot {
            snapshot: Some(i as u32 + 1),
            ..retention::tests::heap(&[("Widget", alive), ("String", 1000)], &[])
        });
    }
    ev
}

fn unmeasured_release(a: &Analysis) -> Option<&Finding> {
    a.findings
        .iter()
        .find(|f| f.kind == FindingKind::MissingRelease)
}

#[test]
fn widgets_dropped_unclosed_without_a_native_backend_are_a_missing_release() {
    let a = correlate(
        &unmeasured_widgets(&[100, 600, 1100], false, 3),
        &Options::default(),
    );
    assert_eq!(a.leak_findings().count(), 1, "{:#?}", a.findings);
    assert_eq!(a.verdict, Verdict::Leak);
    let f = unmeasured_release(&a).expect("a missing release");
    assert_eq!(f.class.as_deref(), Some("Widget"));
    assert_eq!(f.native, None);
    assert_eq!(f.count, 1000);
    assert_eq!(f.confidence, Confidence::Medium);
    assert!(
        f.title
            .contains("native memory was not measured (`--backend none`)"),
        "{}",
        f.title
    );
    let s = f.suggestion.as_ref().unwrap();
    assert_eq!(s.method.as_deref(), Some("Widget#close"));
    assert_eq!(s.locations[0].site(), "widget-leak.rb:7");
    assert_eq!(s.locations[0].role, LocationRole::Created);
    assert!(s.text.contains("widget_destroy"), "{}", s.text);
    assert!(
        f.evidence
            .iter()
            .any(|e| e.text.contains("rerun with `--backend lsan`")),
        "{:#?}",
        f.evidence
    );
    // The same fingerprint as the finding a native backend gives.
    let native = correlate(&widget_leak(), &Options::default());
    assert_eq!(f.fingerprint, native.findings[0].fingerprint);
    for format in [
        crate::report::ReportFormat::Text,
        crate::report::ReportFormat::Json,
        crate::report::ReportFormat::Html,
    ] {
        let out = rendered(&a, format);
        assert!(out.contains("Widget#close"), "{format:?}: {out}");
        assert!(out.contains("not measured"), "{format:?}: {out}");
    }
}

#[test]
fn unclosed_widgets_that_stay_alive_rank_low() {
    let a = correlate(
        &unmeasured_widgets(&[100, 600, 1100], false, 1000),
        &Options::default(),
    );
    assert_eq!(unmeasured_release(&a).unwrap().confidence, Confidence::Low);
}

#[test]
fn unreleased_instances_made_once_at_start_are_not_a_leak() {
    // All made before the second round, none since: a one-off, not a leak that goes on.
    let a = correlate(
        &unmeasured_widgets(&[100, 600, 600, 600], false, 3),
        &Options::default(),
    );
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
    assert_eq!(a.verdict, Verdict::NoLeak);
}

#[test]
fn closed_widgets_without_a_native_backend_are_no_finding() {
    let a = correlate(
        &unmeasured_widgets(&[100, 600, 1100], true, 3),
        &Options::default(),
    );
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
}

#[test]
fn a_wrapper_freed_by_its_finalizer_is_a_note_not_a_finding() {
    let mut ev = unmeasured_widgets(&[100, 600, 1100], false, 3);
    for sc in &mut ev.sidecars {
        sc.wrappers[0].finalizer = true;
        sc.wrappers[0].finalizer_detail = Some("released by FFI::AutoPointer".into());
    }
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
    assert!(
        a.notes
            .iter()
            .any(|n| n.starts_with("Widget:") && n.contains("FFI::AutoPointer")),
        "{:?}",
        a.notes
    );
}

#[test]
fn a_wrapper_without_a_release_method_is_not_blamed() {
    // Gadgets pile up unreleased, but Gadget has no method calling gadget_free (its pointer
    // class frees them).
    let mut ev = unmeasured_widgets(&[0, 0, 0], false, 0);
    for (sc, n) in ev.sidecars.iter_mut().zip([100u64, 600, 1100]) {
        *sc = widget_sidecar(0, 0, n);
    }
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
}

#[test]
fn instances_released_at_one_site_and_not_another_are_only_a_note() {
    // Like leak-fixed.rb: what is received is closed, what is sent is never closed (sending
    // gives it to the library).
    let mut ev = unmeasured_widgets(&[100, 600, 1100], false, 3);
    for sc in &mut ev.sidecars {
        let l = &mut sc.lifecycle[0];
        let n = l.created;
        l.released = n / 2;
        l.created_at = vec![
            SiteCount {
                file: "widget-leak.rb".into(),
                line: 7,
                count: n / 2,
                released: Some(n / 2),
            },
            SiteCount {
                file: "widget-leak.rb".into(),
                line: 9,
                count: n / 2,
                released: Some(0),
            },
        ];
    }
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
    assert!(
        a.notes
            .iter()
            .any(|n| n.contains("created at widget-leak.rb:7") && n.contains("--backend lsan")),
        "{:?}",
        a.notes
    );
}

#[test]
fn with_native_evidence_the_lifecycle_alone_blames_nothing() {
    // A native backend measured, and no site of libwidget grew: the lifecycle is not enough.
    let mut ev = unmeasured_widgets(&[100, 600, 1100], false, 3);
    ev.manifest.as_mut().unwrap().backend.name = "lsan".into();
    ev.native = snapshots(&[
        vec![(runtime_stack(), 5000, 900_000)],
        vec![(runtime_stack(), 5000, 900_000)],
        vec![(runtime_stack(), 5000, 900_000)],
    ]);
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
}

#[test]
fn unclosed_messages_kept_in_an_array_are_one_retention_finding_without_native_evidence() {
    // Seed A under --backend none: the messages are unreleased because the Array keeps them.
    let mut ev = retention::tests::seed_a();
    ev.manifest = Some(crate::bundle::Manifest {
        backend: crate::bundle::Backend {
            name: "none".into(),
            ..Default::default()
        },
        ..Default::default()
    });
    ev.sidecars = vec![
        zmq_sidecar(1, 20_000),
        zmq_sidecar(2, 80_000),
        zmq_sidecar(3, 140_000),
    ];
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 1, "{:#?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(f.kind, FindingKind::RubyRetention);
    let s = f.suggestion.as_ref().unwrap();
    assert_eq!(s.locations[0].site(), "leak.rb:29");
    assert_eq!(s.method.as_deref(), Some("ZMQ::Message#close"));
    assert!(
        f.evidence
            .iter()
            .any(|e| e.text.contains("also hold native memory") && e.text.contains("not measured")),
        "{:#?}",
        f.evidence
    );
}

/// fixtures/cext's cbufs.so as the agent records it: RingBuf, released by #close.
pub(crate) fn ringbuf_extension() -> crate::bundle::Extension {
    use crate::bundle::{Extension, ExtensionModule};
    Extension {
        path: "/app/ext/cbufs.so".into(),
        gem: None,
        modules: vec![ExtensionModule {
            name: "RingBuf".into(),
            class: true,
            methods: vec!["initialize".into(), "close".into()],
            release_methods: vec!["close".into()],
            ..ExtensionModule::default()
        }],
    }
}

#[test]
fn an_extension_class_left_open_without_a_native_backend_is_a_note() {
    let mut ev = unmeasured_widgets(&[0, 0, 0], false, 0);
    for (sc, n) in ev.sidecars.iter_mut().zip([100u64, 600, 1100]) {
        sc.wrappers.clear();
        sc.extensions = vec![ringbuf_extension()];
        sc.lifecycle = vec![life("RingBuf", n, 0, &[("ringbuf-leak.rb", 6, n)])];
    }
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
    assert!(
        a.notes.iter().any(
            |n| n.starts_with("RingBuf (C extension cbufs.so): 1,100 created")
                && n.contains("rerun with `--backend lsan`")
        ),
        "{:?}",
        a.notes
    );
}

#[test]
fn a_native_backend_whose_reports_were_not_read_blames_nothing_from_the_lifecycle() {
    // Made under lsan, but no native report was read: every check found nothing (LSan writes
    // nothing then), or the logs are missing or damaged. A clean check is no licence to blame
    // from the lifecycle: say why it stays quiet instead.
    for backend in ["lsan", "valgrind", "leaks"] {
        let mut ev = unmeasured_widgets(&[100, 600, 1100], false, 3);
        ev.manifest.as_mut().unwrap().backend.name = backend.into();
        let a = correlate(&ev, &Options::default());
        assert_eq!(a.leak_findings().count(), 0, "{backend}: {:#?}", a.findings);
        assert_eq!(a.verdict, Verdict::NoLeak);
        assert!(
            a.notes
                .iter()
                .any(|n| n.starts_with("Widget: 1,100 created")
                    && n.contains(&format!(
                        "no native report of `--backend {backend}` was read"
                    ))),
            "{backend}: {:?}",
            a.notes
        );
    }
}

#[test]
fn a_bundle_without_a_manifest_blames_nothing_from_the_lifecycle() {
    let mut ev = unmeasured_widgets(&[100, 600, 1100], false, 3);
    ev.manifest = None;
    let a = correlate(&ev, &Options::default());
    assert_eq!(a.leak_findings().count(), 0, "{:#?}", a.findings);
}

/// A `--backend none` pool: the master closes its Widgets, workers 11 and 12 drop theirs.
fn unmeasured_pool() -> Evidence {
    use crate::bundle::{ProcessEntry, ROLE_MAIN, ROLE_WORKER};
    use crate::evidence::ProcessEvidence;
    let entry = |pid: u32, role: &str| ProcessEntry {
        pid,
        ppid: Some(if pid == 10 { 1 } else { 10 }),
        command: vec!["pool.rb".into()],
        role: role.into(),
        first_round: Some(1),
        last_round: Some(3),
        ..ProcessEntry::default()
    };
    let mut ev = unmeasured_widgets(&[100, 600, 1100], true, 3);
    let m = ev.manifest.as_mut().unwrap();
    m.pid = Some(10);
    m.processes = vec![
        entry(10, ROLE_MAIN),
        entry(11, ROLE_WORKER),
        entry(12, ROLE_WORKER),
    ];
    for pid in [11, 12] {
        ev.processes.push(ProcessEvidence {
            entry: entry(pid, ROLE_WORKER),
            evidence: unmeasured_widgets(&[100, 600, 1100], false, 3),
        });
    }
    ev
}

#[test]
fn workers_dropping_widgets_without_a_native_backend_are_one_finding_in_instances() {
    let a = correlate(&unmeasured_pool(), &Options::default());
    let leaks: Vec<&Finding> = a.leak_findings().collect();
    assert_eq!(leaks.len(), 1, "{:#?}", a.findings);
    let f = leaks[0];
    assert_eq!(f.native, None);
    assert_eq!((f.count, f.bytes), (2000, 0));
    // Instances, not blocks and bytes (none were measured), and the title still says so.
    assert_eq!(
        f.title,
        "Widget#close is not called: Widget instances are dropped unreleased · in 2 of 2 workers · +2,000 instances never released in total — native memory was not measured (`--backend none`)"
    );
    assert!(
        f.evidence
            .iter()
            .any(|e| e.text == "pid 11 (worker): +1,000 instances never released"),
        "{:#?}",
        f.evidence
    );
    assert_eq!(
        f.suggestion.as_ref().unwrap().method.as_deref(),
        Some("Widget#close")
    );
}

#[test]
fn workers_dropping_widgets_sized_by_malloc_are_one_finding_in_instances_and_bytes() {
    // The same pool, malloc measured after each round's GC: each dropped Widget kept 300 bytes.
    let mut ev = unmeasured_pool();
    for p in &mut ev.processes {
        for (i, sc) in p.evidence.sidecars.iter_mut().enumerate() {
            let in_use = 2_000_000 + 300 * sc.lifecycle[0].created;
            sc.snapshot = i as u32 + 1;
            sc.malloc = Some(crate::bundle::MallocMeasure {
                how: "glibc malloc_info(0, FILE*) after the round's full GC".into(),
                xml: format!(
                    r#"<malloc version="1"><total type="fast" count="0" size="0"/><total type="rest" count="0" size="0"/><total type="mmap" count="0" size="0"/><system type="current" size="{in_use}"/></malloc>"#
                ),
                ..Default::default()
            });
        }
    }
    let a = correlate(&ev, &Options::default());
    let leaks: Vec<&Finding> = a.leak_findings().collect();
    assert_eq!(leaks.len(), 1, "{:#?}", a.findings);
    let f = leaks[0];
    assert_eq!(f.native, None);
    // 1,000 more dropped Widgets in each worker, 300 bytes each.
    assert_eq!((f.count, f.bytes), (2000, 600_000));
    assert_eq!(
        f.title,
        "Widget#close is not called: Widget instances are dropped unreleased · in 2 of 2 workers · +2,000 instances never released / +600,000 bytes in total — measured by malloc after each GC, `--backend none`"
    );
}
