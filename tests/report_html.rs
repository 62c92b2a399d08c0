//! The HTML report in a real browser: headless Chromium loads the file, runs its script, and
//! the dumped DOM must hold the drawn charts (SVG paths through real points) and the findings;
//! a class named like an attack must arrive as text, and dump strings must stay redacted.

use leakhunt::bundle::{
    FfiCall, FfiFunction, FfiLibrary, FfiModule, FootprintSample, Lifecycle, MethodRole, Sidecar,
    SiteCount, WrapperClass, WrapperMethod,
};
use leakhunt::correlate::{Options, correlate};
use leakhunt::evidence::{
    ClassRetainers, Evidence, HeapSnapshot, NativeSnapshot, Origin, RetainerGroup, SourceLine,
};
use leakhunt::heap::histogram::{ClassRow, Histogram};
use leakhunt::heap::{HeapFormat, HeapSummary};
use leakhunt::native::{Frame, LeakKind, NativeFormat, ReportBuilder};
use leakhunt::report::Renderer;
use leakhunt::report::html::HtmlReport;
use std::path::Path;
use std::process::Command;

const HOSTILE: &str = "Evil<script>document.title='pwned'</script>";

fn frame(function: &str, module: &str) -> Frame {
    Frame {
        function: Some(function.into()),
        module: Some(module.into()),
        ..Frame::default()
    }
}

/// Three snapshots of a run leaking Widgets and piling up instances of a hostile-named class.
fn evidence() -> Evidence {
    let mut ev = Evidence::empty(Origin::Bundle("bundle".into()));
    for (i, n) in [1_000i64, 4_000, 9_000].into_iter().enumerate() {
        let t = 1.0 + 2.0 * i as f64;
        ev.heap.push(HeapSnapshot {
            t: Some(t),
            snapshot: Some(i as u32 + 1),
            dump: None,
            summary: HeapSummary {
                path: format!("heap-00{}.json", i + 1).into(),
                format: HeapFormat::Cruby,
                ruby_version: None,
                histogram: Histogram {
                    rows: vec![
                        ClassRow {
                            name: HOSTILE.into(),
                            count: n,
                            bytes: n * 40,
                        },
                        ClassRow {
                            name: "String".into(),
                            count: 20_000,
                            bytes: 800_000,
                        },
                        ClassRow {
                            name: "Widget".into(),
                            count: 3,
                            bytes: 120,
                        },
                    ],
                },
                alloc_sites: Vec::new(),
                data_types: Vec::new(),
                objects: 0,
                slot_bytes: None,
                diagnostics: Default::default(),
            },
        });
        let mut b = ReportBuilder::new("lsan.log", NativeFormat::Lsan, i as u32);
        let stack = [
            frame("ffi_call_unix64", "/usr/lib/x86_64-linux-gnu/libffi.so.8"),
            frame("widget_create", "/tmp/w/libwidget.so"),
            frame("malloc", "/usr/lib/x86_64-linux-gnu/liblsan.so.0"),
        ];
        let ids = stack.into_iter().map(|f| b.intern_frame(f)).collect();
        let s = b.intern_stack(ids);
        let widgets = 100 * (i as u64 + 1) * (i as u64 + 1);
        b.add_leak(Some(s), LeakKind::Direct, None, widgets, widgets * 16, None);
        b.add_leak(
            Some(s),
            LeakKind::Indirect,
            None,
            widgets,
            widgets * 256,
            None,
        );
        ev.native.push(NativeSnapshot {
            t: Some(t),
            snapshot: Some(i as u32 + 1),
            at_exit: false,
            report: b.finish(),
        });
        ev.sidecars.push(Sidecar {
            ffi: vec![FfiModule {
                name: "LibWidget".into(),
                libraries: vec![FfiLibrary {
                    name: "/tmp/w/libwidget.so".into(),
                    path: Some("/tmp/w/libwidget.so".into()),
                }],
                functions: ["widget_create", "widget_destroy"]
                    .iter()
                    .map(|f| FfiFunction {
                        name: f.to_string(),
                        symbol: f.to_string(),
                        ..FfiFunction::default()
                    })
                    .collect(),
            }],
            wrappers: vec![WrapperClass {
                class: "Widget".into(),
                methods: [
                    ("initialize", "widget_create", MethodRole::Allocate),
                    ("close", "widget_destroy", MethodRole::Release),
                ]
                .iter()
                .map(|&(name, f, role)| WrapperMethod {
                    name: name.into(),
                    calls: vec![FfiCall {
                        module: "LibWidget".into(),
                        function: f.into(),
                    }],
                    role,
                    ..WrapperMethod::default()
                })
                .collect(),
                ..WrapperClass::default()
            }],
            lifecycle: vec![Lifecycle {
                class: "Widget".into(),
                created: widgets,
                released: 0,
                release_methods: vec!["close".into()],
                created_at: vec![SiteCount {
                    file: "widget-leak.rb".into(),
                    line: 7,
                    count: widgets,
                    released: Some(0),
                }],
                since: 0.0,
            }],
            ..Sidecar::default()
        });
    }
    ev.retainers.push(ClassRetainers {
        class: HOSTILE.into(),
        snapshot: 3,
        instances: 9_000,
        new_instances: None,
        reachable: 9_000,
        groups: vec![RetainerGroup {
            count: 9_000,
            container_class: "Hash".into(),
            container_address: Some(0x7f00_dead_0000),
            container_site: Some(SourceLine {
                file: "app.rb".into(),
                line: 12,
            }),
            container_constant: None,
            container_length: Some(9_000),
            container_growth: None,
            container_objects: None,
            root: "global_tbl".into(),
            path: vec![r#"String "secret-token""#.into()],
            holders: vec![],
        }],
    });
    ev.footprint = (0..24)
        .map(|i| FootprintSample {
            t: i as f64 * 0.25,
            bytes: 40_000_000 + i * i * 150_000,
        })
        .collect();
    ev
}

fn html(include_strings: bool) -> String {
    let analysis = correlate(&evidence(), &Options { include_strings });
    let mut buf = Vec::new();
    HtmlReport::default().render(&analysis, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

fn chromium(dir: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .output()
        .expect("chromium runs (Debian package `chromium`, in .ci/packages)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `d` attributes of the drawn series paths inside the SVG with `id`.
fn series_paths(dom: &str, id: &str) -> Vec<Vec<(f64, f64)>> {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let end = start + dom[start..].find("</svg>").unwrap();
    let svg = &dom[start..end];
    svg.match_indices("<path ")
        .filter_map(|(i, _)| {
            let tag = &svg[i..i + svg[i..].find('>')?];
            if !tag.contains("series") {
                return None;
            }
            let d = tag.split("d=\"").nth(1)?.split('"').next()?;
            Some(
                d.split(['M', 'L'])
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| {
                        let (x, y) = p.trim().split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The opening tag of the SVG with `id`.
fn svg_tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = dom[..at].rfind("<svg").unwrap();
    &dom[start..at + dom[at..].find('>').unwrap()]
}

fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[start..start + tag[start..].find('"').unwrap()]
}

/// "x y w h" (or with commas) → (x0, y0, x1, y1).
fn boxed(text: &str) -> (f64, f64, f64, f64) {
    let v: Vec<f64> = text
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap())
        .collect();
    (v[0], v[1], v[0] + v[2], v[1] + v[3])
}

fn inside(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> bool {
    a.0 >= b.0 - 0.5 && a.1 >= b.1 - 0.5 && a.2 <= b.2 + 0.5 && a.3 <= b.3 + 0.5
}

fn overlaps(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// (stroke-dasharray, marker shape) of each drawn series in the SVG with `id`.
fn series_styles(dom: &str, id: &str) -> Vec<(String, String)> {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap();
    let svg = &dom[start..start + dom[start..].find("</svg>").unwrap()];
    svg.match_indices("<path ")
        .filter_map(|(i, _)| {
            let tag = &svg[i..i + svg[i..].find('>')?];
            tag.contains("class=\"series").then(|| {
                let dash = tag
                    .split("stroke-dasharray=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("none");
                let marker = attribute(tag, "data-marker");
                (dash.to_owned(), marker.to_owned())
            })
        })
        .collect()
}

#[test]
fn the_html_report_renders_charts_and_findings_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, html(false)).unwrap();
    let url = format!("file://{}", page.display());

    let (dom, stderr) = chromium(
        dir.path(),
        &["--virtual-time-budget=5000", "--dump-dom", &url],
    );
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "script did not run:\n{stderr}"
    );

    // Charts: real points, in the order of the data.
    let footprint = series_paths(&dom, "chart-footprint");
    assert_eq!(footprint.len(), 1);
    assert_eq!(footprint[0].len(), 24);
    let ys: Vec<f64> = footprint[0].iter().map(|p| p.1).collect();
    assert!(
        ys.windows(2).all(|w| w[1] <= w[0]),
        "footprint grows: y falls on screen {ys:?}"
    );
    assert!(ys[0] - ys[23] > 100.0, "{ys:?}");
    let classes = series_paths(&dom, "chart-classes");
    assert_eq!(classes.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3]);
    let native = series_paths(&dom, "chart-native");
    assert_eq!(native.len(), 2);
    assert!(native.iter().all(|s| s.len() == 3));
    assert!(dom.contains("data-points=\"24\""));

    // Layout, as the browser measured it: the legend lies outside the plot area, every label
    // inside the SVG's box (the last x label was clipped at the right edge).
    for id in ["chart-footprint", "chart-classes", "chart-native"] {
        let svg = svg_tag(&dom, id);
        let view = boxed(attribute(svg, "viewBox"));
        let plot = boxed(attribute(svg, "data-plot-box"));
        let drawn = boxed(attribute(svg, "data-content-box"));
        assert!(
            inside(drawn, view),
            "{id}: drawn {drawn:?} outside {view:?}"
        );
        if id != "chart-footprint" {
            let legend = boxed(attribute(svg, "data-legend-box"));
            assert!(
                !overlaps(legend, plot),
                "{id}: legend {legend:?} over the plot {plot:?}"
            );
            assert!(
                inside(legend, view),
                "{id}: legend {legend:?} outside {view:?}"
            );
        }
    }
    // Every Widget byte is a finding's: the two native series lie on each other, so they must
    // differ in line and marker style to both be seen.
    assert_eq!(native[0], native[1], "the test data makes them equal");
    let styles = series_styles(&dom, "chart-native");
    assert_eq!(styles.len(), 2);
    assert_ne!(styles[0], styles[1], "{styles:?}");

    // Findings: both leaks, with their suggested change.
    assert!(dom.contains("data-kind=\"missing_release\""));
    assert!(dom.contains("data-kind=\"ruby_retention\""));
    assert!(dom.contains("Call `Widget#close`"), "missing suggestion");
    assert!(dom.contains("<code>widget-leak.rb:7</code>"));

    // The hostile class name is text everywhere, never markup.
    assert_eq!(
        dom.matches("<script").count(),
        2,
        "an injected script element"
    );
    assert!(!dom.contains("<title>pwned"));
    assert!(dom.contains("Evil&lt;script&gt;document.title='pwned'&lt;/script&gt;"));
    assert!(
        dom.contains("data-series=\"Evil&lt;script&gt;document.title='pwned'&lt;/script&gt;\"")
    );

    // Dump strings stay redacted.
    assert!(!dom.contains("secret-token"));
    assert!(dom.contains("String \"‹12 bytes›\""));

    // A screenshot is taken and is a real image.
    let shot = dir.path().join("report.png");
    let (_, stderr) = chromium(
        dir.path(),
        &[
            "--virtual-time-budget=5000",
            "--window-size=1280,1800",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{stderr}"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(
        png.len() > 20_000,
        "screenshot is nearly empty: {} bytes",
        png.len()
    );
}

#[test]
fn strings_are_shown_only_when_asked() {
    assert!(!html(false).contains("secret-token"));
    assert!(html(true).contains("String &quot;secret-token&quot;"));
}

/// The names of the drawn series in the SVG with `id` (their `data-series`).
fn series_names(dom: &str, id: &str) -> Vec<String> {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap();
    let svg = &dom[start..start + dom[start..].find("</svg>").unwrap()];
    svg.match_indices("<path ")
        .filter_map(|(i, _)| {
            let tag = &svg[i..i + svg[i..].find('>')?];
            tag.contains("class=\"series")
                .then(|| attribute(tag, "data-series").to_owned())
        })
        .collect()
}

/// A run of several processes (a master and two workers, each with the leaking evidence above):
/// the footprint and native charts draw one line per process, and the page lists them.
#[test]
fn a_run_of_several_processes_draws_one_line_per_process() {
    use leakhunt::bundle::{Manifest, ProcessEntry};
    use leakhunt::evidence::ProcessEvidence;
    let entry = |pid: u32, role: &str| ProcessEntry {
        pid,
        ppid: Some(if pid == 10 { 1 } else { 10 }),
        command: vec!["server.rb".into()],
        role: role.into(),
        first_round: Some(1),
        last_round: Some(3),
        ..ProcessEntry::default()
    };
    let mut ev = evidence();
    ev.manifest = Some(Manifest {
        pid: Some(10),
        processes: vec![entry(10, "main"), entry(11, "worker"), entry(12, "worker")],
        ..Manifest::default()
    });
    for pid in [11, 12] {
        ev.processes.push(ProcessEvidence {
            entry: entry(pid, "worker"),
            evidence: evidence(),
        });
    }
    let analysis = correlate(&ev, &Options::default());
    let mut buf = Vec::new();
    HtmlReport::default().render(&analysis, &mut buf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, buf).unwrap();
    let url = format!("file://{}", page.display());
    let (dom, stderr) = chromium(
        dir.path(),
        &["--virtual-time-budget=5000", "--dump-dom", &url],
    );
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "script did not run:\n{stderr}"
    );
    assert_eq!(
        series_names(&dom, "chart-footprint"),
        ["pid 10 (the master)", "pid 11 (worker)", "pid 12 (worker)"]
    );
    assert_eq!(
        series_names(&dom, "chart-native"),
        [
            "pid 10 (the master): leak findings",
            "pid 11 (worker): leak findings",
            "pid 12 (worker): leak findings"
        ]
    );
    assert!(
        series_paths(&dom, "chart-native")
            .iter()
            .all(|p| p.len() == 3)
    );
    let table = &dom[dom
        .find("<table id=\"processes\"")
        .expect("the processes table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr data-pid=").count(), 3, "{table}");
    assert!(dom.contains("in the master and 2 of 2 workers"), "{dom}");
}
