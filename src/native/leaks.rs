//! macOS `leaks(1)` reports of every era into [`NativeReport`]s: 1.0 (no header), 2.0 (version
//! line first on 10.6, after the header from 10.7), 3.0 and `--list`, 4.0 trees and
//! `4.0, multi-line stacks`. The grammar is `fixtures/leaks/FORMAT.md`; section numbers below
//! refer to it.
//!
//! Stage: parser (bytes in, records out). Lines are split with memchr and read one at a time;
//! most lines are recognised by their own text, a few by where they stand (a numbered frame
//! after `STACK OF`, an image after `Binary Images:`, a hex dump inside a `Leak:` block, a
//! re-wrapped call stack after a `Call stack:` line). Whatever else shares the stream — the
//! target's own output under `-atExit`, MallocStackLogging chatter, a header glued to the end
//! of the target's last line — is skipped; lines inside a report that fit nothing are counted
//! as "lines not understood". Hex dumps, the bulk of a large 2.0 report, are recognised by
//! their first word and never decoded, and identical `Call stack:` texts are read once.

mod failure;
mod header;
mod images;
mod list;
mod report;
mod tree;

pub use failure::{LeaksFailure, LeaksFailureKind, classify_failure, stopped_for_input, timed_out};
pub use images::{BinaryImage, binary_images};

use super::NativeReport;
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use header::{SummaryLine, VersionLine};
use list::LeakLine;
use memchr::memmem;
use report::{Report, Section};
use std::path::Path;
use tree::{Marker, Node, StackHeader};

/// Lines inside a report that fit no part of the grammar.
pub const NOT_UNDERSTOOD: &str = "lines not understood";
/// Lines ending in `\r\n` (the `\r` is dropped and the line read as usual).
pub const CRLF_LINES: &str = "lines ending in CR LF";
/// Lines whose decoded fields are not UTF-8 (decoded lossily, with U+FFFD).
pub const NOT_UTF8: &str = "lines with non-UTF-8 bytes";
/// Blocks the report ends inside of: a leak, a tree or a `STACK OF` block cut off.
pub const CUT_OFF: &str = "blocks cut off by the end of the report";
/// Trees whose node counts disagree with the nodes listed under them.
pub const COUNT_MISMATCH: &str = "trees whose counts disagree";
/// A summary line that counts fewer leaks or other bytes than the report lists.
pub const SUMMARY_MISMATCH: &str = "summaries at odds with the listed leaks";
/// `leaks Report Version` lines with a version this reader does not know.
pub const UNKNOWN_VERSION: &str = "unknown report versions";

/// Parses one `leaks` output into its report(s): normally one; several when the output of
/// several runs was saved into one file. Target output and stack-logging chatter around the
/// report are skipped. A file holding only leaks' failure messages ("cannot examine process")
/// is an [`Error::Input`] with that message and what to do.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let mut parser = Parser::new(path);
    let mut start = 0;
    let mut line_no = 0u64;
    for end in memchr::memchr_iter(b'\n', bytes) {
        line_no += 1;
        parser.line(&bytes[start..end], line_no);
        start = end + 1;
    }
    let ends_mid_line = start < bytes.len();
    if ends_mid_line {
        line_no += 1;
        parser.line(&bytes[start..], line_no);
    }
    parser.finish(line_no, ends_mid_line)
}

/// What one line is, told by its own text.
#[derive(Debug)]
enum LineKind<'a> {
    HeaderKey(&'a [u8], &'a [u8]),
    HeaderEnd,
    Version(VersionLine),
    Summary(SummaryLine),
    NotDebuggable(&'a [u8]),
    NotDebuggableContinued(&'a [u8]),
    Excluded(u64),
    Leak(LeakLine<'a>),
    CallStack(&'a [u8]),
    HexDump,
    StackHeader(StackHeader<'a>),
    Separator,
    Total(u64),
    Node(Node<'a>),
    BinaryImages,
    StackLogging(&'a [u8], Option<u32>),
    Failure(LeaksFailure),
}

impl LineKind<'_> {
    /// Lines that can be the first line of a report.
    fn opens_report(&self) -> bool {
        match self {
            LineKind::HeaderKey(key, _) => header::opens_header(key),
            LineKind::Node(node) => matches!(node.marker, Marker::RootLeak | Marker::RootCycle),
            LineKind::Version(_)
            | LineKind::Summary(_)
            | LineKind::NotDebuggable(_)
            | LineKind::Leak(_)
            | LineKind::StackHeader(_)
            | LineKind::Total(_) => true,
            _ => false,
        }
    }

    /// Lines that begin the next report once the current one has its summary.
    fn starts_next_report(&self) -> bool {
        match self {
            LineKind::HeaderKey(key, _) => header::opens_header(key),
            LineKind::Version(_) | LineKind::Summary(_) | LineKind::NotDebuggable(_) => true,
            _ => false,
        }
    }
}

fn classify<'a>(line: &'a [u8], t: &'a [u8], in_header: bool) -> Option<LineKind<'a>> {
    let first = *t.first()?;
    if first == b'0' && list::is_hex_dump(t) {
        return Some(LineKind::HexDump);
    }
    if first.is_ascii_digit() {
        if let Some(count) = tree::total_line(t) {
            return Some(LineKind::Total(count));
        }
        if let Some(count) = header::excluded_line(t) {
            return Some(LineKind::Excluded(count));
        }
        if let Some(node) = tree::node_line(line) {
            return Some(LineKind::Node(node));
        }
    }
    let by_prefix = match first {
        b'L' => list::leak_line(t).map(LineKind::Leak),
        b'C' => list::call_stack_frames(t).map(LineKind::CallStack),
        b'P' => header::summary_line(t)
            .map(LineKind::Summary)
            .or_else(|| header::not_debuggable(t).map(|_| LineKind::NotDebuggable(t))),
        b'l' => header::version_line(t).map(LineKind::Version).or_else(|| {
            let rest = failure::strip_leaks_prefix(t)?;
            if header::not_debuggable(rest).is_some() {
                return Some(LineKind::NotDebuggable(rest));
            }
            Some(LineKind::Failure(
                failure::failure_line(rest).unwrap_or_else(|| failure::other(rest)),
            ))
        }),
        b'S' => tree::stack_header(t).map(LineKind::StackHeader),
        b'=' if t.len() >= 2 && t.iter().all(|&b| b == b'=') => Some(LineKind::Separator),
        b'-' if t.len() >= 2 && t.iter().all(|&b| b == b'-') => Some(LineKind::HeaderEnd),
        b'B' if t.trim_ascii_end() == b"Binary Images:" => Some(LineKind::BinaryImages),
        b'.' if list::is_dump_ellipsis(t.trim_ascii_end()) => Some(LineKind::HexDump),
        b'D' if header::continues_not_debuggable(t) => Some(LineKind::NotDebuggableContinued(t)),
        _ => None,
    };
    if by_prefix.is_some() {
        return by_prefix;
    }
    if find(t, b"CYCLE BACK TO ").is_some()
        && let Some(node) = tree::node_line(line)
    {
        return Some(LineKind::Node(node));
    }
    if let Some((program, pid)) = header::stack_logging_message(t) {
        return Some(LineKind::StackLogging(program, pid));
    }
    if let Some((key, value)) = header::key_value(t)
        && (in_header || header::opens_header(key))
    {
        return Some(LineKind::HeaderKey(key, value));
    }
    failure::failure_line(t).map(LineKind::Failure)
}

/// Where a report line glued to the end of the target's output starts (§3.1), if anywhere
/// but at the start.
fn glued_report_start(line: &[u8]) -> Option<usize> {
    const ANCHORS: [&[u8]; 5] = [
        b"Process:",
        b"leaks Report Version:",
        b"Process ",
        b"Leak: 0x",
        b"STACK OF ",
    ];
    ANCHORS
        .iter()
        .filter_map(|anchor| find(line, anchor))
        .filter(|&at| at > 0)
        .min()
}

struct Parser<'a> {
    path: &'a Path,
    reports: Vec<NativeReport>,
    current: Option<Report<'a>>,
    /// Problems met before the first report line, handed to the report that follows.
    early: Diagnostics,
    /// leaks' own failure messages, with their line.
    failures: Vec<(u64, LeaksFailure)>,
    /// Those printed before the next report starts, as notices for it.
    early_notices: Vec<String>,
    /// Programs named by stack-logging lines (`main.exe(14025) MallocStackLogging: …`), by pid.
    programs: Vec<(u32, &'a [u8])>,
    /// Lines of other programs' output outside any report.
    other_lines: u64,
}

impl<'a> Parser<'a> {
    fn new(path: &'a Path) -> Self {
        Parser {
            path,
            reports: Vec::new(),
            current: None,
            early: Diagnostics::new(path),
            failures: Vec::new(),
            early_notices: Vec::new(),
            programs: Vec::new(),
            other_lines: 0,
        }
    }

    fn diagnostics(&mut self) -> &mut Diagnostics {
        match self.current.as_mut() {
            Some(report) => report.builder.diagnostics(),
            None => &mut self.early,
        }
    }

    fn line(&mut self, raw: &'a [u8], no: u64) {
        let line = match raw.strip_suffix(b"\r") {
            Some(stripped) => {
                self.diagnostics()
                    .report(CRLF_LINES, Position::Line(no), String::new);
                stripped
            }
            None => raw,
        };
        if self.understand(line, no, true) {
            return;
        }
        match self.current.as_mut() {
            Some(report) => {
                report
                    .builder
                    .diagnostics()
                    .report(NOT_UNDERSTOOD, Position::Line(no), || {
                        format!("`{}`", String::from_utf8_lossy(&line[..line.len().min(80)]))
                    })
            }
            None => self.other_lines += 1,
        }
    }

    fn understand(&mut self, line: &'a [u8], no: u64, allow_glue: bool) -> bool {
        let t = line.trim_ascii_start();
        let in_header = match self.current.as_mut() {
            Some(report) => {
                if report.expects_continuation(no)
                    && !t.is_empty()
                    && matches!(classify(line, t, false), None | Some(LineKind::HexDump))
                    && report.continuation(t, no)
                {
                    return true;
                }
                if report.fast_path(t, no) {
                    return true;
                }
                report.section == Section::Header
            }
            None if t.is_empty() => return true,
            None => false,
        };
        let Some(kind) = classify(line, t, in_header) else {
            if allow_glue
                && let Some(at) = glued_report_start(line)
                && self.understand(&line[at..], no, false)
            {
                self.other_lines += 1;
                return true;
            }
            return false;
        };
        self.apply(kind, no)
    }

    fn apply(&mut self, kind: LineKind<'a>, no: u64) -> bool {
        match kind {
            LineKind::StackLogging(program, pid) => {
                if let Some(pid) = pid
                    && !program.is_empty()
                {
                    self.programs.push((pid, program));
                }
                true
            }
            LineKind::Failure(failure) => {
                match self.current.as_mut() {
                    Some(report) => report.builder.header_mut().notices.push(failure.notice()),
                    None => self.early_notices.push(failure.notice()),
                }
                self.failures.push((no, failure));
                true
            }
            kind => {
                if kind.starts_next_report()
                    && self
                        .current
                        .as_ref()
                        .is_some_and(|r| r.leak_summary.is_some())
                {
                    self.finish_report(no.saturating_sub(1), false);
                }
                if self.current.is_none() {
                    if !kind.opens_report() {
                        return false;
                    }
                    let sequence = self.reports.len() as u32;
                    let mut report = Report::new(self.path, sequence, no);
                    report.builder.diagnostics().merge(std::mem::replace(
                        &mut self.early,
                        Diagnostics::new(self.path),
                    ));
                    // leaks' warnings printed before the report (ASan) belong to it.
                    let notices = &mut report.builder.header_mut().notices;
                    notices.append(&mut self.early_notices);
                    self.current = Some(report);
                }
                match self.current.as_mut() {
                    Some(report) => report.apply(kind, no),
                    None => false,
                }
            }
        }
    }

    fn finish_report(&mut self, last_line: u64, ends_mid_line: bool) {
        if let Some(report) = self.current.take() {
            let report = report.finish(last_line, ends_mid_line, &self.programs);
            self.reports.push(report);
        }
    }

    fn finish(mut self, last_line: u64, ends_mid_line: bool) -> Result<Vec<NativeReport>> {
        self.finish_report(last_line, ends_mid_line);
        let (usable, empty): (Vec<NativeReport>, Vec<NativeReport>) = self
            .reports
            .into_iter()
            .partition(|r| r.summary.is_some() || !r.leaks.is_empty());
        if !usable.is_empty() {
            return Ok(usable);
        }
        if let Some((line, failure)) = self.failures.first() {
            return Err(Error::input(
                self.path,
                Position::Line(*line),
                failure.to_string(),
            ));
        }
        let message = match empty.first() {
            Some(report) => format!(
                "the leaks report ends before its summary line ({} lines in all{})",
                last_line,
                report
                    .header
                    .process
                    .as_deref()
                    .map(|p| format!(", process {p}"))
                    .unwrap_or_default()
            ),
            None => format!(
                "no leaks report found ({} lines of other output)",
                self.other_lines
            ),
        };
        Err(Error::input(self.path, Position::Whole, message))
    }
}

// Byte helpers shared by the submodules.

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memmem::find(haystack, needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memmem::rfind(haystack, needle)
}

/// Leading decimal digits as a number (None on overflow or no digit), and the rest.
fn decimal_prefix(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut value = 0u64;
    for &b in &text[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &text[digits..]))
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    let (value, rest) = decimal_prefix(text)?;
    rest.is_empty().then_some(value)
}

/// A leading `0x<hex>` as a number (None on overflow), and the rest.
fn hex_prefix(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits_start = text
        .strip_prefix(b"0x")
        .or_else(|| text.strip_prefix(b"0X"))?;
    let digits = digits_start
        .iter()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let mut value = 0u64;
    for &b in &digits_start[..digits] {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        value = (value << 4) | u64::from(nibble);
    }
    Some((value, &digits_start[digits..]))
}

/// `file:line` (`main.c:62`, `<compiler-generated>:0`).
fn source_location(text: &[u8]) -> Option<(&[u8], u32)> {
    let colon = text.iter().rposition(|&b| b == b':')?;
    let line = u32::try_from(parse_decimal(&text[colon + 1..])?).ok()?;
    let file = &text[..colon];
    (!file.is_empty() && !file.ends_with(b":")).then_some((file, line))
}

/// Splits `symbol[  file:line]` (3.0, 4.0: two spaces) or `symbol file.ext:line` (2.0 on
/// 10.7: one space, a token that looks like a file name).
fn split_source(text: &[u8]) -> (&[u8], Option<(&[u8], u32)>) {
    let text = text.trim_ascii();
    if let Some(at) = rfind(text, b"  ")
        && let Some(source) = source_location(text[at + 2..].trim_ascii())
    {
        return (text[..at].trim_ascii_end(), Some(source));
    }
    if let Some(at) = rfind(text, b" ")
        && let Some(source) = source_location(&text[at + 1..])
        && (source.0.contains(&b'.') || source.0.starts_with(b"<"))
    {
        return (text[..at].trim_ascii_end(), Some(source));
    }
    (text, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::{NativeFormat, sites};

    fn parse_one(bytes: &[u8]) -> NativeReport {
        let mut reports = parse(Path::new("t.txt"), bytes).unwrap();
        assert_eq!(reports.len(), 1);
        reports.remove(0)
    }

    #[test]
    fn numbers_and_sources() {
        assert_eq!(decimal_prefix(b"12ab"), Some((12, &b"ab"[..])));
        assert_eq!(decimal_prefix(b"99999999999999999999"), None);
        assert_eq!(hex_prefix(b"0x1aF "), Some((0x1af, &b" "[..])));
        assert_eq!(hex_prefix(b"0x11112222333344445"), None);
        assert_eq!(source_location(b"main.c:62"), Some((&b"main.c"[..], 62)));
        assert_eq!(source_location(b"foo:bar:"), None);
        assert_eq!(
            split_source(b"main + 16  main.cpp:0"),
            (&b"main + 16"[..], Some((&b"main.cpp"[..], 0)))
        );
        assert_eq!(split_source(b"-[A b:c:]"), (&b"-[A b:c:]"[..], None));
    }

    #[test]
    fn quiet_stack_block_gives_site_and_order() {
        let r = parse_one(
            b"STACK OF 1 INSTANCE OF 'ROOT LEAK: <malloc in main>':
3   dyld      0x1aea9be50 start + 2544
2   main.exe  0x1001bf220 main + 16  main.cpp:0
1   libc++abi.dylib  0x1aed808b0 operator new(unsigned long) + 32
0   libsystem_malloc.dylib  0x1aec2ec20 _malloc_zone_malloc_instrumented_or_legacy + 128 
====
    1 (16 bytes) ROOT LEAK: <malloc in main 0x12e7040f0> [16]
",
        );
        assert_eq!(r.format, NativeFormat::Leaks4Stacks);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        let stack: Vec<String> = r.stack(0).map(|f| f.label()).collect();
        assert_eq!(
            stack,
            [
                "start",
                "main",
                "operator new(unsigned long)",
                "_malloc_zone_malloc_instrumented_or_legacy"
            ]
        );
        assert_eq!(sites(&r)[0].key.function, "main");
        assert_eq!(r.leaks[0].type_name.as_deref(), Some("malloc in main"));
    }

    #[test]
    fn frames_printed_innermost_first_are_reordered() {
        let r = parse_one(
            b"STACK OF 1 INSTANCE OF 'ROOT LEAK: <malloc in f>':\n\
              0   libsystem_malloc.dylib  0x10 _malloc + 1\n\
              1   app  0x20 f + 2\n\
              2   dyld  0x30 start + 3\n\
              ====\n    1 (16 bytes) ROOT LEAK: <malloc in f 0x1> [16]\n",
        );
        let stack: Vec<String> = r.stack(0).map(|f| f.label()).collect();
        assert_eq!(stack, ["start", "f", "_malloc"]);
    }

    /// Leak sizes adding past `u64::MAX`: the listed-bytes check's sum saturates.
    #[test]
    fn listed_sizes_past_u64_saturate() {
        let r = parse_one(
            b"leaks Report Version: 4.0
Process 7: 2 leaks for 48 total leaked bytes.

    2 (48 bytes) << TOTAL >>

      1 (18446744073709551615 bytes) ROOT LEAK: <A 0x10> [18446744073709551615]
      1 (16 bytes) ROOT LEAK: <A 0x20> [16]
",
        );
        assert_eq!(r.total_blocks(), 2);
        assert_eq!(r.total_bytes(), u64::MAX);
    }

    #[test]
    fn tree_cut_inside_a_root_is_reported() {
        let r = parse_one(
            b"leaks Report Version: 4.0
Process 7: 3 leaks for 48 total leaked bytes.

    3 (48 bytes) << TOTAL >>

      3 (48 bytes) ROOT LEAK: <A 0x10> [16]
         2 (32 bytes) next --> <A 0x20> [16]
",
        );
        assert_eq!(r.total_blocks(), 2);
        assert_eq!(r.diagnostics.count_of(CUT_OFF), 2, "{:?}", r.diagnostics);
        assert!(
            r.header.notices[0].contains("cut off at line"),
            "{:?}",
            r.header.notices
        );
    }

    #[test]
    fn no_report_at_all_is_an_input_error() {
        let e = parse(Path::new("x.txt"), b"hello\nworld\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.txt: no leaks report found (2 lines of other output)"
        );
        let e = parse(
            Path::new("x.txt"),
            b"leaks[9]: leaks cannot examine process 5 (with name like '5') because it no longer appears to be running.\n",
        )
        .unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("x.txt: line 1: leaks failed: leaks cannot examine process 5"),
            "{message}"
        );
        assert!(message.contains("--atExit"), "{message}");
    }

    #[test]
    fn two_runs_in_one_file_are_two_reports() {
        let run = b"leaks Report Version: 4.0\nProcess 7: 10 nodes malloced for 1 KB\n\
                    Process 7: 0 leaks for 0 total leaked bytes.\n";
        let mut both = run.to_vec();
        both.extend_from_slice(
            b"\nleaks Report Version: 4.0\nProcess 7: 12 nodes malloced for 1 KB\n",
        );
        both.extend_from_slice(b"Process 7: 1 leak for 16 total leaked bytes.\n\n");
        both.extend_from_slice(b"    1 (16 bytes) ROOT LEAK: 0x10 [16]\n");
        let reports = parse(Path::new("two.txt"), &both).unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!((reports[0].sequence, reports[1].sequence), (0, 1));
        assert_eq!(reports[0].summary.map(|s| s.nodes), Some(Some(10)));
        assert_eq!(reports[1].total_bytes(), 16);
        assert!(
            reports[1].diagnostics.is_empty(),
            "{:?}",
            reports[1].diagnostics
        );
    }

    #[test]
    fn excluded_leaks_are_not_an_excerpt() {
        let r = parse_one(
            b"Process 3: 3 leaks for 48 total leaked bytes.\n\
              Leak: 0x10  size=16  zone: DefaultMallocZone_0x1\n\
              2 leaks excluded (not printed)\n",
        );
        assert_eq!(r.unlisted(), Some((2, 32)));
        assert_eq!(r.header.notices, ["2 leaks excluded (not printed)"]);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    }

    #[test]
    fn asan_warning_beside_a_report_becomes_a_notice() {
        let r = parse_one(
            b"Can't examine target process's malloc zone asan_0x10e4c4000, so memory analysis will be incomplete or incorrect.\n\
              Process 4: 0 leaks for 0 total leaked bytes.\n",
        );
        assert_eq!(r.header.pid, Some(4));
        assert_eq!(r.header.notices.len(), 1);
        assert!(
            r.header.notices[0].contains("lsan backend"),
            "{:?}",
            r.header.notices
        );
    }

    #[test]
    fn unknown_lines_are_counted_with_the_first_position() {
        let r = parse_one(b"Process 3: 0 leaks for 0 total leaked bytes.\nstray one\nstray two\n");
        assert_eq!(
            r.diagnostics.lines(),
            ["t.txt: 2 lines not understood, first at line 2 (`stray one`)"]
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 6] = [
            b"Leak: 0xffffffffffffffffff  size=1\n",
            b"STACK OF 99999999999999999999999 INSTANCES OF 'x':\n====\n",
            b"Process 1: 1 leak for 1 total leaked bytes.\n    1 (1) ROOT LEAK: <\xff 0x1> [1]\n[",
            b"\xff\xfe\r\n\r\n\tCall stack: | | |\n",
            b"Process:  [\nPhysical footprint: 1e999999M\n----\n",
            b"Process 1: 2 leaks for 2 total leaked bytes.\nLeak: 0x1  size=1  zone: z_0x1\n\tCall stack: a |\n",
        ];
        for input in inputs {
            let _ = parse(Path::new("g"), input);
            for cut in 0..input.len() {
                let _ = parse(Path::new("g"), &input[..cut]);
            }
        }
    }
}
