use super::text::*;
use super::xml::*;
use super::*;
use crate::native::{growth, sites};

#[test]
fn loss_record_lines() {
    let r = parse_loss_record(b"6,800 (+5,440) (400 (+320) direct, 6,400 (+5,120) indirect) bytes in 25 (+20) blocks are definitely lost in loss record 10,871 of 10,944").unwrap();
    assert_eq!(
        (
            r.kind,
            r.bytes,
            r.direct_bytes,
            r.blocks,
            r.has_deltas,
            r.record,
            r.of
        ),
        (LeakKind::Definite, 6800, Some(400), 25, true, 10871, 10944)
    );
    assert_eq!(r.own_bytes(), 400);
    let r =
        parse_loss_record(b"8 bytes in 1 blocks are possibly lost in loss record 3 of 9").unwrap();
    assert_eq!(
        (r.kind, r.own_bytes(), r.blocks, r.has_deltas),
        (LeakKind::Possible, 8, 1, false)
    );
    let r = parse_loss_record(
        b"4,608 (+0) bytes in 2 (-1) blocks are still reachable in loss record 1 of 2",
    )
    .unwrap();
    assert_eq!(
        (r.kind, r.blocks, r.has_deltas),
        (LeakKind::Reachable, 2, true)
    );
    assert!(parse_loss_record(b"lots of bytes in loss record 1 of 2").is_none());
    assert!(
        parse_loss_record(
            b"99999999999999999999999 bytes in 1 blocks are definitely lost in loss record 1 of 1"
        )
        .is_none()
    );
}

const VGDB_SESSION: &[u8] = br#"==13045== 32 (+32) bytes in 1 (+1) blocks are definitely lost in loss record 4,053 of 10,944
==13045==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==13045==    by 0x4934483: ??? (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==13045== 
==13045== 1,360 (+1,360) (80 (+80) direct, 1,280 (+1,280) indirect) bytes in 5 (+5) blocks are definitely lost in loss record 10,717 of 10,944
==13045==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==13045==    by 0x9E3D14E: widget_create (widget.c:23)
==13045==    by 0x9E47B0C: ffi_call (in /usr/lib/x86_64-linux-gnu/libffi.so.8.1.2)
==13045== 
==13045== LEAK SUMMARY:
==13045==    definitely lost: 112 (+112) bytes in 6 (+6) blocks
==13045==    indirectly lost: 1,280 (+1,280) bytes in 5 (+5) blocks
==13045==      possibly lost: 4,608 (+4,608) bytes in 2 (+2) blocks
==13045==    still reachable: 4,212,209 (+4,212,209) bytes in 24,698 (+24,698) blocks
==13045==         suppressed: 0 (+0) bytes in 0 (+0) blocks
==13045== Reachable blocks (those to which a pointer was found) are not shown.
==13045== 
sending command leak_check full definite increased to pid 13045
==13045== 6,800 (+5,440) (400 (+320) direct, 6,400 (+5,120) indirect) bytes in 25 (+20) blocks are definitely lost in loss record 10,871 of 10,944
==13045==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==13045==    by 0x9E3D14E: widget_create (widget.c:23)
==13045==    by 0x9E47B0C: ffi_call (in /usr/lib/x86_64-linux-gnu/libffi.so.8.1.2)
==13045== 
==13045== LEAK SUMMARY:
==13045==    definitely lost: 432 (+320) bytes in 26 (+20) blocks
==13045==    indirectly lost: 6,400 (+5,120) bytes in 25 (+20) blocks
==13045==      possibly lost: 4,608 (+0) bytes in 2 (+0) blocks
==13045==    still reachable: 4,212,209 (+0) bytes in 24,698 (+0) blocks
==13045==         suppressed: 0 (+0) bytes in 0 (+0) blocks
"#;

#[test]
fn vgdb_session_is_one_report_per_search() {
    let reports = parse_text(Path::new("vgdb.txt"), VGDB_SESSION).unwrap();
    assert_eq!(reports.len(), 2);
    let (a, b) = (&reports[0], &reports[1]);
    assert_eq!((a.sequence, b.sequence), (0, 1));
    assert_eq!(a.header.pid, Some(13045));
    // The search lists no indirect records: each definite record counts what it keeps alive,
    // its indirect blocks from the LEAK SUMMARY's.
    assert_eq!((a.total_blocks(), a.total_bytes()), (6 + 5, 112 + 1280));
    assert_eq!(
        a.summary.map(|s| (s.leaks, s.bytes)),
        Some((6 + 5 + 2, 112 + 1280 + 4608))
    );
    assert!(lists_changes_only(b));
    assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
    let site = &sites(a)[0];
    assert_eq!(site.key.function, "widget_create");
    assert_eq!((site.blocks, site.bytes), (5 + 5, 1360));
    assert_eq!(site.frame.file.as_deref(), Some("widget.c"));
    assert_eq!(site.frame.line, Some(23));
    let labels: Vec<String> = site.stack.iter().map(Frame::label).collect();
    assert_eq!(labels, ["ffi_call", "widget_create", "malloc"]);
    let noise = &sites(a)[1];
    assert_eq!(noise.key.function, "libruby-3.1.so.3.1.2@0x4934483");
    let g = growth(&sites(a), &sites(b));
    assert_eq!(g[0].key.function, "widget_create");
    assert_eq!((g[0].delta_blocks(), g[0].delta_bytes()), (20 + 20, 5440));
}

/// A search that also lists the indirectly lost blocks counts them with the record that keeps
/// them, as one that does not list them would: nothing twice, nothing at a second site.
#[test]
fn indirect_records_listed_are_not_counted_twice() {
    let log = b"==1== 1,360 (80 direct, 1,280 indirect) bytes in 5 blocks are definitely lost in loss record 2 of 3\n\
        ==1==    at 0x48417B4: malloc (vg_replace_malloc.c:381)\n\
        ==1==    by 0x9E3D14E: widget_create (widget.c:23)\n\
        ==1== \n\
        ==1== 1,280 bytes in 5 blocks are indirectly lost in loss record 3 of 3\n\
        ==1==    at 0x48417B4: malloc (vg_replace_malloc.c:381)\n\
        ==1==    by 0x9E3D160: widget_create (widget.c:25)\n\
        ==1== \n";
    let reports = parse_text(Path::new("v.txt"), log).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].total_bytes(), 80 + 1280);
    assert_eq!(reports[0].total_blocks(), 5 + 5);
    let sites = sites(&reports[0]);
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].frame.line, Some(23));
    assert_eq!((sites[0].blocks, sites[0].bytes), (10, 1360));
}

/// The search's indirect blocks are shared in proportion to each record's indirect bytes: a
/// record holding 4 KiB payloads gets the blocks of 4 KiB, one holding 16-byte ones the rest.
#[test]
fn indirect_blocks_follow_indirect_bytes() {
    let log = b"==1== 16 (8 direct, 8 indirect) bytes in 1 blocks are definitely lost in loss record 1 of 2\n\
        ==1==    at 0x48417B4: malloc (vg_replace_malloc.c:381)\n\
        ==1==    by 0x9E3D100: label_create (label.c:3)\n\
        ==1== \n\
        ==1== 41,120 (160 direct, 40,960 indirect) bytes in 10 blocks are definitely lost in loss record 2 of 2\n\
        ==1==    at 0x48417B4: malloc (vg_replace_malloc.c:381)\n\
        ==1==    by 0x9E3D14E: widget_create (widget.c:23)\n\
        ==1== \n\
        ==1== LEAK SUMMARY:\n\
        ==1==    definitely lost: 168 bytes in 11 blocks\n\
        ==1==    indirectly lost: 40,968 bytes in 11 blocks\n\
";
    let reports = parse_text(Path::new("v.txt"), log).unwrap();
    let sites = sites(&reports[0]);
    let blocks = |f: &str| {
        let s = sites.iter().find(|s| s.key.function == f);
        let s = s.unwrap_or_else(|| panic!("{f}: {sites:?}"));
        (s.blocks, s.bytes)
    };
    assert_eq!(blocks("widget_create"), (10 + 11, 41_120));
    // 8 bytes of 40,968 round to no block; any indirect byte is at least one.
    assert_eq!(blocks("label_create"), (1 + 1, 16));
    // A search that says nothing of its indirect blocks adds none.
    assert_eq!(indirect_blocks(4096, (0, 0)), 0);
    assert_eq!(indirect_blocks(u64::MAX, (u64::MAX, u64::MAX)), u64::MAX);
}

/// LEAK SUMMARY lines whose sizes add past `u64::MAX`: the summary saturates.
#[test]
fn summary_sizes_past_u64_saturate() {
    let log = b"==1== LEAK SUMMARY:\n\
        ==1==    definitely lost: 18446744073709551615 bytes in 18446744073709551615 blocks\n\
        ==1==    indirectly lost: 1 bytes in 1 blocks\n";
    let reports = parse_text(Path::new("v.txt"), log).unwrap();
    let summary = reports.last().unwrap().summary.unwrap();
    assert_eq!((summary.leaks, summary.bytes), (u64::MAX, u64::MAX));
}

#[test]
fn text_cut_short_and_garbage() {
    let cut = &VGDB_SESSION[..memmem::find(VGDB_SESSION, b"==13045== LEAK SUMMARY").unwrap()];
    let mut bad = cut.to_vec();
    bad.extend_from_slice(
        b"==13045== 12 bytes in x blocks are definitely lost in loss record 1 of 1\r\n",
    );
    let reports = parse_text(Path::new("v.txt"), &bad).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].total_blocks(), 6);
    let lines = reports[0].diagnostics.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0]
            .starts_with("v.txt: 1 line not understood at line 10 (a loss record without sizes"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("v.txt: 1 leak check without a LEAK SUMMARY at line 10"),
        "{lines:?}"
    );
    let err = parse_text(Path::new("x.txt"), b"hello\nworld\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.txt: not valgrind output: no loss record or LEAK SUMMARY in it"
    );
}

const XML: &[u8] = br#"<?xml version="1.0"?>

<valgrindoutput>

<protocolversion>4</protocolversion>
<protocoltool>memcheck</protocoltool>

<preamble>
  <line>Memcheck, a memory error detector</line>
  <line>Using Valgrind-3.19.0 and LibVEX; rerun with -h for copyright info</line>
  <line>Command: ruby widget-leak.rb 5</line>
</preamble>

<pid>12831</pid>
<argv>
  <exe>/usr/bin/ruby</exe>
  <arg>widget-leak.rb</arg>
</argv>

<error>
  <unique>0x1</unique>
  <tid>1</tid>
  <kind>UninitCondition</kind>
  <what>Conditional jump or move depends on uninitialised value(s)</what>
  <stack>
<frame>
  <ip>0x492F33A</ip>
  <obj>/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2</obj>
</frame>
  </stack>
</error>

<error>
  <unique>0x16c47</unique>
  <tid>1</tid>
  <kind>Leak_DefinitelyLost</kind>
  <xwhat>
<text>1,360 (80 direct, 1,280 indirect) bytes in 5 blocks are definitely lost in loss record 10,924 of 11,282</text>
<leakedbytes>1360</leakedbytes>
<leakedblocks>5</leakedblocks>
  </xwhat>
  <stack>
<frame>
  <ip>0x48417B4</ip>
  <obj>/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so</obj>
  <fn>malloc</fn>
</frame>
<frame>
  <ip>0x9E3D14E</ip>
  <obj>/tmp/w/libwidget.so</obj>
  <fn>widget_create</fn>
  <dir>/src/w&amp;x</dir>
  <file>widget.c</file>
  <line>23</line>
</frame>
<frame>
  <ip>0x9E47B0C</ip>
  <obj>/usr/lib/x86_64-linux-gnu/libffi.so.8.1.2</obj>
  <fn>std::vector&lt;int&gt;::push_back(int const&amp;)</fn>
</frame>
  </stack>
</error>

<error>
  <unique>0x16c48</unique>
  <tid>1</tid>
  <kind>Leak_PossiblyLost</kind>
  <xwhat>
<text>4,608 bytes in 2 blocks are possibly lost in loss record 11,000 of 11,282</text>
<leakedbytes>4608</leakedbytes>
<leakedblocks>2</leakedblocks>
  </xwhat>
  <stack>
<frame>
  <ip>0x48417B4</ip>
  <fn>calloc</fn>
</frame>
<frame>
  <ip>0x9E3D100</ip>
</frame>
  </stack>
</error>

</valgrindoutput>
"#;

#[test]
fn xml_leak_errors_become_one_report() {
    let reports = parse_xml(Path::new("vg.xml"), XML).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.header.pid, Some(12831));
    assert_eq!(r.header.tool_version.as_deref(), Some("3.19.0"));
    assert_eq!(r.header.process.as_deref(), Some("ruby"));
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    assert_eq!((r.total_blocks(), r.total_bytes()), (7, 1360 + 4608));
    assert_eq!(
        r.header.notices,
        ["1 memcheck errors that are not leaks (uninitialised values, invalid accesses) left out"]
    );
    let all = sites(r);
    assert_eq!(all[0].key.function, "0x9e3d100");
    assert_eq!(
        all[0].kinds.iter().copied().collect::<Vec<_>>(),
        [LeakKind::Possible]
    );
    let widget = &all[1];
    assert_eq!(widget.key.function, "widget_create");
    assert_eq!(widget.key.library.as_deref(), Some("libwidget.so"));
    assert_eq!(widget.frame.file.as_deref(), Some("/src/w&x/widget.c"));
    assert_eq!(widget.frame.line, Some(23));
    assert_eq!(
        widget.stack[0].function.as_deref(),
        Some("std::vector<int>::push_back(int const&)")
    );
}

#[test]
fn xml_that_ends_early_keeps_finished_errors() {
    let cut_at = memmem::find(XML, b"<kind>Leak_PossiblyLost").unwrap();
    let reports = parse_xml(Path::new("vg.xml"), &XML[..cut_at]).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].total_blocks(), 5);
    let lines = reports[0].diagnostics.lines();
    assert_eq!(
        lines,
        [
            "vg.xml: 1 XML file ending early at line 67 (the file ends inside the <error> begun at line 64: it was cut short or is still being written; the errors before it are kept)"
        ]
    );
    // Cut inside a tag, in a frame.
    let cut_at = memmem::find(XML, b"<fn>widget_cr").unwrap() + 6;
    let reports = parse_xml(Path::new("vg.xml"), &XML[..cut_at]).unwrap();
    assert_eq!(reports[0].total_blocks(), 0);
    assert_eq!(reports[0].diagnostics.count_of("XML files ending early"), 1);
    let err = parse_xml(Path::new("x.xml"), b"<html><body>hi</body></html>").unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.xml: not valgrind XML: no <valgrindoutput> element"
    );
}

#[test]
fn xml_searches_split_on_record_numbering() {
    let second = memmem::find(XML, b"<error>\n  <unique>0x16c47").unwrap();
    let end = memmem::find(XML, b"</valgrindoutput>").unwrap();
    let mut doubled = XML[..end].to_vec();
    doubled.extend_from_slice(&XML[second..end]);
    doubled.extend_from_slice(b"</valgrindoutput>\n");
    let reports = parse_xml(Path::new("vg.xml"), &doubled).unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1].sequence, 1);
    assert_eq!(reports[1].total_blocks(), 7);
}

#[test]
fn entities() {
    assert_eq!(
        decode_entities(b"a &lt;b&gt; &amp;&amp; &#65;&#x42; &bogus; &"),
        "a <b> && AB &bogus; &"
    );
}

/// memcheck's XML at exit with `--show-leak-kinds=definite,indirect,possible` (how `leakhunt
/// run` launches it): the indirect record's blocks join the record that keeps them, its bytes
/// are not counted twice and its own stack is no second site.
#[test]
fn xml_indirect_records_give_the_blocks() {
    let at = memmem::find(XML, b"<error>\n  <unique>0x16c48").unwrap();
    let indirect = b"<error>\n  <unique>0x16c50</unique>\n  <tid>1</tid>\n  <kind>Leak_IndirectlyLost</kind>\n  <xwhat>\n<text>1,280 bytes in 5 blocks are indirectly lost in loss record 10,950 of 11,282</text>\n<leakedbytes>1280</leakedbytes>\n<leakedblocks>5</leakedblocks>\n  </xwhat>\n  <stack>\n<frame>\n  <ip>0x48417B4</ip>\n  <fn>malloc</fn>\n</frame>\n<frame>\n  <ip>0x9E3D160</ip>\n  <obj>/tmp/w/libwidget.so</obj>\n  <fn>widget_payload</fn>\n</frame>\n  </stack>\n</error>\n\n";
    let mut xml = XML[..at].to_vec();
    xml.extend_from_slice(indirect);
    xml.extend_from_slice(&XML[at..]);
    let reports = parse_xml(Path::new("vg.xml"), &xml).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!((r.total_blocks(), r.total_bytes()), (7 + 5, 1360 + 4608));
    let all = sites(r);
    assert_eq!(all.len(), 2, "{all:?}");
    let widget = all
        .iter()
        .find(|s| s.key.function == "widget_create")
        .unwrap();
    assert_eq!((widget.blocks, widget.bytes), (5 + 5, 1360));
}

/// A listed indirect record on the record's own call path (same callers, another malloc in the
/// same function) gives that record its exact blocks, whatever the other indirect blocks weigh.
#[test]
fn indirect_records_on_the_same_path_give_their_blocks() {
    let log = b"==1== 41,120 (160 direct, 40,960 indirect) bytes in 10 blocks are definitely lost in loss record 1 of 3\n\
        ==1==    at 0x48417B4: malloc (vg_replace_malloc.c:381)\n\
        ==1==    by 0x9E3D14E: widget_create (widget.c:30)\n\
        ==1==    by 0x9E47B0C: ffi_call (in /usr/lib/x86_64-linux-gnu/libffi.so.8.1.2)\n\
        ==1== \n\
        ==1== 40,960 bytes in 10 blocks are indirectly lost in loss record 2 of 3\n\
        ==1==    at 0x48417B4: malloc (vg_replace_malloc.c:381)\n\
        ==1==    by 0x9E3D160: widget_create (widget.c:34)\n\
        ==1==    by 0x9E47B0C: ffi_call (in /usr/lib/x86_64-linux-gnu/libffi.so.8.1.2)\n\
        ==1== \n\
        ==1== 4,000 bytes in 500 blocks are indirectly lost in loss record 3 of 3\n\
        ==1==    at 0x48417B4: malloc (vg_replace_malloc.c:381)\n\
        ==1==    by 0x4934483: ??? (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)\n\
        ==1== \n";
    let reports = parse_text(Path::new("v.txt"), log).unwrap();
    let sites = sites(&reports[0]);
    assert_eq!(sites.len(), 1, "{sites:?}");
    assert_eq!((sites[0].blocks, sites[0].bytes), (10 + 10, 41_120));
}
