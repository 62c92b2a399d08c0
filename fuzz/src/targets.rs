//! One function per fuzz target: feed the input to a reader the way leakhunt's commands do, and
//! carry what was read on through the stages after it (histograms, sites, growth, the
//! correlator and the three renderers), so a bad record that survives reading is exercised too.
//!
//! Results are thrown away: the property checked is that nothing panics, hangs or allocates
//! past the bound (see the crate's documentation), whatever the input.

use crate::{scratch, split};
use leakhunt::bundle::{self, Manifest, Sidecar};
use leakhunt::cli::{Format, ReportFormat};
use leakhunt::cmd::analyze::load_evidence;
use leakhunt::correlate::{self, Options};
use leakhunt::detect::{self, Kind};
use leakhunt::diag::Diagnostics;
use leakhunt::evidence::Evidence;
use leakhunt::heap::cruby::reader::ReadOptions;
use leakhunt::heap::cruby::{diff as heap_diff, retainers};
use leakhunt::heap::{cruby, rubinius};
use leakhunt::native::symbolize::{ModuleMap, Symbolizer};
use leakhunt::native::{self, Frame, NativeFormat, NativeReport, ReportBuilder};
use leakhunt::report::{RenderOptions, paths::PathStyle, renderer};
use leakhunt::zst;
use std::path::Path;

/// Format detection on the bytes, and on a file (which also sniffs gzip content).
pub fn detect(data: &[u8]) {
    let _ = detect::detect_bytes(data);
    let path = scratch::file("input", data);
    let _ = detect::detect_path(&path);
}

/// CRuby dumps: histogram and summary, with read sizes taken from the first byte so chunk
/// seams, both worker counts and the long-line path are reached by small inputs.
pub fn cruby(data: &[u8]) {
    let (opts, body) = read_options(data);
    let path = scratch::file("heap.json", body);
    if let Ok(read) = cruby::histogram_with(&path, &opts) {
        let mut out = Vec::new();
        let _ = read.histogram.write_histo_rb(&mut out);
    }
    if let Ok(summary) = cruby::summarize_with(&path, &opts) {
        let _ = serde_json::to_vec(&summary);
    }
}

/// Content decoded past this is not read on: a small frame may claim gigabytes (a run of
/// RLE blocks), which is the format's right, not a bug.
const ZST_CONTENT_CAP: u64 = 8 << 20;

/// The zstd piece finder (`zst::walk`, which the parallel readers trust for where frames are)
/// on any bytes as a bundle's `heap-NNN.json.zst`; then what the readers do with what it found:
/// every frame decoded on its own, the file as one stream, and, when the content is small, the
/// CRuby reader on the file.
pub fn zst(data: &[u8]) {
    let path = scratch::file("heap-001.json.zst", data);
    let Ok(file) = std::fs::File::open(&path) else {
        return;
    };
    let len = data.len() as u64;
    let Ok(list) = zst::walk(&file, len) else {
        return;
    };
    // The frames it found lie inside the file, in order, apart.
    let mut end = 0u64;
    for f in &list.frames {
        assert!(
            f.offset >= end && f.offset.checked_add(f.len).is_some_and(|e| e <= len),
            "frame {f:?} after byte {end} of a {len}-byte file"
        );
        end = f.offset + f.len;
    }
    if let Some((at, _)) = &list.damage {
        assert!(*at <= len, "damage at {at} past the end ({len})");
    }
    let mut content = 0u64;
    for f in &list.frames {
        let bytes = &data[f.offset as usize..(f.offset + f.len) as usize];
        if let Ok(decoder) = zst::frame_decoder(bytes) {
            content += drain(decoder, ZST_CONTENT_CAP - content.min(ZST_CONTENT_CAP));
        }
    }
    let streamed = std::fs::File::open(&path)
        .and_then(zst::file_decoder)
        .map_or(0, |d| drain(d, ZST_CONTENT_CAP));
    if content < ZST_CONTENT_CAP
        && streamed < ZST_CONTENT_CAP
        && let Ok(read) = cruby::histogram(&path)
    {
        let mut out = Vec::new();
        let _ = read.histogram.write_histo_rb(&mut out);
    }
}

/// Reads `r` to its end, an error or `cap` bytes; returns the bytes read.
fn drain(mut r: impl std::io::Read, cap: u64) -> u64 {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    while total < cap {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    total
}

/// Rubinius dumps: from bytes, and from a file (gzip-transparent) as `analyze` reads them.
pub fn rubinius(data: &[u8]) {
    if let Ok(read) = rubinius::histogram_from_bytes(Path::new("fuzz.dump"), data) {
        let mut out = Vec::new();
        let _ = read.histogram.write_histo_rb(&mut out);
        let _ = leakhunt::heap::histogram::Histogram::diff(&read.histogram, &read.histogram);
    }
    let path = scratch::file("heap.rbx", data);
    let _ = rubinius::summarize(&path);
}

/// `diff A B [C]`: the input is two or three dumps.
pub fn diff(data: &[u8]) {
    let (opts, body) = read_options(data);
    let parts = split(body, 3);
    let a = scratch::file("a.json", parts[0]);
    let b = scratch::file("b.json", parts.get(1).copied().unwrap_or_default());
    let c = parts.get(2).map(|c| scratch::file("c.json", c));
    if let Ok(d) = heap_diff::diff_with(&a, &b, c.as_deref(), &|_| opts.clone()) {
        let _ = serde_json::to_vec(&d);
    }
}

/// `retainers DUMP --class NAME | --address 0xADDR`: the input's first line is the class name
/// or address asked for, the rest the dump.
pub fn retainers(data: &[u8]) {
    let (opts, body) = read_options(data);
    let (query, dump) = match body.iter().position(|&b| b == b'\n') {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &b""[..]),
    };
    let query = String::from_utf8_lossy(query);
    let path = scratch::file("heap.json", dump);
    match retainers::parse_address(&query) {
        Some(address) => {
            if let Ok(r) = retainers::for_address_with(&path, address, &opts) {
                let _ = serde_json::to_vec(&r);
            }
        }
        None => {
            if let Ok(r) = retainers::for_class_with(&path, &query, 8, &opts) {
                let _ = serde_json::to_vec(&r);
            }
        }
    }
}

/// macOS `leaks` reports, through the `leaks` command's sites, growth and both formats.
pub fn leaks(data: &[u8]) {
    native_report(Kind::LeaksReport, data);
}

/// LeakSanitizer logs (every check of the log), as [`leaks`].
pub fn lsan(data: &[u8]) {
    native_report(Kind::LsanLog, data);
}

/// valgrind `--xml=yes` output, as [`leaks`].
pub fn valgrind_xml(data: &[u8]) {
    native_report(Kind::ValgrindXml, data);
}

/// valgrind text (a log file or vgdb `leak_check` output), as [`leaks`].
pub fn valgrind_text(data: &[u8]) {
    native_report(Kind::ValgrindText, data);
}

/// How many inputs one symbolizer serves.
const SYMBOLIZER_INPUTS: u32 = 1024;

thread_local! {
    static SYMBOLIZER: std::cell::RefCell<(Symbolizer, u32)> =
        std::cell::RefCell::new((Symbolizer::new(), 0));
}

fn native_report(kind: Kind, data: &[u8]) {
    let Ok(mut reports) = native::parse_bytes(Path::new("fuzz.txt"), kind, data) else {
        return;
    };
    render_native(&mut reports, &[]);
}

fn render_native(reports: &mut [NativeReport], maps: &[ModuleMap]) {
    let resolved = SYMBOLIZER.with_borrow_mut(|(symbolizer, used)| {
        // Reading a library's symbols costs far more than parsing a report, so one symbolizer
        // serves many inputs, as one `leakhunt leaks` serves many reports; it is renewed now
        // and then so the modules it remembers (most names in fuzzed frames exist nowhere)
        // do not pile up.
        *used += 1;
        if *used > SYMBOLIZER_INPUTS {
            *symbolizer = Symbolizer::new();
            *used = 1;
        }
        leakhunt::cmd::leaks::resolve(symbolizer, reports, maps)
    });
    for format in [Format::Text, Format::Json] {
        let _ = leakhunt::cmd::leaks::render(reports, &resolved, 10, format);
    }
}

/// `/proc/PID/maps` text: parsed, asked where addresses lie, and used to place the frames of a
/// report whose addresses fall in, at the edges of and between its regions.
pub fn maps(data: &[u8]) {
    let map = ModuleMap::parse_named(Path::new("maps.txt"), data);
    let mut report = ReportBuilder::new("fuzz.log", NativeFormat::Lsan, 0);
    let mut frames = Vec::new();
    for region in map.regions.iter().take(16) {
        for address in [region.start, region.end.wrapping_sub(1), region.end] {
            let _ = map.region_at(address);
            frames.push(report.push_frame(Frame {
                address: Some(address),
                ..Frame::default()
            }));
        }
        let _ = map.load_base(&region.path);
    }
    let stack = report.intern_stack(frames);
    report.add_leak(Some(stack), native::LeakKind::Direct, None, 1, 16, None);
    render_native(&mut [report.finish()], &[map]);
}

/// The bundle's own formats: `manifest.json`, an agent sidecar and `footprint.tsv`, read alone
/// and then as a bundle whose manifest is the first part.
pub fn bundle_json(data: &[u8]) {
    let parts = split(data, 3);
    let dir = scratch::fresh_subdir("bundle");
    scratch::write_in(&dir, bundle::MANIFEST, parts[0]);
    if let Some(sidecar) = parts.get(1) {
        scratch::write_in(&dir, "agent-001.json", sidecar);
        let _ = serde_json::from_slice::<Sidecar>(sidecar);
    }
    if let Some(footprint) = parts.get(2) {
        scratch::write_in(&dir, "footprint.tsv", footprint);
        let _ = bundle::parse_footprint(footprint, &mut Diagnostics::new(Path::new("f.tsv")));
    }
    let _ = Manifest::load(&dir);
    if let Ok(ev) = load_evidence(std::slice::from_ref(&dir)) {
        analyze(&ev);
    }
}

/// The files of a bundle, in this order, each taken from one part of the input.
pub const BUNDLE_FILES: &[&str] = &[
    bundle::MANIFEST,
    "heap-001.json",
    "agent-001.json",
    "maps-001.txt",
    "heap-002.json",
    "agent-002.json",
    "maps-002.txt",
    "heap-003.json",
    "agent-003.json",
    "maps-003.txt",
    "lsan.log",
    "footprint.tsv",
];

/// `analyze BUNDLE`: a bundle made of the input's parts ([`BUNDLE_FILES`]), through the
/// correlator and the three renderers.
pub fn analyze_bundle(data: &[u8]) {
    let dir = scratch::fresh_subdir("bundle");
    for (name, part) in BUNDLE_FILES.iter().zip(split(data, BUNDLE_FILES.len())) {
        scratch::write_in(&dir, name, part);
    }
    if let Ok(ev) = load_evidence(std::slice::from_ref(&dir)) {
        analyze(&ev);
    }
}

/// `analyze FILE…`: up to four files of any kind, through the correlator and the renderers.
pub fn analyze_files(data: &[u8]) {
    let dir = scratch::fresh_subdir("files");
    let paths: Vec<_> = split(data, 4)
        .into_iter()
        .enumerate()
        .map(|(i, part)| scratch::write_in(&dir, &format!("input-{i}"), part))
        .collect();
    if let Ok(ev) = load_evidence(&paths) {
        analyze(&ev);
    }
}

fn analyze(ev: &Evidence) {
    for include_strings in [false, true] {
        let analysis = correlate::correlate(ev, &Options { include_strings });
        for format in [ReportFormat::Text, ReportFormat::Json, ReportFormat::Html] {
            let options = RenderOptions {
                color: include_strings,
                paths: PathStyle::absolute(),
            };
            let _ = renderer(format, options).render(&analysis, &mut Vec::new());
        }
    }
}

/// Read sizes for the CRuby reader from the input's first byte (the rest is the dump).
fn read_options(data: &[u8]) -> (ReadOptions, &[u8]) {
    let Some((&knob, body)) = data.split_first() else {
        return (ReadOptions::default(), data);
    };
    let opts = ReadOptions {
        threads: 1 + usize::from(knob & 1),
        chunk_bytes: [64, 4096, 32 << 20, 100][usize::from(knob >> 1 & 3)],
        buffer_bytes: [64, 1024, 1 << 20, 128][usize::from(knob >> 3 & 3)],
        keep_long_refs: knob & 0x20 != 0,
        progress_label: None,
    };
    (opts, body)
}
