//! One report being read: the state the line handlers of [`super`] change as lines arrive —
//! which section we are in, the `Leak:` block still open, the `STACK OF` group and tree
//! counts, the images — and, at the end, the checks against the summary line.
//!
//! Stage: parser (the per-report half; `leaks.rs` splits lines and tells reports apart).

use super::images::{self, BinaryImage};
use super::list::{self, LeakLine};
use super::tree::{self, Marker, Node, NumberedFrame, StackHeader};
use super::{
    COUNT_MISMATCH, CUT_OFF, LineKind, NOT_UTF8, SUMMARY_MISMATCH, UNKNOWN_VERSION, find, header,
};
use crate::diag::Position;
use crate::native::{
    Frame, FrameId, LeakKind, NativeFormat, NativeReport, ReportBuilder, ReportSummary, StackId,
};
use header::SummaryLine;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    /// Leaks, trees, summary lines.
    Body,
    /// From `Process:` to `----`, the version line or the summary.
    Header,
    /// The numbered frames between `STACK OF` and `====`.
    StackFrames,
    /// After `Binary Images:`.
    Images,
}

/// A `Leak:` block still being read (hex dump, call stack).
struct PendingLeak<'a> {
    line: u64,
    address: u64,
    size: u64,
    type_name: Option<&'a [u8]>,
    /// The `Call stack:` line's frames (index into `Report::line_stacks`).
    stack: Option<usize>,
    /// Frames from continuation lines of a re-wrapped stack.
    more_frames: Vec<FrameId>,
}

/// The frames of one distinct `Call stack:` text, and its stack once interned alone.
struct LineStack {
    frames: Vec<FrameId>,
    stack: Option<StackId>,
}

/// A `STACK OF` block: its frames, then the roots of its tree.
struct StackGroup {
    line: u64,
    instances: u64,
    frames: Vec<(u64, FrameId)>,
    stack: Option<StackId>,
    roots: u64,
}

/// Node counting for the current tree, to tell a complete tree from a cut one.
#[derive(Default)]
struct TreeCounts {
    root_indent: Option<usize>,
    /// Nodes the current root's count still expects, and the root's line.
    pending: Option<(u64, u64)>,
    /// `<< TOTAL >>` count and line, and nodes seen since.
    total: Option<(u64, u64)>,
    seen: u64,
}

pub(super) struct Report<'a> {
    pub(super) builder: ReportBuilder,
    first_line: u64,
    version: Option<NativeFormat>,
    pub(super) section: Section,
    /// `N nodes malloced for K KB`
    nodes: Option<(u64, u64)>,
    /// `N leaks for B total leaked bytes.`
    pub(super) leak_summary: Option<(u64, u64)>,
    excluded: Option<u64>,
    listed_blocks: u64,
    listed_bytes: u64,
    pending: Option<PendingLeak<'a>>,
    /// Line of the last `Call stack:` line or continuation, and whether it ended with `|`.
    last_stack_line: u64,
    last_stack_open: bool,
    any_call_stack: bool,
    stack_texts: HashMap<&'a [u8], usize>,
    line_stacks: Vec<LineStack>,
    group: Option<StackGroup>,
    tree: TreeCounts,
    images: Vec<BinaryImage>,
    saw_tree: bool,
    saw_groups: bool,
    /// Line where the report was found cut off, if it was.
    cut_at: Option<u64>,
    last_utf8_problem: u64,
}

impl<'a> Report<'a> {
    pub(super) fn new(path: &Path, sequence: u32, first_line: u64) -> Self {
        Report {
            builder: ReportBuilder::new(path, NativeFormat::Leaks1, sequence),
            first_line,
            version: None,
            section: Section::Body,
            nodes: None,
            leak_summary: None,
            excluded: None,
            listed_blocks: 0,
            listed_bytes: 0,
            pending: None,
            last_stack_line: 0,
            last_stack_open: false,
            any_call_stack: false,
            stack_texts: HashMap::new(),
            line_stacks: Vec::new(),
            group: None,
            tree: TreeCounts::default(),
            images: Vec::new(),
            saw_tree: false,
            saw_groups: false,
            cut_at: None,
            last_utf8_problem: 0,
        }
    }

    fn decode(&mut self, bytes: &'a [u8], no: u64) -> Cow<'a, str> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => {
                if self.last_utf8_problem != no {
                    self.last_utf8_problem = no;
                    self.builder
                        .diagnostics()
                        .report(NOT_UTF8, Position::Line(no), String::new);
                }
                String::from_utf8_lossy(bytes)
            }
        }
    }

    fn text(&mut self, bytes: &'a [u8], no: u64) -> String {
        self.decode(bytes, no).into_owned()
    }

    /// Lines told by where they stand; the hot path of large reports.
    #[inline]
    pub(super) fn fast_path(&mut self, t: &'a [u8], no: u64) -> bool {
        if t.is_empty() {
            return true;
        }
        match self.section {
            Section::Body => self.pending.is_some() && t[0] == b'0' && list::is_hex_dump(t),
            Section::StackFrames => match tree::numbered_frame(t) {
                Some(frame) => {
                    self.numbered_frame(frame, no);
                    true
                }
                None => false,
            },
            Section::Images => match images::image_line(t) {
                Some(image) => {
                    self.images.push(image);
                    true
                }
                None => false,
            },
            Section::Header => false,
        }
    }

    pub(super) fn expects_continuation(&self, no: u64) -> bool {
        self.pending.is_some() && self.last_stack_line != 0 && self.last_stack_line + 1 == no
    }

    /// A call stack re-wrapped over several lines (as in the seed document): frames separated
    /// by ` | `, after a stack line that ended with `|` or itself holding a separator.
    pub(super) fn continuation(&mut self, t: &'a [u8], no: u64) -> bool {
        let t = t.trim_ascii_end();
        if t.is_empty() || (!self.last_stack_open && find(t, b" | ").is_none()) {
            return false;
        }
        let mut ids = Vec::new();
        for text in list::frame_texts(t) {
            ids.push(self.list_frame(text, no));
        }
        if let Some(pending) = self.pending.as_mut() {
            pending.more_frames.extend(ids);
        }
        self.last_stack_line = no;
        self.last_stack_open = t.ends_with(b"|");
        true
    }

    pub(super) fn apply(&mut self, kind: LineKind<'a>, no: u64) -> bool {
        match kind {
            LineKind::HeaderKey(key, value) => {
                self.section = Section::Header;
                self.header_value(key, value, no);
            }
            LineKind::HeaderEnd => self.section = Section::Body,
            LineKind::Version(version) => {
                self.section = Section::Body;
                self.version = Some(version.format);
                if !version.known {
                    self.builder
                        .diagnostics()
                        .report(UNKNOWN_VERSION, Position::Line(no), || {
                            "read as the nearest known version".into()
                        });
                }
            }
            LineKind::Summary(summary) => {
                self.section = Section::Body;
                self.summary(summary);
            }
            LineKind::NotDebuggable(text) => {
                let pid = header::not_debuggable(text);
                let notice = self.text(text, no);
                let header = self.builder.header_mut();
                header.notices.push(notice);
                if header.pid.is_none() {
                    header.pid = pid;
                }
            }
            LineKind::NotDebuggableContinued(text) => {
                let more = self.text(text, no);
                match self.builder.header_mut().notices.last_mut() {
                    Some(notice) if notice.contains("is not debuggable") => {
                        notice.push(' ');
                        notice.push_str(&more);
                    }
                    _ => return false,
                }
            }
            LineKind::Excluded(count) => {
                self.excluded = Some(self.excluded.unwrap_or(0) + count);
                self.builder
                    .header_mut()
                    .notices
                    .push(format!("{count} leaks excluded (not printed)"));
            }
            LineKind::Leak(leak) => return self.leak(leak, no),
            LineKind::CallStack(frames) => return self.call_stack(frames, no),
            LineKind::HexDump => return self.pending.is_some(),
            LineKind::StackHeader(stack) => self.stack_header(stack, no),
            LineKind::Separator => return self.separator(),
            LineKind::Total(count) => {
                self.commit_leak();
                self.close_root(false);
                self.close_total(false);
                self.tree.total = Some((count, no));
                self.tree.seen = 0;
                self.tree.root_indent = None;
                self.saw_tree = true;
            }
            LineKind::Node(node) => self.node(node, no),
            LineKind::BinaryImages => {
                self.commit_leak();
                self.close_tree(false);
                self.section = Section::Images;
            }
            LineKind::StackLogging(..) | LineKind::Failure(_) => {}
        }
        true
    }

    fn header_value(&mut self, key: &'a [u8], value: &'a [u8], no: u64) {
        match key {
            b"Process" => {
                let (name, pid) = header::process_value(value);
                let name = self.text(name, no);
                let header = self.builder.header_mut();
                header.process = Some(name);
                if pid.is_some() {
                    header.pid = pid;
                }
            }
            b"Path" => self.builder.header_mut().path = Some(self.text(value, no)),
            b"OS Version" => self.builder.header_mut().os_version = Some(self.text(value, no)),
            b"Date/Time" => self.builder.header_mut().date = Some(self.text(value, no)),
            b"Analysis Tool" => self.builder.header_mut().tool = Some(self.text(value, no)),
            b"Analysis Tool Version" => {
                self.builder.header_mut().tool_version = Some(self.text(value, no));
            }
            b"Physical footprint" => {
                self.builder.header_mut().physical_footprint = header::size_with_unit(value);
            }
            b"Physical footprint (peak)" => {
                self.builder.header_mut().physical_footprint_peak = header::size_with_unit(value);
            }
            _ => {}
        }
    }

    fn summary(&mut self, summary: SummaryLine) {
        let pid = match summary {
            SummaryLine::Nodes { pid, nodes, kb } => {
                self.nodes = Some((nodes, kb));
                pid
            }
            SummaryLine::Leaks { pid, leaks, bytes } => {
                self.leak_summary = Some((leaks, bytes));
                pid
            }
        };
        let header = self.builder.header_mut();
        if header.pid.is_none() {
            header.pid = Some(pid);
        }
    }

    fn leak(&mut self, leak: LeakLine<'a>, no: u64) -> bool {
        self.commit_leak();
        self.close_tree(false);
        self.section = Section::Body;
        if let Some(zone) = leak.zone {
            // Zones are not kept, but a zone name that is not text is worth a warning.
            if !zone.is_ascii() {
                self.decode(zone, no);
            }
        }
        self.pending = Some(PendingLeak {
            line: no,
            address: leak.address,
            size: leak.size,
            type_name: leak.type_name,
            stack: None,
            more_frames: Vec::new(),
        });
        true
    }

    fn call_stack(&mut self, frames_text: &'a [u8], no: u64) -> bool {
        let Some(pending) = self.pending.as_ref() else {
            return false;
        };
        if pending.stack.is_some() || !pending.more_frames.is_empty() {
            return false;
        }
        let index = match self.stack_texts.get(frames_text) {
            Some(&index) => index,
            None => {
                let mut frames = Vec::new();
                for text in list::frame_texts(frames_text) {
                    frames.push(self.list_frame(text, no));
                }
                let index = self.line_stacks.len();
                self.line_stacks.push(LineStack {
                    frames,
                    stack: None,
                });
                self.stack_texts.insert(frames_text, index);
                index
            }
        };
        if let Some(pending) = self.pending.as_mut() {
            pending.stack = Some(index);
        }
        self.any_call_stack = true;
        self.last_stack_line = no;
        self.last_stack_open = frames_text.ends_with(b"|");
        true
    }

    fn list_frame(&mut self, text: &'a [u8], no: u64) -> FrameId {
        let parts = list::list_frame(text);
        let frame = Frame {
            function: parts.symbol.map(|s| self.text(s, no)),
            module: parts.image.map(|i| self.text(i, no)),
            address: parts.address,
            module_offset: None,
            file: parts.file.map(|f| self.text(f, no)),
            line: parts.line,
        };
        self.builder.intern_frame(frame)
    }

    fn commit_leak(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let stack = match (pending.stack, pending.more_frames.is_empty()) {
            (None, true) => None,
            (None, false) => Some(self.builder.intern_stack(pending.more_frames)),
            (Some(index), true) => {
                let line_stack = &mut self.line_stacks[index];
                match line_stack.stack {
                    Some(stack) => Some(stack),
                    None => {
                        let stack = self.builder.intern_stack(line_stack.frames.clone());
                        line_stack.stack = Some(stack);
                        Some(stack)
                    }
                }
            }
            (Some(index), false) => {
                let mut frames = self.line_stacks[index].frames.clone();
                frames.extend(pending.more_frames);
                Some(self.builder.intern_stack(frames))
            }
        };
        let type_name = pending.type_name.map(|t| self.decode(t, pending.line));
        self.builder.add_leak(
            stack,
            LeakKind::RootLeak,
            type_name.as_deref(),
            1,
            pending.size,
            Some(pending.address),
        );
        self.listed_blocks += 1;
        self.listed_bytes = self.listed_bytes.saturating_add(pending.size);
    }

    fn stack_header(&mut self, stack: StackHeader<'a>, no: u64) {
        self.commit_leak();
        self.close_tree(false);
        self.group = Some(StackGroup {
            line: no,
            instances: stack.instances,
            frames: Vec::new(),
            stack: None,
            roots: 0,
        });
        self.tree = TreeCounts::default();
        self.section = Section::StackFrames;
        self.saw_groups = true;
    }

    fn numbered_frame(&mut self, parts: NumberedFrame<'a>, no: u64) {
        let frame = Frame {
            function: parts.symbol.map(|s| self.text(s, no)),
            module: parts.image.map(|i| self.text(i, no)),
            address: Some(parts.address),
            module_offset: None,
            file: parts.file.map(|f| self.text(f, no)),
            line: parts.line,
        };
        let id = self.builder.intern_frame(frame);
        if let Some(group) = self.group.as_mut() {
            group.frames.push((parts.index, id));
        }
    }

    /// `====`: the group's frames are complete; its tree follows.
    fn separator(&mut self) -> bool {
        if self.section != Section::StackFrames {
            return false;
        }
        self.section = Section::Body;
        let Some(group) = self.group.as_mut() else {
            return false;
        };
        // Printed from the highest index (outermost) down to 0 (the allocator); keep
        // outermost first whatever order the lines came in.
        group
            .frames
            .sort_by_key(|&(index, _)| std::cmp::Reverse(index));
        let frames: Vec<FrameId> = group.frames.iter().map(|&(_, id)| id).collect();
        let stack = self.builder.intern_stack(frames);
        if let Some(group) = self.group.as_mut() {
            group.stack = Some(stack);
        }
        self.tree = TreeCounts::default();
        true
    }

    fn node(&mut self, node: Node<'a>, no: u64) {
        self.commit_leak();
        self.saw_tree = true;
        if node.marker == Marker::CycleBackTo {
            return;
        }
        let is_root = self
            .tree
            .root_indent
            .is_none_or(|indent| node.indent <= indent);
        let (kind, stack) = if is_root {
            self.close_root(false);
            self.tree.root_indent = Some(node.indent);
            self.tree.pending = node.count.map(|c| (c.saturating_sub(1), no));
            let stack = match self.group.as_mut() {
                Some(group) => {
                    group.roots += 1;
                    group.stack
                }
                None => None,
            };
            let kind = match node.marker {
                Marker::RootCycle => LeakKind::RootCycle,
                _ => LeakKind::RootLeak,
            };
            (kind, stack)
        } else {
            match self.tree.pending.as_mut() {
                Some((0, root_line)) => {
                    let root_line = *root_line;
                    self.builder
                        .diagnostics()
                        .report(COUNT_MISMATCH, Position::Line(no), || {
                            format!("more nodes than the root at line {root_line} counts")
                        });
                }
                Some((left, _)) => *left -= 1,
                None => {}
            }
            (node.marker.leak_kind(), None)
        };
        self.tree.seen += 1;
        let type_name = node.type_name.map(|t| self.decode(t, no));
        self.builder.add_leak(
            stack,
            kind,
            type_name.as_deref(),
            1,
            node.bytes,
            node.address,
        );
        self.listed_blocks += 1;
        self.listed_bytes = self.listed_bytes.saturating_add(node.bytes);
    }

    /// Checks that the current root's subtree had as many nodes as its count says.
    fn close_root(&mut self, at_end: bool) {
        if let Some((left, line)) = self.tree.pending.take()
            && left > 0
        {
            self.count_problem(at_end, line, || {
                format!("the root at line {line} counts {left} more nodes than follow it")
            });
        }
    }

    fn close_total(&mut self, at_end: bool) {
        if let Some((count, line)) = self.tree.total.take()
            && self.tree.seen < count
        {
            let seen = self.tree.seen;
            self.count_problem(at_end, line, || {
                format!("<< TOTAL >> at line {line} counts {count} nodes, {seen} follow")
            });
        }
    }

    fn close_tree(&mut self, at_end: bool) {
        self.close_root(at_end);
        self.close_total(at_end);
        if let Some(group) = self.group.take() {
            if group.stack.is_none() {
                self.count_problem(at_end, group.line, || {
                    "a STACK OF block without its `====` line and tree".into()
                });
            } else if group.roots < group.instances {
                let (line, roots, instances) = (group.line, group.roots, group.instances);
                self.count_problem(at_end, line, || {
                    format!("STACK OF {instances} instances at line {line} lists {roots} roots")
                });
            }
        }
        self.tree = TreeCounts::default();
    }

    /// A tree shorter than its counts: cut off when the report ends there, else inconsistent.
    fn count_problem(&mut self, at_end: bool, line: u64, detail: impl FnOnce() -> String) {
        let what = if at_end { CUT_OFF } else { COUNT_MISMATCH };
        if at_end {
            self.cut_at.get_or_insert(line);
        }
        self.builder
            .diagnostics()
            .report(what, Position::Line(line), detail);
    }

    pub(super) fn finish(
        mut self,
        last_line: u64,
        ends_mid_line: bool,
        programs: &[(u32, &'a [u8])],
    ) -> NativeReport {
        let report_incomplete = self
            .leak_summary
            .is_some_and(|(leaks, _)| self.listed_blocks < leaks);
        if let Some(pending) = self.pending.as_ref() {
            let cut_in_stack = self.last_stack_open && self.last_stack_line == last_line;
            let stack_missing = self.any_call_stack && pending.stack.is_none();
            if cut_in_stack || (report_incomplete && (stack_missing || ends_mid_line)) {
                let line = pending.line;
                self.cut_at.get_or_insert(line);
                self.builder
                    .diagnostics()
                    .report(CUT_OFF, Position::Line(line), || {
                        "the report ends inside this leak's block".into()
                    });
            }
        }
        self.commit_leak();
        self.close_tree(true);
        let format = self.version.unwrap_or(if self.saw_groups {
            NativeFormat::Leaks4Stacks
        } else if self.saw_tree {
            NativeFormat::Leaks4
        } else {
            NativeFormat::Leaks1
        });
        self.builder.set_format(format);
        if let Some((leaks, bytes)) = self.leak_summary {
            let (nodes, malloced_kb) = match self.nodes {
                Some((nodes, kb)) => (Some(nodes), Some(kb)),
                None => (None, None),
            };
            self.builder.set_summary(ReportSummary {
                leaks,
                bytes,
                nodes,
                malloced_kb,
            });
            self.compare_with_summary(leaks, bytes);
        }
        let header = self.builder.header_mut();
        if header.tool.is_none() {
            header.tool = Some("leaks".to_owned());
        }
        if header.process.is_none()
            && let Some(pid) = header.pid
            && let Some((_, program)) = programs.iter().rev().find(|(p, _)| *p == pid)
        {
            header.process = Some(String::from_utf8_lossy(program).into_owned());
        }
        let mut report = self.builder.finish();
        images::place_frames(&mut report.frames, &mut self.images);
        report
    }

    /// An excerpt or a cut-off report lists fewer leaks than its summary counts: say so.
    fn compare_with_summary(&mut self, leaks: u64, bytes: u64) {
        let (listed, listed_bytes) = (self.listed_blocks, self.listed_bytes);
        let excluded = self.excluded.unwrap_or(0);
        if listed > leaks || (listed == leaks && listed_bytes != bytes) {
            let first = self.first_line;
            self.builder
                .diagnostics()
                .report(SUMMARY_MISMATCH, Position::Line(first), || {
                    format!(
                        "{listed} leaks of {listed_bytes} bytes listed, \
                         the summary says {leaks} leaks of {bytes} bytes"
                    )
                });
            return;
        }
        if listed + excluded >= leaks {
            return;
        }
        let why = match self.cut_at {
            Some(line) => format!("the report is cut off at line {line}"),
            None => "an excerpt".to_owned(),
        };
        let notice = format!(
            "lists {listed} of the {leaks} leaks ({listed_bytes} of {bytes} bytes) its summary \
             counts: {why}; the totals come from the summary"
        );
        self.builder.header_mut().notices.push(notice);
    }
}
