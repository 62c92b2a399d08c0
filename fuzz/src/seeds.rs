//! Seed inputs for every target, made from the repository's fixtures (`fixtures/`, whose
//! README says where each file comes from) at the moment they are needed, so no derived copy
//! is committed. Large fixtures are cut to their first [`MAX_SEED`] bytes at a line end;
//! gzip fixtures are inflated (and a few seeds gzipped again, for the `.gz` paths).
//!
//! Rubinius dumps have no public sample (FORMATS.md §1): their seeds are written by the
//! test-side encoder that the reader's tests use.

#[path = "../../tests/support/rbx_encoder.rs"]
mod rbx_encoder;

use crate::SEPARATOR;
use crate::targets::BUNDLE_FILES;
use rbx_encoder::{CoreNames, Heap, Obj, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The longest seed of a single-file target; `-max_len` in FUZZING.md is larger.
pub const MAX_SEED: usize = 32 << 10;

/// The seeds of `target` as (name, bytes).
pub fn for_target(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Seeds::default();
    match target {
        "detect" => {
            for file in every_fixture() {
                seeds.add(&file, head(&read(&file), 4096));
            }
            let dump = head(
                &read(&fixture("cruby/ruby3.1.2-linux-since10-traced.json")),
                4096,
            );
            seeds.add("since10.json.gz", gzip(&dump));
            seeds.add("rubinius.dump", rubinius_dump(3));
        }
        "cruby" => {
            for (i, file) in cruby_fixtures().iter().enumerate() {
                let knob = [0x00, 0x2b, 0x12, 0x3f][i % 4];
                seeds.add(file, knobbed(knob, &head(&read(file), MAX_SEED / 4)));
            }
            let dump = head(
                &read(&fixture("cruby/ruby3.1.2-linux-since10-traced.json")),
                8192,
            );
            seeds.add("since10.json.gz", knobbed(0x00, &gzip(&dump)));
        }
        "zst" => {
            // Line-aligned frames as a run writes them (small frames, so there are several),
            // the same cut short, and without the closing mark (any other zstd file).
            for (i, file) in cruby_fixtures().iter().take(3).enumerate() {
                let frames = zst_lines(&head(&read(file), MAX_SEED / 2), 1024 << i);
                let mark = leakhunt::zst::LINES_MARK.len() + 8;
                seeds.add(&format!("{file}.zst"), frames.clone());
                seeds.add(
                    &format!("{file}.cut.zst"),
                    frames[..frames.len() / 2].to_vec(),
                );
                seeds.add(
                    &format!("{file}.unmarked.zst"),
                    frames[..frames.len() - mark].to_vec(),
                );
            }
        }
        "rubinius" => {
            for n in [0, 1, 5, 40] {
                seeds.add(&format!("widgets-{n}.dump"), rubinius_dump(n));
            }
            seeds.add("widgets-5.dump.gz", gzip(&rubinius_dump(5)));
        }
        "diff" => {
            let since = head(
                &read(&fixture("cruby/ruby3.1.2-linux-since10-traced.json")),
                8192,
            );
            let full = head(
                &read(&fixture("cruby/ruby3.1.2-linux-full-traced.json.gz")),
                8192,
            );
            let [h1, h2, h3] = bundle_heaps();
            seeds.add("full-since", knobbed(0x00, &join(&[&full, &since])));
            seeds.add(
                "full-since-full",
                knobbed(0x2b, &join(&[&full, &since, &full])),
            );
            seeds.add("bundle-1-2-3", knobbed(0x12, &join(&[&h1, &h2, &h3])));
        }
        "retainers" => {
            let [_, _, h3] = bundle_heaps();
            let widget = first_address_of(&h3, b"\"class\":\"").unwrap_or_default();
            seeds.add(
                "class-widget",
                knobbed(0x20, &[b"Widget\n", &h3[..]].concat()),
            );
            seeds.add(
                "class-string",
                knobbed(0x2b, &[b"String\n", &h3[..]].concat()),
            );
            seeds.add(
                "address",
                knobbed(0x3f, &[widget.as_bytes(), b"\n", &h3[..]].concat()),
            );
            let traced = head(
                &read(&fixture("cruby/ruby3.1.2-linux-since10-traced.json")),
                8192,
            );
            seeds.add(
                "class-array",
                knobbed(0x21, &[b"Array\n", &traced[..]].concat()),
            );
        }
        "leaks" => {
            for file in files_in("leaks", ".txt") {
                seeds.add(&file, head(&read(&file), MAX_SEED));
            }
        }
        "lsan" => {
            for file in files_in("lsan", ".log.gz") {
                seeds.add(&file, head(&read(&file), MAX_SEED));
            }
            seeds.add(
                "bundle-lsan.log",
                head(&read(&fixture("bundle/lsan.log")), MAX_SEED),
            );
        }
        "valgrind_xml" => {
            let xml = read(&fixture("valgrind/widget-leak.xml.gz"));
            seeds.add("widget-leak.xml", leak_errors_only(&xml));
            seeds.add("widget-leak-head.xml", head(&xml, MAX_SEED));
        }
        "valgrind_text" => {
            for file in [
                "valgrind/widget-checks-vgdb.txt",
                "valgrind/widget-leak.log.gz",
            ] {
                seeds.add(file, head(&read(&fixture(file)), MAX_SEED));
            }
        }
        "maps" => {
            for file in every_fixture().iter().filter(|f| f.contains("maps")) {
                seeds.add(file, head(&read(file), MAX_SEED));
            }
        }
        "bundle_json" => {
            let b = |name: &str| read(&fixture(&format!("bundle/{name}")));
            let parts = [b("manifest.json"), b("agent-003.json"), b("footprint.tsv")];
            seeds.add(
                "bundle",
                join(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            );
        }
        "analyze_bundle" => {
            let parts: Vec<Vec<u8>> = BUNDLE_FILES
                .iter()
                .map(|name| read(&fixture(&format!("bundle/{name}"))))
                .collect();
            seeds.add(
                "bundle",
                join(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            );
        }
        "analyze_files" => {
            let [h1, _, h3] = bundle_heaps();
            let lsan = read(&fixture("bundle/lsan.log"));
            let maps = read(&fixture("bundle/maps-003.txt"));
            seeds.add("heaps-lsan-maps", join(&[&h1, &h3, &lsan, &maps]));
            let since = head(
                &read(&fixture("cruby/ruby3.1.2-linux-since10-traced.json")),
                8192,
            );
            let leaks = read(&fixture("leaks/macos15.0-v3.0-list-msl-lite-callstack.txt"));
            seeds.add("cruby-leaks", join(&[&since, &leaks]));
            let vg = leak_errors_only(&read(&fixture("valgrind/widget-leak.xml.gz")));
            let vg_maps = read(&fixture("valgrind/widget-leak.xml.maps.gz"));
            seeds.add(
                "rubinius-valgrind",
                join(&[&rubinius_dump(5), &vg, &vg_maps]),
            );
        }
        other => panic!("no seeds for unknown target {other}"),
    }
    seeds.0
}

#[derive(Default)]
struct Seeds(Vec<(String, Vec<u8>)>);

impl Seeds {
    fn add(&mut self, name: &str, bytes: Vec<u8>) {
        let name = name.trim_start_matches(&*fixtures_dir().to_string_lossy());
        self.0
            .push((name.trim_start_matches('/').replace('/', "-"), bytes));
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn fixture(name: &str) -> String {
    fixtures_dir().join(name).to_string_lossy().into_owned()
}

fn files_in(dir: &str, suffix: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(fixtures_dir().join(dir))
        .unwrap_or_else(|e| panic!("fixtures/{dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// Every evidence fixture: dumps, native reports, maps and the bundle's files.
fn every_fixture() -> Vec<String> {
    let mut all = Vec::new();
    for (dir, suffix) in [
        ("cruby", ".json"),
        ("cruby", ".gz"),
        ("cruby", ".heap"),
        ("leaks", ".txt"),
        ("lsan", ".gz"),
        ("valgrind", ".gz"),
        ("valgrind", ".txt"),
        ("bundle", ""),
    ] {
        all.extend(files_in(dir, suffix));
    }
    all.sort();
    all.dedup();
    all
}

fn cruby_fixtures() -> Vec<String> {
    let mut files = every_fixture();
    files.retain(|f| f.contains("/cruby/") || f.contains("/bundle/heap-"));
    files
}

fn bundle_heaps() -> [Vec<u8>; 3] {
    ["heap-001.json", "heap-002.json", "heap-003.json"]
        .map(|n| read(&fixture(&format!("bundle/{n}"))))
}

/// A fixture's content, inflated when it is gzip.
fn read(path: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return bytes;
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    out
}

/// The first `max` bytes, cut after the last line end within them.
fn head(bytes: &[u8], max: usize) -> Vec<u8> {
    if bytes.len() <= max {
        return bytes.to_vec();
    }
    let cut = bytes[..max]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(max, |i| i + 1);
    bytes[..cut].to_vec()
}

/// `bytes` as leakhunt stores a heap dump: line-aligned zstd frames of about `frame` bytes.
fn zst_lines(bytes: &[u8], frame: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a directory for zstd seeds");
    let (src, dst) = (
        dir.path().join("heap.json"),
        dir.path().join("heap.json.zst"),
    );
    std::fs::write(&src, bytes).expect("a plain seed dump");
    leakhunt::zst::compress_lines_sized(&src, &dst, frame).expect("zstd seed");
    std::fs::read(&dst).expect("zstd seed")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

fn knobbed(knob: u8, body: &[u8]) -> Vec<u8> {
    [&[knob][..], body].concat()
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEPARATOR)
}

/// The first `"address":"0x…"` after `key` in a dump, as text.
fn first_address_of(dump: &[u8], key: &[u8]) -> Option<String> {
    let at = dump.windows(key.len()).position(|w| w == key)? + key.len();
    let end = dump[at..].iter().position(|&b| b == b'"')? + at;
    Some(String::from_utf8_lossy(&dump[at..end]).into_owned())
}

/// valgrind XML with only its preamble, leak errors and closing tag: the `Leak_*` records of the
/// real sample, without the thousands of uninitialised-value errors Ruby gives before them.
fn leak_errors_only(xml: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(xml);
    let first = text.find("<error>").unwrap_or(text.len());
    let mut out = text[..first].to_owned();
    let mut rest = &text[first..];
    while let Some(start) = rest.find("<error>") {
        let Some(len) = rest[start..].find("</error>") else {
            break;
        };
        let error = &rest[start..start + len + "</error>".len()];
        if error.contains("<kind>Leak_") && out.len() + error.len() < MAX_SEED {
            out.push_str(error);
            out.push('\n');
        }
        rest = &rest[start + len..];
    }
    out.push_str("</valgrindoutput>\n");
    out.into_bytes()
}

/// A Rubinius dump of `widgets` Widget objects with an ivar each, some Strings and an Array.
fn rubinius_dump(widgets: usize) -> Vec<u8> {
    let build = || -> std::io::Result<Vec<u8>> {
        let mut heap = Heap::new(Vec::new(), CoreNames::Real, true)?;
        let object = heap.object;
        let widget = heap.define_class(Some("Widget"), object).id;
        let mut refs = Vec::new();
        for i in 0..widgets {
            let id = heap.reserve();
            refs.push(Value::Ref(id));
            let size = Value::Fixnum(i64::try_from(i).unwrap_or(0) * 16);
            heap.write(&Obj::new(id, widget, 32).slot("@size", size))?;
        }
        for i in 0..3 {
            let string = heap.string(format!("label {i}").into_bytes());
            heap.write_all(&string)?;
        }
        let array = heap.array(refs);
        heap.write_all(&array)?;
        heap.finish()?;
        heap.into_output()
    };
    build().expect("a Rubinius dump in memory")
}
