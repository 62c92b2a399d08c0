//! `leakhunt analyze` and the report at the end of `leakhunt run`, end to end: real programs
//! under real backends, and the offline seed evidence.

use crate::common::{assert_seed_a_top_finding, leak_kinds, locations, run_leakhunt};
use std::path::Path;

/// A bundle with a manifest only: the program crashed before the first snapshot.
fn crashed_bundle(dir: &Path) {
    std::fs::write(
        dir.join("manifest.json"),
        br#"{"leakhunt_bundle": 1, "command": ["leak.rb"], "backend": {"name": "lsan"},
            "outcome": {"kind": "signaled", "signal": 11, "signal_name": "SIGSEGV",
                        "detail": "killed by SIGSEGV before the first snapshot"},
            "warnings": ["the program ended before the first snapshot: try --after 0.2s"]}"#,
    )
    .unwrap();
}

#[test]
fn a_crashed_run_is_reported_with_its_signal_and_no_verdict() {
    let dir = tempfile::tempdir().unwrap();
    crashed_bundle(dir.path());
    let (code, stdout, stderr) = run_leakhunt(["analyze".as_ref(), dir.path().as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().next().unwrap(),
        "leakhunt: INCONCLUSIVE — not enough evidence to tell · 0 heap + 0 native snapshots · backend lsan · program killed by SIGSEGV"
    );
    assert!(stdout.contains("the program ended before the first snapshot: try --after 0.2s"));

    let (code, stdout, _) = run_leakhunt([
        "analyze".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["verdict"], "inconclusive");
    assert_eq!(v["program"]["outcome"]["signal_name"], "SIGSEGV");
    assert_eq!(v["findings"], serde_json::json!([]));
}

#[test]
fn analyze_writes_html_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    crashed_bundle(dir.path());
    let out = dir.path().join("report.html");
    let (code, stdout, stderr) = run_leakhunt([
        "analyze".as_ref(),
        "--format".as_ref(),
        "html".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("program killed by SIGSEGV"));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn bad_inputs_are_usage_or_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let (code, _, stderr) = run_leakhunt(["analyze".as_ref(), missing.as_os_str()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope.json"), "{stderr}");
    let (code, _, stderr) = run_leakhunt(["analyze".as_ref(), dir.path().as_os_str()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a leakhunt bundle"), "{stderr}");
    let (code, _, _) = run_leakhunt(["analyze"]);
    assert_eq!(code, 2);
}

// ---------------------------------------------------------------------------------------------
// Real runs of the seed's program (fixtures/seed) under LeakSanitizer.

use crate::common::{fixture, leakhunt};
use std::path::PathBuf;

/// `leakhunt run --backend lsan --snapshots 2` after a warm-up of `timing[0]`, every
/// `timing[1]`, writing the bundle to `bundle` and the report in `format`. Takes the run lock,
/// as every end-to-end run does.
fn lsan_run(
    bundle: &Path,
    timing: [&str; 2],
    format: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &Path)],
) -> std::process::Output {
    backend_run(["lsan", "2"], bundle, timing, format, program, args, env)
}

/// `leakhunt run` under `backend` with `snapshots` rounds (`[backend, snapshots]`), then as
/// [`lsan_run`].
fn backend_run(
    [backend, snapshots]: [&str; 2],
    bundle: &Path,
    timing: [&str; 2],
    format: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &Path)],
) -> std::process::Output {
    let _one = crate::common::one_run_at_a_time();
    leakhunt()
        .args(["run", "--backend", backend, "--snapshots", snapshots])
        .args([
            "--after", timing[0], "--every", timing[1], "--format", format,
        ])
        .arg("-o")
        .arg(bundle)
        .arg("--")
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("spawn leakhunt run")
}

/// The JSON report at the end of a run's stdout (the program's own output comes first).
fn json_report(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.find("\n{\n").map(|i| i + 1).unwrap_or(0);
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| {
        panic!(
            "run printed no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A seed run's report: (exit code, report, stderr).
fn run_json(dir: &Path, program: &Path, args: &[String]) -> (i32, serde_json::Value, String) {
    let out = lsan_run(
        &dir.join("bundle"),
        ["1s", "1.5s"],
        "json",
        program,
        args,
        &[],
    );
    let report = json_report(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The seed's arguments with a private ipc endpoint (no TCP port to collide on).
fn seed_args(dir: &Path, round_trips: u32) -> Vec<String> {
    vec![
        format!("ipc://{}/zmq.sock", dir.display()),
        "1024".into(),
        round_trips.to_string(),
    ]
}

/// Runs a seed variant under `leakhunt run`; expects exit 1 and returns the top finding.
fn seed_top_finding(variant: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let program = fixture(&format!("seed/{variant}"));
    let (code, report, stderr) = run_json(dir.path(), &program, &seed_args(dir.path(), 25_000));
    assert_eq!(code, 1, "{stderr}\n{report:#}");
    report["findings"][0].clone()
}

#[test]
fn seed_a_top_finding_is_the_array_that_keeps_every_message() {
    let top = seed_top_finding("leak.rb");
    assert_seed_a_top_finding(&top);
}

#[test]
fn seed_b_top_finding_is_the_missing_message_close() {
    let top = seed_top_finding("leak-counter.rb");
    assert_eq!(top["kind"], "missing_release", "{top:#}");
    assert_eq!(top["suggestion"]["method"], "ZMQ::Message#close");
    // The fix names the line that receives messages; the send line and the first message are
    // further creation sites, kept in JSON.
    let locs = locations(&top);
    assert_eq!(
        locs,
        [
            ("leak-counter.rb".into(), 37, "created".into()),
            ("leak-counter.rb".into(), 40, "also_created".into()),
            ("leak-counter.rb".into(), 26, "also_created".into())
        ],
        "{top:#}"
    );
    let fix = top["suggestion"]["text"].as_str().unwrap_or_default();
    assert!(
        fix.contains("leak-counter.rb:37: it calls zmq_msg_close") && !fix.contains(":40"),
        "{fix}"
    );
    let library = top["native"]["library"].as_str().unwrap_or_default();
    assert!(library.starts_with("libzmq.so"), "{top:#}");
}

#[test]
fn seed_c_is_clean_and_analyze_repeats_the_run_report() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let program = fixture("seed/leak-fixed.rb");
    let args = seed_args(dir.path(), 25_000);
    let out = lsan_run(&bundle, ["1s", "1.5s"], "text", &program, &args, &[]);
    let run_stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{run_stdout}\n{stderr}");
    assert!(
        run_stdout.contains("\nleakhunt: NO LEAK FOUND — no leak finding"),
        "{run_stdout}"
    );
    // The report ends the program's own output: compare from the report's first line on.
    let report = &run_stdout[run_stdout.find("leakhunt: NO LEAK FOUND").unwrap()..];
    let (code, again, _) = run_leakhunt(["analyze".as_ref(), bundle.as_os_str()]);
    assert_eq!(code, 0);
    assert_eq!(again, report);
    let (_, json, _) = run_leakhunt([
        "analyze".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        bundle.as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(leak_kinds(&v).is_empty(), "{v:#}");
    assert_eq!(v["program"]["outcome"]["kind"], "exited");
    assert_eq!(v["program"]["outcome"]["code"], 0);
}

// ---------------------------------------------------------------------------------------------
// Bare files from a real run: the widget library leaking under LeakSanitizer, one check per
// round, analyzed without a bundle.

#[test]
fn a_bare_lsan_log_of_leaking_widgets_names_widget_create_in_libwidget() {
    let dir = tempfile::tempdir().unwrap();
    let lib = crate::common::build_widget(dir.path());
    let log = crate::native_linux::run_under_lsan(
        dir.path(),
        &lib,
        "widget-checks.rb",
        &["5", "20", "40"],
        "",
    );
    let maps = dir.path().join("maps.2");
    let (code, stdout, stderr) = run_leakhunt([
        "analyze".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        log.as_os_str(),
        maps.as_os_str(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let top = &v["findings"][0];
    assert_eq!(top["kind"], "native_leak", "{v:#}");
    assert_eq!(top["native"]["function"], "widget_create");
    assert_eq!(top["native"]["library"], "libwidget.so");
    // Three checks while running (5, 25, 65 widgets) and one at exit that adds none: grown,
    // but not at every step.
    assert_eq!(top["confidence"], "medium", "{top:#}");
    let row = v["native_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == "widget_create")
        .unwrap();
    let blocks: Vec<u64> = row["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    // One handle and one payload per widget, both allocated in widget_create: 5, 25 and 65
    // widgets at the three checks, none more at exit. LeakSanitizer scans stacks and registers
    // conservatively, so the last widget or two the program touched may still look reachable at a
    // check (seen: 48 for 50): up to two widgets fewer is the same diagnosis.
    let made = [5u64, 25, 65, 65].map(|widgets| widgets * 2);
    assert_eq!(blocks.len(), made.len(), "{row:#}");
    for (seen, made) in blocks.iter().zip(made) {
        assert!(
            *seen <= made && *seen + 4 >= made,
            "{blocks:?} for {made:?}: {row:#}"
        );
    }
    assert_eq!(
        blocks[2], blocks[3],
        "the exit report adds no widget: {row:#}"
    );
    assert_eq!(row["status"], "leak");
    assert_eq!(v["input"]["kind"], "files");
}

// ---------------------------------------------------------------------------------------------
// The widget library (fixtures/widget) through `leakhunt run`: the rules are not zmq-specific,
// and a wrapper released by a finalizer is not reported.

/// Runs a widget program (3,000 objects over 3 s) under `leakhunt run --backend lsan`.
fn run_widget(program: &str) -> (i32, serde_json::Value, String) {
    run_widget_under("lsan", program)
}

/// Runs a widget program (3,000 objects over 3 s) under `leakhunt run --backend BACKEND`:
/// two rounds under lsan, three 0.7 s apart without a native backend (the lifecycle must grow
/// round after round).
fn run_widget_under(backend: &str, program: &str) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let lib = crate::common::build_widget(dir.path());
    let program = crate::common::widget_fixture(program);
    let args = ["3000".to_owned(), "3".to_owned()];
    let env = [("WIDGET_LIB", lib.as_path())];
    let (snapshots, every) = if backend == "lsan" {
        ("2", "1s")
    } else {
        ("3", "0.7s")
    };
    let out = backend_run(
        [backend, snapshots],
        &dir.path().join("bundle"),
        ["0.5s", every],
        "json",
        &program,
        &args,
        &env,
    );
    let report = json_report(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The 1-based line of `fixtures/widget/<program>` that contains `needle`.
fn widget_line(program: &str, needle: &str) -> u64 {
    let text = std::fs::read_to_string(crate::common::widget_fixture(program)).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1
}

#[test]
fn leaking_widgets_name_widget_close_and_where_widgets_are_made() {
    let (code, report, stderr) = run_widget("widget-leak.rb");
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        leak_kinds(&report),
        ["missing_release"],
        "{}\n{report:#}",
        crate::common::findings_brief(&report)
    );
    let top = &report["findings"][0];
    assert_eq!(top["kind"], "missing_release", "{report:#}");
    assert_eq!(top["class"], "Widget");
    assert_eq!(top["suggestion"]["method"], "Widget#close");
    assert_eq!(top["native"]["function"], "widget_create");
    assert_eq!(top["native"]["library"], "libwidget.so");
    let created = widget_line("widget-leak.rb", "Widget.new");
    assert_eq!(
        locations(top)[0],
        ("widget-leak.rb".to_owned(), created, "created".to_owned())
    );
}

/// A program that is not a `.rb` file runs as given, and the agent reaches the Ruby it starts
/// through `RUBYOPT`: here a wrapper script that execs ruby.
#[test]
fn a_wrapper_script_program_gets_the_agent_through_rubyopt() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let lib = crate::common::build_widget(dir.path());
    let wrapper = dir.path().join("run-ruby");
    std::fs::write(&wrapper, "#!/bin/sh\nexec ruby \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = crate::common::widget_fixture("widget-leak.rb");
    let args = [program.display().to_string(), "3000".into(), "3".into()];
    let bundle = dir.path().join("bundle");
    let env = [("WIDGET_LIB", lib.as_path())];
    let out = lsan_run(&bundle, ["0.5s", "1s"], "json", &wrapper, &args, &env);
    let report = json_report(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(leak_kinds(&report), ["missing_release"], "{report:#}");
    let top = &report["findings"][0];
    assert_eq!(top["suggestion"]["method"], "Widget#close", "{report:#}");
    let created = widget_line("widget-leak.rb", "Widget.new");
    assert_eq!(
        locations(top)[0],
        ("widget-leak.rb".to_owned(), created, "created".to_owned())
    );
    let manifest = leakhunt::bundle::Manifest::load(&bundle).unwrap();
    assert_eq!(manifest.command[0], wrapper.display().to_string());
    assert!(
        manifest
            .env
            .get("RUBYOPT")
            .is_some_and(|o| o.starts_with("-r")),
        "{:?}",
        manifest.env
    );
}

/// Without a native backend the unclosed Widgets are told from their lifecycle: one finding,
/// `Widget#close` at the `Widget.new` line. When malloc's growth after each GC rose steadily
/// with the dropped Widgets it sizes the finding (each keeps its 16-byte handle and 256-byte
/// payload); this program's growth is under a MiB, which a busy machine's noise can make
/// unsteady, and the finding then says native memory was not measured (the seed's
/// `seed_counter_without_a_native_backend` pins the sizing, on hundreds of MiB).
#[test]
fn leaking_widgets_without_a_native_backend_name_widget_close() {
    let (code, report, stderr) = run_widget_under("none", "widget-leak.rb");
    let ctx = format!(
        "{}\n{report:#}\n{stderr}",
        crate::common::findings_brief(&report)
    );
    assert_eq!(code, 1, "{ctx}");
    assert_eq!(leak_kinds(&report), ["missing_release"], "{ctx}");
    let top = &report["findings"][0];
    assert_eq!(top["class"], "Widget", "{ctx}");
    assert_eq!(top["suggestion"]["method"], "Widget#close", "{ctx}");
    assert!(top["native"].is_null(), "{ctx}");
    let title = top["title"].as_str().unwrap_or_default();
    if title.contains("measured by malloc after each GC, `--backend none`") {
        let (Some(bytes), Some(count)) = (top["bytes"].as_i64(), top["count"].as_i64()) else {
            panic!("bytes and count: {ctx}");
        };
        assert!(bytes > 0 && count > 0, "{ctx}");
        assert!(
            bytes / count >= 256 + 16,
            "{bytes} bytes for {count}: {ctx}"
        );
    } else {
        assert!(
            title.contains("native memory was not measured (`--backend none`)"),
            "{ctx}"
        );
        assert_eq!(top["bytes"], 0, "{ctx}");
    }
    let created = widget_line("widget-leak.rb", "Widget.new");
    assert_eq!(
        locations(top)[0],
        ("widget-leak.rb".to_owned(), created, "created".to_owned()),
        "{ctx}"
    );
}

/// Closed Widgets, and Gadgets whose FFI::AutoPointer frees them, are no finding without a
/// native backend either.
#[test]
fn closed_widgets_and_finalized_gadgets_without_a_native_backend_give_no_finding() {
    for program in ["widget-fixed.rb", "gadget-finalized.rb"] {
        let (code, report, stderr) = run_widget_under("none", program);
        assert_eq!(code, 0, "{program}: {stderr}\n{report:#}");
        assert!(leak_kinds(&report).is_empty(), "{program}: {report:#}");
        assert_eq!(report["verdict"], "no_leak", "{program}");
    }
}

#[test]
fn closed_widgets_and_finalized_gadgets_give_no_finding() {
    for program in ["widget-fixed.rb", "gadget-finalized.rb"] {
        let (code, report, stderr) = run_widget(program);
        assert_eq!(code, 0, "{program}: {stderr}\n{report:#}");
        assert!(leak_kinds(&report).is_empty(), "{program}: {report:#}");
        assert_eq!(report["verdict"], "no_leak", "{program}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bare CRuby dumps made by a real Ruby program: retention named down to the container's line.

const KEEPS_ORDERS: &str = r#"require "objspace"
ObjectSpace.trace_object_allocations_start
class Order; def initialize(i) = @i = i; end
orders = []
ARGV.each do |path|
  2000.times { |i| orders << Order.new(i) }
  GC.start
  File.open(path, "w") { |f| ObjectSpace.dump_all(output: f) }
end
"#;

#[test]
fn bare_dumps_name_the_array_that_keeps_the_orders_and_where_it_is_filled() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("keeps_orders.rb");
    std::fs::write(&program, KEEPS_ORDERS).unwrap();
    let dumps: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("heap{i}.json")))
        .collect();
    let status = std::process::Command::new("ruby")
        .arg(&program)
        .args(&dumps)
        .status()
        .expect("ruby runs (package ruby)");
    assert!(status.success());
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["analyze".as_ref(), "--format".as_ref(), "json".as_ref()];
    args.extend(dumps.iter().map(|d| d.as_os_str()));
    let (code, stdout, stderr) = run_leakhunt(args);
    assert_eq!(code, 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let top = &v["findings"][0];
    assert_eq!(top["kind"], "ruby_retention", "{v:#}");
    assert_eq!(top["class"], "Order");
    assert_eq!(top["count"], 4000);
    assert_eq!(top["confidence"], "high");
    let locs = locations(top);
    assert_eq!(
        locs,
        [
            (
                "keeps_orders.rb".to_owned(),
                4,
                "container_allocated".to_owned()
            ),
            (
                "keeps_orders.rb".to_owned(),
                6,
                "container_filled".to_owned()
            ),
        ],
        "{top:#}"
    );
    assert_eq!(top["suggestion"]["locations"][0]["code"], "orders = []");
    // The Orders it holds that are new since the first dump (it holds 6,000 in all).
    assert_eq!(top["suggestion"]["locations"][0]["count"], 4000);
    assert_eq!(v["class_growth"]["rows"][0]["name"], "Order");
    assert_eq!(v["class_growth"]["rows"][0]["count"], 4000);

    // JSON keeps the path as the dumps have it; the terminal shows it relative to the current
    // directory when it lies under it, and whole otherwise.
    let whole = program.display().to_string();
    assert_eq!(top["suggestion"]["locations"][0]["file"], whole.as_str());
    let text_in = |cwd: &Path| {
        let out = leakhunt()
            .arg("analyze")
            .args(&dumps)
            .current_dir(cwd)
            .env_remove("PWD")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let here = text_in(dir.path());
    assert!(
        here.contains("\n     container allocated at keeps_orders.rb:4 (4,000): orders = []\n"),
        "{here}"
    );
    assert!(!here.contains(&whole), "{here}");
    let elsewhere = text_in(Path::new("/"));
    assert!(
        elsewhere.contains(&format!("\n     container allocated at {whole}:4 (4,000)")),
        "{elsewhere}"
    );
}

// ---------------------------------------------------------------------------------------------
// Offline: the seed's own evidence — its `leaks` excerpt and Rubinius dumps that reproduce its
// histo.rb tables (built by the Rubinius tests' encoder).

#[test]
fn the_seeds_own_evidence_recommends_zmq_message_close() {
    let dir = tempfile::tempdir().unwrap();
    let (heap, heap2) = (dir.path().join("heap.dump"), dir.path().join("heap2.dump"));
    // The dumps behind the seed's second table: 203,110 more messages in the second.
    crate::heap_rubinius::write_messages_dump(&heap, 1_000);
    crate::heap_rubinius::write_messages_dump(&heap2, 1_000 + 203_110);
    let leaks = fixture("leaks/seed-rbx-macos10.6.5-v2.0-excerpt.txt");
    let (code, stdout, stderr) = run_leakhunt([
        "analyze".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        heap.as_os_str(),
        heap2.as_os_str(),
        leaks.as_os_str(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let release = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "missing_release")
        .unwrap_or_else(|| panic!("no missing release: {v:#}"));
    assert_eq!(release["suggestion"]["method"], "ZMQ::Message#close");
    assert_eq!(release["native"]["function"], "zmq_msg_init_size");
    // Matched by name (no agent): the confidence says so.
    assert_eq!(release["confidence"], "low");
    assert!(
        release["title"]
            .as_str()
            .unwrap()
            .ends_with("(the report counts 171,502 leaks, 263,427,072 bytes in all)"),
        "{release:#}"
    );
    // The heap side: the seed's second table, and ZMQ::Message piling up.
    let retention = &v["findings"][0];
    assert_eq!(retention["kind"], "ruby_retention");
    assert_eq!(retention["class"], "ZMQ::Message");
    assert_eq!(retention["count"], 203_110);

    let (_, text, _) = run_leakhunt([
        "analyze".as_ref(),
        heap.as_os_str(),
        heap2.as_os_str(),
        leaks.as_os_str(),
    ]);
    let table = "    203110   Rubinius::CompactLookupTable 25998080\n    203110                   ZMQ::Message 9749280\n    203110                    LibZMQ::Msg 8124400\n    203110             FFI::MemoryPointer 8124400\n";
    assert!(text.contains(table), "{text}");
}
