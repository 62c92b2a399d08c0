//! valgrind memcheck output → [`NativeReport`]s: the XML of `--xml=yes` (protocol 4), and the
//! text of `--log-file` or of `vgdb --pid=N leak_check full definite increased`.
//!
//! Stage: parsers. One report per leak search. In the text, a search is its loss records and
//! the `LEAK SUMMARY` that closes them; a vgdb session saved to one file holds several. The XML
//! has no marker between searches, so a new one is recognised when loss-record numbering starts
//! over (`in loss record 1 of 12` after `… 12 of 12`) or its total changes.
//!
//! A loss record such as `6,800 (+5,440) (400 (+320) direct, 6,400 (+5,120) indirect) bytes in
//! 25 (+20) blocks are definitely lost` keeps 6,800 bytes alive: 400 directly, and 6,400 in
//! blocks allocated elsewhere and reachable only through these. The record counts its total, or
//! the indirect memory would be missing from the leak's size, and its blocks with the indirect
//! ones, as LSan counts a leak's Direct and Indirect blocks: the record line gives only the direct
//! block count, so the indirect blocks come from the search's totals — the `indirectly lost`
//! records when it lists them (memcheck's XML at exit, `--show-leak-kinds` with `indirect`), else
//! the `LEAK SUMMARY` (`vgdb … leak_check full definiteleak any`, how `leakhunt run` asks) — in
//! proportion to each record's indirect bytes. The listed indirect records themselves are not
//! counted again at their own stacks: every search then measures a leak at the same site, whether
//! it listed them or not (the snapshots' vgdb text does not, the exit XML does).
//!
//! Records printed with `(+N)` deltas (vgdb `increased`/`changed`) list only what changed since
//! the previous search; such reports carry [`CHANGES_ONLY`] among their notices, and growth over
//! them must carry each site's last known total forward (see [`lists_changes_only`]).
//!
//! The text parser is [`text`], the XML parser [`xml`] over the tokenizer in [`tokenizer`]; what
//! both build reports with is here.
//!
//! The XML is scanned by hand (no XML crate): valgrind writes a fixed, attribute-free layout.
//! Entities are decoded in the fields kept. A file that ends early keeps every finished
//! `<error>` and says where it stopped. A file's problems are carried by its first report.

use super::bytes::{excerpt, lines, lossy, parse_hex};
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
    /// The open report's definite records' indirect parts, counted at close.
    indirect: Vec<(Option<super::StackId>, LeakKind, u64)>,
    /// The open report's `indirectly lost` records, counted at their own stacks only when no
    /// record says it holds indirect bytes.
    listed_indirect: Vec<(Option<super::StackId>, u64, u64)>,
    /// The open report's LEAK SUMMARY `indirectly lost` (bytes, blocks), in the text.
    pub(super) summary_indirect: Option<(u64, u64)>,
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
            indirect: Vec::new(),
            listed_indirect: Vec::new(),
            summary_indirect: None,
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
        if record.kind == LeakKind::IndirectlyLost {
            self.listed_indirect
                .push((stack, record.blocks, record.bytes));
            return;
        }
        builder.add_leak(
            stack,
            record.kind,
            None,
            record.blocks,
            record.own_bytes(),
            None,
        );
        let indirect = record.bytes.saturating_sub(record.own_bytes());
        if indirect > 0 {
            self.indirect.push((stack, record.kind, indirect));
        }
    }

    fn close(&mut self) {
        let indirect = std::mem::take(&mut self.indirect);
        let listed = std::mem::take(&mut self.listed_indirect);
        let summary = self.summary_indirect.take();
        if let Some(mut builder) = self.open.take() {
            if indirect.is_empty() {
                for (stack, blocks, bytes) in listed {
                    builder.add_leak(stack, LeakKind::IndirectlyLost, None, blocks, bytes, None);
                }
            } else {
                add_indirect_blocks(&mut builder, indirect, &listed, summary);
            }
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

/// Adds each record's indirect part with its blocks. A listed indirect record whose call path
/// is the record's own (the same callers; only the allocating frame and the allocator differ,
/// as when one function mallocs a handle and its payload) gives that record its blocks exactly;
/// what no listed record accounts for is measured at the bytes per block of the listed records
/// left over, or of the LEAK SUMMARY when none are listed. Shared at the search's average, a
/// record of 4 KiB payloads in a heap of small indirect blocks would count dozens per payload.
fn add_indirect_blocks(
    builder: &mut ReportBuilder,
    indirect: Vec<(Option<super::StackId>, LeakKind, u64)>,
    listed: &[(Option<super::StackId>, u64, u64)],
    summary: Option<(u64, u64)>,
) {
    let callers = |builder: &ReportBuilder, stack: Option<super::StackId>| {
        let frames = stack.map_or(&[][..], |id| builder.stack_frames(id));
        frames[..frames.len().saturating_sub(2)].to_vec()
    };
    // (bytes not yet accounted for, blocks found) per record.
    let mut found: Vec<(u64, u64)> = indirect.iter().map(|i| (i.2, 0)).collect();
    let mut by_callers: std::collections::HashMap<Vec<FrameId>, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, (stack, _, _)) in indirect.iter().enumerate() {
        let key = callers(builder, *stack);
        if !key.is_empty() {
            by_callers.entry(key).or_default().push(i);
        }
    }
    let mut left_over = (0u64, 0u64);
    for &(stack, blocks, bytes) in listed {
        let owner = by_callers
            .get(&callers(builder, stack))
            .and_then(|owners| owners.iter().find(|&&i| found[i].0 >= bytes));
        match owner {
            Some(&i) => {
                found[i].0 -= bytes;
                found[i].1 = found[i].1.saturating_add(blocks);
            }
            None => {
                left_over.0 = left_over.0.saturating_add(bytes);
                left_over.1 = left_over.1.saturating_add(blocks);
            }
        }
    }
    let totals = if listed.is_empty() {
        summary.unwrap_or((0, 0))
    } else {
        left_over
    };
    for ((stack, kind, bytes), (unexplained, blocks)) in indirect.into_iter().zip(found) {
        let blocks = blocks.saturating_add(indirect_blocks(unexplained, totals));
        builder.add_leak(stack, kind, None, blocks, bytes, None);
    }
}

/// The blocks behind `bytes` of a record's indirect part, given the search's indirect
/// (bytes, blocks): the search's bytes per block, at least one block for any byte. Zero when the
/// search does not say (an XML without indirect records).
fn indirect_blocks(bytes: u64, (total_bytes, total_blocks): (u64, u64)) -> u64 {
    if bytes == 0 || total_bytes == 0 || total_blocks == 0 {
        return 0;
    }
    let scaled = (u128::from(bytes) * u128::from(total_blocks) + u128::from(total_bytes / 2))
        / u128::from(total_bytes);
    u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
}

/// The preamble: tool, version, command.
pub(super) fn header_line(header: &mut ReportHeader, text: &[u8]) {
    if let Some(rest) = text.strip_prefix(b"Using Valgrind-") {
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        header.tool_version = Some(lossy(&rest[..end]));
    } else if let Some(command) = text.strip_prefix(b"Command: ") {
        set_command(header, command);
    }
}

pub(super) fn set_command(header: &mut ReportHeader, command: &[u8]) {
    let exe = command.split(|&b| b == b' ').next().unwrap_or(command);
    if header.path.is_none() && !exe.is_empty() {
        let exe = lossy(exe);
        header.process = Some(exe.rsplit('/').next().unwrap_or(&exe).to_owned());
        header.path = Some(exe);
    }
}

mod text;
mod tokenizer;
mod xml;

pub use text::parse_text;
pub use xml::parse_xml;

#[cfg(test)]
mod tests;
