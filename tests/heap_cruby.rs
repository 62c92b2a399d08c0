//! CRuby heap dumps: the reader on the shared reference dumps (figures counted independently with
//! jq), on dumps made here by a real Ruby with allocation tracing (figures counted by Ruby
//! itself), the `histo`, `diff` and `retainers` commands, and bad input.

use crate::common::{fixture, have, require, run_leakhunt};
use leakhunt::heap::cruby::reader::ReadOptions;
use leakhunt::heap::cruby::retainers::{EdgeKind, for_class_with};
use leakhunt::heap::cruby::{histogram_with, summarize_with};
use leakhunt::heap::histogram::Histogram;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Tiny chunks and buffers: every fixture crosses chunk seams and long-line paths.
fn tiny() -> ReadOptions {
    ReadOptions {
        threads: 2,
        chunk_bytes: 4096,
        buffer_bytes: 1024,
        keep_long_refs: false,
        progress_label: None,
    }
}

fn row(h: &Histogram, name: &str) -> (i64, i64) {
    h.get(name).map_or((0, 0), |r| (r.count, r.bytes))
}

/// One reference dump and what jq counted in it.
struct Expected {
    file: &'static str,
    objects: u64,
    bytes: i64,
    rows: &'static [(&'static str, i64, i64)],
    version: &'static str,
}

// Figures counted with jq on the same files when this test was written, e.g. for String:
//   jq -s '(map(select(.type=="CLASS" and .name=="String"))|map(.address)) as $s
//          | map(select(.type=="STRING" and (.class as $c | $s|index($c))))
//          | [length, (map(.memsize)|add)]'
// objects/bytes: every line whose type is neither ROOT nor SHAPE, and the sum of its memsize;
// hidden rows: `select(.type=="HASH" and (has("class")|not))`; ment: `.imemo_type=="ment"`;
// named classes: `select(.class==$addr and .type!="IMEMO")`.
const REFERENCE: &[Expected] = &[
    Expected {
        file: "cruby/ruby2.7.1-macos-full-heapy-my_dump_1.json.gz",
        objects: 14_401,
        bytes: 3_468_270,
        rows: &[
            ("String", 7292, 354_554),
            ("Hash (hidden)", 8, 3008),
            ("Array (hidden)", 57, 71_888),
            ("ment (IMEMO)", 3276, 157_248),
            ("Gem::Requirement", 177, 7080),
            ("Class", 626, 0),
            ("Class (hidden)", 1, 0),
            ("File (ZOMBIE)", 6, 0),
        ],
        version: "2.5–3.0",
    },
    Expected {
        file: "cruby/ruby3.0-singleton-classes-heap-profiler.heap",
        objects: 6755,
        bytes: 1_860_490,
        rows: &[
            ("String", 2982, 125_938),
            ("Hash (hidden)", 9, 1680),
            ("Array (hidden)", 25, 52_712),
            ("ment (IMEMO)", 2489, 119_472),
        ],
        version: "2.5–3.0",
    },
    Expected {
        file: "cruby/ruby3.1.2-linux-full-traced.json.gz",
        objects: 17_243,
        bytes: 2_587_101,
        rows: &[
            ("String", 8366, 410_542),
            ("Hash (hidden)", 14, 5992),
            ("Array (hidden)", 59, 71_912),
            ("ment (IMEMO)", 3392, 162_816),
            ("Widget", 20, 800),
            ("Class", 711, 0),
            ("#<Class:0x00007ff6652c34c8>", 1, 40),
        ],
        version: "3.1",
    },
    Expected {
        file: "cruby/ruby3.1.2-linux-since10-traced.json",
        objects: 108,
        bytes: 15_328,
        rows: &[("Hash (hidden)", 1, 192), ("ment (IMEMO)", 8, 384)],
        version: "3.1",
    },
    Expected {
        file: "cruby/ruby3.2dev-partial-since28-retained-heap-profiler.heap",
        objects: 28,
        bytes: 1264,
        rows: &[
            ("callcache (IMEMO)", 10, 400),
            ("constcache (IMEMO)", 9, 360),
            ("mutex (DATA)", 1, 72),
            ("#<Class:0x0000000105e0ed80>", 5, 240),
        ],
        version: "3.2",
    },
];

#[test]
fn reference_dumps_match_independent_counts() {
    for e in REFERENCE {
        let path = fixture(e.file);
        let read = histogram_with(&path, &ReadOptions::default()).unwrap();
        let h = &read.histogram;
        assert_eq!(read.objects, e.objects, "{}", e.file);
        assert_eq!(h.total_count(), e.objects as i64, "{}", e.file);
        assert_eq!(h.total_bytes(), e.bytes, "{}", e.file);
        for &(name, count, bytes) in e.rows {
            let got = row(h, name);
            assert_eq!(got.0, count, "{}: {name}", e.file);
            if bytes > 0 {
                assert_eq!(got.1, bytes, "{}: {name}", e.file);
            }
        }
        let summary = summarize_with(&path, &tiny()).unwrap();
        assert_eq!(
            summary.ruby_version.as_deref(),
            Some(e.version),
            "{}",
            e.file
        );
        assert_eq!(summary.histogram, h.by_name(), "{}", e.file);
        assert!(
            read.diagnostics.count_of("invalid lines") == 0,
            "{}",
            e.file
        );
    }
}

#[test]
fn chunking_and_buffers_do_not_change_results() {
    for e in REFERENCE {
        let path = fixture(e.file);
        let big = histogram_with(&path, &ReadOptions::default()).unwrap();
        let small = histogram_with(&path, &tiny()).unwrap();
        assert_eq!(big.histogram, small.histogram, "{}", e.file);
        assert_eq!(big.diagnostics, small.diagnostics, "{}", e.file);
    }
}

#[test]
fn traced_reference_dump_has_alloc_sites() {
    let s = summarize_with(
        &fixture("cruby/ruby3.1.2-linux-full-traced.json.gz"),
        &ReadOptions::default(),
    )
    .unwrap();
    let widget = s.alloc_sites.iter().find(|a| a.class == "Widget").unwrap();
    assert_eq!(
        (
            widget.file.as_str(),
            widget.line,
            widget.count,
            widget.bytes
        ),
        ("gen.rb", 8, 20, 800)
    );
    assert_eq!(s.objects, 17_243);
}

#[test]
fn partial_dump_says_why_classes_are_unnamed() {
    let path = fixture("cruby/ruby3.2dev-partial-since28-retained-heap-profiler.heap");
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("{:>10} {:>30} {}\n", 10, "callcache (IMEMO)", 400)),
        "{stdout}"
    );
    // 7 objects (5 STRING, 1 OBJECT, 1 ARRAY; `grep -n '"type":"\(STRING\|OBJECT\|ARRAY\)"'`)
    // point to classes the partial dump does not hold; the first is line 502, after the 488
    // SHAPE lines and 13 IMEMO/DATA lines (which are labelled by their imemo_type/struct).
    assert!(
        stderr.contains("7 objects whose class is not in the dump, first at line 502"),
        "{stderr}"
    );
}

#[test]
fn histo_text_is_histo_rb_layout_and_json_has_schema() {
    let path = fixture("cruby/ruby3.1.2-linux-full-traced.json.gz");
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("{:>10} {:>30} {}", 8366, "String", 410_542)
    );
    assert!(lines.contains(&format!("{:>10} {:>30} {}", 20, "Widget", 800).as_str()));
    let counts: Vec<i64> = lines
        .iter()
        .map(|l| l[..10].trim().parse().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(counts.iter().sum::<i64>(), 17_243);

    let (code, stdout, _) = run_leakhunt([
        "histo".as_ref(),
        path.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["objects"], 17_243);
    assert_eq!(v["rows"][0]["name"], "String");
    assert_eq!(v["rows"][0]["count"], 8366);
}

// ---------------------------------------------------------------------------------------------
// Dumps made here by Ruby.

/// The scenario script (see fixtures/README.md).
const SCENARIO: &str = include_str!("../fixtures/cruby/scenario.rb");

/// A scenario run: dumps a.json (baseline), b.json (after allocating), c.json (after dropping
/// the Temps), and Ruby's own counts (`ObjectSpace.each_object(K).count` after `GC.start`).
struct Scenario {
    dir: tempfile::TempDir,
    counts: Vec<(String, String)>,
}

impl Scenario {
    fn run() -> Option<Scenario> {
        if !require("ruby", have("ruby")) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scenario.rb"), SCENARIO).unwrap();
        let status = std::process::Command::new("ruby")
            .arg("scenario.rb")
            .arg(".")
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(dir.path().join("counts.txt")).unwrap();
        let counts = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('\t')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        Some(Scenario { dir, counts })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn count(&self, key: &str) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap()
    }

    fn anon_name(&self) -> String {
        self.counts
            .iter()
            .find(|(k, _)| k.starts_with("#<Class:"))
            .map(|(k, _)| k.clone())
            .unwrap()
    }

    fn version(&self) -> String {
        self.counts
            .iter()
            .find(|(k, _)| k == "version")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// The line of SCENARIO that carries `# site: NAME`.
fn site_line(name: &str) -> u32 {
    let marker = format!("# site: {name}");
    SCENARIO
        .lines()
        .position(|l| l.ends_with(&marker))
        .map(|i| i as u32 + 1)
        .unwrap()
}

fn version_text() -> Option<String> {
    let out = std::process::Command::new("ruby")
        .args(["-e", "print RUBY_VERSION"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn ruby_made_dump_matches_rubys_own_counts_and_sites() {
    let Some(s) = Scenario::run() else { return };
    let summary = summarize_with(&s.path("b.json"), &tiny()).unwrap();
    let h = &summary.histogram;
    for class in ["Leaky", "Temp", "Gadget"] {
        assert_eq!(row(h, class).0 as u64, s.count(class), "{class}");
        assert_eq!(row(h, class).1 as u64, s.count(class) * 40, "{class} bytes");
    }
    assert_eq!(s.count("Gadget"), 1234);
    // An anonymous class is labelled as Ruby's inspect names it.
    assert_eq!(row(h, &s.anon_name()).0 as u64, s.count(&s.anon_name()));
    assert_eq!(s.count(&s.anon_name()), 7);
    let site = |class: &str| {
        summary
            .alloc_sites
            .iter()
            .find(|a| a.class == class)
            .map(|a| (a.file.clone(), a.line, a.count))
    };
    assert_eq!(
        site("Gadget"),
        Some(("scenario.rb".into(), site_line("gadget"), 1234))
    );
    assert_eq!(
        site("Leaky"),
        Some(("scenario.rb".into(), site_line("leaky"), 300))
    );
    assert_eq!(
        site("Temp"),
        Some(("scenario.rb".into(), site_line("temp"), 200))
    );
    let v = s.version();
    let minor: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
    let guess = summary.ruby_version.unwrap();
    assert!(
        guess == minor || guess.starts_with('≥') || guess.contains('–'),
        "guess {guess} for Ruby {v}"
    );
    if version_text().is_some_and(|t| t.starts_with("3.1.")) {
        assert_eq!(guess, "3.1");
    }
}

#[test]
fn three_dump_diff_finds_the_retained_objects() {
    let Some(s) = Scenario::run() else { return };
    let (a, b, c) = (s.path("a.json"), s.path("b.json"), s.path("c.json"));
    let json = |args: &[&Path]| {
        let mut argv: Vec<&std::ffi::OsStr> = vec!["diff".as_ref()];
        argv.extend(args.iter().map(|p| p.as_os_str()));
        argv.extend(["--format", "json", "--top", "1000"].map(std::ffi::OsStr::new));
        let (code, stdout, stderr) = run_leakhunt(argv);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let group = |v: &serde_json::Value, ty: &str, line: u32| -> u64 {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["obj_type"] == ty && g["line"] == line && g["file"] == "scenario.rb")
            .map(|g| g["count"].as_u64().unwrap())
            .sum()
    };
    let retained = json(&[&a, &b, &c]);
    assert_eq!(retained["schema"], 1);
    assert_eq!(retained["kind"], "retained");
    assert_eq!(group(&retained, "STRUCT", site_line("leaky")), 300);
    assert_eq!(
        group(&retained, "OBJECT", site_line("temp")),
        s.count("Temp after")
    );
    assert_eq!(group(&retained, "OBJECT", site_line("gadget")), 1234);
    let leaky = retained["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["line"] == site_line("leaky") && g["obj_type"] == "STRUCT")
        .unwrap();
    assert_eq!(leaky["classes"][0]["class"], "Leaky");
    assert_eq!(leaky["bytes"], 300 * 40);
    let allocated = json(&[&a, &b]);
    assert_eq!(allocated["kind"], "allocated");
    assert_eq!(group(&allocated, "OBJECT", site_line("temp")), 200);
    assert_eq!(group(&allocated, "STRUCT", site_line("leaky")), 300);
    // Strings made after B are in neither diff.
    assert_eq!(group(&retained, "STRING", site_line("strings")), 0);

    let (code, text, _) =
        run_leakhunt(["diff".as_ref(), a.as_os_str(), b.as_os_str(), c.as_os_str()]);
    assert_eq!(code, 0);
    assert!(text.contains("GC.compact"), "{text}");
    assert!(
        text.contains(&format!("scenario.rb:{}", site_line("leaky"))),
        "{text}"
    );
}

#[test]
fn retainers_name_the_holding_array_and_its_root() {
    let Some(s) = Scenario::run() else { return };
    let b = s.path("b.json");
    let r = for_class_with(&b, "Leaky", 5, &tiny()).unwrap();
    assert_eq!((r.instances, r.reachable, r.unreachable), (300, 300, 0));
    assert_eq!(r.groups.len(), 1);
    let g = &r.groups[0];
    assert_eq!(g.count, 300);
    assert_eq!(g.root, "global_tbl");
    assert_eq!(g.steps.len(), 1);
    let holder = &g.steps[0];
    assert_eq!(holder.class, "Array");
    assert_eq!(holder.length, Some(300));
    assert_eq!(holder.distinct, 1);
    assert_eq!(holder.edge, EdgeKind::Reference);
    let site = holder.site.as_ref().unwrap();
    assert_eq!(
        (site.file.as_str(), site.line),
        ("scenario.rb", site_line("holder"))
    );

    let (code, text, stderr) = run_leakhunt([
        "retainers".as_ref(),
        b.as_os_str(),
        "--class".as_ref(),
        "Leaky".as_ref(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let expected = format!(
        "300 Leaky <- Array 0x{:x} (allocated at scenario.rb:{}, 300 elements) <- ROOT global_tbl",
        holder.address,
        site_line("holder")
    );
    assert!(text.contains(&expected), "{text}\nwanted: {expected}");

    let (code, text, _) = run_leakhunt([
        "retainers".as_ref(),
        b.as_os_str(),
        "--address".as_ref(),
        format!("0x{:x}", holder.address).as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["class"], "Array");
    assert_eq!(v["path"]["root"], "global_tbl");
    assert_eq!(v["path"]["steps"].as_array().unwrap().len(), 0);
}

#[test]
fn histo_diff_of_ruby_dumps_by_class_name() {
    let Some(s) = Scenario::run() else { return };
    let (b, c) = (s.path("b.json"), s.path("c.json"));
    let (code, text, stderr) = run_leakhunt(["histo".as_ref(), b.as_os_str(), c.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    let temp = format!("{:>10} {:>30} {}", -200, "Temp", -8000);
    assert!(text.lines().any(|l| l == temp), "{text}");
    let (_, rb_only, _) = run_leakhunt([
        "histo".as_ref(),
        b.as_os_str(),
        c.as_os_str(),
        "--histo-rb".as_ref(),
    ]);
    assert!(!rb_only.contains(" Temp "), "{rb_only}");
}

// ---------------------------------------------------------------------------------------------
// Bad input.

fn scratch(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

const GOOD: &str = r#"{"address":"0x10", "type":"CLASS", "class":"0x11", "name":"Thing", "memsize":500}
{"address":"0x20", "type":"OBJECT", "class":"0x10", "memsize":40}
{"address":"0x28", "type":"OBJECT", "class":"0x10", "memsize":40}
"#;

#[test]
fn empty_file_and_other_kinds_are_input_errors() {
    let (_d, empty) = scratch("empty.json", b"");
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), empty.as_os_str()]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("empty.json") && stderr.contains("empty file"),
        "{stderr}"
    );
    let (_d, leaks) = scratch(
        "report.txt",
        b"Process 1602: 86671 nodes malloced for 13261 KB\nProcess 1602: 2 leaks for 64 total leaked bytes.\n",
    );
    for cmd in ["histo", "diff", "retainers"] {
        let mut args = vec![cmd.as_ref(), leaks.as_os_str()];
        match cmd {
            "diff" => args.push(leaks.as_os_str()),
            "retainers" => args.extend(["--class", "X"].map(std::ffi::OsStr::new)),
            _ => {}
        }
        let (code, _, stderr) = run_leakhunt(args);
        assert_eq!(code, 2, "{cmd}");
        assert!(
            stderr.contains("report.txt") && stderr.contains("leaks report"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let (_d, rbx) = scratch("x.dump", b"RBXHEAPDUMP\0\0\0\0\x01");
    let (code, _, stderr) = run_leakhunt(["retainers", rbx.to_str().unwrap(), "--class", "X"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Rubinius"), "{stderr}");
}

#[test]
fn truncated_and_invalid_lines_are_skipped_with_their_line_numbers() {
    let mut content = GOOD.to_string();
    content.push_str("{\"address\":\"0x30\", \"type\"\"OBJECT\"}\n"); // line 4: invalid
    content.push_str(r#"{"address":"0x38", "type":"OBJECT", "class":"0x10", "memsize":40}"#);
    content.push('\n');
    content.push_str(r#"{"address":"0x40", "type":"OBJECT", "cla"#); // line 6: cut short
    let (_d, p) = scratch("cut.json", content.as_bytes());
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), p.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{:>10} {:>30} {}\n{:>10} {:>30} {}\n",
            3, "Thing", 120, 1, "Class", 500
        )
    );
    assert!(
        stderr.contains("cut.json: 1 invalid line at line 4 (expected ':' after a key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cut.json: 1 truncated line at line 6"),
        "{stderr}"
    );
}

#[test]
fn nothing_readable_is_exit_2_naming_the_line() {
    let (_d, p) = scratch(
        "bad.json",
        b"{\"address\":\"0x1\", \"type\"\n{\"address\":\"0x2\"\n",
    );
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), p.as_os_str()]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("leakhunt: "), "{stderr}");
    assert!(
        stderr.contains("bad.json: line 1: no heap object could be read"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn huge_lines_are_read_or_reported() {
    // A 1,500,000-element Array (a 27 MB line) and a 2 MB line of garbage, among good lines.
    let n = 1_500_000u64;
    let mut content = GOOD.as_bytes().to_vec();
    content.extend_from_slice(
        format!(
            r#"{{"address":"0x50", "type":"ARRAY", "class":"0x60", "length":{n}, "references":["#
        )
        .as_bytes(),
    );
    for i in 0..n {
        if i > 0 {
            content.extend_from_slice(b", ");
        }
        write!(content, "\"0x{:x}\"", 0x7f00_0000_0000u64 + i * 40).unwrap();
    }
    content.extend_from_slice(br#"], "memsize":12000040}"#);
    content.push(b'\n');
    content.extend(std::iter::repeat_n(b'x', 2 << 20));
    content.push(b'\n');
    content.extend_from_slice(GOOD.as_bytes());
    let (_d, p) = scratch("huge.json", &content);
    let read = histogram_with(&p, &ReadOptions::default()).unwrap();
    assert_eq!(row(&read.histogram, "Thing"), (4, 160));
    assert_eq!(
        row(&read.histogram, "#<Class:0x0000000000000060>"),
        (1, 12_000_040)
    );
    assert_eq!(read.diagnostics.count_of("invalid lines"), 1);
    assert_eq!(
        read.diagnostics.lines()[0],
        format!(
            "{}: 1 invalid line at line 5 (a 2097152-byte line that is not a heap record)",
            p.display()
        )
    );
    // The array's references survive the long-line path: the retainer graph sees them.
    let mut with_items = content.clone();
    with_items
        .extend_from_slice(b"{\"type\":\"ROOT\", \"root\":\"vm\", \"references\":[\"0x50\"]}\n");
    with_items.extend_from_slice(
        format!(
            "{{\"address\":\"0x{:x}\", \"type\":\"OBJECT\", \"class\":\"0x10\", \"memsize\":40}}\n",
            0x7f00_0000_0000u64 + 7 * 40
        )
        .as_bytes(),
    );
    let (_d2, p2) = scratch("huge2.json", &with_items);
    let r = for_class_with(&p2, "Thing", 5, &ReadOptions::default()).unwrap();
    assert_eq!(r.reachable, 1);
    assert_eq!(r.groups[0].steps[0].length, Some(n));
    assert_eq!(r.groups[0].root, "vm");
}

#[test]
fn gzip_input_and_a_damaged_gzip_stream() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("d.json.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    for _ in 0..2000 {
        enc.write_all(GOOD.as_bytes()).unwrap();
    }
    enc.finish().unwrap();
    let read = histogram_with(&gz, &tiny()).unwrap();
    assert_eq!(row(&read.histogram, "Thing"), (4000, 160_000));
    let bytes = std::fs::read(&gz).unwrap();
    let cut = dir.path().join("cut.json.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let read = histogram_with(&cut, &tiny()).unwrap();
    assert!(row(&read.histogram, "Thing").0 > 0);
    assert_eq!(read.diagnostics.count_of("damaged gzip streams"), 1);
}
