//! LeakSanitizer text logs → [`NativeReport`]s, one per report found in the log.
//!
//! Stage: parsers. A log holds one report per `__lsan_do_recoverable_leak_check` that found
//! leaks, plus the exit-time check; each opens with `==PID==ERROR: LeakSanitizer: detected
//! memory leaks` and closes with `SUMMARY: LeakSanitizer: N byte(s) leaked in M allocation(s).`
//! In between, blocks of
//!
//! ```text
//! Direct leak of 80 byte(s) in 5 object(s) allocated from:
//!     #0 0x7fe579c13545 in __interceptor_malloc ../../../../src/libsanitizer/lsan/lsan_interceptors.cpp:75
//!     #1 0x7fe577f2014e in widget_create /src/widget.c:23
//!     #2 0x7fe577ffaf79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79)
//!     #3 0x7fe577ffab0c in ffi_call (/lib/x86_64-linux-gnu/libffi.so.8+0x6b0c)
//!     #4 0x7fb62c19414e  (<unknown module>)
//! ```
//!
//! list frames innermost first; stacks are stored outermost first. Lines of the program's own
//! output and sanitizer banners are tolerated; only lines that look like LSan lines gone wrong
//! are counted as not understood. A file's problems are carried by its first report.
//!
//! Speed: a frame line is looked up by its text (from the address to the end) before anything
//! is decoded, so a frame seen before — in this report or an earlier one of the file — costs
//! one hash of the line and no allocation; each distinct frame is decoded once per file.

use super::bytes::{excerpt, lines, lossy, parse_hex};
use super::{Frame, FrameId, LeakKind, NativeFormat, NativeReport, ReportBuilder, ReportSummary};
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use crate::fasthash::FastMap;
use memchr::memmem;
use std::path::Path;

/// What counts as "not understood" (shown as `N lines not understood, first at line L`).
const NOT_UNDERSTOOD: &str = "lines not understood";

/// Parses a LeakSanitizer log: one report per leak check found in it, oldest first.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let mut reader = LogReader::new(path);
    for (number, line) in lines(bytes) {
        reader.line(number, line);
    }
    reader.finish(bytes)
}

/// A leak block being read: its header and the frames seen so far (innermost first).
struct OpenBlock {
    kind: LeakKind,
    bytes: u64,
    objects: u64,
    frames: Vec<FrameId>,
}

/// One report being read.
struct OpenReport {
    builder: ReportBuilder,
    /// This report's id of each frame of the file's [`FrameCache`] (`UNSEEN` until used here).
    local_ids: Vec<FrameId>,
    block: Option<OpenBlock>,
    first_line: u64,
}

const UNSEEN: FrameId = FrameId::MAX;

/// Frames of the whole file, decoded once each, looked up by their text; a report interns
/// one into its own builder the first time it uses it.
#[derive(Default)]
struct FrameCache<'a> {
    by_text: FastMap<&'a [u8], u32>,
    frames: Vec<Frame>,
}

/// Lines that follow a marker and belong to it rather than to a leak block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Leaks,
    /// `Objects leaked above:` followed by `0xADDR (N bytes)` lines (report_objects=1).
    LeakedObjects,
    /// `Suppressions used:` followed by a table.
    Suppressions,
}

struct LogReader<'a> {
    path: &'a Path,
    reports: Vec<NativeReport>,
    open: Option<OpenReport>,
    frames: FrameCache<'a>,
    section: Section,
    diagnostics: Diagnostics,
    last_line: u64,
}

impl<'a> LogReader<'a> {
    fn new(path: &'a Path) -> Self {
        LogReader {
            path,
            reports: Vec::new(),
            open: None,
            frames: FrameCache::default(),
            section: Section::Leaks,
            diagnostics: Diagnostics::new(path),
            last_line: 0,
        }
    }

    fn line(&mut self, number: u64, line: &'a [u8]) {
        self.last_line = number;
        let text = line.trim_ascii_start();
        // Hot path first: a frame line inside a leak block.
        if text.first() == Some(&b'#') {
            self.frame_line(number, text);
            return;
        }
        if text.is_empty() {
            self.close_block();
            return;
        }
        if self.marker_line(number, text) {
            return;
        }
        match self.section {
            Section::LeakedObjects if text.starts_with(b"0x") => return,
            Section::Suppressions if !text.starts_with(b"=") => return,
            _ => {}
        }
        // The program's output may be glued in front of an LSan line.
        for marker in [
            &b"Direct leak of "[..],
            b"Indirect leak of ",
            b"SUMMARY: ",
            b"ERROR: LeakSanitizer",
        ] {
            if let Some(at) = memmem::find(text, marker)
                && at > 0
                && self.marker_line(number, &text[at..])
            {
                return;
            }
        }
        if looks_like_lsan(text) {
            self.not_understood(number, text, "looks like LeakSanitizer output");
        }
        // Anything else is the program's own output or a sanitizer banner: not ours.
    }

    /// Handles the lines that change state. Returns false when `text` is none of them.
    fn marker_line(&mut self, number: u64, text: &[u8]) -> bool {
        if let Some(rest) = strip_any(text, &[b"Direct leak of ", b"Indirect leak of "]) {
            let kind = if text.starts_with(b"Direct") {
                LeakKind::Direct
            } else {
                LeakKind::Indirect
            };
            match parse_leak_header(rest) {
                Some((bytes, objects)) => {
                    self.close_block();
                    self.section = Section::Leaks;
                    let report = self.open_report(number);
                    report.block = Some(OpenBlock {
                        kind,
                        bytes,
                        objects,
                        frames: Vec::new(),
                    });
                }
                None => {
                    self.close_block();
                    self.not_understood(number, text, "a leak header without its sizes");
                }
            }
            return true;
        }
        if let Some(at) = memmem::find(text, b"ERROR: LeakSanitizer:") {
            let message = &text[at + b"ERROR: LeakSanitizer:".len()..];
            if message.trim_ascii().starts_with(b"detected memory leaks") {
                if let Some(open) = &self.open
                    && (open.builder.leak_count() > 0 || open.block.is_some())
                {
                    let first = open.first_line;
                    self.diagnostics
                        .report("reports without a SUMMARY line", Position::Line(first), || {
                            "the next report starts before this one's SUMMARY: log cut or interleaved"
                                .to_owned()
                        });
                    self.close_report();
                }
                self.section = Section::Leaks;
                let pid = banner_pid(text);
                let report = self.open_report(number);
                let header = report.builder.header_mut();
                header.tool = Some("LeakSanitizer".to_owned());
                if pid.is_some() {
                    header.pid = pid;
                }
            } else {
                let notice = String::from_utf8_lossy(text.trim_ascii()).into_owned();
                self.notice(number, notice);
            }
            return true;
        }
        if let Some(rest) = text.strip_prefix(b"SUMMARY: ") {
            if memmem::find(rest, b"Sanitizer:").is_none() {
                return false;
            }
            match parse_summary(rest) {
                Some((bytes, allocations)) => {
                    self.close_block();
                    if let Some(open) = &mut self.open {
                        open.builder.set_summary(ReportSummary {
                            leaks: allocations,
                            bytes,
                            nodes: None,
                            malloced_kb: None,
                        });
                        self.close_report();
                    } else {
                        self.diagnostics.report(
                            "SUMMARY lines without a report",
                            Position::Line(number),
                            || "the log starts after the report's leaks".to_owned(),
                        );
                    }
                }
                None => self.not_understood(number, text, "a SUMMARY line without sizes"),
            }
            self.section = Section::Leaks;
            return true;
        }
        if text.starts_with(b"Too many leaks!") || is_top_leaks_note(text) {
            let notice = String::from_utf8_lossy(text).into_owned();
            self.notice(number, notice);
            return true;
        }
        if text.starts_with(b"Objects leaked above:") {
            self.close_block();
            self.section = Section::LeakedObjects;
            return true;
        }
        if text.starts_with(b"Suppressions used:") {
            self.close_block();
            self.section = Section::Suppressions;
            return true;
        }
        if text.starts_with(b"-----") || text.starts_with(b"=====") {
            self.close_block();
            return true;
        }
        if text.starts_with(b"HINT: ") && memmem::find(text, b"LeakSanitizer").is_some() {
            let notice = String::from_utf8_lossy(text).into_owned();
            self.notice(number, notice);
            return true;
        }
        false
    }

    fn frame_line(&mut self, number: u64, text: &'a [u8]) {
        let Some(frame_text) = frame_text(text) else {
            self.not_understood(number, text, "a frame line without `#N 0xADDRESS`");
            return;
        };
        let Some(report) = self.open.as_mut() else {
            self.not_understood(number, text, "a frame outside any leak block");
            return;
        };
        let Some(block) = report.block.as_mut() else {
            self.not_understood(number, text, "a frame outside any leak block");
            return;
        };
        let index = match self.frames.by_text.get(frame_text) {
            Some(&index) => index as usize,
            None => {
                if frame_text == b"<empty stack>" {
                    return;
                }
                let Some(frame) = parse_frame(frame_text) else {
                    self.not_understood(number, text, "a frame line without `#N 0xADDRESS`");
                    return;
                };
                let index = self.frames.frames.len();
                self.frames.frames.push(frame);
                self.frames.by_text.insert(frame_text, index as u32);
                index
            }
        };
        if report.local_ids.len() <= index {
            report.local_ids.resize(index + 1, UNSEEN);
        }
        let mut id = report.local_ids[index];
        if id == UNSEEN {
            id = report.builder.push_frame(self.frames.frames[index].clone());
            report.local_ids[index] = id;
        }
        block.frames.push(id);
    }

    fn open_report(&mut self, number: u64) -> &mut OpenReport {
        let sequence = self.reports.len() as u32;
        let path = self.path;
        self.open.get_or_insert_with(|| OpenReport {
            builder: ReportBuilder::new(path, NativeFormat::Lsan, sequence),
            local_ids: Vec::new(),
            block: None,
            first_line: number,
        })
    }

    fn close_block(&mut self) {
        let Some(report) = self.open.as_mut() else {
            return;
        };
        let Some(mut block) = report.block.take() else {
            return;
        };
        let stack = if block.frames.is_empty() {
            None
        } else {
            block.frames.reverse();
            Some(report.builder.intern_stack(block.frames))
        };
        report
            .builder
            .add_leak(stack, block.kind, None, block.objects, block.bytes, None);
    }

    fn close_report(&mut self) {
        self.close_block();
        if let Some(open) = self.open.take() {
            self.reports.push(open.builder.finish());
        }
    }

    fn notice(&mut self, number: u64, notice: String) {
        if let Some(open) = &mut self.open {
            let notices = &mut open.builder.header_mut().notices;
            if !notices.contains(&notice) {
                notices.push(notice);
            }
        } else {
            // A notice before its report's banner (log cut at the start): keep it with the
            // report that follows.
            let report = self.open_report(number);
            report.builder.header_mut().notices.push(notice);
        }
    }

    fn not_understood(&mut self, number: u64, text: &[u8], why: &str) {
        self.diagnostics
            .report(NOT_UNDERSTOOD, Position::Line(number), || {
                format!("{why}: `{}`", excerpt(text))
            });
    }

    fn finish(mut self, bytes: &[u8]) -> Result<Vec<NativeReport>> {
        if let Some(open) = &self.open {
            let cut = open.builder.leak_count() > 0 || open.block.is_some();
            if cut {
                let last = self.last_line;
                self.diagnostics.report(
                    "reports without a SUMMARY line",
                    Position::Line(last),
                    || {
                        "the log ends inside a report: cut short, or the process was killed"
                            .to_owned()
                    },
                );
                self.close_report();
            } else {
                // A banner with nothing after it: no report to keep.
                self.open = None;
            }
        }
        check_totals(&mut self.reports, &mut self.diagnostics);
        if self.reports.is_empty() {
            let mut message = "no LeakSanitizer report in it".to_owned();
            if let Some(first) = self.diagnostics.lines().first() {
                message = format!("{message} ({first})");
            } else if bytes.is_empty() {
                message = "empty file".to_owned();
            }
            return Err(Error::input(self.path, Position::Whole, message));
        }
        self.reports[0].diagnostics = self.diagnostics;
        Ok(self.reports)
    }
}

/// A report whose blocks do not add up to its SUMMARY line is worth a warning, unless LSan
/// said it listed only part of them.
fn check_totals(reports: &mut [NativeReport], diagnostics: &mut Diagnostics) {
    for report in reports.iter() {
        let Some(summary) = report.summary else {
            continue;
        };
        let partial = report
            .header
            .notices
            .iter()
            .any(|n| n.starts_with("The ") && n.contains("top leak"));
        let (blocks, bytes) = (report.total_blocks(), report.total_bytes());
        if !partial && (blocks != summary.leaks || bytes != summary.bytes) {
            let sequence = report.sequence;
            diagnostics.report(
                "reports whose leaks differ from the SUMMARY line",
                Position::Whole,
                || {
                    format!(
                        "report {} lists {blocks} allocations / {bytes} bytes, its SUMMARY says {} / {}",
                        sequence + 1,
                        summary.leaks,
                        summary.bytes
                    )
                },
            );
        }
    }
}

/// `#12 0x7f… rest` → the text from the address on; `None` when it is not a frame line.
fn frame_text(text: &[u8]) -> Option<&[u8]> {
    let rest = text.strip_prefix(b"#")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let rest = rest[digits..].trim_ascii_start();
    if rest.starts_with(b"0x") || rest == b"<empty stack>" {
        Some(rest.trim_ascii_end())
    } else {
        None
    }
}

/// Decodes `0xADDR[ in FUNCTION][ LOCATION]`, LOCATION being `FILE:LINE[:COL]`,
/// `(MODULE+0xOFFSET)`, `(MODULE:ARCH+0xOFFSET)` or `(<unknown module>)`.
fn parse_frame(text: &[u8]) -> Option<Frame> {
    let hex = text.strip_prefix(b"0x")?;
    let digits = hex.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let address = parse_hex(&hex[..digits])?;
    let mut rest = hex[digits..].trim_ascii();
    // Newer runtimes append the module's build id.
    if rest.ends_with(b")")
        && let Some(at) = memmem::rfind(rest, b" (BuildId: ")
    {
        rest = rest[..at].trim_ascii_end();
    }
    let mut frame = Frame {
        address: Some(address),
        ..Frame::default()
    };
    let mut function_part = rest;
    if let Some((before, location)) = split_module_location(rest) {
        function_part = before;
        if location != b"<unknown module>" {
            let (module, offset) = parse_module_offset(location)?;
            frame.module = Some(lossy(module));
            frame.module_offset = Some(offset);
        }
    } else if let Some((before, file, line)) = split_file_line(rest) {
        function_part = before;
        frame.file = Some(lossy(file));
        frame.line = line;
    }
    let function_part = function_part.trim_ascii();
    if let Some(function) = function_part.strip_prefix(b"in ") {
        let function = function.trim_ascii();
        if !function.is_empty() {
            frame.function = Some(lossy(function));
        }
    } else if !function_part.is_empty() {
        return None;
    }
    Some(frame)
}

/// Splits `… (LOCATION)` at the last ` (` whose group closes the line.
fn split_module_location(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let inner = text.strip_suffix(b")")?;
    let open = match memmem::rfind(inner, b" (") {
        Some(at) => at + 1,
        None if inner.first() == Some(&b'(') => 0,
        None => return None,
    };
    let location = &inner[open + 1..];
    if location == b"<unknown module>" || memmem::rfind(location, b"+0x").is_some() {
        Some((&text[..open], location))
    } else {
        None
    }
}

/// `/lib/x.so+0x6f79` or `a.out:x86_64+0x100000f44` → (module, offset).
fn parse_module_offset(location: &[u8]) -> Option<(&[u8], u64)> {
    let plus = memmem::rfind(location, b"+0x")?;
    let offset = parse_hex(&location[plus + 3..])?;
    let mut module = &location[..plus];
    // Mach-O modules carry their architecture: `a.out:x86_64`.
    if let Some(colon) = memchr::memrchr(b':', module) {
        let arch = &module[colon + 1..];
        if !arch.is_empty() && !arch.contains(&b'/') {
            module = &module[..colon];
        }
    }
    if module.is_empty() {
        return None;
    }
    Some((module, offset))
}

/// `… FILE:LINE[:COL]` (the last space-separated word) → (before, file, line).
fn split_file_line(text: &[u8]) -> Option<(&[u8], &[u8], Option<u32>)> {
    let start = memchr::memrchr(b' ', text).map_or(0, |i| i + 1);
    let word = &text[start..];
    let mut parts = word.rsplitn(3, |&b| b == b':');
    let last = parts.next()?;
    let middle = parts.next()?;
    let (file, line) = match parts.next() {
        Some(file) if is_number(middle) && is_number(last) => (file, middle),
        _ if is_number(last) => {
            let file_len = word.len() - last.len() - 1;
            (&word[..file_len], last)
        }
        _ => return None,
    };
    if file.is_empty() {
        return None;
    }
    let line = std::str::from_utf8(line).ok()?.parse().ok();
    Some((&text[..start], file, line))
}

/// `80 byte(s) in 5 object(s) allocated from:` → (80, 5).
fn parse_leak_header(rest: &[u8]) -> Option<(u64, u64)> {
    let (bytes, rest) = leading_number(rest)?;
    let rest = rest.strip_prefix(b" byte(s) in ")?;
    let (objects, rest) = leading_number(rest)?;
    rest.strip_prefix(b" object(s)")?;
    Some((bytes, objects))
}

/// `LeakSanitizer: 617207 byte(s) leaked in 12795 allocation(s).` → (bytes, allocations).
fn parse_summary(rest: &[u8]) -> Option<(u64, u64)> {
    let colon = memmem::find(rest, b": ")?;
    let (bytes, rest) = leading_number(&rest[colon + 2..])?;
    let rest = rest.strip_prefix(b" byte(s) leaked in ")?;
    let (allocations, rest) = leading_number(rest)?;
    rest.strip_prefix(b" allocation(s)")?;
    Some((bytes, allocations))
}

/// `The 5 top leak(s):` (LSAN_OPTIONS=max_leaks=5).
fn is_top_leaks_note(text: &[u8]) -> bool {
    text.starts_with(b"The ") && memmem::find(text, b" top leak(s):").is_some()
}

/// `==11821==ERROR: …` → 11821.
fn banner_pid(text: &[u8]) -> Option<u32> {
    let rest = text.strip_prefix(b"==")?;
    let end = memmem::find(rest, b"==")?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Lines that LSan would print but that did not parse.
fn looks_like_lsan(text: &[u8]) -> bool {
    memmem::find(text, b"leak of ").is_some() && memmem::find(text, b"byte(s)").is_some()
        || memmem::find(text, b"LeakSanitizer").is_some()
            && memmem::find(text, b"leaked in").is_some()
}

fn strip_any<'t>(text: &'t [u8], prefixes: &[&[u8]]) -> Option<&'t [u8]> {
    prefixes.iter().find_map(|p| text.strip_prefix(*p))
}

fn leading_number(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = std::str::from_utf8(&text[..digits]).ok()?.parse().ok()?;
    Some((value, &text[digits..]))
}

fn is_number(text: &[u8]) -> bool {
    !text.is_empty() && text.len() <= 9 && text.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::sites;

    const TWO_CHECKS: &[u8] = br#"widget-checks: starting

=================================================================
==11978==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 80 byte(s) in 5 object(s) allocated from:
    #0 0x7f06cfe13545 in __interceptor_malloc ../../../../src/libsanitizer/lsan/lsan_interceptors.cpp:75
    #1 0x7f06cefb014e in widget_create /src/widget.c:23
    #2 0x7f06cefa9f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79)
    #3 0x7f06cefa9b0c in ffi_call (/lib/x86_64-linux-gnu/libffi.so.8+0x6b0c)

Indirect leak of 1280 byte(s) in 5 object(s) allocated from:
    #0 0x7f06cfe13545 in __interceptor_malloc ../../../../src/libsanitizer/lsan/lsan_interceptors.cpp:75
    #1 0x7f06cefb0177 in widget_create /src/widget.c:27
    #2 0x7f06cefa9f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79)

SUMMARY: LeakSanitizer: 1360 byte(s) leaked in 10 allocation(s).
widget-checks: round 0: 5 widgets leaked, check returned 1

=================================================================
==11978==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 400 byte(s) in 25 object(s) allocated from:
    #0 0x7f06cfe13545 in __interceptor_malloc ../../../../src/libsanitizer/lsan/lsan_interceptors.cpp:75
    #1 0x7f06cefb014e in widget_create /src/widget.c:23
    #2 0x7f06cefa9f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79)
    #3 0x7f06cefa9b0c in ffi_call (/lib/x86_64-linux-gnu/libffi.so.8+0x6b0c)

SUMMARY: LeakSanitizer: 400 byte(s) leaked in 25 allocation(s).
"#;

    fn parse_ok(bytes: &[u8]) -> Vec<NativeReport> {
        parse(Path::new("lsan.log"), bytes).unwrap()
    }

    #[test]
    fn reads_reports_blocks_frames_and_summary() {
        let reports = parse_ok(TWO_CHECKS);
        assert_eq!(reports.len(), 2);
        let first = &reports[0];
        assert_eq!(first.sequence, 0);
        assert_eq!(reports[1].sequence, 1);
        assert_eq!(first.header.pid, Some(11978));
        assert_eq!(first.header.tool.as_deref(), Some("LeakSanitizer"));
        assert_eq!(first.summary.map(|s| (s.leaks, s.bytes)), Some((10, 1360)));
        assert_eq!((first.total_blocks(), first.total_bytes()), (10, 1360));
        assert!(first.diagnostics.is_empty(), "{:?}", first.diagnostics);
        // Outermost first: ffi_call, libffi+0x6f79, widget_create, malloc.
        let direct = first
            .leaks
            .iter()
            .find(|l| l.kind == LeakKind::Direct)
            .unwrap();
        let stack: Vec<String> = first
            .stack(direct.stack.unwrap())
            .map(Frame::label)
            .collect();
        assert_eq!(
            stack,
            [
                "ffi_call",
                "libffi.so.8+0x6f79",
                "widget_create",
                "__interceptor_malloc"
            ]
        );
        let site = &sites(first)[0];
        assert_eq!(site.key.function, "widget_create");
        assert_eq!((site.blocks, site.bytes), (10, 1360));
        assert_eq!(site.frame.file.as_deref(), Some("/src/widget.c"));
        assert_eq!(site.frame.line, Some(23));
        assert_eq!(
            (reports[1].total_blocks(), reports[1].total_bytes()),
            (25, 400)
        );
    }

    #[test]
    fn frame_forms() {
        let f =
            parse_frame(b"0x7fe577ffab0c in ffi_call (/lib/x86_64-linux-gnu/libffi.so.8+0x6b0c)")
                .unwrap();
        assert_eq!(f.function.as_deref(), Some("ffi_call"));
        assert_eq!(
            f.module.as_deref(),
            Some("/lib/x86_64-linux-gnu/libffi.so.8")
        );
        assert_eq!(
            (f.address, f.module_offset),
            (Some(0x7fe577ffab0c), Some(0x6b0c))
        );

        let f = parse_frame(b"0x7fb62c19414e  (<unknown module>)").unwrap();
        assert_eq!(
            (f.function, f.module, f.address),
            (None, None, Some(0x7fb62c19414e))
        );

        let f = parse_frame(b"0x4a in operator new(unsigned long) /src/new.cc:12:7").unwrap();
        assert_eq!(f.function.as_deref(), Some("operator new(unsigned long)"));
        assert_eq!((f.file.as_deref(), f.line), (Some("/src/new.cc"), Some(12)));

        let f =
            parse_frame(b"0x10a8c in main (a.out:x86_64+0x100000f44) (BuildId: 0123abcd)").unwrap();
        assert_eq!(f.module.as_deref(), Some("a.out"));
        assert_eq!(f.module_offset, Some(0x100000f44));

        let f = parse_frame(b"0x5612e1775150 in _start (/usr/bin/ruby3.1+0x1150)").unwrap();
        assert_eq!(f.label(), "_start");
        assert!(parse_frame(b"0xZZ in x").is_none());
        assert!(parse_frame(b"0x12 garbage here").is_none());
    }

    #[test]
    fn cut_log_crlf_and_bad_bytes_keep_what_is_sound() {
        let mut log = TWO_CHECKS.to_vec();
        // Cut inside the second report's only block.
        let cut = memmem::rfind(&log, b"    #2 0x7f06cefa9f79").unwrap();
        log.truncate(cut + 20);
        let crlf: Vec<u8> = log
            .iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect();
        let mut bad = crlf.clone();
        // A function name with invalid UTF-8 and a frame line gone wrong.
        let at = memmem::find(&bad, b"widget_create /src/widget.c:27").unwrap();
        bad[at] = 0xff;
        let at = memmem::find(&bad, b"    #3 0x7f06cefa9b0c").unwrap();
        bad.splice(at..at, b"    #9 garbage\r\n".iter().copied());
        let reports = parse_ok(&bad);
        assert_eq!(reports.len(), 2);
        assert_eq!(
            (reports[1].total_blocks(), reports[1].total_bytes()),
            (25, 400)
        );
        assert_eq!(reports[1].summary, None);
        let diag = &reports[0].diagnostics;
        assert_eq!(diag.count_of("reports without a SUMMARY line"), 1);
        assert_eq!(diag.count_of(NOT_UNDERSTOOD), 1);
        let lines = diag.lines();
        assert!(
            lines.iter().any(|l| l == "lsan.log: 1 line not understood at line 10 (a frame line without `#N 0xADDRESS`: `#9 garbage`)"),
            "{lines:?}"
        );
        let first = &reports[0];
        let names: Vec<String> = first.frames.iter().map(Frame::label).collect();
        assert!(
            names.contains(&"\u{fffd}idget_create".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn glued_output_and_unknown_lines() {
        let log = b"hello from the program\n\
==7==ERROR: LeakSanitizer: detected memory leaks\n\
Too many leaks! Only the first 5000 leaks encountered will be reported.\n\
progress 50%Direct leak of 8 byte(s) in 1 object(s) allocated from:\n\
    #0 0x1 in malloc x.c:1\n\
    #1 0x2 in make_thing (/opt/lib/libthing.so+0x1234)\n\
Direct leak of lots byte(s) in 1 object(s) allocated from:\n\
\n\
Objects leaked above:\n\
0x602000000010 (8 bytes)\n\
SUMMARY: LeakSanitizer: 8 byte(s) leaked in 1 allocation(s).\n";
        let reports = parse_ok(log);
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r.total_bytes(), 8);
        assert_eq!(
            r.header.notices,
            ["Too many leaks! Only the first 5000 leaks encountered will be reported."]
        );
        assert_eq!(sites(r)[0].key.function, "make_thing");
        assert_eq!(r.diagnostics.count_of(NOT_UNDERSTOOD), 1);
        assert_eq!(r.diagnostics.kinds[0].first, Position::Line(7));
    }

    #[test]
    fn not_a_report_is_an_error_naming_the_file() {
        let err = parse(Path::new("notes.txt"), b"just some text\nmore\n").unwrap_err();
        assert_eq!(err.to_string(), "notes.txt: no LeakSanitizer report in it");
        let err = parse(Path::new("e.log"), b"").unwrap_err();
        assert_eq!(err.to_string(), "e.log: empty file");
    }

    #[test]
    fn absurd_sizes_do_not_overflow() {
        let log = b"==1==ERROR: LeakSanitizer: detected memory leaks\n\
Direct leak of 9999999999999999999 byte(s) in 9999999999999999999 object(s) allocated from:\n\
    #0 0x10 in f (/l.so+0x20)\n\
\n\
Direct leak of 9999999999999999999 byte(s) in 9999999999999999999 object(s) allocated from:\n\
    #0 0x11 in f (/l.so+0x20)\n\
\n\
SUMMARY: LeakSanitizer: 1 byte(s) leaked in 1 allocation(s).\n";
        let r = &parse_ok(log)[0];
        assert_eq!(r.total_bytes(), u64::MAX);
        let all = sites(r);
        assert_eq!((all[0].blocks, all[0].bytes), (u64::MAX, u64::MAX));
        assert_eq!(crate::native::growth(&all, &all)[0].delta_bytes(), 0);
        assert_eq!(crate::native::growth(&[], &all)[0].delta_bytes(), i64::MAX);
    }

    #[test]
    fn identical_frames_are_shared() {
        let mut log = Vec::new();
        log.extend_from_slice(b"==1==ERROR: LeakSanitizer: detected memory leaks\n");
        for _ in 0..100 {
            log.extend_from_slice(
                b"Direct leak of 16 byte(s) in 1 object(s) allocated from:\n    #0 0x10 in malloc m.c:1\n    #1 0x20 in f (/l.so+0x20)\n\n",
            );
        }
        log.extend_from_slice(
            b"SUMMARY: LeakSanitizer: 1600 byte(s) leaked in 100 allocation(s).\n",
        );
        let r = &parse_ok(&log)[0];
        assert_eq!((r.frames.len(), r.stacks.len(), r.leaks.len()), (2, 1, 1));
        assert_eq!((r.total_blocks(), r.total_bytes()), (100, 1600));
        assert!(r.diagnostics.is_empty());
    }
}
