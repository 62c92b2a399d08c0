//! The macOS `leaks` reader on every sample of `fixtures/leaks/` (real reports of each era,
//! the seed document's excerpt, synthetic variants of FORMAT.md), and on a generated report
//! with many identical stacks.

use crate::common::fixture;
use leakhunt::detect::detect_path;
use leakhunt::native::leaks::{
    self, CRLF_LINES, CUT_OFF, LeaksFailureKind, NOT_UNDERSTOOD, NOT_UTF8,
};
use leakhunt::native::{self, Frame, LeakKind, NativeFormat, NativeReport, is_allocator_frame};
use std::path::Path;

#[path = "../benches/leaks_report_gen.rs"]
#[allow(dead_code)]
mod leaks_report_gen;

/// The real reports copied from ../shared/reference/leaks (fixtures/README.md).
const REFERENCE_SAMPLES: [&str; 8] = [
    "osx-early-v1.0-webkit-jsc-zone-nostack.txt",
    "macos10.6-v2.0-old-safari-callstack.txt",
    "macos10.13.4-v3.0-zero-leaks-notdebuggable-oldwording.txt",
    "macos15.0-v3.0-list-msl-lite-callstack.txt",
    "macos13era-v4.0-quiet-atexit-msl-stack.txt",
    "macos14era-ruby-miniruby-v4.0-quiet-stack.txt",
    "macos13.2-v4.0-zero-leaks-msl-lite-notdebuggable.txt",
    "ios17.5sim-v4.0-tree-rootleak-rootcycle-large.txt",
];

const NOT_DEBUGGABLE_13: &str = "is not debuggable. Due to security restrictions, leaks can \
     only show or save contents of readonly memory of restricted processes.";

fn read(name: &str) -> NativeReport {
    let path = fixture(&format!("leaks/{name}"));
    let mut reports = detect_path(&path)
        .and_then(|kind| native::parse_file(&path, kind))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reports.len(), 1, "{name}");
    reports.remove(0)
}

fn labels(report: &NativeReport, stack: u32) -> Vec<String> {
    report.stack(stack).map(Frame::label).collect()
}

fn site_names(report: &NativeReport) -> Vec<String> {
    native::sites(report)
        .into_iter()
        .map(|s| s.key.function)
        .collect()
}

/// No line left unread, and (when there is a summary) every leak it counts is listed.
fn assert_complete(name: &str, report: &NativeReport) {
    assert_eq!(
        report.diagnostics.count_of(NOT_UNDERSTOOD),
        0,
        "{name}: {:?}",
        report.diagnostics.lines()
    );
    if let Some(summary) = report.summary {
        assert_eq!(
            (report.total_blocks(), report.total_bytes()),
            (summary.leaks, summary.bytes),
            "{name}"
        );
        assert_eq!(report.unlisted(), None, "{name}");
    }
}

#[test]
fn every_reference_sample_reads_whole_and_matches_its_summary() {
    for name in REFERENCE_SAMPLES {
        let report = read(name);
        assert_complete(name, &report);
        assert!(
            report.diagnostics.is_empty(),
            "{name}: {:?}",
            report.diagnostics.lines()
        );
    }
}

#[test]
fn v1_webkit_report_without_header_or_stacks() {
    let r = read("osx-early-v1.0-webkit-jsc-zone-nostack.txt");
    assert_eq!(r.format, NativeFormat::Leaks1);
    assert_eq!(r.header.pid, Some(1602));
    assert_eq!(r.header.process, None);
    let summary = r.summary.unwrap();
    assert_eq!((summary.leaks, summary.bytes), (8, 160));
    assert_eq!(
        (summary.nodes, summary.malloced_kb),
        (Some(86671), Some(13261))
    );
    // Eight stackless, untyped leaks in a zone whose name has a space merge into one record.
    assert_eq!(r.leaks.len(), 1);
    assert_eq!(r.leaks[0].stack, None);
    assert_eq!(r.leaks[0].first_address, Some(0x114d54708));
    assert_eq!(r.leaks[0].kind, LeakKind::RootLeak);
}

#[test]
fn v2_old_layout_safari_call_stack_outermost_first() {
    let r = read("macos10.6-v2.0-old-safari-callstack.txt");
    assert_eq!(r.format, NativeFormat::Leaks2);
    assert_eq!(r.header.process.as_deref(), Some("Safari"));
    assert_eq!(r.header.pid, Some(53606));
    assert_eq!(
        r.header.os_version.as_deref(),
        Some("Mac OS X 10.6.3 (10D571)")
    );
    assert_eq!(
        r.header.date.as_deref(),
        Some("2010-05-27 11:42:27.356 -0700")
    );
    assert_eq!(
        r.header.path.as_deref(),
        Some("/Applications/Safari.app/Contents/MacOS/Safari")
    );
    let stack = labels(&r, 0);
    assert_eq!(stack.len(), 22);
    assert_eq!(stack[0], "0x100001e84");
    assert_eq!(stack[1], "NSApplicationMain");
    assert_eq!(
        stack[15..],
        [
            "xar_open",
            "xar_file_unserialize",
            "xar_prop_unserialize",
            "xar_prop_unserialize",
            "strdup",
            "malloc",
            "malloc_zone_malloc"
        ]
    );
    assert_eq!(r.frames.len(), 21, "the repeated frame is interned once");
    assert_eq!(site_names(&r), ["xar_prop_unserialize"]);
    // `string '…'` describes content, not a type.
    assert_eq!(r.leaks[0].type_name, None);
}

#[test]
fn v3_zero_leaks_with_old_not_debuggable_wording_and_footprint() {
    let r = read("macos10.13.4-v3.0-zero-leaks-notdebuggable-oldwording.txt");
    assert_eq!(r.format, NativeFormat::Leaks3);
    assert_eq!(r.header.process.as_deref(), Some("CommandPost"));
    assert_eq!(r.header.pid, Some(8175));
    assert_eq!(r.header.physical_footprint, Some(85_668_659));
    assert_eq!(r.header.physical_footprint_peak, Some(118_593_946));
    assert_eq!(
        r.header.tool.as_deref(),
        Some("/Applications/Xcode.app/Contents/Developer/usr/bin/leaks")
    );
    assert_eq!(
        r.header.tool_version.as_deref(),
        Some("Xcode 9.3.1 (9E501)")
    );
    assert_eq!(
        r.header.notices,
        [
            "Process 8175 is not debuggable. Due to security restrictions, leaks cannot show \
          memory contents of restricted processes."
        ]
    );
    let summary = r.summary.unwrap();
    assert_eq!(
        (summary.leaks, summary.bytes, summary.nodes),
        (0, 0, Some(114411))
    );
    assert!(r.leaks.is_empty());
}

#[test]
fn v3_list_on_macos15_with_target_output_and_binary_images() {
    let r = read("macos15.0-v3.0-list-msl-lite-callstack.txt");
    assert_eq!(r.format, NativeFormat::Leaks3);
    assert_eq!(r.header.process.as_deref(), Some("Project"));
    assert_eq!(r.header.pid, Some(23058));
    assert_eq!(
        r.header.os_version.as_deref(),
        Some("macOS 15.0.1 (24A348)")
    );
    assert_eq!(
        r.header.tool_version.as_deref(),
        Some("Xcode 16.0 (16A242d)")
    );
    assert_eq!(r.header.physical_footprint, Some(2145 * 1024));
    assert_eq!(
        r.header.notices,
        [format!("Process 23058 {NOT_DEBUGGABLE_13}")]
    );
    assert_eq!(r.leaks.len(), 1);
    assert_eq!(
        r.leaks[0].type_name.as_deref(),
        Some("malloc in InitLinkedList")
    );
    assert_eq!(r.leaks[0].first_address, Some(0x1330040d0));
    assert_eq!(
        labels(&r, 0),
        [
            "start",
            "main",
            "InitLinkedList",
            "_malloc_zone_malloc_instrumented_or_legacy"
        ]
    );
    let frames: Vec<&Frame> = r.stack(0).collect();
    assert_eq!(frames[2].library(), Some("Project"));
    assert_eq!(frames[2].address, Some(0x10005f7a4));
    // Binary Images: 0x10005c000 - 0x10005ffff +Project
    assert_eq!(frames[2].module_offset, Some(0x37a4));
    assert!(is_allocator_frame(frames[3]));
    assert_eq!(site_names(&r), ["InitLinkedList"]);
}

#[test]
fn v4_multi_line_stack_of_eecs280_under_at_exit() {
    let r = read("macos13era-v4.0-quiet-atexit-msl-stack.txt");
    assert_eq!(r.format, NativeFormat::Leaks4Stacks);
    assert_eq!(r.header.pid, Some(14025));
    // No header under -quiet: the name comes from the target's MallocStackLogging lines.
    assert_eq!(r.header.process.as_deref(), Some("main.exe"));
    assert_eq!(
        r.header.notices,
        [format!("Process 14025 {NOT_DEBUGGABLE_13}")]
    );
    assert_eq!(
        labels(&r, 0),
        [
            "start",
            "main",
            "operator new(unsigned long)",
            "_malloc_zone_malloc_instrumented_or_legacy"
        ]
    );
    let frames: Vec<&Frame> = r.stack(0).collect();
    assert!(is_allocator_frame(frames[2]), "operator new wraps malloc");
    assert!(is_allocator_frame(frames[3]));
    assert_eq!(
        (frames[1].file.as_deref(), frames[1].line),
        (Some("main.cpp"), Some(0))
    );
    assert_eq!(frames[1].address, Some(0x1001bf220));
    let sites = native::sites(&r);
    assert_eq!(sites[0].key.function, "main");
    assert_eq!(sites[0].key.library.as_deref(), Some("main.exe"));
    assert_eq!(r.leaks[0].type_name.as_deref(), Some("malloc in main"));
    assert_eq!(r.leaks[0].kind, LeakKind::RootLeak);
    assert_eq!(r.leaks[0].first_address, Some(0x12e7040f0));
}

#[test]
fn v4_ruby_miniruby_stack_without_summary() {
    let r = read("macos14era-ruby-miniruby-v4.0-quiet-stack.txt");
    assert_eq!(r.format, NativeFormat::Leaks4Stacks);
    assert_eq!(r.summary, None);
    assert_eq!((r.total_blocks(), r.total_bytes()), (1, 96));
    assert_eq!(
        labels(&r, 0),
        [
            "start",
            "main",
            "ruby_init",
            "ruby_setup",
            "Init_BareVM",
            "rb_ractor_main_alloc",
            "_malloc_zone_calloc_instrumented_or_legacy"
        ]
    );
    let sites = native::sites(&r);
    assert_eq!(sites[0].key.function, "rb_ractor_main_alloc");
    assert_eq!(sites[0].key.library.as_deref(), Some("miniruby"));
    assert_eq!(
        (sites[0].frame.file.as_deref(), sites[0].frame.line),
        (Some("ractor.c"), Some(2034))
    );
    assert!(is_allocator_frame(sites[0].stack.last().unwrap()));
    assert_eq!(
        r.leaks[0].type_name.as_deref(),
        Some("calloc in rb_ractor_main_alloc")
    );
}

#[test]
fn v4_zero_leaks_full_modern_header() {
    let r = read("macos13.2-v4.0-zero-leaks-msl-lite-notdebuggable.txt");
    assert_eq!(r.format, NativeFormat::Leaks4Stacks);
    assert_eq!(r.header.process.as_deref(), Some("lilly"));
    assert_eq!(r.header.pid, Some(53176));
    assert_eq!(r.header.os_version.as_deref(), Some("macOS 13.2.1 (22D68)"));
    assert_eq!(r.header.tool.as_deref(), Some("/usr/bin/leaks"));
    assert_eq!(
        (
            r.header.physical_footprint,
            r.header.physical_footprint_peak
        ),
        (Some(4513 * 1024), Some(4529 * 1024))
    );
    assert_eq!(
        r.header.notices,
        [format!("Process 53176 {NOT_DEBUGGABLE_13}")]
    );
    let summary = r.summary.unwrap();
    assert_eq!(
        (summary.leaks, summary.nodes, summary.malloced_kb),
        (0, Some(226), Some(22))
    );
}

#[test]
fn v4_large_ios_tree_counts_every_node_and_cycles() {
    let r = read("ios17.5sim-v4.0-tree-rootleak-rootcycle-large.txt");
    assert_eq!(r.format, NativeFormat::Leaks4);
    assert_eq!(r.header.process.as_deref(), Some("Client"));
    assert_eq!(r.header.pid, Some(35988));
    assert_eq!(
        r.header.os_version.as_deref(),
        Some("iPhone OS 17.5 (21F79)")
    );
    assert_eq!(
        r.header.tool_version.as_deref(),
        Some("iOS Simulator 17.5 (21F79)")
    );
    assert_eq!(
        (
            r.header.physical_footprint,
            r.header.physical_footprint_peak
        ),
        (Some(85_983_232), Some(87_451_238))
    );
    assert_eq!((r.total_blocks(), r.total_bytes()), (875, 103_824));
    let by_kind = |kind: LeakKind| -> (u64, u64) {
        r.leaks
            .iter()
            .filter(|l| l.kind == kind)
            .fold((0, 0), |(b, s), l| (b + l.blocks, s + l.bytes))
    };
    // 34 `ROOT LEAK:` lines; 4 `ROOT CYCLE:` lines (two nested in a cycle), 160 bytes each;
    // the 2 `CYCLE BACK TO` lines are not blocks.
    assert_eq!(by_kind(LeakKind::RootLeak), (34, 13_984));
    assert_eq!(by_kind(LeakKind::RootCycle), (4, 640));
    assert_eq!(
        by_kind(LeakKind::Interior),
        (875 - 38, 103_824 - 13_984 - 640)
    );
    let dictionary = r
        .leaks
        .iter()
        .find(|l| {
            l.type_name.as_deref()
                == Some("Swift._DictionaryStorage<Foundation.UUID, Client.AppWindowInfo>")
        })
        .expect("nested generic type name");
    assert_eq!((dictionary.blocks, dictionary.bytes), (29, 29 * 160));
    assert!(r.stacks.is_empty(), "a plain 4.0 tree has no stacks");
}

const SEED_EXCERPT: &str = "seed-rbx-macos10.6.5-v2.0-excerpt.txt";

fn assert_seed_excerpt(r: &NativeReport) {
    assert_eq!(r.format, NativeFormat::Leaks2);
    assert_eq!(r.header.process.as_deref(), Some("rbx"));
    assert_eq!(r.header.pid, Some(36700));
    assert_eq!(
        r.header.os_version.as_deref(),
        Some("Mac OS X 10.6.5 (10H574)")
    );
    let summary = r.summary.unwrap();
    assert_eq!((summary.leaks, summary.bytes), (171_502, 263_427_072));
    assert_eq!(
        (summary.nodes, summary.malloced_kb),
        (Some(274_490), Some(294_357))
    );
    // The call stack the author re-wrapped over four lines is one stack, outermost first
    // (the generator of the benchmark writes the same stack).
    assert_eq!(labels(r, 0), leaks_report_gen::SEED_FRAMES);
    assert_eq!(site_names(r), ["zmq_msg_init_size"]);
    assert_eq!((r.total_blocks(), r.total_bytes()), (1, 1536));
    // An excerpt: one block listed of the 171,502 the summary counts, and the report says so.
    assert_eq!(r.unlisted(), Some((171_501, 263_427_072 - 1536)));
    assert_eq!(r.header.notices.len(), 1);
    assert!(
        r.header.notices[0].starts_with("lists 1 of the 171502 leaks")
            && r.header.notices[0].contains("an excerpt"),
        "{:?}",
        r.header.notices
    );
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.lines());
}

#[test]
fn seed_excerpt_names_zmq_msg_init_size_and_is_marked_an_excerpt() {
    assert_seed_excerpt(&read(SEED_EXCERPT));
}

#[test]
fn seed_excerpt_still_reads_with_the_documents_indentation() {
    // In the seed document the report is indented by four spaces (a code block).
    let bytes = std::fs::read(fixture(&format!("leaks/{SEED_EXCERPT}"))).unwrap();
    let mut indented = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line != b"\n" {
            indented.extend_from_slice(b"    ");
        }
        indented.extend_from_slice(line);
    }
    let reports = leaks::parse(Path::new("seed.txt"), &indented).unwrap();
    assert_seed_excerpt(&reports[0]);
}

#[test]
fn synthetic_crlf_report_reads_with_a_warning() {
    let name = "synthetic-macos10.10-v2.0-crlf.txt";
    let r = read(name);
    assert_complete(name, &r);
    assert_eq!(r.diagnostics.count_of(CRLF_LINES), 26);
    assert_eq!(r.diagnostics.kinds.len(), 1);
    assert_eq!(r.format, NativeFormat::Leaks2);
    assert_eq!(r.header.tool_version.as_deref(), Some("Xcode 7.0 (7A220)"));
    assert_eq!(site_names(&r), ["widget_create(int)", "main"]);
    let sites = native::sites(&r);
    assert_eq!(
        (sites[0].frame.file.as_deref(), sites[0].frame.line),
        (Some("widget.cpp"), Some(17))
    );
    assert_eq!(
        labels(&r, 0),
        [
            "start",
            "main",
            "widget_create(int)",
            "operator new(unsigned long)",
            "malloc",
            "malloc_zone_malloc"
        ]
    );
    let typed: Vec<Option<&str>> = r.leaks.iter().map(|l| l.type_name.as_deref()).collect();
    assert_eq!(typed, [Some("WidgetState"), None]);
}

#[test]
fn synthetic_non_utf8_zone_and_hex_dump() {
    let name = "synthetic-macos10.6-v2.0-non-utf8.txt";
    let r = read(name);
    assert_complete(name, &r);
    // The zone name is decoded (and warned about); the hex dump is skipped, never decoded.
    assert_eq!(r.diagnostics.count_of(NOT_UTF8), 1);
    assert_eq!(
        r.diagnostics.kinds[0].first,
        leakhunt::diag::Position::Line(16)
    );
    assert_eq!(r.leaks.len(), 1, "two leaks with one stack merge");
    assert_eq!((r.leaks[0].blocks, r.leaks[0].bytes), (2, 48));
    assert_eq!(site_names(&r), ["cafe_brew"]);
}

#[test]
fn synthetic_header_glued_to_the_targets_last_line() {
    let name = "synthetic-macos14.6-v3.0-list-glued-header.txt";
    let r = read(name);
    assert_complete(name, &r);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.lines());
    assert_eq!(r.header.process.as_deref(), Some("o"));
    assert_eq!(r.header.pid, Some(17741));
    assert_eq!(r.header.os_version.as_deref(), Some("macOS 14.6.1 (23G93)"));
    assert_eq!(
        (
            r.header.physical_footprint,
            r.header.physical_footprint_peak
        ),
        (Some(1344 * 1024), Some(1360 * 1024))
    );
    assert_eq!(site_names(&r), ["store_record"]);
    let frames: Vec<&Frame> = r.stack(0).collect();
    assert_eq!(frames[2].module_offset, Some(0x100a3f4f0 - 0x100a3c000));
}

#[test]
fn synthetic_stack_logging_chatter_in_the_middle_of_a_report() {
    let name = "synthetic-macos10.7-v2.0-msl-chatter-mid-report.txt";
    let r = read(name);
    assert_complete(name, &r);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.lines());
    let sites = native::sites(&r);
    assert_eq!(sites[0].key.function, "make_node");
    assert_eq!((sites[0].blocks, sites[0].bytes), (2, 64));
    assert_eq!(
        (sites[0].frame.file.as_deref(), sites[0].frame.line),
        (Some("m.c"), Some(8))
    );
    assert_eq!(sites[1].key.function, "main");
    assert_eq!((sites[1].blocks, sites[1].bytes), (1, 16));
}

#[test]
fn synthetic_report_cut_mid_block_keeps_what_was_read() {
    let r = read("synthetic-macos10.6-v2.0-cut-mid-block.txt");
    assert_eq!(r.diagnostics.count_of(NOT_UNDERSTOOD), 0);
    assert_eq!(r.diagnostics.count_of(CUT_OFF), 1);
    assert_eq!(
        r.diagnostics.lines(),
        [format!(
            "{}: 1 block cut off by the end of the report at line 20 (the report ends inside \
             this leak's block)",
            fixture("leaks/synthetic-macos10.6-v2.0-cut-mid-block.txt").display()
        )]
    );
    assert_eq!((r.total_blocks(), r.total_bytes()), (2, 3072));
    assert_eq!(r.unlisted(), Some((1, 1536)));
    assert!(
        r.header.notices[0].contains("cut off at line 20"),
        "{:?}",
        r.header.notices
    );
    assert!(site_names(&r).contains(&"zmq_msg_init_size".to_owned()));
}

#[test]
fn synthetic_10_13_thread_stacks_with_images_and_sources() {
    let name = "synthetic-macos10.13-v3.0-thread-stacks.txt";
    let r = read(name);
    assert_complete(name, &r);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.lines());
    assert_eq!(r.format, NativeFormat::Leaks3);
    assert_eq!(r.header.physical_footprint, Some((24.5 * 1048576.0) as u64));
    let sites = native::sites(&r);
    assert_eq!(sites.len(), 1);
    let site = &sites[0];
    assert_eq!(site.key.function, "zmq_msg_init_size");
    assert_eq!(site.key.library.as_deref(), Some("libzmq.5.dylib"));
    assert_eq!(
        (site.frame.file.as_deref(), site.frame.line),
        (Some("zmq.cpp"), Some(582))
    );
    assert_eq!(site.frame.module_offset, Some(0x10d1f0a10 - 0x10d1d0000));
    assert_eq!((site.blocks, site.bytes), (2, 2048));
    assert_eq!(
        site.stack.iter().map(Frame::label).collect::<Vec<_>>(),
        [
            "_pthread_body",
            "zmq::thread_t::thread_routine(void*)",
            "zmq_msg_init_size",
            "malloc",
            "malloc_zone_malloc"
        ]
    );
}

#[test]
fn synthetic_two_stack_blocks_sharing_a_label() {
    let name = "synthetic-macos14-v4.0-multiline-shared-label.txt";
    let r = read(name);
    assert_complete(name, &r);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.lines());
    assert_eq!(r.stacks.len(), 2);
    assert_eq!(labels(&r, 0)[2], "make_many");
    assert_eq!(labels(&r, 1)[2], "make_one");
    let roots: Vec<(Option<u32>, u64, u64)> = r
        .leaks
        .iter()
        .filter(|l| l.kind == LeakKind::RootLeak)
        .map(|l| (l.stack, l.blocks, l.bytes))
        .collect();
    assert_eq!(roots, [(Some(0), 2, 112), (Some(1), 1, 64)]);
    let interior: Vec<_> = r
        .leaks
        .iter()
        .filter(|l| l.kind == LeakKind::Interior)
        .collect();
    assert_eq!(interior.len(), 1);
    assert_eq!(
        interior[0].type_name.as_deref(),
        Some("malloc in widget_set_name")
    );
    assert_eq!(interior[0].stack, None);
    let sites = native::sites(&r);
    assert_eq!(sites[0].key.function, "widget_create");
    assert_eq!(sites[0].key.library.as_deref(), Some("libwidget.dylib"));
    assert_eq!((sites[0].blocks, sites[0].bytes), (3, 176));
}

#[test]
fn synthetic_root_cycle_with_cycle_back_to() {
    let name = "synthetic-macos15.5-v4.0-root-cycle.txt";
    let r = read(name);
    assert_complete(name, &r);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.lines());
    let kinds: Vec<(LeakKind, Option<&str>, u64, u64)> = r
        .leaks
        .iter()
        .map(|l| (l.kind, l.type_name.as_deref(), l.blocks, l.bytes))
        .collect();
    assert_eq!(
        kinds,
        [
            (LeakKind::RootCycle, Some("Graph.Node"), 2, 192),
            (LeakKind::Interior, Some("Swift._StringStorage"), 1, 64),
            (
                LeakKind::Interior,
                Some("Swift._ContiguousArrayStorage<(Graph.Node, [Swift.Int])>"),
                1,
                32
            ),
            (LeakKind::RootLeak, Some("Graph.Edge"), 1, 80),
            (LeakKind::Interior, None, 1, 32),
        ]
    );
    assert_eq!(r.leaks[0].first_address, Some(0x600001a04000));
}

#[test]
fn synthetic_cannot_examine_process_is_an_input_error_with_advice() {
    let path = fixture("leaks/synthetic-macos10.13-cannot-examine.txt");
    let message = detect_path(&path)
        .and_then(|kind| native::parse_file(&path, kind))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("line 1: leaks failed: leaks cannot examine process 55555"),
        "{message}"
    );
    assert!(
        message.contains("use `leaks --atExit -- PROGRAM`"),
        "{message}"
    );
    let bytes = std::fs::read(&path).unwrap();
    let failure = leaks::classify_failure(b"", &bytes, Some(2)).unwrap();
    assert_eq!(failure.kind, LeaksFailureKind::TargetGone);
}

#[test]
fn identical_stacks_do_not_grow_memory() {
    const LEAKS: u64 = 3000;
    let mut report = Vec::new();
    leaks_report_gen::write_report(&mut report, LEAKS, 3).unwrap();
    let reports = leaks::parse(Path::new("generated.txt"), &report).unwrap();
    let r = &reports[0];
    assert_complete("generated", r);
    assert_eq!(r.total_blocks(), LEAKS);
    // Three distinct stacks: the seed's nine frames plus one extra frame in two variants.
    assert_eq!(r.stacks.len(), 3);
    assert_eq!(r.frames.len(), 11);
    assert_eq!(r.leaks.len(), 3);
    assert_eq!(r.leaks[0].blocks, LEAKS / 3);
    assert_eq!(site_names(r)[0], "zmq_msg_init_size");
}

#[test]
fn truncated_samples_never_panic_and_keep_what_they_read() {
    for name in [
        "macos15.0-v3.0-list-msl-lite-callstack.txt",
        "macos13era-v4.0-quiet-atexit-msl-stack.txt",
        "synthetic-macos15.5-v4.0-root-cycle.txt",
        "synthetic-macos14-v4.0-multiline-shared-label.txt",
        SEED_EXCERPT,
    ] {
        let bytes = std::fs::read(fixture(&format!("leaks/{name}"))).unwrap();
        for cut in (0..bytes.len()).step_by(5) {
            if let Ok(reports) = leaks::parse(Path::new(name), &bytes[..cut]) {
                let r = &reports[0];
                if let Some(summary) = r.summary {
                    assert!(r.total_blocks() <= summary.leaks, "{name} cut at {cut}");
                }
            }
        }
    }
}
