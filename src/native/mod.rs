//! Native evidence: whatever tool produced it (`leaks`, LeakSanitizer, valgrind), a report
//! becomes a [`NativeReport`] of leak records with interned stacks, and reports become
//! [`LeakSite`]s keyed by their allocation site.
//!
//! Stage: parsers and evidence model. Readers live in the submodules; this file holds the
//! model they all fill in, the rule that picks the allocation site out of a stack, and growth
//! between two reports.

pub mod bytes;
pub mod leaks;
pub mod lsan;
pub mod malloc_info;
pub mod symbolize;
pub mod valgrind;

use crate::detect::Kind;
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use crate::source::Input;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::path::PathBuf;

/// Reads a native report file of any supported kind into its reports, oldest first (an LSan
/// log or a vgdb session can hold several); `kind` is what [`crate::detect`] found it to be.
pub fn parse_file(path: &Path, kind: Kind) -> Result<Vec<NativeReport>> {
    let input = Input::open(path)?;
    parse_bytes(path, kind, &input)
}

/// Parses bytes already read, of a known kind.
pub fn parse_bytes(path: &Path, kind: Kind, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    match kind {
        Kind::LeaksReport => leaks::parse(path, bytes),
        Kind::LsanLog => lsan::parse(path, bytes),
        Kind::ValgrindXml => valgrind::parse_xml(path, bytes),
        Kind::ValgrindText => valgrind::parse_text(path, bytes),
        other => Err(Error::input(
            path,
            Position::Whole,
            format!("a {}, not a native leak report", other.describe()),
        )),
    }
}

/// One stack frame as far as the tool could tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    /// Symbol as printed (demangled by the tool), or found by [`symbolize`].
    pub function: Option<String>,
    /// Image/library: a path (`/usr/lib/x86_64-linux-gnu/libzmq.so.5`) or a name (`libzmq.5.dylib`).
    pub module: Option<String>,
    /// Absolute instruction address, when printed.
    pub address: Option<u64>,
    /// Offset inside `module`, when printed (`(libzmq.so.5+0x3194a)`) or computed from a map.
    pub module_offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Frame {
    pub fn function(name: &str) -> Frame {
        Frame {
            function: Some(name.to_owned()),
            ..Frame::default()
        }
    }

    /// The module's file name without directories: `libzmq.so.5`.
    pub fn library(&self) -> Option<&str> {
        self.module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m))
    }

    /// A name for the frame even when unsymbolized: `fn`, `libzmq.so.5+0x3194a` or `0x1234`.
    pub fn label(&self) -> String {
        if let Some(f) = &self.function {
            return f.clone();
        }
        match (self.library(), self.module_offset, self.address) {
            (Some(m), Some(off), _) => format!("{m}+{off:#x}"),
            (Some(m), None, Some(a)) => format!("{m}@{a:#x}"),
            (None, _, Some(a)) => format!("{a:#x}"),
            (Some(m), None, None) => format!("{m}+?"),
            (None, _, None) => "???".to_owned(),
        }
    }
}

/// Index into [`NativeReport::frames`].
pub type FrameId = u32;
/// Index into [`NativeReport::stacks`].
pub type StackId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// LSan "Direct leak".
    Direct,
    /// LSan "Indirect leak".
    Indirect,
    /// valgrind "definitely lost".
    Definite,
    /// valgrind "indirectly lost".
    IndirectlyLost,
    /// valgrind "possibly lost".
    Possible,
    /// valgrind "still reachable" (only when asked for).
    Reachable,
    /// `leaks` 4.0 `ROOT LEAK:` (also list-format `Leak:` entries).
    RootLeak,
    /// `leaks` 4.0 `ROOT CYCLE:`.
    RootCycle,
    /// `leaks` 4.0 node inside a root's tree (kept alive only by a leaked root).
    Interior,
}

impl LeakKind {
    /// Whether the block is leaked on its own (not only through another leaked block).
    pub fn is_primary(self) -> bool {
        matches!(
            self,
            LeakKind::Direct | LeakKind::Definite | LeakKind::RootLeak | LeakKind::RootCycle
        )
    }
}

/// Leaks with identical stack, kind and type, merged: memory does not grow with their number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeakRecord {
    pub stack: Option<StackId>,
    pub kind: LeakKind,
    pub type_name: Option<String>,
    pub blocks: u64,
    pub bytes: u64,
    /// Address of the first block seen, when printed.
    pub first_address: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NativeFormat {
    /// `leaks` without a version line (before 10.6.3).
    Leaks1,
    Leaks2,
    Leaks3,
    Leaks4,
    /// `4.0, multi-line stacks`.
    Leaks4Stacks,
    Lsan,
    ValgrindXml,
    ValgrindText,
}

/// What the report says about the process and the tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReportHeader {
    pub process: Option<String>,
    pub pid: Option<u32>,
    pub path: Option<String>,
    pub os_version: Option<String>,
    pub tool: Option<String>,
    pub tool_version: Option<String>,
    pub date: Option<String>,
    pub physical_footprint: Option<u64>,
    pub physical_footprint_peak: Option<u64>,
    /// Informational notices (e.g. "not debuggable"), one line each.
    pub notices: Vec<String>,
}

/// The tool's own totals, as printed (used to check the parse and shown in reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    pub leaks: u64,
    pub bytes: u64,
    /// `leaks`: "N nodes malloced".
    pub nodes: Option<u64>,
    /// `leaks`: "for N KB".
    pub malloced_kb: Option<u64>,
}

/// One native leak report (a `leaks` run, one LSan check, one valgrind leak search).
#[derive(Debug, Clone, Serialize)]
pub struct NativeReport {
    pub path: PathBuf,
    pub format: NativeFormat,
    /// 0-based position of this report within its file (LSan logs hold one per check).
    pub sequence: u32,
    pub header: ReportHeader,
    pub summary: Option<ReportSummary>,
    pub frames: Vec<Frame>,
    /// Outermost frame first.
    pub stacks: Vec<Vec<FrameId>>,
    pub leaks: Vec<LeakRecord>,
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

impl NativeReport {
    /// A report that lists no leak (a check that found none and printed nothing).
    pub fn empty(path: PathBuf, format: NativeFormat) -> NativeReport {
        NativeReport {
            path,
            format,
            sequence: 0,
            header: ReportHeader::default(),
            summary: None,
            frames: Vec::new(),
            stacks: Vec::new(),
            leaks: Vec::new(),
            diagnostics: Diagnostics::default(),
        }
    }

    pub fn stack(&self, id: StackId) -> impl Iterator<Item = &Frame> {
        self.stacks
            .get(id as usize)
            .into_iter()
            .flatten()
            .filter_map(|&f| self.frames.get(f as usize))
    }

    pub fn total_blocks(&self) -> u64 {
        self.leaks
            .iter()
            .fold(0, |sum, l| sum.saturating_add(l.blocks))
    }

    pub fn total_bytes(&self) -> u64 {
        self.leaks
            .iter()
            .fold(0, |sum, l| sum.saturating_add(l.bytes))
    }

    /// Leaks the tool's summary counts but the report does not list, as (blocks, bytes): an
    /// excerpt, a report cut off, or leaks excluded from printing. `None` when all are listed.
    pub fn unlisted(&self) -> Option<(u64, u64)> {
        let summary = self.summary?;
        let (blocks, bytes) = (self.total_blocks(), self.total_bytes());
        (summary.leaks > blocks)
            .then(|| (summary.leaks - blocks, summary.bytes.saturating_sub(bytes)))
    }
}

/// Builds a [`NativeReport`], interning frames and stacks and merging identical leaks.
pub struct ReportBuilder {
    report: NativeReport,
    frame_index: HashMap<Frame, FrameId>,
    stack_index: HashMap<Vec<FrameId>, StackId>,
    leak_index: HashMap<(Option<StackId>, LeakKind, Option<String>), usize>,
}

impl ReportBuilder {
    pub fn new(path: impl Into<PathBuf>, format: NativeFormat, sequence: u32) -> Self {
        let path = path.into();
        ReportBuilder {
            report: NativeReport {
                diagnostics: Diagnostics::new(&path),
                path,
                format,
                sequence,
                header: ReportHeader::default(),
                summary: None,
                frames: Vec::new(),
                stacks: Vec::new(),
                leaks: Vec::new(),
            },
            frame_index: HashMap::new(),
            stack_index: HashMap::new(),
            leak_index: HashMap::new(),
        }
    }

    pub fn header_mut(&mut self) -> &mut ReportHeader {
        &mut self.report.header
    }

    pub fn set_format(&mut self, format: NativeFormat) {
        self.report.format = format;
    }

    pub fn format(&self) -> NativeFormat {
        self.report.format
    }

    pub fn set_summary(&mut self, summary: ReportSummary) {
        self.report.summary = Some(summary);
    }

    pub fn summary_mut(&mut self) -> &mut Option<ReportSummary> {
        &mut self.report.summary
    }

    pub fn diagnostics(&mut self) -> &mut Diagnostics {
        &mut self.report.diagnostics
    }

    pub fn intern_frame(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.frame_index.get(&frame) {
            return id;
        }
        let id = self.report.frames.len() as FrameId;
        self.report.frames.push(frame.clone());
        self.frame_index.insert(frame, id);
        id
    }

    /// Appends a frame without looking for an equal one, for readers that deduplicate frames
    /// themselves (the LSan reader keys them by their text): hashing every frame again costs
    /// more than the whole parse. Do not mix with [`ReportBuilder::intern_frame`] for equal frames.
    pub fn push_frame(&mut self, frame: Frame) -> FrameId {
        let id = self.report.frames.len() as FrameId;
        self.report.frames.push(frame);
        id
    }

    /// Interns a stack given outermost frame first.
    pub fn intern_stack(&mut self, frames: Vec<FrameId>) -> StackId {
        if let Some(&id) = self.stack_index.get(&frames) {
            return id;
        }
        let id = self.report.stacks.len() as StackId;
        self.report.stacks.push(frames.clone());
        self.stack_index.insert(frames, id);
        id
    }

    /// The frames of a stack interned here, outermost first.
    pub fn stack_frames(&self, id: StackId) -> &[FrameId] {
        self.report
            .stacks
            .get(id as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Adds `blocks` leaked blocks totalling `bytes`, merged with earlier identical leaks.
    pub fn add_leak(
        &mut self,
        stack: Option<StackId>,
        kind: LeakKind,
        type_name: Option<&str>,
        blocks: u64,
        bytes: u64,
        address: Option<u64>,
    ) {
        let key = (stack, kind, type_name.map(str::to_owned));
        if let Some(&i) = self.leak_index.get(&key) {
            let rec = &mut self.report.leaks[i];
            rec.blocks = rec.blocks.saturating_add(blocks);
            rec.bytes = rec.bytes.saturating_add(bytes);
            return;
        }
        self.leak_index.insert(key, self.report.leaks.len());
        self.report.leaks.push(LeakRecord {
            stack,
            kind,
            type_name: type_name.map(str::to_owned),
            blocks,
            bytes,
            first_address: address,
        });
    }

    pub fn leak_count(&self) -> usize {
        self.report.leaks.len()
    }

    pub fn finish(self) -> NativeReport {
        self.report
    }
}

/// Frames that only allocate on behalf of their caller. The allocation site is the first frame
/// above all of them (innermost side), e.g. `zmq_msg_init_size` above `malloc` and
/// `malloc_zone_malloc`.
pub fn is_allocator_frame(frame: &Frame) -> bool {
    if let Some(lib) = frame.library()
        && (lib.starts_with("libsystem_malloc")
            || lib.starts_with("liblsan")
            || lib.starts_with("libasan")
            || lib.starts_with("vgpreload_memcheck"))
    {
        return true;
    }
    let Some(name) = frame.function.as_deref() else {
        return false;
    };
    is_allocator_name(name)
}

fn is_allocator_name(name: &str) -> bool {
    // Strip the prefixes sanitizer interceptors and glibc internals put in front of the name.
    let mut n = name.trim();
    for prefix in [
        "___interceptor_",
        "__interceptor_",
        "__GI___libc_",
        "__GI_",
        "__libc_",
    ] {
        if let Some(rest) = n.strip_prefix(prefix) {
            n = rest;
            break;
        }
    }
    const EXACT: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocf",
        "reallocarray",
        "valloc",
        "pvalloc",
        "memalign",
        "posix_memalign",
        "aligned_alloc",
        "strdup",
        "strndup",
        "__strdup",
        "__strndup",
        "wcsdup",
        "_malloc",
        "_calloc",
        "_realloc",
        "_Znwm",
        "_Znam",
        "_ZnwmRKSt9nothrow_t",
        "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t",
        "_ZnamSt11align_val_t",
        "xmalloc",
        "xcalloc",
        "xrealloc",
        "xstrdup",
    ];
    if EXACT.contains(&n) {
        return true;
    }
    const PREFIXES: &[&str] = &[
        "malloc_zone_",
        "_malloc_zone_",
        "malloc_type_",
        "_malloc_type_",
        "default_zone_",
        "nanov2_",
        "szone_",
        "operator new",
        "operator new[]",
        "ruby_xmalloc",
        "ruby_xcalloc",
        "ruby_xrealloc",
        "ruby_mimmalloc",
        "objspace_xmalloc",
        "objspace_xcalloc",
        "objspace_xrealloc",
        "objspace_malloc",
        "rb_gc_impl_malloc",
        "rb_gc_impl_calloc",
        "rb_gc_impl_realloc",
        "rb_xmalloc_mul_add",
        "rb_xcalloc_mul_add",
        "rb_xrealloc_mul_add",
        "rb_alloc_tmp_buffer",
        "__sanitizer_",
        "__asan_",
        "__lsan_",
    ];
    PREFIXES.iter().any(|p| n.starts_with(p))
}

/// Index (in an outermost-first stack) of the allocation-site frame: the innermost frame that
/// is not an allocator or allocation wrapper. `None` when every frame is an allocator.
pub fn allocation_frame(stack: &[&Frame]) -> Option<usize> {
    stack.iter().rposition(|f| !is_allocator_frame(f))
}

/// Identity of an allocation site across reports: function (or `lib+0xoff`) and library.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SiteKey {
    pub function: String,
    pub library: Option<String>,
}

/// Leaks of one or more reports grouped by allocation site.
#[derive(Debug, Clone, Serialize)]
pub struct LeakSite {
    pub key: SiteKey,
    /// The site frame itself (file/line when known).
    pub frame: Frame,
    /// A representative stack (the one with most bytes), outermost first.
    pub stack: Vec<Frame>,
    pub kinds: BTreeSet<LeakKind>,
    pub blocks: u64,
    pub bytes: u64,
    /// `sequence` numbers of the reports the site appears in.
    pub reports: BTreeSet<u32>,
}

impl LeakSite {
    /// Whether every block here is reported as only kept alive through another leaked block.
    pub fn only_secondary(&self) -> bool {
        self.kinds.iter().all(|k| !k.is_primary())
    }
}

/// Groups a report's leaks by allocation site, largest bytes first.
pub fn sites(report: &NativeReport) -> Vec<LeakSite> {
    let mut by_key: HashMap<SiteKey, (LeakSite, u64)> = HashMap::new();
    for rec in &report.leaks {
        let frames: Vec<&Frame> = match rec.stack {
            Some(id) => report.stack(id).collect(),
            None => Vec::new(),
        };
        let (key, frame) = match allocation_frame(&frames) {
            Some(i) => (site_key(frames[i]), frames[i].clone()),
            None => {
                let name = rec
                    .type_name
                    .clone()
                    .unwrap_or_else(|| "<no stack recorded>".to_owned());
                (
                    SiteKey {
                        function: name.clone(),
                        library: None,
                    },
                    Frame::function(&name),
                )
            }
        };
        let entry = by_key.entry(key.clone()).or_insert_with(|| {
            (
                LeakSite {
                    key,
                    frame,
                    stack: Vec::new(),
                    kinds: BTreeSet::new(),
                    blocks: 0,
                    bytes: 0,
                    reports: BTreeSet::new(),
                },
                0,
            )
        });
        let (site, best_stack_bytes) = entry;
        site.kinds.insert(rec.kind);
        site.blocks = site.blocks.saturating_add(rec.blocks);
        site.bytes = site.bytes.saturating_add(rec.bytes);
        site.reports.insert(report.sequence);
        if rec.bytes > *best_stack_bytes || site.stack.is_empty() {
            *best_stack_bytes = rec.bytes;
            site.stack = frames.iter().map(|f| (*f).clone()).collect();
        }
    }
    let mut out: Vec<LeakSite> = by_key.into_values().map(|(s, _)| s).collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
    out
}

fn site_key(frame: &Frame) -> SiteKey {
    SiteKey {
        function: frame.label(),
        library: frame.library().map(str::to_owned),
    }
}

/// How one site changed between two reports.
#[derive(Debug, Clone, Serialize)]
pub struct SiteGrowth {
    pub key: SiteKey,
    pub blocks_before: u64,
    pub bytes_before: u64,
    pub blocks_after: u64,
    pub bytes_after: u64,
}

impl SiteGrowth {
    pub fn delta_blocks(&self) -> i64 {
        crate::num::difference(self.blocks_after, self.blocks_before)
    }
    pub fn delta_bytes(&self) -> i64 {
        crate::num::difference(self.bytes_after, self.bytes_before)
    }
}

/// Matches sites by key; sorted by byte growth, largest first. Sites found only on one side
/// count zero on the other.
pub fn growth(before: &[LeakSite], after: &[LeakSite]) -> Vec<SiteGrowth> {
    let mut map: HashMap<&SiteKey, SiteGrowth> = HashMap::new();
    for s in before {
        let g = map.entry(&s.key).or_insert_with(|| empty_growth(&s.key));
        g.blocks_before = g.blocks_before.saturating_add(s.blocks);
        g.bytes_before = g.bytes_before.saturating_add(s.bytes);
    }
    for s in after {
        let g = map.entry(&s.key).or_insert_with(|| empty_growth(&s.key));
        g.blocks_after = g.blocks_after.saturating_add(s.blocks);
        g.bytes_after = g.bytes_after.saturating_add(s.bytes);
    }
    let mut out: Vec<SiteGrowth> = map.into_values().collect();
    out.sort_by(|a, b| {
        b.delta_bytes()
            .cmp(&a.delta_bytes())
            .then_with(|| a.key.cmp(&b.key))
    });
    out
}

fn empty_growth(key: &SiteKey) -> SiteGrowth {
    SiteGrowth {
        key: key.clone(),
        blocks_before: 0,
        bytes_before: 0,
        blocks_after: 0,
        bytes_after: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_stack() -> Vec<Frame> {
        [
            "thread_start",
            "_pthread_start",
            "thread_routine",
            "zmq::kqueue_t::loop()",
            "zmq::zmq_engine_t::in_event()",
            "zmq::decoder_t::eight_byte_size_ready()",
            "zmq_msg_init_size",
            "malloc",
            "malloc_zone_malloc",
        ]
        .iter()
        .map(|n| Frame::function(n))
        .collect()
    }

    #[test]
    fn allocation_site_skips_allocators_and_wrappers() {
        let stack = seed_stack();
        let refs: Vec<&Frame> = stack.iter().collect();
        assert_eq!(allocation_frame(&refs), Some(6));
        for name in [
            "_malloc_zone_calloc_instrumented_or_legacy",
            "operator new(unsigned long)",
            "__interceptor_malloc",
            "ruby_xmalloc2_body",
            "objspace_xmalloc0",
            "rb_gc_impl_calloc",
            "__GI___libc_malloc",
        ] {
            assert!(is_allocator_name(name), "{name}");
        }
        for name in ["zmq_msg_init_size", "rb_ary_new", "main", "mallocate_thing"] {
            assert!(!is_allocator_name(name), "{name}");
        }
        let lsan_frame = Frame {
            function: Some("something".into()),
            module: Some("/usr/lib/x86_64-linux-gnu/liblsan.so.0".into()),
            ..Frame::default()
        };
        assert!(is_allocator_frame(&lsan_frame));
    }

    #[test]
    fn identical_leaks_merge_and_sites_group() {
        let mut b = ReportBuilder::new("leak.out", NativeFormat::Leaks2, 0);
        let ids: Vec<FrameId> = seed_stack()
            .into_iter()
            .map(|f| b.intern_frame(f))
            .collect();
        let s1 = b.intern_stack(ids.clone());
        let s2 = b.intern_stack(ids);
        assert_eq!(s1, s2);
        for i in 0..1000 {
            b.add_leak(Some(s1), LeakKind::RootLeak, None, 1, 1536, Some(i));
        }
        assert_eq!(b.leak_count(), 1);
        let report = b.finish();
        assert_eq!(report.frames.len(), 9);
        let sites = sites(&report);
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].key.function, "zmq_msg_init_size");
        assert_eq!((sites[0].blocks, sites[0].bytes), (1000, 1_536_000));
        assert_eq!(sites[0].stack.len(), 9);
    }

    #[test]
    fn growth_matches_by_key() {
        let mk = |bytes: u64| {
            let mut b = ReportBuilder::new("x", NativeFormat::Lsan, 0);
            let f = b.intern_frame(Frame {
                function: Some("widget_create".into()),
                module: Some("/tmp/libwidget.so".into()),
                ..Frame::default()
            });
            let s = b.intern_stack(vec![f]);
            b.add_leak(Some(s), LeakKind::Direct, None, bytes / 64, bytes, None);
            sites(&b.finish())
        };
        let g = growth(&mk(640), &mk(6400));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].key.library.as_deref(), Some("libwidget.so"));
        assert_eq!((g[0].delta_blocks(), g[0].delta_bytes()), (90, 5760));
    }

    #[test]
    fn unsymbolized_frames_get_module_offset_labels() {
        let f = Frame {
            module: Some("/usr/lib/x86_64-linux-gnu/libzmq.so.5".into()),
            module_offset: Some(0x3194a),
            ..Frame::default()
        };
        assert_eq!(f.label(), "libzmq.so.5+0x3194a");
    }
}
