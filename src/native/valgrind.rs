//! valgrind memcheck output → [`NativeReport`]s: the XML of `--xml=yes` (protocol 4), and the
//! text of `--log-file` or of `vgdb --pid=N leak_check full definite increased`.
//!
//! Stage: parsers. One report per leak search. In the text, a search is its loss records and
//! the `LEAK SUMMARY` that closes them; a vgdb session saved to one file holds several. The XML
//! has no marker between searches, so a new one is recognised when loss-record numbering starts
//! over (`in loss record 1 of 12` after `… 12 of 12`) or its total changes.
//!
//! A loss record such as `6,800 (+5,440) (400 (+320) direct, 6,400 (+5,120) indirect) bytes in
//! 25 (+20) blocks are definitely lost` counts its *direct* bytes (400): the indirect ones are
//! blocks allocated elsewhere and reachable only through these, listed under their own stacks
//! as `indirectly lost` when asked for, and counted by the LEAK SUMMARY on their own line. That
//! keeps valgrind's numbers comparable with LSan's Direct/Indirect split.
//!
//! Records printed with `(+N)` deltas (vgdb `increased`/`changed`) list only what changed since
//! the previous search; such reports carry [`CHANGES_ONLY`] among their notices, and growth over
//! them must carry each site's last known total forward (see [`lists_changes_only`]).
//!
//! The XML is scanned by hand (no XML crate): valgrind writes a fixed, attribute-free layout.
//! Entities are decoded in the fields kept. A file that ends early keeps every finished
//! `<error>` and says where it stopped. A file's problems are carried by its first report.

use super::lsan::{excerpt, lines, lossy, parse_hex};
use super::{
    Frame, FrameId, LeakKind, NativeFormat, NativeReport, ReportBuilder, ReportHeader,
    ReportSummary,
};
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use memchr::memmem;
use std::path::Path;

/// Notice on reports whose loss records carry `(+N)` deltas: only changed records are listed.
pub const CHANGES_ONLY: &str =
    "loss records list changes since the previous leak search (+N): unchanged ones are not shown";

/// Whether the report lists only the loss records that changed since the previous search.
pub fn lists_changes_only(report: &NativeReport) -> bool {
    report.header.notices.iter().any(|n| n == CHANGES_ONLY)
}

const NOT_UNDERSTOOD: &str = "lines not understood";

/// One loss record's header line, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LossRecord {
    kind: LeakKind,
    /// Total bytes, direct and indirect.
    bytes: u64,
    /// The direct part, when the record has an indirect one.
    direct_bytes: Option<u64>,
    blocks: u64,
    has_deltas: bool,
    record: u64,
    of: u64,
}

impl LossRecord {
    fn own_bytes(&self) -> u64 {
        self.direct_bytes.unwrap_or(self.bytes)
    }
}

/// A cursor over one line of valgrind prose.
struct Prose<'t> {
    rest: &'t [u8],
}

impl<'t> Prose<'t> {
    fn literal(&mut self, text: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(text)?;
        Some(())
    }

    /// `6,800` → 6800.
    fn number(&mut self) -> Option<u64> {
        let len = self
            .rest
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b',')
            .count();
        let (digits, rest) = self.rest.split_at(len);
        let mut value: u64 = 0;
        let mut any = false;
        for &b in digits {
            if b != b',' {
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                any = true;
            }
        }
        self.rest = rest;
        any.then_some(value)
    }

    /// An optional ` (+5,440)` / ` (-8)` delta; true when one was there.
    fn delta(&mut self) -> Option<bool> {
        let Some(after) = self.rest.strip_prefix(b" (") else {
            return Some(false);
        };
        if !matches!(after.first(), Some(b'+' | b'-')) {
            return Some(false);
        }
        self.rest = &after[1..];
        self.number()?;
        self.literal(b")")?;
        Some(true)
    }

    fn kind(&mut self) -> Option<LeakKind> {
        for (text, kind) in [
            (&b"definitely lost"[..], LeakKind::Definite),
            (b"indirectly lost", LeakKind::IndirectlyLost),
            (b"possibly lost", LeakKind::Possible),
            (b"still reachable", LeakKind::Reachable),
        ] {
            if self.literal(text).is_some() {
                return Some(kind);
            }
        }
        None
    }
}

/// `6,800 (+5,440) (400 (+320) direct, 6,400 (+5,120) indirect) bytes in 25 (+20) blocks are
/// definitely lost in loss record 10,871 of 10,944`.
fn parse_loss_record(text: &[u8]) -> Option<LossRecord> {
    let mut p = Prose {
        rest: text.trim_ascii(),
    };
    let bytes = p.number()?;
    let mut has_deltas = p.delta()?;
    let mut direct_bytes = None;
    if p.rest.starts_with(b" (") && p.rest.get(2).is_some_and(u8::is_ascii_digit) {
        p.literal(b" (")?;
        direct_bytes = Some(p.number()?);
        has_deltas |= p.delta()?;
        p.literal(b" direct, ")?;
        p.number()?;
        has_deltas |= p.delta()?;
        p.literal(b" indirect)")?;
    }
    p.literal(b" bytes in ")?;
    let blocks = p.number()?;
    has_deltas |= p.delta()?;
    p.literal(b" blocks are ")?;
    let kind = p.kind()?;
    p.literal(b" in loss record ")?;
    let record = p.number()?;
    p.literal(b" of ")?;
    let of = p.number()?;
    Some(LossRecord {
        kind,
        bytes,
        direct_bytes,
        blocks,
        has_deltas,
        record,
        of,
    })
}

/// `definitely lost: 472 (+320) bytes in 28 (+20) blocks` → (kind label, bytes, blocks).
fn parse_summary_line(text: &[u8]) -> Option<(&[u8], u64, u64)> {
    let colon = memchr::memchr(b':', text)?;
    let label = text[..colon].trim_ascii();
    let mut p = Prose {
        rest: text[colon + 1..].trim_ascii(),
    };
    let bytes = p.number()?;
    p.delta()?;
    p.literal(b" bytes in ")?;
    let blocks = p.number()?;
    p.delta()?;
    p.literal(b" blocks")?;
    Some((label, bytes, blocks))
}

/// Collects the reports of one file: the open one, its loss-record numbering, the notices.
struct Reports<'p> {
    path: &'p Path,
    format: NativeFormat,
    done: Vec<NativeReport>,
    open: Option<ReportBuilder>,
    header: ReportHeader,
    last_record: Option<(u64, u64)>,
    has_deltas: bool,
}

impl<'p> Reports<'p> {
    fn new(path: &'p Path, format: NativeFormat) -> Self {
        Reports {
            path,
            format,
            done: Vec::new(),
            open: None,
            header: ReportHeader {
                tool: Some("memcheck".to_owned()),
                ..ReportHeader::default()
            },
            last_record: None,
            has_deltas: false,
        }
    }

    fn builder(&mut self) -> &mut ReportBuilder {
        let sequence = self.done.len() as u32;
        let (path, format) = (self.path, self.format);
        self.open
            .get_or_insert_with(|| ReportBuilder::new(path, format, sequence))
    }

    /// Starts a new report when the record numbering says a new search began.
    fn before_record(&mut self, record: &LossRecord) {
        if let Some((last, of)) = self.last_record
            && (record.record <= last || record.of != of)
        {
            self.close();
        }
        self.last_record = Some((record.record, record.of));
        self.has_deltas |= record.has_deltas;
    }

    fn add(&mut self, record: &LossRecord, stack: Vec<FrameId>) {
        let builder = self.builder();
        let stack = if stack.is_empty() {
            None
        } else {
            Some(builder.intern_stack(stack))
        };
        builder.add_leak(
            stack,
            record.kind,
            None,
            record.blocks,
            record.own_bytes(),
            None,
        );
    }

    fn close(&mut self) {
        if let Some(builder) = self.open.take() {
            let mut report = builder.finish();
            let notices = std::mem::take(&mut report.header.notices);
            report.header = self.header.clone();
            report.header.notices.extend(notices);
            if self.has_deltas {
                report.header.notices.push(CHANGES_ONLY.to_owned());
            }
            self.done.push(report);
        }
        self.last_record = None;
        self.has_deltas = false;
    }

    fn finish(mut self, diagnostics: Diagnostics) -> Vec<NativeReport> {
        self.close();
        if let Some(first) = self.done.first_mut() {
            first.diagnostics = diagnostics;
        }
        self.done
    }
}

// ---------------------------------------------------------------------------------------------
// Text: --log-file, and what vgdb prints for `leak_check`.

/// Parses valgrind text output: one report per leak search.
pub fn parse_text(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let mut reports = Reports::new(path, NativeFormat::ValgrindText);
    let mut diagnostics = Diagnostics::new(path);
    let mut block: Option<(LossRecord, Vec<FrameId>)> = None;
    let mut in_summary = false;
    let mut summary_done = false;
    let mut seen_valgrind = false;
    for (number, line) in lines(bytes) {
        let (pid, content) = strip_prefix(line);
        if let Some(pid) = pid {
            seen_valgrind = true;
            reports.header.pid.get_or_insert(pid);
        }
        let text = content.trim_ascii();
        if text.is_empty() {
            finish_block(&mut reports, &mut block);
            continue;
        }
        if let Some(frame_text) = text
            .strip_prefix(b"at ")
            .or_else(|| text.strip_prefix(b"by "))
            .filter(|t| t.starts_with(b"0x"))
        {
            let Some((_, frames)) = block.as_mut() else {
                continue; // a frame of an error that is not a leak
            };
            match parse_text_frame(frame_text) {
                Some(frame) => frames.push(reports.builder().intern_frame(frame)),
                None => diagnostics.report(NOT_UNDERSTOOD, Position::Line(number), || {
                    format!("a frame without `0xADDRESS:`: `{}`", excerpt(text))
                }),
            }
            continue;
        }
        if memmem::find(text, b" in loss record ").is_some() {
            finish_block(&mut reports, &mut block);
            if summary_done {
                reports.close();
                summary_done = false;
            }
            in_summary = false;
            match parse_loss_record(text) {
                Some(record) => {
                    reports.before_record(&record);
                    block = Some((record, Vec::new()));
                }
                None => diagnostics.report(NOT_UNDERSTOOD, Position::Line(number), || {
                    format!("a loss record without sizes: `{}`", excerpt(text))
                }),
            }
            continue;
        }
        if text.starts_with(b"LEAK SUMMARY:") {
            finish_block(&mut reports, &mut block);
            if summary_done {
                reports.close();
            }
            reports.builder().set_summary(ReportSummary::default());
            in_summary = true;
            summary_done = true;
            continue;
        }
        if in_summary {
            match parse_summary_line(text) {
                Some((label, bytes, blocks)) => {
                    let counts = matches!(
                        label,
                        b"definitely lost" | b"indirectly lost" | b"possibly lost"
                    );
                    if counts && let Some(summary) = reports.builder().summary_mut() {
                        summary.leaks = summary.leaks.saturating_add(blocks);
                        summary.bytes = summary.bytes.saturating_add(bytes);
                    }
                    continue;
                }
                None if memmem::find(text, b" lost: ").is_some() => {
                    diagnostics.report(NOT_UNDERSTOOD, Position::Line(number), || {
                        format!("a LEAK SUMMARY line without sizes: `{}`", excerpt(text))
                    });
                    continue;
                }
                None => in_summary = false,
            }
        }
        if text.starts_with(b"All heap blocks were freed") {
            finish_block(&mut reports, &mut block);
            reports.builder();
            summary_done = true;
            continue;
        }
        header_line(&mut reports.header, text);
        // Other lines: non-leak errors, HEAP SUMMARY, hints, the program's own output.
    }
    finish_block(&mut reports, &mut block);
    let cut = reports.open.is_some() && !summary_done;
    if cut {
        diagnostics.report(
            "leak checks without a LEAK SUMMARY",
            Position::Line(lines(bytes).count() as u64),
            || "the text ends inside a leak search: cut short, or still being written".to_owned(),
        );
    }
    let found_any = reports.open.is_some() || !reports.done.is_empty();
    if !found_any {
        let what = if seen_valgrind {
            "valgrind output without any leak search (run with --leak-check=full, or use vgdb leak_check)"
        } else {
            "not valgrind output: no loss record or LEAK SUMMARY in it"
        };
        let mut message = what.to_owned();
        if let Some(first) = diagnostics.lines().first() {
            message = format!("{message} ({first})");
        }
        return Err(Error::input(path, Position::Whole, message));
    }
    Ok(reports.finish(diagnostics))
}

fn finish_block(reports: &mut Reports<'_>, block: &mut Option<(LossRecord, Vec<FrameId>)>) {
    if let Some((record, mut frames)) = block.take() {
        frames.reverse();
        reports.add(&record, frames);
    }
}

/// `==13045== text`, `--13045-- text`, `**13045** text` → (pid, text). Lines without the
/// prefix (vgdb's own messages, the program's output) come back whole.
fn strip_prefix(line: &[u8]) -> (Option<u32>, &[u8]) {
    for mark in [&b"=="[..], b"--", b"**"] {
        if let Some(rest) = line.strip_prefix(mark)
            && let Some(end) = memmem::find(rest, mark)
            && end > 0
            && rest[..end].iter().all(u8::is_ascii_digit)
        {
            let pid = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|s| s.parse().ok());
            let text = &rest[end + 2..];
            return (pid, text.strip_prefix(b" ").unwrap_or(text));
        }
    }
    (None, line)
}

/// The preamble: tool, version, command.
fn header_line(header: &mut ReportHeader, text: &[u8]) {
    if let Some(rest) = text.strip_prefix(b"Using Valgrind-") {
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        header.tool_version = Some(lossy(&rest[..end]));
    } else if let Some(command) = text.strip_prefix(b"Command: ") {
        set_command(header, command);
    }
}

fn set_command(header: &mut ReportHeader, command: &[u8]) {
    let exe = command.split(|&b| b == b' ').next().unwrap_or(command);
    if header.path.is_none() && !exe.is_empty() {
        let exe = lossy(exe);
        header.process = Some(exe.rsplit('/').next().unwrap_or(&exe).to_owned());
        header.path = Some(exe);
    }
}

/// `0x9E3D14E: widget_create (widget.c:23)`, `0x4934483: ??? (in /usr/lib/libruby.so)`,
/// `0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)`.
fn parse_text_frame(text: &[u8]) -> Option<Frame> {
    let colon = memchr::memchr(b':', text)?;
    let address = parse_hex(text[..colon].strip_prefix(b"0x")?)?;
    let rest = text[colon + 1..].trim_ascii();
    let mut frame = Frame {
        address: Some(address),
        ..Frame::default()
    };
    let mut function = rest;
    if let Some(inner) = rest.strip_suffix(b")")
        && let Some(open) = memmem::rfind(inner, b" (")
    {
        let location = &inner[open + 2..];
        if let Some(module) = location.strip_prefix(b"in ") {
            frame.module = Some(lossy(module));
            function = &rest[..open];
        } else if let Some(colon) = memchr::memrchr(b':', location)
            && let Ok(line) = std::str::from_utf8(&location[colon + 1..])
                .unwrap_or("")
                .parse()
        {
            frame.file = Some(lossy(&location[..colon]));
            frame.line = Some(line);
            function = &rest[..open];
        }
    }
    let function = function.trim_ascii();
    if !function.is_empty() && function != b"???" {
        frame.function = Some(lossy(function));
    }
    Some(frame)
}

// ---------------------------------------------------------------------------------------------
// XML: --xml=yes, protocol 4.

/// Parses valgrind's XML: one report per leak search (at least one, even with no leak).
pub fn parse_xml(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let mut scanner = XmlScanner::new(bytes);
    let mut reports = Reports::new(path, NativeFormat::ValgrindXml);
    let mut diagnostics = Diagnostics::new(path);
    let mut elements: Vec<&[u8]> = Vec::new();
    let mut error: Option<XmlError> = None;
    let mut other_errors = 0u64;
    let mut seen_root = false;
    let mut finished = false;
    while let Some(token) = scanner.next() {
        match token {
            XmlToken::Open(name) => {
                if name == b"valgrindoutput" {
                    seen_root = true;
                }
                if name == b"error" && elements.last() == Some(&&b"valgrindoutput"[..]) {
                    error = Some(XmlError::new(scanner.line()));
                }
                if name == b"frame"
                    && let Some(e) = error.as_mut()
                {
                    e.frame = Some(Frame::default());
                }
                if name == b"stack"
                    && let Some(e) = error.as_mut()
                {
                    e.stacks += 1;
                }
                if elements.len() < 64 {
                    elements.push(name);
                }
            }
            XmlToken::Close(name) => {
                match elements.iter().rposition(|&open| open == name) {
                    Some(at) => elements.truncate(at),
                    None => diagnostics.report(
                        "XML closing tags without an opening one",
                        Position::Line(scanner.line()),
                        || format!("</{}>", lossy(name)),
                    ),
                }
                match name {
                    b"frame" => {
                        if let Some(e) = error.as_mut()
                            && let Some(frame) = e.frame.take()
                            && e.stacks == 1
                        {
                            e.frames.push(frame);
                        }
                    }
                    b"error" => {
                        if let Some(e) = error.take() {
                            if e.kind.starts_with(b"Leak_") {
                                add_xml_leak(&mut reports, &mut diagnostics, e);
                            } else {
                                other_errors += 1;
                            }
                        }
                    }
                    b"valgrindoutput" => finished = true,
                    _ => {}
                }
            }
            XmlToken::Empty => {}
            XmlToken::Text(raw) => {
                let (Some(&leaf), parent) = (
                    elements.last(),
                    elements.len().checked_sub(2).map(|i| elements[i]),
                ) else {
                    continue;
                };
                xml_text(&mut reports.header, error.as_mut(), leaf, parent, raw);
            }
        }
    }
    let end_line = scanner.line();
    if let Some(e) = &error {
        let start = e.line;
        diagnostics.report(
            "XML files ending early",
            Position::Line(end_line),
            || format!("the file ends inside the <error> begun at line {start}: it was cut short or is still being written; the errors before it are kept"),
        );
    } else if seen_root && !finished {
        diagnostics.report("XML files ending early", Position::Line(end_line), || {
            "no </valgrindoutput>: the run was still going or the file was cut; what was written is kept".to_owned()
        });
    }
    if !seen_root {
        return Err(Error::input(
            path,
            Position::Whole,
            "not valgrind XML: no <valgrindoutput> element",
        ));
    }
    if other_errors > 0 {
        reports.header.notices.push(format!(
            "{other_errors} memcheck errors that are not leaks (uninitialised values, invalid accesses) left out"
        ));
    }
    // A run without leaks is still a report: it says nothing leaked.
    reports.builder();
    Ok(reports.finish(diagnostics))
}

/// An `<error>` being read.
struct XmlError {
    line: u64,
    kind: Vec<u8>,
    xwhat: Option<String>,
    leaked_bytes: Option<u64>,
    leaked_blocks: Option<u64>,
    /// How many `<stack>` elements began (only the first is the allocation stack).
    stacks: u32,
    frame: Option<Frame>,
    /// Innermost first, as written.
    frames: Vec<Frame>,
}

impl XmlError {
    fn new(line: u64) -> Self {
        XmlError {
            line,
            kind: Vec::new(),
            xwhat: None,
            leaked_bytes: None,
            leaked_blocks: None,
            stacks: 0,
            frame: None,
            frames: Vec::new(),
        }
    }
}

/// Stores the text of a leaf element where it belongs.
fn xml_text(
    header: &mut ReportHeader,
    error: Option<&mut XmlError>,
    leaf: &[u8],
    parent: Option<&[u8]>,
    raw: &[u8],
) {
    let value = || decode_entities(raw.trim_ascii());
    match error {
        Some(e) => match (parent, leaf) {
            (Some(b"error"), b"kind") => e.kind = raw.trim_ascii().to_vec(),
            (Some(b"xwhat"), b"text") => e.xwhat = Some(value()),
            (Some(b"xwhat"), b"leakedbytes") => e.leaked_bytes = value().parse().ok(),
            (Some(b"xwhat"), b"leakedblocks") => e.leaked_blocks = value().parse().ok(),
            (Some(b"frame"), field) => {
                if let Some(frame) = e.frame.as_mut() {
                    set_frame_field(frame, field, value());
                }
            }
            _ => {}
        },
        None => match (parent, leaf) {
            (Some(b"valgrindoutput"), b"pid") => header.pid = value().parse().ok(),
            (Some(b"preamble"), b"line") => header_line(header, value().as_bytes()),
            (Some(b"argv"), b"exe") => set_command(header, value().as_bytes()),
            _ => {}
        },
    }
}

fn set_frame_field(frame: &mut Frame, field: &[u8], value: String) {
    match field {
        b"ip" => {
            frame.address = value
                .strip_prefix("0x")
                .and_then(|h| parse_hex(h.as_bytes()))
        }
        b"obj" => frame.module = Some(value),
        b"fn" if value != "???" => frame.function = Some(value),
        b"dir" => {
            frame.file = Some(match frame.file.take() {
                Some(file) => format!("{value}/{file}"),
                None => value + "/",
            })
        }
        b"file" => {
            frame.file = Some(match frame.file.take() {
                Some(dir) if dir.ends_with('/') => dir + &value,
                _ => value,
            })
        }
        b"line" => frame.line = value.parse().ok(),
        _ => {}
    }
}

fn add_xml_leak(reports: &mut Reports<'_>, diagnostics: &mut Diagnostics, e: XmlError) {
    let kind = match &e.kind[..] {
        b"Leak_DefinitelyLost" => LeakKind::Definite,
        b"Leak_IndirectlyLost" => LeakKind::IndirectlyLost,
        b"Leak_PossiblyLost" => LeakKind::Possible,
        b"Leak_StillReachable" => LeakKind::Reachable,
        other => {
            let other = lossy(other);
            diagnostics.report("unknown leak kinds", Position::Line(e.line), || other);
            return;
        }
    };
    let parsed = e
        .xwhat
        .as_deref()
        .and_then(|t| parse_loss_record(t.as_bytes()));
    let record = match (parsed, e.leaked_bytes, e.leaked_blocks) {
        (Some(record), _, _) => LossRecord { kind, ..record },
        (None, Some(bytes), Some(blocks)) => LossRecord {
            kind,
            bytes,
            direct_bytes: None,
            blocks,
            has_deltas: false,
            record: 0,
            of: 0,
        },
        _ => {
            diagnostics.report("leak errors without sizes", Position::Line(e.line), || {
                "no <leakedbytes>/<leakedblocks> and no readable <xwhat><text>".to_owned()
            });
            return;
        }
    };
    if parsed.is_some() {
        reports.before_record(&record);
    }
    let builder = reports.builder();
    let mut frames: Vec<FrameId> = e
        .frames
        .into_iter()
        .map(|f| builder.intern_frame(f))
        .collect();
    frames.reverse();
    reports.add(&record, frames);
}

/// `&lt;` `&gt;` `&amp;` `&quot;` `&apos;` `&#NN;` `&#xHH;`; anything else is kept as written.
fn decode_entities(raw: &[u8]) -> String {
    if !raw.contains(&b'&') {
        return lossy(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = memchr::memchr(b'&', rest) {
        out.extend_from_slice(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = memchr::memchr(b';', &rest[..rest.len().min(12)]).and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                b"lt" => '<',
                b"gt" => '>',
                b"amp" => '&',
                b"quot" => '"',
                b"apos" => '\'',
                _ => {
                    let digits = name.strip_prefix(b"#")?;
                    let value = match digits
                        .strip_prefix(b"x")
                        .or_else(|| digits.strip_prefix(b"X"))
                    {
                        Some(hex) => u32::try_from(parse_hex(hex)?).ok()?,
                        None => std::str::from_utf8(digits).ok()?.parse().ok()?,
                    };
                    char::from_u32(value)?
                }
            };
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                rest = &rest[len..];
            }
            None => {
                out.push(b'&');
                rest = &rest[1..];
            }
        }
    }
    out.extend_from_slice(rest);
    lossy(&out)
}

enum XmlToken<'a> {
    Open(&'a [u8]),
    Close(&'a [u8]),
    /// `<name/>`: nothing valgrind writes needs it.
    Empty,
    Text(&'a [u8]),
}

/// Tags and text of an XML document, in order; declarations, comments and processing
/// instructions are skipped. Stops at the end of input, even inside a tag.
struct XmlScanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    counted_to: usize,
    line: u64,
}

impl<'a> XmlScanner<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        XmlScanner {
            bytes,
            pos: 0,
            counted_to: 0,
            line: 1,
        }
    }

    /// 1-based line of the scanner's position.
    fn line(&mut self) -> u64 {
        let upto = self.pos.min(self.bytes.len());
        if upto > self.counted_to {
            self.line +=
                memchr::memchr_iter(b'\n', &self.bytes[self.counted_to..upto]).count() as u64;
            self.counted_to = upto;
        }
        self.line
    }

    fn next(&mut self) -> Option<XmlToken<'a>> {
        loop {
            let rest = self.bytes.get(self.pos..)?;
            if rest.is_empty() {
                return None;
            }
            if rest[0] != b'<' {
                let len = memchr::memchr(b'<', rest).unwrap_or(rest.len());
                self.pos += len;
                return Some(XmlToken::Text(&rest[..len]));
            }
            let skip_to = |end: &[u8]| memmem::find(rest, end).map(|i| i + end.len());
            let skipped = if rest.starts_with(b"<!--") {
                Some(skip_to(b"-->"))
            } else if rest.starts_with(b"<?") {
                Some(skip_to(b"?>"))
            } else if rest.starts_with(b"<!") {
                Some(skip_to(b">"))
            } else {
                None
            };
            if let Some(len) = skipped {
                self.pos += len.unwrap_or(rest.len());
                continue;
            }
            let Some(close) = memchr::memchr(b'>', rest) else {
                self.pos = self.bytes.len();
                return None;
            };
            self.pos += close + 1;
            let inner = &rest[1..close];
            let (is_close, inner) = match inner.strip_prefix(b"/") {
                Some(name) => (true, name),
                None => (false, inner),
            };
            let is_empty = inner.ends_with(b"/");
            let name_len = inner
                .iter()
                .position(|b| b.is_ascii_whitespace() || *b == b'/')
                .unwrap_or(inner.len());
            let name = &inner[..name_len];
            return Some(if is_close {
                XmlToken::Close(name)
            } else if is_empty {
                XmlToken::Empty
            } else {
                XmlToken::Open(name)
            });
        }
    }
}

#[cfg(test)]
mod tests {
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
        let r = parse_loss_record(b"8 bytes in 1 blocks are possibly lost in loss record 3 of 9")
            .unwrap();
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
        assert!(parse_loss_record(b"99999999999999999999999 bytes in 1 blocks are definitely lost in loss record 1 of 1").is_none());
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
        assert_eq!((a.total_blocks(), a.total_bytes()), (6, 112));
        assert_eq!(
            a.summary.map(|s| (s.leaks, s.bytes)),
            Some((6 + 5 + 2, 112 + 1280 + 4608))
        );
        assert!(lists_changes_only(b));
        assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
        let site = &sites(a)[0];
        assert_eq!(site.key.function, "widget_create");
        assert_eq!((site.blocks, site.bytes), (5, 80));
        assert_eq!(site.frame.file.as_deref(), Some("widget.c"));
        assert_eq!(site.frame.line, Some(23));
        let labels: Vec<String> = site.stack.iter().map(Frame::label).collect();
        assert_eq!(labels, ["ffi_call", "widget_create", "malloc"]);
        let noise = &sites(a)[1];
        assert_eq!(noise.key.function, "libruby-3.1.so.3.1.2@0x4934483");
        let g = growth(&sites(a), &sites(b));
        assert_eq!(g[0].key.function, "widget_create");
        assert_eq!((g[0].delta_blocks(), g[0].delta_bytes()), (20, 320));
    }

    /// Fuzz find: LEAK SUMMARY lines whose sizes add past `u64::MAX` overflowed the summary
    /// (a panic in debug builds); they saturate.
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
            lines[0].starts_with(
                "v.txt: 1 line not understood at line 10 (a loss record without sizes"
            ),
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
        assert_eq!((r.total_blocks(), r.total_bytes()), (7, 80 + 4608));
        assert_eq!(
            r.header.notices,
            [
                "1 memcheck errors that are not leaks (uninitialised values, invalid accesses) left out"
            ]
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
}
