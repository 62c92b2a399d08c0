//! Snapshot rounds that must not stall or break the program: a round never waits on a program
//! thread it parked, never keeps the program parked past its deadline, and the agent's hooks
//! never raise into the program's threads.

use super::{
    Run, assert_private_and_clean, class_counts, line_of, lsan_ready, one_run_at_a_time,
    ruby_ready, run,
};
use crate::common::{build_widget, fixture, have, require, widget_fixture};
use std::process::{Command, Stdio};

fn libarchive_ready() -> bool {
    let ok = have("ruby")
        && Command::new("ruby")
            .args(["-e", "require 'ffi-libarchive'"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    require("ruby with ffi-libarchive (Debian ruby-ffi-libarchive)", ok)
}

/// The JSON report at the end of a run's stdout (the program's own output comes first).
fn report(r: &Run) -> serde_json::Value {
    let start = r.stdout.find("\n{\n").map_or(0, |i| i + 1);
    serde_json::from_str(&r.stdout[start..])
        .unwrap_or_else(|e| panic!("no JSON report ({e})\n{}", r.context()))
}

/// The program requires new code while it works, so a round often begins while the agent scans
/// the classes that code defined, on the program's thread. Were that thread parked holding the
/// agent's inventory lock, the first round's LeakSanitizer setup (which loads Fiddle and so runs
/// class bodies through the agent's hooks) would wait for it until the round gave up, and the
/// round would have no native evidence.
#[test]
fn rounds_while_the_program_loads_code_keep_their_native_evidence() {
    if !ruby_ready() || !libarchive_ready() || !lsan_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &[
            "--backend",
            "lsan",
            "--after",
            "3s",
            "--every",
            "1s",
            "--snapshots",
            "2",
            "--format",
            "json",
        ],
        &[fixture("run/lazy-loads.rb").to_str().unwrap(), "7"],
        &[],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains("loaded "), "{ctx}");
    assert_eq!(r.reasons(), ["interval", "interval", "exit"], "{ctx}");
    for s in &r.manifest.snapshots {
        assert!(
            s.errors.is_empty(),
            "snapshot {}: {:?}\n{ctx}",
            s.index,
            s.errors
        );
        assert!(
            s.heap.is_some() && s.native.is_some(),
            "snapshot {}\n{ctx}",
            s.index
        );
    }
    // Each snapshot's native evidence shows the Probes' handles piling up in libarchive, and
    // libarchive's readers, released by their finalizers, are blamed for nothing.
    let report = report(&r);
    let site = report["native_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["function"] == "archive_read_new")
        .unwrap_or_else(|| panic!("no archive_read_new site: {report:#}"));
    assert!(
        site["library"]
            .as_str()
            .unwrap()
            .starts_with("libarchive.so"),
        "{site:#}"
    );
    let blocks: Vec<u64> = site["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3, "one count per snapshot: {site:#}");
    assert!(
        blocks.windows(2).all(|w| w[0] <= w[1]) && blocks[2] > blocks[0],
        "{blocks:?}"
    );
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["class"] != "Archive::Reader"),
        "{report:#}"
    );
    assert_private_and_clean(&r);
}

/// The round's second GC, with the program parked, runs finalizers that together take longer
/// than the round may: the program's threads resume at the deadline by themselves, the steps
/// after the GC are skipped, and the report names the step that overran.
#[test]
fn a_round_stuck_in_finalizers_resumes_the_program_and_names_the_step() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    // An 8 s deadline: the parked steps must end 6 s into the round; the first GC's finalizers
    // take about 3 s, the second GC's several more. Without allocation sites: the GCs that end
    // warm-up would run those finalizers before the round (one thread at a time runs them).
    let r = run(
        &[
            "--backend",
            "none",
            "--no-alloc-sites",
            "--after",
            "1s",
            "--snapshots",
            "1",
        ],
        &[fixture("run/slow-finalizer.rb").to_str().unwrap(), "6"],
        &[("LEAKHUNT_SNAPSHOT_DEADLINE", "8")],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains("slow-finalizer: dropped "), "{ctx}");
    let first = &r.manifest.snapshots[0];
    assert_eq!(first.reason, "interval", "{ctx}");
    let overran = first
        .errors
        .iter()
        .find(|e| e.starts_with("the garbage collection overran its "))
        .unwrap_or_else(|| panic!("no overrun named: {ctx}"));
    assert!(
        overran.ends_with(" s budget; the program was resumed"),
        "{overran}"
    );
    assert!(
        r.stdout
            .contains(&format!("snapshot 1 (interval): {overran}")),
        "the report names it: {ctx}"
    );
    assert_private_and_clean(&r);
}

/// A thread allocates all the time while the rounds pause the program: held (the default: the
/// agent keeps Ruby's GVL and dumps into memory) or parked (`LEAKHUNT_HELD_DUMP_MAX=0`: a
/// TracePoint stops the thread), every dump shows the heap as the round's GC left it, with the
/// Tick or two the thread still holds and none of those it drops. Were the thread to run while
/// the dump is written (dump_all through Ruby's IO lets it), thousands would be in the dump.
#[test]
fn a_busy_thread_makes_nothing_while_a_round_is_paused() {
    if !ruby_ready() {
        return;
    }
    for (env, mode) in [
        (vec![], "held"),
        (vec![("LEAKHUNT_HELD_DUMP_MAX", "0")], "parked"),
    ] {
        let _one = one_run_at_a_time();
        let r = run(
            &[
                "--backend",
                "none",
                "--after",
                "1s",
                "--every",
                "500ms",
                "--snapshots",
                "3",
            ],
            &[fixture("run/busy-thread.rb").to_str().unwrap(), "5"],
            &env,
        );
        let ctx = r.context();
        assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
        let ticks: u64 = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("busy-thread: ")?.strip_suffix(" ticks"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no tick count: {ctx}"));
        assert!(ticks > 100_000, "the thread was busy: {ticks}\n{ctx}");
        let intervals: Vec<_> = r
            .manifest
            .snapshots
            .iter()
            .filter(|s| s.reason == "interval")
            .collect();
        assert!(intervals.len() >= 2, "{ctx}");
        for s in &intervals {
            let sidecar = r.sidecar(s.sidecar.as_ref().unwrap());
            assert_eq!(
                sidecar.pause.as_deref(),
                Some(mode),
                "snapshot {}\n{ctx}",
                s.index
            );
            assert!(sidecar.errors.is_empty(), "{:?}\n{ctx}", sidecar.errors);
        }
        let counts = class_counts(&r, "Tick");
        assert_eq!(counts.len(), r.manifest.snapshots.len(), "{ctx}");
        assert!(
            counts.iter().all(|&n| n <= 8),
            "{mode}: Ticks in the dumps {counts:?}\n{ctx}"
        );
    }
}

/// Worker threads create and release wrappers at new creation sites all the time, during the
/// rounds too. The agent's counting hooks must never raise into them (a hook adding a site while
/// the sidecar lists the sites would raise "can't add a new key into hash during iteration"),
/// so the sites are listed while the threads are parked and every hook rescues.
#[test]
fn a_threaded_server_never_sees_an_error_from_the_agent() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let r = run(
        &[
            "--backend",
            "none",
            "--after",
            "1s",
            "--every",
            "150ms",
            "--snapshots",
            "12",
            "--fail-on",
            "never",
        ],
        &[
            widget_fixture("widget-server.rb").to_str().unwrap(),
            "4",
            "5",
        ],
        &[("WIDGET_LIB", lib.to_str().unwrap())],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains(", 0 errors"), "{ctx}");
    assert!(r.manifest.snapshots.iter().all(|s| s.taken()), "{ctx}");
    // The counts are whole: every snapshot's Widget count covers its per-site counts, and the
    // sites are the requests' own views.
    let mut created = Vec::new();
    for s in r
        .manifest
        .snapshots
        .iter()
        .filter_map(|s| s.sidecar.as_ref())
    {
        let sidecar = r.sidecar(s);
        assert!(sidecar.errors.is_empty(), "{s}: {:?}", sidecar.errors);
        let Some(widget) = sidecar.lifecycle.iter().find(|l| l.class == "Widget") else {
            continue;
        };
        let listed: u64 = widget.created_at.iter().map(|site| site.count).sum();
        assert!(listed <= widget.created, "{widget:#?}");
        assert!(
            widget
                .created_at
                .iter()
                .all(|site| site.file.starts_with("views/w") && site.count == 1),
            "{widget:#?}"
        );
        created.push(widget.created);
    }
    assert!(created.len() >= 5, "{created:?}\n{ctx}");
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");
    assert_private_and_clean(&r);
}

/// A program that creates wrappers at ever new sites (code eval'd under a new file name each
/// time) must not grow the agent's per-site tables with them, and a site that starts leaking
/// once the table has filled up is still counted: each round makes room by forgetting the sites
/// whose instances were all released.
#[test]
fn wrappers_made_at_ever_new_sites_keep_the_agent_bounded_and_a_later_leak_counted() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let sites = 20_000;
    let r = run(
        &[
            "--backend",
            "none",
            "--after",
            "2s",
            "--every",
            "60s",
            "--fail-on",
            "never",
        ],
        &[
            widget_fixture("widget-many-sites.rb").to_str().unwrap(),
            &sites.to_string(),
            "50",
        ],
        &[("WIDGET_LIB", lib.to_str().unwrap())],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains("20000 sites, 50 Widgets kept"), "{ctx}");
    let last = r
        .manifest
        .snapshots
        .iter()
        .rev()
        .find_map(|s| s.sidecar.as_ref())
        .map(|s| r.sidecar(s))
        .expect("a sidecar");
    let widget = last
        .lifecycle
        .iter()
        .find(|l| l.class == "Widget")
        .unwrap_or_else(|| panic!("no Widget counts\n{ctx}"));
    assert_eq!(widget.created, sites + 50, "{widget:#?}");
    let leak = widget
        .created_at
        .iter()
        .find(|s| s.file.ends_with("widget-many-sites.rb"))
        .unwrap_or_else(|| panic!("the leak's site is not counted: {widget:#?}"));
    let line = line_of(
        "widget/widget-many-sites.rb",
        "kept = Array.new(leaked) { Widget.new(16) } # the leak's site",
    );
    assert_eq!((leak.line, leak.count, leak.released), (line, 50, Some(0)));
    // Three tables per site would be 60,000 Hashes: every dump holds a few thousand at most.
    let hashes = class_counts(&r, "Hash");
    assert!(hashes.len() >= 2, "{hashes:?}\n{ctx}");
    assert!(
        hashes.iter().all(|&n| n < 10_000),
        "Hashes in the dumps: {hashes:?}\n{ctx}"
    );
}

/// A wrapper class defined late, outside a class body and a require (`Class.new` in the main
/// script, once the second round is over): the next round's scan finds it, every round still
/// lists the ones found before, and its unclosed instances are a missing `LateWidget#close` at
/// the line that creates them. The second round, with no method defined since the first,
/// skips the scan.
/// `ruby -r src/run/agent.rb fixtures/SCRIPT` without leakhunt's socket: the agent loads inert
/// and the script drives its classes directly.
fn inert_agent(script: &str) -> Command {
    let mut command = Command::new("ruby");
    command
        .arg("-r")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/run/agent.rb"))
        .arg(fixture(script))
        .env_remove("LEAKHUNT_SOCKET");
    command
}

/// The agent loaded inert (no leakhunt socket) into fixtures/agent/frame-sites.rb, which
/// answers each creation both ways, FrameSites and caller_locations, for the call shapes that
/// misled the frames (evals, compiled views, a binding's eval at its method's line, C blocks,
/// a method and its caller on the same line of two files): they must agree, natively and under
/// LSan, and the table must have served some (525e5b1, 41697cb, 0057fa0 and dac4b28 fail it).
#[test]
fn frame_sites_agree_with_caller_locations_in_every_shape() {
    if !ruby_ready() || !lsan_ready() {
        return;
    }
    let lsan = leakhunt::platform::lsan_runtime().unwrap();
    for preload in [None, Some(&lsan)] {
        let mut command = inert_agent("agent/frame-sites.rb");
        if let Some(lsan) = preload {
            command.env("LD_PRELOAD", lsan).env(
                "LSAN_OPTIONS",
                "fast_unwind_on_malloc=0:leak_check_at_exit=0:detect_leaks=1",
            );
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(", 0 different"),
            "LSan {}: {}\n{stdout}\n{stderr}",
            preload.is_some(),
            out.status
        );
    }
}

/// Warm-up ends with a dump of the heap, which leakhunt judges the first round's records by: a
/// thread allocating all along must get no record after that dump, though the full GC and the
/// dump outlast its time slice (fixtures/agent/warmup-gap.rb, the agent inert; the agent before
/// the warm-up's end kept the GVL let it make some).
#[test]
fn nothing_is_traced_between_the_warm_up_dump_and_the_end_of_tracing() {
    if !ruby_ready() {
        return;
    }
    let out = inert_agent("agent/warmup-gap.rb").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(", 0 of them traced"),
        "{}\n{stdout}\n{stderr}",
        out.status
    );
}

/// Under LSan creation sites come from the frames and a table of their paths: a Widget made by
/// an `eval` with its own file name inside a method (one frame with the method) is still
/// counted at that file, those of two procs one method compiled from source (views) at theirs,
/// and one evaluated in a method's binding at the line where the method made one at its own;
/// the direct ones at their method's line, from an each_with_index block (a frame
/// caller_locations does not list), read from the table.
#[test]
fn creation_sites_read_from_the_frames_under_lsan_match_caller_locations() {
    if !ruby_ready() || !lsan_ready() || !require("gcc", have("gcc")) {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let r = run(
        &[
            "--backend",
            "lsan",
            "--after",
            "1s",
            "--every",
            "1s",
            "--snapshots",
            "2",
            "--format",
            "json",
            "--fail-on",
            "never",
        ],
        &[widget_fixture("widget-sites.rb").to_str().unwrap()],
        &[("WIDGET_LIB", lib.to_str().unwrap())],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains("widget-sites: created"), "{ctx}");
    let last = r.last_sidecar();
    let widget = last
        .lifecycle
        .iter()
        .find(|l| l.class == "Widget")
        .unwrap_or_else(|| panic!("no Widget lifecycle\n{ctx}"));
    let direct = line_of("widget/widget-sites.rb", "Widget.new(64)");
    let mut sites: Vec<(String, u32, u64)> = widget
        .created_at
        .iter()
        .map(|s| {
            let file = s.file.rsplit('/').next().unwrap_or_default().to_owned();
            (file, s.line, s.count)
        })
        .collect();
    sites.sort();
    let scope = line_of("widget/widget-sites.rb", "[Widget.new(64), binding]");
    let [
        (bound_file, bound_line, bound),
        (eval_file, 40, evaluated),
        (view_a, 1, a),
        (view_b, 1, b),
        (file, line, made),
        (scope_file, scope_line, scoped),
    ] = &sites[..]
    else {
        panic!("{sites:?}\n{ctx}");
    };
    assert_eq!(eval_file, "generated-widgets.rb", "{sites:?}");
    assert_eq!(
        (view_a.as_str(), view_b.as_str()),
        ("view-a.erb", "view-b.erb")
    );
    assert_eq!((bound_file.as_str(), *bound_line), ("bound.erb", scope));
    assert_eq!(
        (scope_file.as_str(), *scope_line),
        ("widget-sites.rb", scope)
    );
    assert_eq!(
        (file.as_str(), *line),
        ("widget-sites.rb", direct),
        "{sites:?}"
    );
    assert!(*made > 100, "{sites:?}");
    for n in [evaluated, a, b, bound, scoped] {
        assert!(made.abs_diff(*n) <= 1, "{sites:?}");
    }
    let frames = last
        .frame_sites
        .unwrap_or_else(|| panic!("no frame_sites\n{ctx}"));
    // The eval's frame goes the slow way; the direct ones, but the first after each GC, not.
    assert!(
        !frames.off && 2 * frames.fast > *made,
        "{frames:?} {sites:?}\n{ctx}"
    );
}

/// The scans skip the modules there before the agent only when those are Ruby's own: a wrapper
/// class the program preloads (`ruby -r`), whose FFI binding is autoloaded after the agent
/// started, is found and diagnosed.
#[test]
fn a_wrapper_class_preloaded_before_the_agent_is_found() {
    if !ruby_ready() || !require("gcc", have("gcc")) {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let widget_dir = widget_fixture("");
    let script = widget_fixture("widget-preloaded.rb");
    let r = run(
        &[
            "--backend",
            "none",
            "--after",
            "1s",
            "--every",
            "1s",
            "--snapshots",
            "3",
            "--format",
            "json",
            "--fail-on",
            "never",
        ],
        &[
            "ruby",
            "-I",
            widget_dir.to_str().unwrap(),
            "-rwidget-handle",
            script.to_str().unwrap(),
        ],
        &[("WIDGET_LIB", lib.to_str().unwrap())],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains("widget-preloaded: created"), "{ctx}");
    let last = r.last_sidecar();
    let classes: Vec<&str> = last.wrappers.iter().map(|w| w.class.as_str()).collect();
    assert!(classes.contains(&"WidgetHandle"), "{classes:?}\n{ctx}");
    let report = report(&r);
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["suggestion"]["method"] == "WidgetHandle#close")
        .unwrap_or_else(|| panic!("no WidgetHandle#close finding: {report:#}\n{ctx}"));
    assert_eq!(finding["kind"], "missing_release", "{finding:#}");
    let created = &finding["suggestion"]["locations"][0];
    assert!(
        created["file"]
            .as_str()
            .unwrap()
            .ends_with("widget-preloaded.rb"),
        "{finding:#}"
    );
    let line = line_of(
        "widget/widget-preloaded.rb",
        "10.times { WidgetHandle.new(256) }",
    );
    assert_eq!(created["line"], line, "{finding:#}");
}

#[test]
fn a_wrapper_class_defined_late_is_found_by_the_next_rounds_scan() {
    if !ruby_ready() || !require("gcc", have("gcc")) {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let lib = build_widget(dir.path());
    let r = run(
        &[
            "--backend",
            "none",
            "--after",
            "1s",
            "--every",
            "1s",
            "--snapshots",
            "5",
            "--format",
            "json",
            "--fail-on",
            "never",
        ],
        &[widget_fixture("widget-late-class.rb").to_str().unwrap()],
        &[("WIDGET_LIB", lib.to_str().unwrap())],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains("widget-late-class: created"), "{ctx}");
    let sidecars: Vec<_> = r
        .manifest
        .snapshots
        .iter()
        .filter_map(|s| s.sidecar.as_ref())
        .map(|s| r.sidecar(s))
        .collect();
    assert_eq!(sidecars.len(), 6, "{ctx}");
    let scanned: Vec<bool> = sidecars
        .iter()
        .map(|s| s.timings.contains_key("scan"))
        .collect();
    assert_eq!(
        scanned[..3],
        [true, false, true],
        "rounds that scanned\n{ctx}"
    );
    for (i, sidecar) in sidecars.iter().enumerate() {
        let classes: Vec<&str> = sidecar.wrappers.iter().map(|w| w.class.as_str()).collect();
        assert!(classes.contains(&"Widget"), "round {}: {classes:?}", i + 1);
        assert_eq!(
            classes.contains(&"LateWidget"),
            i >= 2,
            "round {}: {classes:?}",
            i + 1
        );
        // A module there before the agent is read once something is defined in it.
        assert_eq!(
            classes.contains(&"Marshal"),
            i >= 2,
            "round {}: {classes:?}",
            i + 1
        );
    }
    let report = report(&r);
    let late = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["suggestion"]["method"] == "LateWidget#close")
        .unwrap_or_else(|| panic!("no LateWidget#close finding: {report:#}\n{ctx}"));
    assert_eq!(late["kind"], "missing_release", "{late:#}");
    let created = &late["suggestion"]["locations"][0];
    assert_eq!(created["role"], "created", "{late:#}");
    assert!(
        created["file"]
            .as_str()
            .unwrap()
            .ends_with("widget-late-class.rb"),
        "{late:#}"
    );
    let line = line_of(
        "widget/widget-late-class.rb",
        "10.times { LateWidget.new(256) }",
    );
    assert_eq!(created["line"], line, "{late:#}");
}
