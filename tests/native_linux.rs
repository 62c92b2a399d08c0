//! Native evidence on Linux, end to end: LeakSanitizer and valgrind run the widget library
//! (fixtures/widget) through Ruby FFI, leaking on purpose; the parsers, the symbolizer and
//! `leakhunt leaks` must name `widget_create` in the built `libwidget.so` as the site and see it
//! grow by exactly the widgets created. Ruby's own exit-time noise is huge and varies, so the
//! assertions look at the widget site, never at totals. Also the bad-input contract, and the
//! command on the committed real samples (fixtures/lsan, fixtures/valgrind).

#![cfg(target_os = "linux")]

use crate::common::{build_widget, fixture, have, run_leakhunt, widget_fixture};
use leakhunt::native::symbolize::{ModuleMap, Symbolizer};
use leakhunt::native::{self, LeakKind, LeakSite, NativeReport, growth, sites};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const LSAN_RUNTIME: &str = "/usr/lib/x86_64-linux-gnu/liblsan.so.0";
/// `struct widget` (size_t + pointer) and its default payload.
const HANDLE_BYTES: u64 = 16;
const PAYLOAD_BYTES: u64 = 256;

fn require(tools: &[&str]) {
    for tool in tools {
        assert!(have(tool), "{tool} is needed (see .ci/packages)");
    }
}

fn widget_site<'a>(sites: &'a [LeakSite], what: &str) -> &'a LeakSite {
    sites
        .iter()
        .find(|s| s.key.function == "widget_create")
        .unwrap_or_else(|| {
            let names: Vec<&str> = sites.iter().map(|s| s.key.function.as_str()).collect();
            panic!("no widget_create site in {what}: {names:?}")
        })
}

/// The line of `widget.c` holding `needle` (so the test follows edits of the source).
fn widget_c_line(needle: &str) -> u32 {
    let source = std::fs::read_to_string(widget_fixture("widget.c")).unwrap();
    let index = source.lines().position(|l| l.contains(needle)).unwrap();
    index as u32 + 1
}

/// Runs a widget program under LSan; returns the log it wrote.
pub(crate) fn run_under_lsan(
    dir: &Path,
    lib: &Path,
    program: &str,
    args: &[&str],
    options: &str,
) -> PathBuf {
    let _one = crate::common::one_run_at_a_time();
    let output = Command::new("ruby")
        .arg(widget_fixture(program))
        .args(args)
        .env("LD_PRELOAD", LSAN_RUNTIME)
        .env(
            "LSAN_OPTIONS",
            format!(
                "fast_unwind_on_malloc=0:malloc_context_size=6:{options}:log_path={}",
                dir.join("lsan").display()
            ),
        )
        .env("WIDGET_LIB", lib)
        .env("WIDGET_MAPS_DIR", dir)
        .output()
        .expect("spawn ruby");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("widget"),
        "program output: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("lsan.")
        })
        .expect("LSan wrote no log")
}

fn resolved(path: &Path, maps: &[ModuleMap]) -> Vec<NativeReport> {
    let kind = leakhunt::detect::detect_path(path).unwrap();
    let mut reports = native::parse_file(path, kind).unwrap();
    let mut symbolizer = Symbolizer::new();
    for r in &mut reports {
        symbolizer.resolve(r, maps);
    }
    reports
}

#[test]
fn lsan_checks_name_widget_create_from_its_own_symbols_and_grow_by_the_widgets_created() {
    require(&["gcc", "ruby"]);
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    // symbolize=0: every frame arrives as (module+0xoffset); leakhunt names them.
    let log = run_under_lsan(
        dir.path(),
        &lib,
        "widget-checks.rb",
        &["5", "20"],
        "symbolize=0",
    );
    let map = ModuleMap::read(&dir.path().join("maps.0")).unwrap();
    let reports = resolved(&log, &[map]);
    assert_eq!(reports.len(), 3, "two checks and the exit report");
    assert_eq!(
        reports.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    for r in &reports {
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.lines());
        let summary = r.summary.expect("SUMMARY line");
        assert_eq!(
            (r.total_blocks(), r.total_bytes()),
            (summary.leaks, summary.bytes)
        );
    }
    let first = sites(&reports[0]);
    let second = sites(&reports[1]);
    let site = widget_site(&first, "check 1");
    assert_eq!(site.key.library.as_deref(), Some("libwidget.so"));
    assert_eq!(site.frame.module.as_deref(), Some(lib.to_str().unwrap()));
    assert!(site.frame.file.is_none(), "LSan was asked not to symbolize");
    // Each widget is a handle (direct) and its payload (indirect).
    assert_eq!(
        (site.blocks, site.bytes),
        (10, 5 * (HANDLE_BYTES + PAYLOAD_BYTES))
    );
    assert_eq!(
        site.kinds.iter().copied().collect::<Vec<_>>(),
        [LeakKind::Direct, LeakKind::Indirect]
    );
    let later = widget_site(&second, "check 2");
    assert_eq!(
        (later.blocks, later.bytes),
        (50, 25 * (HANDLE_BYTES + PAYLOAD_BYTES))
    );
    let grown = growth(&first, &second);
    let widget = grown
        .iter()
        .find(|g| g.key.function == "widget_create")
        .unwrap();
    assert_eq!(widget.key.library.as_deref(), Some("libwidget.so"));
    assert_eq!(
        (widget.delta_blocks(), widget.delta_bytes()),
        (2 * 20, 20 * (HANDLE_BYTES + PAYLOAD_BYTES) as i64)
    );
}

#[test]
fn lsan_exit_report_frames_of_an_unloaded_library_are_placed_through_the_maps() {
    require(&["gcc", "ruby"]);
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let log = run_under_lsan(dir.path(), &lib, "widget-leak.rb", &["7"], "symbolize=1");
    let map = ModuleMap::read(&dir.path().join("maps.final")).unwrap();
    let lib_path = lib.to_str().unwrap();
    // FFI closed libwidget before LSan's exit check, so LSan cannot place its frames: they come
    // as `<unknown module>`, or, depending on where ASLR put the libraries, under another
    // module whose range LSan takes to cover the freed one (`libm.so.6+0xe18c`).
    let bare = resolved(&log, &[]);
    assert_eq!(bare.len(), 1);
    let in_widget: Vec<_> = bare[0]
        .frames
        .iter()
        .filter(|f| {
            f.address
                .and_then(|a| map.region_at(a))
                .is_some_and(|r| r.path == lib_path)
        })
        .collect();
    assert!(!in_widget.is_empty(), "no frame at libwidget's addresses");
    for frame in &in_widget {
        assert!(
            frame.library() != Some("libwidget.so")
                && frame.function.as_deref() != Some("widget_create"),
            "LSan placed a frame of the unloaded library: {frame:?}"
        );
    }
    assert!(
        sites(&bare[0])
            .iter()
            .all(|s| s.key.function != "widget_create")
    );

    let reports = resolved(&log, &[map]);
    let all = sites(&reports[0]);
    let site = widget_site(&all, "the exit report");
    assert_eq!(site.key.library.as_deref(), Some("libwidget.so"));
    assert_eq!(site.frame.module.as_deref(), Some(lib_path));
    assert_eq!(
        (site.blocks, site.bytes),
        (14, 7 * (HANDLE_BYTES + PAYLOAD_BYTES))
    );
}

#[test]
fn valgrind_xml_and_vgdb_session_from_one_run() {
    require(&["gcc", "ruby", "valgrind", "vgdb"]);
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let xml = dir.path().join("memcheck.xml");
    let _one = crate::common::one_run_at_a_time();
    let mut target = Command::new("valgrind")
        .args([
            "--vgdb=yes",
            "--leak-check=full",
            "--num-callers=8",
            "--undef-value-errors=no",
            "--xml=yes",
        ])
        .arg(format!("--xml-file={}", xml.display()))
        .arg("ruby")
        .arg(widget_fixture("widget-checks.rb"))
        .args(["5", "20"])
        .env("WIDGET_LIB", &lib)
        .env("WIDGET_MAPS_DIR", dir.path())
        .env("WIDGET_CHECK", "stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn valgrind");
    let pid = target.id();
    let mut session = Vec::new();
    let mut stdout = std::io::BufReader::new(target.stdout.take().unwrap());
    let mut stdin = target.stdin.take().unwrap();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0 {
        if line.contains("ready") {
            let search = Command::new("vgdb")
                .arg(format!("--pid={pid}"))
                .args(["leak_check", "full", "definite", "increased"])
                .output()
                .expect("spawn vgdb");
            session.extend_from_slice(&search.stderr);
            session.extend_from_slice(&search.stdout);
            std::io::Write::write_all(&mut stdin, b"\n").unwrap();
        }
        line.clear();
    }
    drop(stdin);
    target.wait().unwrap();
    let session_path = dir.path().join("vgdb.txt");
    std::fs::write(&session_path, &session).unwrap();
    let map = ModuleMap::read(&dir.path().join("maps.0")).unwrap();

    // The vgdb session: one report per search, growth between them.
    let searches = resolved(&session_path, std::slice::from_ref(&map));
    assert_eq!(searches.len(), 2, "{}", String::from_utf8_lossy(&session));
    let (first, second) = (sites(&searches[0]), sites(&searches[1]));
    let site = widget_site(&first, "search 1");
    assert_eq!(site.key.library.as_deref(), Some("libwidget.so"));
    assert_eq!(
        widget_handles(&searches[0]),
        (5, 5 * (HANDLE_BYTES + PAYLOAD_BYTES), Some(handle_line()))
    );
    assert_eq!(
        widget_handles(&searches[1]),
        (25, 25 * (HANDLE_BYTES + PAYLOAD_BYTES), Some(handle_line()))
    );
    let widget = growth(&first, &second)
        .into_iter()
        .find(|g| g.key.function == "widget_create")
        .unwrap();
    assert!(widget.delta_blocks() >= 20, "{widget:?}");

    // The XML: the exit-time search, after FFI closed the library (frames are bare <ip>s).
    let reports = resolved(&xml, &[map]);
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].diagnostics.is_empty(),
        "{:?}",
        reports[0].diagnostics.lines()
    );
    let all = sites(&reports[0]);
    let site = widget_site(&all, "the XML");
    assert_eq!(site.key.library.as_deref(), Some("libwidget.so"));
    assert_eq!(site.frame.module.as_deref(), Some(lib.to_str().unwrap()));
    assert_eq!(
        widget_handles(&reports[0]),
        (25, 25 * (HANDLE_BYTES + PAYLOAD_BYTES), None)
    );
}

/// The widget handles in a valgrind report: handles, bytes and the source line of the records
/// allocated in widget_create that each keep a handle and its payload. valgrind lists a
/// leaked handle as definitely lost with its payload as its indirect part, counted with it (as
/// LSan counts both): two blocks a handle when the search says how many blocks are indirectly
/// lost (a LEAK SUMMARY, listed indirect records), one when it does not (an XML of the default
/// leak kinds); now and then one payload is reported as lost on its own (Ruby's exit and its
/// conservative GC vary), which this leaves out.
fn widget_handles(report: &NativeReport) -> (u64, u64, Option<u32>) {
    let mut handles = (0, 0, None);
    for leak in &report.leaks {
        let frames: Vec<&native::Frame> = leak
            .stack
            .map(|s| report.stack(s).collect())
            .unwrap_or_default();
        let Some(site) = native::allocation_frame(&frames).map(|i| frames[i]) else {
            continue;
        };
        let per_handle = HANDLE_BYTES + PAYLOAD_BYTES;
        let count = if leak.bytes == leak.blocks * per_handle {
            leak.blocks
        } else if 2 * leak.bytes == leak.blocks * per_handle {
            leak.blocks / 2
        } else {
            continue;
        };
        if site.function.as_deref() == Some("widget_create") {
            handles.0 += count;
            handles.1 += leak.bytes;
            handles.2 = site.line;
        }
    }
    handles
}

fn handle_line() -> u32 {
    widget_c_line("malloc(sizeof *w)")
}

/// `nm -S` of a library: (address, size, name) of its function symbols.
fn nm_functions(lib: &Path) -> Vec<(u64, Option<u64>, String)> {
    let out = Command::new("nm")
        .arg("-S")
        .arg(lib)
        .output()
        .expect("spawn nm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let (addr, size, kind, name) = match words[..] {
                [a, s, k, n] => (a, Some(s), k, n),
                [a, k, n] => (a, None, k, n),
                _ => return None,
            };
            if !kind.eq_ignore_ascii_case("t") {
                return None;
            }
            let size = size.map(|s| u64::from_str_radix(s, 16).unwrap());
            Some((
                u64::from_str_radix(addr, 16).unwrap(),
                size,
                name.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn symbols_only_inside_their_extent_and_stripped_libraries_keep_offsets() {
    require(&["gcc", "nm", "strip"]);
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let stripped = dir.path().join("libwidget-stripped.so");
    std::fs::copy(&lib, &stripped).unwrap();
    assert!(
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg(&stripped)
            .status()
            .unwrap()
            .success()
    );
    let functions = nm_functions(&lib);
    let find = |name: &str| functions.iter().find(|f| f.2 == name).cloned().unwrap();
    let (fill, fill_size, _) = find("widget_fill");
    let (create, _, _) = find("widget_create");
    let (last, last_size, last_name) = functions
        .iter()
        .filter(|f| f.1.is_some())
        .max_by_key(|f| f.0)
        .cloned()
        .unwrap();
    let (lib, stripped) = (lib.to_str().unwrap(), stripped.to_str().unwrap());
    let mut symbolizer = Symbolizer::without_debug_files();

    assert_eq!(
        symbolizer.symbol_at(lib, create + 4).as_deref(),
        Some("widget_create")
    );
    assert_eq!(
        symbolizer.symbol_at(stripped, create + 4).as_deref(),
        Some("widget_create")
    );
    assert_eq!(
        symbolizer.symbol_at(lib, fill + 8).as_deref(),
        Some("widget_fill")
    );
    assert!(fill + fill_size.unwrap() <= create);
    // The stripped copy has no symbol for the static function: the frame keeps its offset.
    let mut frame = native::Frame {
        module: Some(stripped.to_owned()),
        module_offset: Some(fill + 8),
        ..native::Frame::default()
    };
    assert_eq!(symbolizer.resolve_frame(&mut frame, &[]), (false, false));
    assert_eq!(
        frame.label(),
        format!("libwidget-stripped.so+{:#x}", fill + 8)
    );
    // Past the end of the last sized function: the nearest symbol before it is not its owner.
    let past = last + last_size.unwrap();
    assert_eq!(symbolizer.symbol_at(lib, past), None);
    assert_eq!(symbolizer.symbol_at(stripped, past), None);
    assert_eq!(symbolizer.symbol_at(lib, past - 1), Some(last_name));
}

/// A C++ library's methods, as grpc's or nokogiri's C++ parts have them.
const RING_CC: &str = r#"#include <cstdlib>
namespace ring {
struct Buffer {
    void *push(unsigned long size);
};
void *Buffer::push(unsigned long size) { return std::malloc(size); }
}
"#;

/// A frame read from a C++ library's symbol table (an unsymbolized `module+offset`, as LSan
/// prints it for a library it cannot read) gets the demangled name.
#[test]
fn cpp_frames_from_symbol_tables_are_demangled() {
    require(&["g++", "nm"]);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("ring.cc");
    std::fs::write(&source, RING_CC).unwrap();
    let lib = dir.path().join("libring.so");
    let built = Command::new("g++")
        .args(["-shared", "-fPIC", "-O0", "-o"])
        .arg(&lib)
        .arg(&source)
        .status()
        .expect("spawn g++ (package g++)");
    assert!(built.success());
    let (push, _, _) = nm_functions(&lib)
        .into_iter()
        .find(|f| f.2 == "_ZN4ring6Buffer4pushEm")
        .expect("g++ mangles ring::Buffer::push as _ZN4ring6Buffer4pushEm");
    let mut frame = native::Frame {
        module: Some(lib.to_str().unwrap().to_owned()),
        module_offset: Some(push + 4),
        ..native::Frame::default()
    };
    let mut symbolizer = Symbolizer::without_debug_files();
    assert_eq!(symbolizer.resolve_frame(&mut frame, &[]), (false, true));
    assert_eq!(
        frame.function.as_deref(),
        Some("ring::Buffer::push(unsigned long)")
    );
}

const WHERE_AM_I: &str = r#"#include <stdio.h>
void where_am_i(void) { puts("here"); }
int main(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    int c;
    while ((c = fgetc(maps)) != EOF)
        putchar(c);
    fclose(maps);
    printf("ADDRESS %p\n", (void *)where_am_i);
    return 0;
}
"#;

#[test]
fn map_addresses_become_link_time_offsets_for_pie_and_fixed_executables() {
    require(&["gcc", "nm"]);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("where.c");
    std::fs::write(&source, WHERE_AM_I).unwrap();
    for flavour in ["-pie", "-no-pie"] {
        let exe = dir.path().join(format!("where{flavour}"));
        let built = Command::new("gcc")
            .args(["-g", "-O0", flavour, "-o"])
            .arg(&exe)
            .arg(&source)
            .status()
            .unwrap();
        assert!(built.success());
        let out = Command::new(&exe).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (maps, address) = text.rsplit_once("ADDRESS ").unwrap();
        let address = u64::from_str_radix(address.trim().trim_start_matches("0x"), 16).unwrap();
        let map = ModuleMap::parse(maps.as_bytes());
        let (link_address, _, _) = nm_functions(&exe)
            .into_iter()
            .find(|f| f.2 == "where_am_i")
            .unwrap();
        if flavour == "-pie" {
            assert_ne!(
                address, link_address,
                "a PIE runs away from its link address"
            );
        }
        let mut frame = native::Frame {
            address: Some(address + 4),
            ..native::Frame::default()
        };
        let mut symbolizer = Symbolizer::without_debug_files();
        assert_eq!(
            symbolizer.resolve_frame(&mut frame, &[map]),
            (true, true),
            "{flavour}"
        );
        assert_eq!(frame.module.as_deref(), Some(exe.to_str().unwrap()));
        assert_eq!(frame.module_offset, Some(link_address + 4), "{flavour}");
        assert_eq!(frame.function.as_deref(), Some("where_am_i"));
    }
}

// ---------------------------------------------------------------------------------------------
// `leakhunt leaks` on the committed real samples.

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `leakhunt leaks ARGS… --format json`: (exit code, the JSON, stderr).
fn leaks_json(args: &[&std::ffi::OsStr]) -> (i32, serde_json::Value, String) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["leaks".as_ref()];
    all.extend_from_slice(args);
    all.extend([
        std::ffi::OsStr::new("--format"),
        std::ffi::OsStr::new("json"),
    ]);
    let (code, stdout, stderr) = run_leakhunt(all);
    let value = if code == 0 {
        json(&stdout)
    } else {
        serde_json::Value::Null
    };
    (code, value, stderr)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn find_item<'a>(items: &'a serde_json::Value, function: &str) -> &'a serde_json::Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["function"] == function)
        .unwrap_or_else(|| panic!("no {function} in {items}"))
}

#[test]
fn leaks_command_on_the_lsan_sample_text_and_json() {
    let log = fixture("lsan/widget-checks.log.gz");
    let maps = fixture("lsan/widget-checks.maps.gz");
    let (code, out, stderr) = leaks_json(&[log.as_os_str(), "--maps".as_ref(), maps.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["schema"], 1);
    let reports = out["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[2]["label"], "#3");
    assert_eq!(reports[2]["number"], 3);
    assert_eq!(reports[0]["tool"], "LeakSanitizer");
    for r in reports {
        assert_eq!(r["blocks"], r["summary"]["leaks"]);
        assert_eq!(r["bytes"], r["summary"]["bytes"]);
    }
    let growth = &out["growth"];
    assert_eq!(
        (growth["from"].as_str(), growth["to"].as_str()),
        (Some("#1"), Some("#3"))
    );
    let g = find_item(&growth["items"], "widget_create");
    assert_eq!(g["library"], "libwidget.so");
    assert_eq!(
        (g["blocks_before"].as_u64(), g["blocks_after"].as_u64()),
        (Some(10), Some(50))
    );
    assert_eq!(
        (g["delta_blocks"].as_i64(), g["delta_bytes"].as_i64()),
        (Some(40), Some(5440))
    );
    let line = widget_c_line("malloc(sizeof *w)");
    assert_eq!(g["line"], line);
    // --top 30 by default: the widget site is among the few sites of a Ruby run.
    let s = find_item(&out["sites"]["items"], "widget_create");
    assert_eq!(
        (s["blocks"].as_u64(), s["bytes"].as_u64()),
        (Some(50), Some(6800))
    );
    assert_eq!(s["kinds"], serde_json::json!(["direct", "indirect"]));
    let stack = s["stack"].as_array().unwrap();
    let at = s["site_frame"].as_u64().unwrap() as usize;
    assert_eq!(stack[at], "widget_create");
    assert_eq!(stack[at + 1], "__interceptor_malloc");
    assert!(
        stack[..at].iter().any(|f| f == "libffi.so.8+0x6f79"),
        "{stack:?}"
    );

    let (code, text, _) = run_leakhunt([
        "leaks".as_ref(),
        log.as_os_str(),
        "--maps".as_ref(),
        maps.as_os_str(),
    ]);
    assert_eq!(code, 0);
    assert!(text.starts_with("3 native reports from 1 file\n"), "{text}");
    let growth_row = text
        .lines()
        .find(|l| l.contains("widget_create") && l.contains("+40"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = growth_row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "+40",
            "+5,440",
            "widget_create",
            &format!("(widget.c:{line})"),
            "libwidget.so"
        ]
    );
    let site_row = text
        .lines()
        .skip_while(|l| !l.starts_with("Leak sites in #3"))
        .find(|l| l.contains("widget_create"))
        .unwrap();
    let cells: Vec<&str> = site_row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "50",
            "6,800",
            "widget_create",
            &format!("(widget.c:{line})"),
            "libwidget.so",
            "direct+indirect"
        ]
    );
}

#[test]
fn leaks_command_on_the_valgrind_samples() {
    // vgdb session: two searches, growth by the 20 widgets of round two.
    let session = fixture("valgrind/widget-checks-vgdb.txt");
    let maps = fixture("valgrind/widget-checks-vgdb.maps.gz");
    let (code, out, stderr) = leaks_json(&[session.as_os_str(), maps.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["reports"].as_array().unwrap().len(), 2);
    assert_eq!(out["reports"][0]["pid"], out["reports"][1]["pid"]);
    let g = find_item(&out["growth"]["items"], "widget_create");
    assert_eq!(g["library"], "libwidget.so");
    // Two blocks a widget: the handle, and its payload from the LEAK SUMMARY's indirect blocks.
    assert_eq!(
        (g["delta_blocks"].as_i64(), g["delta_bytes"].as_i64()),
        (Some(2 * 20), Some(20 * (16 + 256)))
    );
    let s = find_item(&out["sites"]["items"], "widget_create");
    assert_eq!(
        (s["blocks"].as_u64(), s["bytes"].as_u64()),
        (Some(2 * 25), Some(25 * (16 + 256)))
    );
    // The second search lists only what grew; the other sites keep their first totals.
    assert_eq!(out["sites"]["total_sites"], out["reports"][0]["sites"]);

    // The XML, with the maps moved to a directory that does not exist here: libwidget's
    // frames are placed but cannot be named, and stay libwidget.so+0xOFFSET.
    let dir = tempfile::tempdir().unwrap();
    let xml = fixture("valgrind/widget-leak.xml.gz");
    let original = String::from_utf8(gunzip(&fixture("valgrind/widget-leak.xml.maps.gz"))).unwrap();
    let moved = original.replace("/tmp/leakhunt-widget/", "/nonexistent/leakhunt-widget/");
    assert_ne!(moved, original);
    let moved_maps = dir.path().join("maps");
    std::fs::write(&moved_maps, moved).unwrap();
    let (code, out, stderr) =
        leaks_json(&[xml.as_os_str(), "--maps".as_ref(), moved_maps.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("memcheck errors that are not leaks"),
        "{stderr}"
    );
    let items = out["sites"]["items"].as_array().unwrap();
    let widget = items
        .iter()
        .find(|i| i["library"] == "libwidget.so")
        .unwrap_or_else(|| panic!("{items:?}"));
    let function = widget["function"].as_str().unwrap();
    assert!(function.starts_with("libwidget.so+0x"), "{function}");
    assert_eq!(
        (widget["blocks"].as_u64(), widget["bytes"].as_u64()),
        (Some(5), Some(5 * (16 + 256)))
    );
    assert_eq!(widget["kinds"], serde_json::json!(["definite"]));
}

// ---------------------------------------------------------------------------------------------
// Bad input: a one-line message with file and line, the rest used, never a panic.

fn lsan_sample() -> Vec<u8> {
    gunzip(&fixture("lsan/widget-checks.log.gz"))
}

#[test]
fn cut_crlf_non_utf8_and_unknown_lines_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = lsan_sample();
    let text = String::from_utf8_lossy(&log);
    let summaries: Vec<usize> = text
        .match_indices("SUMMARY: LeakSanitizer")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(summaries.len(), 3);

    // Cut in the middle of the third report: the first two are whole, the third partial.
    let mut cut = log[..(summaries[1] + summaries[2]) / 2].to_vec();
    // Two lines gone wrong inside report 1, at known lines.
    let first_block = text.find("\n    #1 ").unwrap() + 1;
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let bad_line = line_of(first_block);
    cut.splice(
        first_block..first_block,
        b"    #1 not-an-address here\n    #2 also wrong\n"
            .iter()
            .copied(),
    );
    // A function name with bytes that are not UTF-8.
    let name = memchr_find(&cut, b"in rb_").unwrap() + 3;
    cut[name] = 0xfe;
    let crlf = cut
        .split(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .join(&b"\r\n"[..]);
    let path = dir.path().join("cut.log");
    std::fs::write(&path, &crlf).unwrap();
    let (code, out, stderr) = leaks_json(&[path.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    let expected = format!(
        "leakhunt: warning: {}: 2 lines not understood, first at line {bad_line} (a frame line without `#N 0xADDRESS`: `#1 not-an-address here`)",
        path.display()
    );
    assert!(stderr.lines().any(|l| l == expected), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: 1 report without a SUMMARY line at line",
            path.display()
        )),
        "{stderr}"
    );
    let reports = out["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 3);
    assert!(reports[2]["summary"].is_null());
    assert_eq!(reports[1]["blocks"], reports[1]["summary"]["leaks"]);
    // The whole (LF) sample gives the same first two reports.
    let (_, whole, _) = leaks_json(&[fixture("lsan/widget-checks.log.gz").as_os_str()]);
    assert_eq!(whole["reports"][1]["bytes"], reports[1]["bytes"]);
    assert_eq!(whole["reports"][1]["sites"], reports[1]["sites"]);
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn xml_that_ends_early_warns_and_keeps_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let xml = gunzip(&fixture("valgrind/widget-leak.xml.gz"));
    let cut_at = xml.len() * 2 / 3;
    let path = dir.path().join("cut.xml");
    std::fs::write(&path, &xml[..cut_at]).unwrap();
    let line = xml[..cut_at].iter().filter(|&&b| b == b'\n').count() + 1;
    let (code, out, stderr) = leaks_json(&[path.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    let prefix = format!(
        "leakhunt: warning: {}: 1 XML file ending early at line {line} (",
        path.display()
    );
    assert!(
        stderr.lines().any(|l| l.starts_with(&prefix)),
        "{prefix}\n{stderr}"
    );
    let blocks = out["reports"][0]["blocks"].as_u64().unwrap();
    let (_, whole, _) = leaks_json(&[fixture("valgrind/widget-leak.xml.gz").as_os_str()]);
    let whole_blocks = whole["reports"][0]["blocks"].as_u64().unwrap();
    assert!(
        blocks > 0 && blocks < whole_blocks,
        "{blocks} of {whole_blocks}"
    );
}

#[test]
fn not_a_native_report_is_a_one_line_error_and_other_files_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"shopping list\neggs\n").unwrap();
    let (code, stdout, stderr) = run_leakhunt(["leaks".as_ref(), notes.as_os_str()]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert_eq!(
        stderr.trim_end(),
        format!(
            "leakhunt: {}: not a heap dump or native leak report (text of an unknown kind)",
            notes.display()
        )
    );
    let heap = dir.path().join("heap.json");
    std::fs::write(&heap, b"{\"address\":\"0x1\", \"type\":\"STRING\"}\n").unwrap();
    let session = fixture("valgrind/widget-checks-vgdb.txt");
    let (code, stdout, stderr) =
        run_leakhunt(["leaks".as_ref(), heap.as_os_str(), session.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.lines().next(),
        Some(
            format!(
                "leakhunt: {}: a CRuby heap dump, not a native leak report",
                heap.display()
            )
            .as_str()
        )
    );
    assert!(
        stdout.starts_with("2 native reports from 1 file"),
        "{stdout}"
    );
}

/// Every reader, on the real samples cut at many places and with bytes overwritten at random:
/// an error or some reports, never a panic.
#[test]
fn readers_never_panic_on_cut_or_damaged_samples() {
    use leakhunt::detect::Kind;
    let samples: [(Kind, Vec<u8>); 5] = [
        (
            Kind::LsanLog,
            gunzip(&fixture("lsan/widget-leak-exit.log.gz")),
        ),
        (
            Kind::ValgrindText,
            std::fs::read(fixture("valgrind/widget-checks-vgdb.txt")).unwrap(),
        ),
        (
            Kind::ValgrindText,
            gunzip(&fixture("valgrind/widget-leak.log.gz"))[..200_000].to_vec(),
        ),
        (
            Kind::ValgrindXml,
            gunzip(&fixture("valgrind/widget-leak.xml.gz"))[..200_000].to_vec(),
        ),
        (
            Kind::ModuleMap,
            gunzip(&fixture("lsan/widget-checks.maps.gz")),
        ),
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let path = Path::new("damaged");
    for (kind, bytes) in &samples {
        let read = |b: &[u8]| match kind {
            Kind::ModuleMap => {
                ModuleMap::parse(b);
            }
            _ => {
                let _ = native::parse_bytes(path, *kind, b);
            }
        };
        for cut in (0..bytes.len()).step_by(bytes.len() / 25 + 1) {
            read(&bytes[..cut]);
        }
        for _ in 0..25 {
            let mut damaged = bytes.clone();
            for _ in 0..20 {
                let at = (next() % damaged.len() as u64) as usize;
                damaged[at] = next() as u8;
            }
            read(&damaged);
        }
    }
}
