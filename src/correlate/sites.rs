//! Native leak sites across native snapshots: each site's blocks and bytes per snapshot, and
//! what kind of code the site is in (the Ruby runtime, FFI glue, a library).
//!
//! Stage: correlator (native side). Reads [`crate::evidence::NativeSnapshot`]s through
//! [`crate::native::sites`].

use crate::evidence::resolve::Library;
use crate::evidence::{Evidence, NativeSnapshot};
use crate::native::{Frame, LeakKind, SiteKey};
use std::collections::{BTreeSet, HashMap};

/// One allocation site's leaked blocks and bytes in each native snapshot, oldest first.
#[derive(Debug, Clone)]
pub struct SiteSeries {
    pub key: SiteKey,
    pub frame: Frame,
    /// Representative stack, outermost first (from the newest report that has the site).
    pub stack: Vec<Frame>,
    pub kinds: BTreeSet<LeakKind>,
    pub blocks: Vec<u64>,
    pub bytes: Vec<u64>,
    /// Its leaked blocks stayed the same across the snapshots taken before exit (there were
    /// some) and grew in the ones taken as the program exited.
    pub grew_only_at_exit: bool,
}

impl SiteSeries {
    /// Last minus first, saturated to the i64 range (sizes come from input files).
    pub fn delta_bytes(&self) -> i64 {
        crate::num::difference(
            self.bytes.last().copied().unwrap_or(0),
            self.bytes.first().copied().unwrap_or(0),
        )
    }

    pub fn delta_blocks(&self) -> i64 {
        crate::num::difference(
            self.blocks.last().copied().unwrap_or(0),
            self.blocks.first().copied().unwrap_or(0),
        )
    }

    /// (bytes, blocks) the site accounts for: its growth over time, or the single report's
    /// total.
    pub fn measure(&self, over_time: bool) -> (i64, i64) {
        if over_time {
            (self.delta_bytes(), self.delta_blocks())
        } else {
            (
                crate::num::saturating_i64(self.last_bytes()),
                crate::num::saturating_i64(self.last_blocks()),
            )
        }
    }

    pub fn last_bytes(&self) -> u64 {
        self.bytes.last().copied().unwrap_or(0)
    }

    pub fn last_blocks(&self) -> u64 {
        self.blocks.last().copied().unwrap_or(0)
    }

    /// The site as findings and tables name it.
    pub fn owner(&self) -> super::finding::NativeOwner {
        super::finding::NativeOwner {
            function: self.key.function.clone(),
            library: self.library().map(str::to_owned),
        }
    }

    /// Gained blocks between the first and last snapshot and never shrank on the way.
    pub fn is_growing(&self) -> bool {
        self.bytes.len() >= 2
            && self.delta_blocks() > 0
            && self.delta_bytes() > 0
            && self.bytes.windows(2).all(|w| w[1] >= w[0])
    }

    /// Grew at every step over three or more snapshots.
    pub fn grows_at_every_step(&self) -> bool {
        self.bytes.len() >= 3 && self.bytes.windows(2).all(|w| w[1] > w[0])
    }

    /// Index of the site frame in [`SiteSeries::stack`].
    pub fn site_index(&self) -> Option<usize> {
        let refs: Vec<&Frame> = self.stack.iter().collect();
        crate::native::allocation_frame(&refs)
    }

    /// The site's library, or failing that the nearest library named on the way outward.
    pub fn library(&self) -> Option<&str> {
        if let Some(l) = self.frame.library() {
            return Some(l);
        }
        let site = self.site_index()?;
        self.stack[..=site].iter().rev().find_map(Frame::library)
    }

    /// Frames from the site outward (toward `main`), the site first.
    pub fn outward(&self) -> impl Iterator<Item = &Frame> {
        let end = self.site_index().map(|i| i + 1).unwrap_or(0);
        self.stack[..end].iter().rev()
    }

    /// Allocations of the Ruby runtime itself: the site is in libruby or the ruby binary
    /// (or is an `rb_*`/`ruby_*` function of an unnamed image) and no FFI call is on the stack.
    pub fn is_runtime(&self) -> bool {
        is_runtime_frame(&self.frame) && !self.stack.iter().any(is_ffi_frame)
    }

    /// Blocks the runtime allocated (the site is in libruby or the ruby binary) that the checks
    /// before exit did not find lost (the site did not grow while the program ran) and the
    /// reports taken at exit did, whoever asked the runtime for the memory. Such a block
    /// belongs to a Ruby object or a runtime structure that lived until the end (an object's
    /// data made by `rb_data_object_zalloc` for ffi_c.so, a buffer from `ruby_xmalloc`), and is
    /// lost because the runtime drops its heap at exit without freeing everything. A runtime site is every allocation of one allocator function
    /// of the runtime, so its representative stack is one stack of many: an FFI frame on it
    /// says nothing about the rest. A block lost while the program runs is judged like any
    /// other site.
    pub fn is_runtime_at_exit(&self) -> bool {
        self.grew_only_at_exit && is_runtime_frame(&self.frame)
    }
}

/// A frame in libruby or the ruby binary, or an `rb_*`/`ruby_*` function of an unnamed image.
fn is_runtime_frame(frame: &Frame) -> bool {
    match frame.library() {
        Some(lib) => is_runtime_library(lib),
        None => frame.function.as_deref().is_some_and(is_runtime_function),
    }
}

/// (bytes, blocks) of several sites together ([`SiteSeries::measure`]), saturating.
pub fn measure_all(sites: &[&SiteSeries], over_time: bool) -> (i64, i64) {
    sites
        .iter()
        .map(|s| s.measure(over_time))
        .fold((0i64, 0i64), |a, b| {
            (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
        })
}

/// `libruby.so.3.1`, `libruby-3.1.so.3.1`, `ruby`, `ruby3.1`, `rbx`, `libruby.3.3.dylib`.
pub fn is_runtime_library(lib: &str) -> bool {
    let base = lib.rsplit('/').next().unwrap_or(lib);
    base.starts_with("libruby")
        || base == "rbx"
        || base.strip_prefix("ruby").is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        })
}

fn is_runtime_function(name: &str) -> bool {
    name.starts_with("rb_")
        || name.starts_with("ruby_")
        || name.starts_with("rubinius::")
        || name.starts_with("vm_")
        || name.starts_with("gc_")
}

/// A frame of the FFI machinery: libffi, the ffi gem's `ffi_c.so`, or their call functions.
pub fn is_ffi_frame(frame: &Frame) -> bool {
    if let Some(lib) = frame.library()
        && (lib.starts_with("ffi_c.") || lib.starts_with("libffi"))
    {
        return true;
    }
    frame.function.as_deref().is_some_and(|f| {
        f.starts_with("ffi_call") || f.starts_with("ffi_closure") || f.starts_with("rbffi_")
    })
}

/// Every site of every snapshot, with its series; ordered by growth, then by newest bytes.
pub fn site_series(native: &[NativeSnapshot]) -> Vec<SiteSeries> {
    let n = native.len();
    let mut index: HashMap<SiteKey, usize> = HashMap::new();
    let mut out: Vec<SiteSeries> = Vec::new();
    for (i, snap) in native.iter().enumerate() {
        for site in crate::native::sites(&snap.report) {
            let at = *index.entry(site.key.clone()).or_insert_with(|| {
                out.push(SiteSeries {
                    key: site.key.clone(),
                    frame: site.frame.clone(),
                    stack: Vec::new(),
                    kinds: BTreeSet::new(),
                    blocks: vec![0; n],
                    bytes: vec![0; n],
                    grew_only_at_exit: false,
                });
                out.len() - 1
            });
            let s = &mut out[at];
            s.blocks[i] += site.blocks;
            s.bytes[i] += site.bytes;
            s.kinds.extend(site.kinds.iter().copied());
            if !site.stack.is_empty() {
                s.stack = site.stack;
                s.frame = site.frame;
            }
        }
    }
    for s in &mut out {
        let before: Vec<u64> = (s.blocks.iter().zip(native))
            .filter(|(_, snap)| !snap.at_exit)
            .map(|(&b, _)| b)
            .collect();
        s.grew_only_at_exit = before.first().is_some_and(|&first| {
            before.iter().all(|&b| b == first)
                && (s.blocks.iter().zip(native)).any(|(&b, snap)| snap.at_exit && b > first)
        });
    }
    out.sort_by(|a, b| {
        b.delta_bytes()
            .cmp(&a.delta_bytes())
            .then_with(|| b.last_bytes().cmp(&a.last_bytes()))
            .then_with(|| a.key.cmp(&b.key))
    });
    out
}

/// Sites whose libraries are looked up for their exports.
const SITES_FOR_EXPORTS: usize = 50;

/// The libraries whose exports the missing-release rule looks up when no agent sidecar lists
/// the FFI bindings (bare files, or a run whose agent failed), for the evidence to resolve:
/// a library named by path, else the stem of its name, else the first word of the function
/// (`zmq_msg_init` → `zmq`).
pub fn libraries_named(ev: &Evidence) -> Vec<Library> {
    if !ev.sidecars.is_empty() {
        return Vec::new();
    }
    site_series(&ev.native)
        .iter()
        .take(SITES_FOR_EXPORTS)
        .filter_map(|s| match s.frame.module.as_deref() {
            Some(m) if m.contains('/') => Some(Library::Path(m.into())),
            _ => s
                .frame
                .library()
                .map(super::names::library_stem)
                .or_else(|| {
                    s.key
                        .function
                        .split_once('_')
                        .map(|(w, _)| w.to_ascii_lowercase())
                })
                .filter(|stem| stem.len() >= 2)
                .map(Library::Stem),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::native::{NativeFormat, NativeReport, ReportBuilder};

    /// A frame `function` in `module` (a path or a name; `None` for the seed's bare names).
    pub fn frame(function: &str, module: Option<&str>) -> Frame {
        Frame {
            function: Some(function.into()),
            module: module.map(str::to_owned),
            ..Frame::default()
        }
    }

    /// A report with one leak record per `(stack, blocks, bytes)`.
    pub fn report(sequence: u32, leaks: &[(Vec<Frame>, u64, u64)]) -> NativeReport {
        let mut b = ReportBuilder::new("native.txt", NativeFormat::Lsan, sequence);
        for (stack, blocks, bytes) in leaks {
            let ids = stack.iter().map(|f| b.intern_frame(f.clone())).collect();
            let s = b.intern_stack(ids);
            b.add_leak(Some(s), LeakKind::Direct, None, *blocks, *bytes, None);
        }
        b.finish()
    }

    fn ruby_stack() -> Vec<Frame> {
        vec![
            frame("main", Some("/usr/bin/ruby3.1")),
            frame("rb_ary_push", Some("/usr/lib/libruby-3.1.so.3.1")),
            frame("malloc", Some("/usr/lib/liblsan.so.0")),
        ]
    }

    fn ffi_stack() -> Vec<Frame> {
        vec![
            frame("rb_funcall", Some("/usr/lib/libruby-3.1.so.3.1")),
            frame("ffi_call_unix64", Some("/usr/lib/libffi.so.8")),
            frame("widget_create", Some("/tmp/libwidget.so")),
            frame("malloc", Some("/usr/lib/liblsan.so.0")),
        ]
    }

    #[test]
    fn series_follow_sites_across_snapshots() {
        let snaps: Vec<NativeSnapshot> = [(10, 640), (30, 1920), (50, 3200)]
            .iter()
            .enumerate()
            .map(|(i, &(blocks, bytes))| NativeSnapshot {
                t: Some(i as f64),
                snapshot: Some(i as u32 + 1),
                at_exit: false,
                report: report(
                    i as u32,
                    &[(ffi_stack(), blocks, bytes), (ruby_stack(), 3, 96)],
                ),
            })
            .collect();
        let series = site_series(&snaps);
        assert_eq!(series.len(), 2);
        let w = &series[0];
        assert_eq!(w.key.function, "widget_create");
        assert_eq!(w.blocks, [10, 30, 50]);
        assert_eq!((w.delta_blocks(), w.delta_bytes()), (40, 2560));
        assert!(w.is_growing() && w.grows_at_every_step());
        assert_eq!(w.library(), Some("libwidget.so"));
        assert!(!w.is_runtime());
        let r = &series[1];
        assert_eq!(r.key.function, "rb_ary_push");
        assert!(r.is_runtime() && !r.is_growing());
    }

    #[test]
    fn runtime_libraries_and_ffi_frames() {
        for lib in [
            "libruby-3.1.so.3.1",
            "libruby.so.3.4",
            "ruby",
            "ruby3.1",
            "rbx",
        ] {
            assert!(is_runtime_library(lib), "{lib}");
        }
        for lib in ["librubberband.so", "rubyish", "libzmq.so.5"] {
            assert!(!is_runtime_library(lib), "{lib}");
        }
        assert!(is_ffi_frame(&frame("x", Some("/var/lib/gems/ffi_c.so"))));
        assert!(is_ffi_frame(&frame("ffi_call_unix64", None)));
    }
}
