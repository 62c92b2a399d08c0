//! End-to-end `leakhunt run`: the seed's three programs under LeakSanitizer and valgrind, and the
//! faults (early exit, crash, Ctrl-C, hang at exit). Real programs, real backends; every run
//! gets its own TMPDIR so the test can see that nothing is left behind.
//!
//! The runs take a lock: they are timing-sensitive (snapshots happen while the program runs) and
//! the machine has two cores.

use crate::common::{fixture, have, leakhunt, one_run_at_a_time, require};
use leakhunt::bundle::{Manifest, Sidecar};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A finished `leakhunt run`, its bundle and its scratch TMPDIR.
struct Run {
    _scratch: tempfile::TempDir,
    tmpdir: PathBuf,
    bundle: PathBuf,
    manifest: Manifest,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn sidecar(&self, name: &str) -> Sidecar {
        let bytes = std::fs::read(self.bundle.join(name)).unwrap();
        let sidecar: Sidecar = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(sidecar.leakhunt_agent, leakhunt::bundle::SIDECAR_SCHEMA);
        sidecar
    }

    fn last_sidecar(&self) -> Sidecar {
        let name = self
            .manifest
            .snapshots
            .iter()
            .rev()
            .find_map(|s| s.sidecar.clone())
            .expect("no sidecar in the bundle");
        self.sidecar(&name)
    }

    /// Why each snapshot was taken, in order.
    fn reasons(&self) -> Vec<&str> {
        self.manifest
            .snapshots
            .iter()
            .map(|s| s.reason.as_str())
            .collect()
    }

    fn context(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}\n--- manifest\n{:#?}",
            self.code, self.stdout, self.stderr, self.manifest
        )
    }
}

fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let tmpdir = scratch.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let bundle = scratch.path().join("bundle");
    (scratch, tmpdir, bundle)
}

fn finish(scratch: tempfile::TempDir, tmpdir: PathBuf, bundle: PathBuf, out: Output) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let manifest =
        Manifest::load(&bundle).unwrap_or_else(|e| panic!("manifest does not load: {e}\n{stderr}"));
    Run {
        _scratch: scratch,
        tmpdir,
        bundle,
        manifest,
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// The JSON report a run wrote with `--report PATH`.
fn json_report(path: &Path, r: &Run) -> serde_json::Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no JSON report at {}\n{}", path.display(), r.context()))
}

/// `leakhunt run -o BUNDLE OPTIONS -- PROGRAM ARGS` with a private TMPDIR.
fn run(options: &[&str], program: &[&str], env: &[(&str, &str)]) -> Run {
    let (scratch, tmpdir, bundle) = scratch();
    let out = leakhunt()
        .arg("run")
        .arg("-o")
        .arg(&bundle)
        .args(options)
        .arg("--")
        .args(program)
        .env("TMPDIR", &tmpdir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    finish(scratch, tmpdir, bundle, out)
}

fn seed_ready() -> bool {
    let ok = have("ruby")
        && std::process::Command::new("ruby")
            .args(["-e", "require 'ffi-rzmq'"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    require("ruby with ffi-rzmq (Debian ruby-ffi-rzmq)", ok)
}

fn lsan_ready() -> bool {
    require(
        "liblsan.so.0 (Debian liblsan0)",
        leakhunt::platform::lsan_runtime().is_some(),
    )
}

/// Round trips and `run` options per backend: each run lasts several seconds of program time
/// under its backend. valgrind starts slowly, so its first snapshot waits 5 s unless `after`
/// says otherwise. Without a native backend the program runs at full speed: more round trips,
/// and three rounds half a second apart.
fn seed_plan<'a>(backend: &'a str, after: Option<&'a str>) -> (&'static str, Vec<&'a str>) {
    let (iterations, warm_up, every, rounds) = match backend {
        "lsan" => ("25000", "1s", "1.5s", "2"),
        "none" => ("200000", "0.5s", "0.5s", "3"),
        _ => ("9000", "5s", "4s", "2"),
    };
    let after = after.unwrap_or(warm_up);
    let options = vec![
        "--backend",
        backend,
        "--after",
        after,
        "--every",
        every,
        "--snapshots",
        rounds,
        "--fail-on",
        "never",
    ];
    (iterations, options)
}

/// A ZeroMQ endpoint for the seed's programs: an ipc socket in a private directory (kept alive
/// by the returned guard). A TCP port found free here could be taken by someone else before the
/// program binds it.
fn private_endpoint() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/zmq.sock", dir.path().display());
    (dir, endpoint)
}

fn seed_run(variant: &str, backend: &str) -> Run {
    let program = fixture(&format!("seed/{variant}"));
    let (_endpoint_dir, endpoint) = private_endpoint();
    let (iterations, options) = seed_plan(backend, None);
    let started = Instant::now();
    let r = run(
        &options,
        &[program.to_str().unwrap(), &endpoint, "1024", iterations],
        &[],
    );
    eprintln!(
        "{variant} under {backend}: {:.1} s, {} snapshots",
        started.elapsed().as_secs_f64(),
        r.manifest.snapshots.len()
    );
    r
}

// ---------------------------------------------------------------------------------------------
// What every run must leave behind.

fn assert_private_and_clean(r: &Run) {
    let mode = std::fs::metadata(&r.bundle).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "bundle dir mode {mode:o}");
    for entry in std::fs::read_dir(&r.bundle).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{} has mode {mode:o}",
            entry.path().display()
        );
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "half-written file {name} left");
    }
    let left: Vec<_> = std::fs::read_dir(&r.tmpdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
    if let Some(pid) = r.manifest.pid {
        assert_gone(pid);
    }
    // No process of the program's tree is left running.
    for p in &r.manifest.processes {
        assert_gone(p.pid);
    }
    // Every per-process file the manifest names exists.
    for p in &r.manifest.processes {
        for name in p.native_logs.iter().chain(&p.footprint) {
            assert!(r.bundle.join(name).is_file(), "{name} missing");
        }
    }
    // Every file the manifest names exists (a dump `--keep-dumps` removed is marked so).
    for s in &r.manifest.snapshots {
        let heap = s.heap.as_ref().filter(|_| !s.heap_removed);
        for name in [
            heap,
            s.summary.as_ref(),
            s.sidecar.as_ref(),
            s.maps.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(r.bundle.join(name).is_file(), "{name} missing");
        }
        if let Some(n) = &s.native {
            let len = std::fs::metadata(r.bundle.join(&n.file)).unwrap().len();
            assert!(
                n.end.unwrap_or(len) <= len,
                "range past the end of {}",
                n.file
            );
        }
    }
}

/// The process is gone (a zombie waiting for init does not count as running).
fn assert_gone(pid: u32) {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned))
            });
        match state.as_deref() {
            None | Some("Z") | Some("X") => return,
            Some(_) if Instant::now() > until => panic!("process {pid} is still running"),
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The seed's programs.

/// The 1-based line of a fixture that reads `wanted` (leading and trailing spaces aside).
fn line_of(fixture_rel: &str, wanted: &str) -> u32 {
    let text = std::fs::read_to_string(fixture(fixture_rel)).unwrap();
    text.lines()
        .position(|l| l.trim() == wanted)
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("{wanted} not in {fixture_rel}"))
}

fn assert_seed_run(r: &Run, variant: &str) {
    let ctx = r.context();
    assert_eq!(r.code, 0, "{ctx}");
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(
        r.stdout.contains("received"),
        "the program's own output is kept: {ctx}"
    );
    let heap = r
        .manifest
        .snapshots
        .iter()
        .filter(|s| s.heap.is_some())
        .count();
    let native = r
        .manifest
        .snapshots
        .iter()
        .filter(|s| s.native.is_some())
        .count();
    // Under `--backend none` there is no native evidence to take.
    let native_backend = r.manifest.backend.name != "none";
    assert!(heap >= 2, "{heap} heap snapshots: {ctx}");
    if native_backend {
        assert!(native >= 2, "{native} native snapshots: {ctx}");
    } else {
        assert_eq!(native, 0, "{ctx}");
    }
    assert_eq!(
        r.manifest.snapshots.last().map(|s| s.reason.as_str()),
        Some("exit"),
        "{ctx}"
    );
    assert_private_and_clean(r);

    // The FFI inventory: the zmq library, with zmq_msg_close attached.
    let sidecar = r.last_sidecar();
    let zmq = sidecar
        .ffi
        .iter()
        .find(|m| m.libraries.iter().any(|l| l.name.contains("zmq")))
        .unwrap_or_else(|| panic!("no FFI module bound to libzmq: {:#?}", sidecar.ffi));
    assert_eq!(zmq.name, "LibZMQ");
    assert!(
        zmq.libraries
            .iter()
            .any(|l| l.path.as_deref().is_some_and(|p| p.contains("libzmq.so"))),
        "{:?}",
        zmq.libraries
    );
    assert!(zmq.functions.iter().any(|f| f.symbol == "zmq_msg_close"));

    // ZMQ::Message is a wrapper whose close calls zmq_msg_close, and it has no finalizer.
    let message = sidecar
        .wrappers
        .iter()
        .find(|w| w.class == "ZMQ::Message")
        .unwrap_or_else(|| panic!("ZMQ::Message is not a wrapper: {:#?}", sidecar.wrappers));
    assert!(!message.finalizer);
    let close = message
        .methods
        .iter()
        .find(|m| m.name == "close" && !m.singleton)
        .expect("ZMQ::Message#close");
    assert_eq!(close.role, leakhunt::bundle::MethodRole::Release);
    assert!(
        close
            .calls
            .iter()
            .any(|c| c.module == "LibZMQ" && c.function == "zmq_msg_close")
    );
    let context = sidecar
        .wrappers
        .iter()
        .find(|w| w.class == "ZMQ::Context")
        .expect("ZMQ::Context");
    assert!(
        context.finalizer,
        "ZMQ::Context frees its context in a finalizer"
    );

    // Lifecycle counts, with the line where received messages are created.
    let lifecycle = sidecar
        .lifecycle
        .iter()
        .find(|l| l.class == "ZMQ::Message")
        .expect("no lifecycle for ZMQ::Message");
    assert_eq!(lifecycle.release_methods, ["close"]);
    let rel = format!("seed/{variant}");
    let receive_line = line_of(&rel, "message = ZMQ::Message.new");
    let site = lifecycle
        .created_at
        .iter()
        .find(|s| s.file.ends_with(variant) && s.line == receive_line)
        .unwrap_or_else(|| panic!("no site at line {receive_line}: {lifecycle:#?}"));
    assert!(site.count > 100, "{lifecycle:#?}");
    match variant {
        "leak-fixed.rb" => {
            // Balanced where it matters: every received message is closed.
            assert_eq!(site.released, Some(site.count), "{lifecycle:#?}");
            assert!(lifecycle.released >= site.count);
        }
        _ => {
            assert_eq!(lifecycle.released, 0, "{lifecycle:#?}");
            assert!(lifecycle.created > 200, "{lifecycle:#?}");
        }
    }

    // Ruby retention: ZMQ::Message instances pile up between heap snapshots in leak.rb only.
    let counts = class_counts(r, "ZMQ::Message");
    eprintln!("{variant}: ZMQ::Message per heap snapshot {counts:?}");
    if variant == "leak.rb" {
        assert!(counts[1] > counts[0] + 100, "{counts:?}");
    } else {
        assert!(counts.iter().all(|&c| c < 50), "{counts:?}");
    }
    // Native leaks in libzmq grow where messages are dropped without close, and only there.
    if !native_backend {
        return;
    }
    let zmq = libzmq_leaked_bytes(r);
    eprintln!("{variant}: libzmq leaked bytes per native snapshot {zmq:?}");
    let (first, last) = (zmq[0], zmq[zmq.len() - 1]);
    match variant {
        "leak-counter.rb" => assert!(last > first + 1_000_000, "{zmq:?}"),
        _ => assert!(last <= first + 64 * 1024, "{zmq:?}"),
    }
}

/// Each heap snapshot's summary, in order.
fn heap_summaries(r: &Run) -> Vec<leakhunt::heap::HeapSummary> {
    r.manifest
        .snapshots
        .iter()
        .filter_map(|s| s.heap.as_ref())
        .map(|heap| {
            let path = r.bundle.join(heap);
            let kind = leakhunt::detect::detect_path(&path).unwrap();
            leakhunt::heap::summarize(&path, kind).unwrap()
        })
        .collect()
}

/// Instances of `class` in each heap snapshot, from the dumps.
fn class_counts(r: &Run, class: &str) -> Vec<i64> {
    heap_summaries(r)
        .iter()
        .map(|summary| summary.histogram.get(class).map_or(0, |row| row.count))
        .collect()
}

/// Bytes of the leak sites whose allocating frame is in libzmq, per native snapshot.
fn libzmq_leaked_bytes(r: &Run) -> Vec<u64> {
    r.manifest
        .snapshots
        .iter()
        .filter_map(|s| s.native.as_ref())
        .map(|native| {
            let path = r.bundle.join(&native.file);
            let bytes = std::fs::read(&path).unwrap();
            let end = native.end.map_or(bytes.len(), |e| e as usize);
            let slice = &bytes[native.start.unwrap_or(0) as usize..end];
            let Some(kind) = leakhunt::detect::detect_bytes(slice) else {
                assert!(
                    slice.iter().all(u8::is_ascii_whitespace),
                    "{} [{:?}..{:?}] is not a native report",
                    native.file,
                    native.start,
                    native.end
                );
                return 0; // LSan writes nothing when a check finds no leak.
            };
            let reports = leakhunt::native::parse_bytes(&path, kind, slice).unwrap();
            reports
                .iter()
                .flat_map(leakhunt::native::sites)
                .filter(|site| {
                    site.key
                        .library
                        .as_deref()
                        .is_some_and(|l| l.contains("libzmq"))
                })
                .map(|site| site.bytes)
                .sum()
        })
        .collect()
}

fn seed_case(variant: &str, backend: &str) {
    if !seed_ready()
        || (backend == "lsan" && !lsan_ready())
        || (backend == "valgrind" && !require("valgrind", have("valgrind")))
    {
        return;
    }
    let _one = one_run_at_a_time();
    let r = seed_run(variant, backend);
    assert_seed_run(&r, variant);
    assert_seed_findings(&r, variant);
}

/// The seed's report, read again from its bundle: one leak finding for each program's leak
/// (leak.rb: Ruby retention by its Array; leak-counter.rb: the missing `ZMQ::Message#close`),
/// none for the fixed program.
fn assert_seed_findings(r: &Run, variant: &str) {
    let out = leakhunt()
        .args(["analyze", "--format", "json", "--fail-on", "never"])
        .arg(&r.bundle)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("analyze: {e}\n{}", r.context()));
    let ctx = format!(
        "{}\n{report:#}\n{}",
        crate::common::findings_brief(&report),
        r.context()
    );
    let kinds = crate::common::leak_kinds(&report);
    match variant {
        "leak.rb" => {
            assert_eq!(kinds, ["ruby_retention"], "{ctx}");
            let top = &report["findings"][0];
            crate::common::assert_seed_a_top_finding(top);
            if r.manifest.backend.name == "none" {
                // The Array keeps the messages alive: what they hold is kept, not lost, and
                // malloc's growth does not size the missing close folded into the retention.
                let said = |needle: &str| {
                    top["evidence"].as_array().is_some_and(|items| {
                        items
                            .iter()
                            .any(|e| e["text"].as_str().is_some_and(|t| t.contains(needle)))
                    })
                };
                assert!(said("native memory was not measured"), "{ctx}");
                assert!(!said("measured by malloc"), "{ctx}");
            }
        }
        "leak-counter.rb" => {
            assert_eq!(kinds, ["missing_release"], "{ctx}");
            let top = &report["findings"][0];
            assert_eq!(top["suggestion"]["method"], "ZMQ::Message#close", "{ctx}");
            let line = line_of("seed/leak-counter.rb", "message = ZMQ::Message.new");
            assert_eq!(
                crate::common::locations(top)[0],
                ("leak-counter.rb".into(), u64::from(line), "created".into()),
                "{ctx}"
            );
            if r.manifest.backend.name == "lsan" {
                // Under LSan the sites come from the frames and their table, not from
                // caller_locations (whose mallocs each pay a full unwind).
                let sites = r.last_sidecar().frame_sites;
                let Some(sites) = sites else {
                    panic!("no frame_sites in the last sidecar: {ctx}");
                };
                assert!(
                    !sites.off && sites.fast > 10 * sites.slow,
                    "{sites:?}: {ctx}"
                );
            }
            if r.manifest.backend.name == "none" {
                // No native site, but malloc's growth after each GC rose with the messages
                // collected unclosed: sized by it, each at least its 1 KiB buffer.
                assert!(top["native"].is_null(), "{ctx}");
                let title = top["title"].as_str().unwrap_or_default();
                assert!(
                    title.contains("measured by malloc after each GC, `--backend none`"),
                    "{ctx}"
                );
                let (bytes, count) = (top["bytes"].as_i64(), top["count"].as_i64());
                let (Some(bytes), Some(count)) = (bytes, count) else {
                    panic!("bytes and count: {ctx}");
                };
                assert!(bytes > 0 && count > 0, "{ctx}");
                assert!(bytes / count >= 1024, "{bytes} bytes for {count}: {ctx}");
                assert_ne!(top["confidence"], "high", "{ctx}");
            }
        }
        _ => {
            assert!(kinds.is_empty(), "{ctx}");
            assert_eq!(report["verdict"], "no_leak", "{ctx}");
        }
    }
}

#[test]
fn seed_array_under_lsan() {
    seed_case("leak.rb", "lsan");
}

#[test]
fn seed_counter_under_lsan() {
    seed_case("leak-counter.rb", "lsan");
}

#[test]
fn seed_fixed_under_lsan() {
    seed_case("leak-fixed.rb", "lsan");
}

#[test]
fn seed_array_without_a_native_backend() {
    seed_case("leak.rb", "none");
}

/// Without a native backend the unclosed messages are told from their lifecycle: the same
/// finding as under lsan (the method, the line that creates them), sized by malloc's growth
/// after each GC.
#[test]
fn seed_counter_without_a_native_backend() {
    seed_case("leak-counter.rb", "none");
}

#[test]
fn seed_fixed_without_a_native_backend() {
    seed_case("leak-fixed.rb", "none");
}

#[test]
fn seed_array_under_valgrind() {
    seed_case("leak.rb", "valgrind");
}

#[test]
fn seed_counter_under_valgrind() {
    seed_case("leak-counter.rb", "valgrind");
}

#[test]
fn seed_fixed_under_valgrind() {
    seed_case("leak-fixed.rb", "valgrind");
}

// ---------------------------------------------------------------------------------------------
// Faults.

fn ruby_ready() -> bool {
    require("ruby", have("ruby"))
}

/// With `symbolize=0` LSan prints every frame as `(module+offset)`, so leakhunt names the
/// widget library's frames from its file. The run keeps what that took in the bundle: `analyze`
/// of the bundle after the library is deleted prints the run's report, `widget_create` and all.
#[test]
fn analyze_names_native_frames_as_the_run_did_after_the_library_is_gone() {
    if !ruby_ready() || !lsan_ready() || !require("gcc", have("gcc")) {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let lib = crate::common::build_widget(dir.path());
    let report = dir.path().join("report.json");
    let r = run(
        &[
            "--backend",
            "lsan",
            "--after",
            "0.5s",
            "--every",
            "1s",
            "--snapshots",
            "2",
            "--fail-on",
            "never",
            "--format",
            "json",
            "--report",
            report.to_str().unwrap(),
        ],
        &[
            "ruby",
            crate::common::widget_fixture("widget-leak.rb")
                .to_str()
                .unwrap(),
            "3000",
            "3",
        ],
        &[
            ("WIDGET_LIB", lib.to_str().unwrap()),
            ("LSAN_OPTIONS", "symbolize=0"),
        ],
    );
    let ctx = r.context();
    assert_eq!(r.code, 0, "{ctx}");
    let ran = json_report(&report, &r);
    let named = ran["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["native"]["function"] == "widget_create");
    assert!(named, "leakhunt named widget_create: {ran:#}\n{ctx}");

    std::fs::remove_file(&lib).unwrap();
    let again = dir.path().join("again.json");
    let out = leakhunt()
        .args([
            "analyze",
            "--format",
            "json",
            "--fail-on",
            "never",
            "--output",
        ])
        .arg(&again)
        .arg(&r.bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_report(&again, &r), ran, "{ctx}");
}

#[test]
fn early_exit_keeps_the_exit_snapshot_and_the_status() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &["--backend", "none", "--after", "5s"],
        &[fixture("run/early-exit.rb").to_str().unwrap()],
        &[],
    );
    let ctx = r.context();
    assert_eq!(r.code, 0, "{ctx}");
    assert!(r.stdout.contains("early exit"), "{ctx}");
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert_eq!(r.manifest.outcome.code, Some(3), "{ctx}");
    assert_eq!(r.manifest.snapshots.len(), 1, "{ctx}");
    let s = &r.manifest.snapshots[0];
    assert_eq!(s.reason, "exit");
    assert!(s.heap.is_some() && s.sidecar.is_some(), "{ctx}");
    assert_eq!(r.sidecar(s.sidecar.as_ref().unwrap()).reason, "exit");
    // The bundle is named once, after the report, with the command that reads it again.
    let named: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("leakhunt: bundle"))
        .collect();
    let b = r.bundle.display();
    assert_eq!(
        named,
        [format!(
            "leakhunt: bundle {b} (read it again with `leakhunt analyze {b}`)"
        )],
        "{ctx}"
    );
    assert_private_and_clean(&r);
}

/// Heap dumps are stored compressed (line-aligned zstd frames, `heap-NNN.json.zst`), the plain
/// dumps the agent wrote are gone, and `analyze` of the bundle prints exactly what the run
/// printed: the same finding read back from the compressed dumps.
#[test]
fn the_bundle_holds_compressed_dumps_and_analyze_repeats_the_run_report() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &[
            "--backend",
            "none",
            "--after",
            "500ms",
            "--every",
            "700ms",
            "--snapshots",
            "2",
        ],
        &[fixture("run/grows.rb").to_str().unwrap()],
        &[],
    );
    let ctx = r.context();
    // A leak finding: exit code 1.
    assert_eq!(r.code, 1, "{ctx}");
    let heaps: Vec<&String> = r
        .manifest
        .snapshots
        .iter()
        .filter_map(|s| s.heap.as_ref())
        .collect();
    assert!(heaps.len() >= 3, "{ctx}");
    for name in &heaps {
        assert!(name.ends_with(".json.zst"), "{name}: {ctx}");
        let file = std::fs::File::open(r.bundle.join(name)).unwrap();
        let len = file.metadata().unwrap().len();
        let frames = leakhunt::zst::walk(&file, len).unwrap();
        assert!(frames.line_aligned && frames.damage.is_none(), "{name}");
        let mut content = Vec::new();
        std::io::Read::read_to_end(
            &mut leakhunt::source::open_stream(r.bundle.join(name)).unwrap(),
            &mut content,
        )
        .unwrap();
        assert!(content.starts_with(b"{"), "{name}");
        assert!(
            len * 4 < content.len() as u64,
            "{name}: {len} of {}",
            content.len()
        );
    }
    let plain: Vec<String> = std::fs::read_dir(&r.bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("heap-") && !n.ends_with(".zst"))
        .collect();
    assert!(plain.is_empty(), "plain dumps left: {plain:?}");
    assert_private_and_clean(&r);
    let at = r
        .stdout
        .find("leakhunt: LEAK")
        .unwrap_or_else(|| panic!("{ctx}"));
    let report = &r.stdout[at..];
    assert_grows_rb_finding(report, &ctx);
    let again = leakhunt().arg("analyze").arg(&r.bundle).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&again.stdout), report);
}

/// grows.rb's diagnosis: one finding, Invoice instances kept by KEPT, filled at its append; the
/// Arrays and Strings each Invoice holds grow with it.
fn assert_grows_rb_finding(report: &str, ctx: &str) {
    let filled = line_of("run/grows.rb", "200.times { KEPT << Invoice.new(n += 1) }");
    assert!(report.contains("— 1 leak finding"), "{ctx}");
    assert!(
        report.contains("Ruby retention — Invoice instances pile up") && !report.contains("\n2. ["),
        "{ctx}"
    );
    assert!(
        report.contains(&format!("grows.rb:{filled}")) && report.contains("Array grows with it"),
        "{ctx}"
    );
}

/// `--keep-dumps 1`: every round leaves a summary, the dumps growth analysis no longer needs are
/// removed (the first, judged-from one and the newest stay), every round still counts, the
/// finding is the one a full bundle gives (Invoice kept by KEPT, filled at grows.rb:14, its
/// Arrays growing with it: retainer paths from the dumps kept), and `analyze` of the pruned
/// bundle prints exactly what the run printed. grows.rb runs 6 s here, so that the four interval
/// rounds all fall while it grows, however slow the machine.
#[test]
fn keep_dumps_removes_old_dumps_keeps_every_round_s_summary_and_analyze_repeats_the_run() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &[
            "--backend",
            "none",
            "--after",
            "300ms",
            "--every",
            "450ms",
            "--snapshots",
            "4",
            "--keep-dumps",
            "1",
        ],
        &[fixture("run/grows.rb").to_str().unwrap()],
        &[("GROWS_SECONDS", "6")],
    );
    let ctx = r.context();
    assert_eq!(r.code, 1, "{ctx}");
    let taken: Vec<&leakhunt::bundle::Snapshot> =
        r.manifest.snapshots.iter().filter(|s| s.taken()).collect();
    // Four interval rounds and the exit round (which a slow machine may miss).
    assert!(taken.len() >= 4, "{ctx}");
    for s in &taken {
        let summary = s.summary.as_ref().unwrap_or_else(|| panic!("{ctx}"));
        assert!(r.bundle.join(summary).is_file(), "{summary}: {ctx}");
        let dump = r.bundle.join(s.heap.as_ref().unwrap());
        assert_eq!(dump.exists(), !s.heap_removed, "{}: {ctx}", dump.display());
    }
    let kept: Vec<u32> = taken
        .iter()
        .filter(|s| !s.heap_removed)
        .map(|s| s.index)
        .collect();
    // The first round and the newest keep their dumps; at most the one growth is judged from
    // besides (the program loads nothing after it starts, so that is the first round, unless
    // the agent saw a feature load late): the others are gone.
    assert_eq!(kept.first(), taken.first().map(|s| &s.index), "{ctx}");
    assert_eq!(kept.last(), taken.last().map(|s| &s.index), "{ctx}");
    assert!(
        kept.len() <= 3 && kept.len() < taken.len(),
        "kept {kept:?}: {ctx}"
    );
    assert_private_and_clean(&r);
    let at = r
        .stdout
        .find("leakhunt: LEAK")
        .unwrap_or_else(|| panic!("{ctx}"));
    let report = &r.stdout[at..];
    assert_grows_rb_finding(report, &ctx);
    let again = leakhunt().arg("analyze").arg(&r.bundle).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&again.stdout), report);
    // Every round counts, the removed ones through their summaries.
    let json = leakhunt()
        .args(["analyze", "--format", "json"])
        .arg(&r.bundle)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        json["heap_snapshots"].as_u64(),
        Some(taken.len() as u64),
        "{json}"
    );
}

/// A round that would not fit on the bundle's disk is skipped with a warning and the run goes
/// on: here the disk is said to have 1,000 bytes free (the test-only knob), so every round is
/// skipped, the program still runs to its end and nothing half-written is left.
#[test]
fn rounds_that_would_not_fit_on_the_disk_are_skipped_and_the_run_goes_on() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &[
            "--backend",
            "none",
            "--after",
            "500ms",
            "--every",
            "700ms",
            "--snapshots",
            "2",
        ],
        &[fixture("run/grows.rb").to_str().unwrap()],
        &[("LEAKHUNT_TEST_DISK_FREE", "1000")],
    );
    let ctx = r.context();
    assert_eq!(r.code, 0, "{ctx}");
    assert!(
        r.stdout.contains("kept "),
        "the program ran to its end: {ctx}"
    );
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert!(r.manifest.snapshots.is_empty(), "{ctx}");
    let skipped: Vec<&String> = r
        .manifest
        .warnings
        .iter()
        .filter(|w| w.contains(") was skipped: the bundle's disk has 1000 B free"))
        .collect();
    // Two interval rounds and the exit round.
    assert_eq!(skipped.len(), 3, "{ctx}");
    assert!(
        skipped[0].starts_with("a round (interval) was skipped"),
        "{ctx}"
    );
    assert!(
        skipped[2].starts_with("a round (exit) was skipped"),
        "{ctx}"
    );
    assert!(
        r.manifest.warnings[0].starts_with("LEAKHUNT_TEST_DISK_FREE is set"),
        "{ctx}"
    );
    assert_private_and_clean(&r);
}

/// valgrind follows forks: a forked child is a process of its own, with its own XML document
/// (its exit-time leak search) in `valgrind-pCHILD.xml`, never inside the program's
/// `valgrind.xml` (valgrind 3.19 re-opens only the first sink whose `%p` name changes at a fork).
#[test]
fn a_forked_child_gets_its_own_valgrind_xml() {
    if !ruby_ready() || !require("valgrind", have("valgrind")) {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &["--backend", "valgrind", "--snapshots", "0"],
        &[fixture("run/forks.rb").to_str().unwrap()],
        &[],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    let child = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("child ")?.split(' ').next())
        .unwrap_or_else(|| panic!("the child did not run: {ctx}"));
    let pid = r.manifest.pid.unwrap();
    for (file, owner, other) in [
        ("valgrind.xml".to_owned(), pid.to_string(), child.to_owned()),
        (
            format!("valgrind-p{child}.xml"),
            child.to_owned(),
            pid.to_string(),
        ),
    ] {
        let xml = std::fs::read_to_string(r.bundle.join(&file))
            .unwrap_or_else(|e| panic!("{file}: {e}\n{ctx}"));
        assert_eq!(xml.matches("<valgrindoutput>").count(), 1, "{file}: {ctx}");
        assert!(
            xml.contains(&format!("<pid>{owner}</pid>")),
            "{file}: {ctx}"
        );
        assert!(
            !xml.contains(&format!("<pid>{other}</pid>")),
            "{file}: {ctx}"
        );
    }
    let forked = r
        .manifest
        .processes
        .iter()
        .find(|p| p.pid.to_string() == child)
        .unwrap_or_else(|| panic!("the child is not listed: {ctx}"));
    assert_eq!(forked.role, "worker", "{ctx}");
    assert_eq!(forked.ppid, Some(pid), "{ctx}");
    assert_eq!(
        forked.native_logs,
        [format!("valgrind-p{child}.xml")],
        "{ctx}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&r.bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("valgrind"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("valgrind-p{child}.xml"),
            "valgrind.log".to_owned(),
            "valgrind.xml".to_owned()
        ],
        "{ctx}"
    );
    assert_private_and_clean(&r);
}

#[test]
fn an_uncaught_exception_is_named_with_the_exit_status() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &["--backend", "none", "--after", "5s"],
        &[fixture("run/raises.rb").to_str().unwrap()],
        &[],
    );
    let ctx = r.context();
    let o = &r.manifest.outcome;
    assert_eq!((o.kind.as_str(), o.code), ("exited", Some(1)), "{ctx}");
    assert_eq!(o.exception.as_deref(), Some("ArgumentError"), "{ctx}");
    assert!(
        r.stdout
            .contains("program exited with status 1 (uncaught ArgumentError)"),
        "{ctx}"
    );
    assert!(
        r.stderr.contains("uncaught on purpose (ArgumentError)"),
        "Ruby's own message stays the program's: {ctx}"
    );
    assert_eq!(r.reasons(), ["exit"], "{ctx}");
    assert_private_and_clean(&r);
}

#[test]
fn a_crash_keeps_the_snapshots_taken_and_names_the_signal() {
    if !ruby_ready() || !lsan_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run(
        &["--backend", "lsan", "--after", "500ms", "--every", "30s"],
        &[fixture("run/crash.rb").to_str().unwrap()],
        &[],
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "signaled", "{ctx}");
    assert_eq!(r.manifest.outcome.signal, Some(libc::SIGSEGV), "{ctx}");
    assert_eq!(r.manifest.outcome.signal_name.as_deref(), Some("SIGSEGV"));
    assert!(r.manifest.outcome.detail.contains("SIGSEGV"), "{ctx}");
    let first = r.manifest.snapshots.first().expect("the first snapshot");
    assert_eq!(first.reason, "interval");
    assert!(first.heap.is_some() && first.native.is_some(), "{ctx}");
    assert_eq!(
        r.manifest.main_process().unwrap().native_logs,
        ["lsan.log"],
        "{ctx}"
    );
    assert_private_and_clean(&r);
}

#[test]
fn the_program_hanging_at_exit_is_killed_and_reported() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let started = Instant::now();
    let r = run(
        &["--backend", "none"],
        &[fixture("run/hang-at-exit.rb").to_str().unwrap()],
        &[("LEAKHUNT_EXIT_DEADLINE", "2")],
    );
    let ctx = r.context();
    assert!(started.elapsed() < Duration::from_secs(60), "{ctx}");
    assert_eq!(r.manifest.outcome.kind, "killed", "{ctx}");
    assert!(r.manifest.outcome.detail.contains("hung at exit"), "{ctx}");
    assert_eq!(
        r.manifest
            .snapshots
            .iter()
            .map(|s| s.reason.as_str())
            .collect::<Vec<_>>(),
        ["exit"],
        "{ctx}"
    );
    assert!(r.manifest.snapshots[0].heap.is_some(), "{ctx}");
    assert_private_and_clean(&r);
}

/// Ctrl-C at a terminal signals leakhunt's process group; the test signals leakhunt itself.
#[test]
fn ctrl_c_takes_a_last_snapshot_and_stops_the_program() {
    if !ruby_ready() || !lsan_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let (scratch, tmpdir, bundle) = scratch();
    let child: Child = leakhunt()
        .args([
            "run",
            "--backend",
            "lsan",
            "--after",
            "500ms",
            "--every",
            "30s",
            "-o",
        ])
        .arg(&bundle)
        .arg(fixture("run/forever.rb"))
        .env("TMPDIR", &tmpdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first snapshot to be recorded, then press Ctrl-C.
    wait_for_first_snapshot(&bundle);
    // SAFETY: signals the leakhunt process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let r = finish(scratch, tmpdir, bundle, out);
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "interrupted", "{ctx}");
    assert!(r.manifest.outcome.detail.contains("SIGINT"), "{ctx}");
    let reasons = r.reasons();
    assert_eq!(reasons, ["interval", "interrupt"], "{ctx}");
    assert!(
        r.manifest
            .snapshots
            .iter()
            .all(|s| s.heap.is_some() && s.native.is_some()),
        "{ctx}"
    );
    assert_private_and_clean(&r);
}

// ---------------------------------------------------------------------------------------------
// On a terminal: leakhunt started as the session leader of a pseudo-terminal, as a shell would
// start it in the foreground. The program reads that terminal; keys are typed into the master.

/// `leakhunt run` on a pseudo-terminal: the master end the test types into and reads from,
/// what was read, and leakhunt (killed if the test fails before it ends).
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    output: std::sync::Arc<Mutex<Vec<u8>>>,
    scratch: Option<(tempfile::TempDir, PathBuf, PathBuf)>,
    /// How much of the output the waits have gone past.
    seen: usize,
}

impl OnTerminal {
    /// Starts `leakhunt run -o BUNDLE OPTIONS -- PROGRAM` with a new pseudo-terminal as its
    /// controlling terminal and stdin, stdout and stderr.
    fn start(options: &[&str], program: &Path) -> OnTerminal {
        let (scratch, tmpdir, bundle) = scratch();
        let mut command = leakhunt();
        command
            .arg("run")
            .arg("-o")
            .arg(&bundle)
            .args(options)
            .arg("--")
            .arg(program)
            .env("TMPDIR", &tmpdir);
        OnTerminal::session(command, (scratch, tmpdir, bundle))
    }

    /// Starts `command` as the leader of a new session whose controlling terminal is a new
    /// pseudo-terminal, also its stdin, stdout and stderr (setsid, then TIOCSCTTY).
    fn session(mut command: Command, scratch: (tempfile::TempDir, PathBuf, PathBuf)) -> OnTerminal {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two new descriptors into the two ints; null name, termios
        // and window size ask for the defaults.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened by openpty and nothing else owns them.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        command
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: runs between fork and exec and calls only setsid and ioctl, both
        // async-signal-safe; fd 0 is the terminal's slave end by then.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop(slave);
        let output = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut reader = std::fs::File::from(master.try_clone().unwrap());
        let sink = output.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            // Ends with EIO once every process holding the slave end has gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal {
            child,
            master: std::fs::File::from(master),
            output,
            scratch: Some(scratch),
            seen: 0,
        }
    }

    fn bundle(&self) -> &Path {
        &self.scratch.as_ref().unwrap().2
    }

    fn type_in(&mut self, keys: &[u8]) {
        use std::io::Write;
        self.master.write_all(keys).unwrap();
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `text` after what the previous wait saw.
    fn wait_for(&mut self, text: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let output = self.output();
            if let Some(at) = output.get(self.seen..).and_then(|rest| rest.find(text)) {
                self.seen += at + text.len();
                return;
            }
            let ended = self.child.try_wait().unwrap().is_some();
            assert!(
                Instant::now() < until && !ended,
                "{text:?} never shown after byte {}:\n{output}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for leakhunt to end (a minute at most) and checks that nothing of its session is
    /// left running.
    fn finish(mut self) -> Run {
        let until = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < until,
                "leakhunt did not end:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_session_gone(self.child.id());
        let out = Output {
            status,
            stdout: self.output().into_bytes(),
            stderr: Vec::new(),
        };
        let (scratch, tmpdir, bundle) = self.scratch.take().unwrap();
        finish(scratch, tmpdir, bundle, out)
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// No process of session `sid` (leakhunt's, as its leader) is still running: not the program,
/// not anything leakhunt started beside it.
fn assert_session_gone(sid: u32) {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let members: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp session …
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.len() > 3 && f[3] == sid.to_string() && f[0] != "Z" && f[0] != "X"
            })
            .collect();
        if members.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "left running: {members:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_program_reads_the_terminal_leakhunt_was_started_from() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let mut t = OnTerminal::start(&["--backend", "none"], &fixture("run/echo-lines.rb"));
    t.type_in(b"hello\n");
    t.wait_for("got: hello");
    t.type_in(b"quit\n");
    let r = t.finish();
    let ctx = r.context();
    assert_eq!(r.code, 0, "{ctx}");
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    let reasons = r.reasons();
    assert_eq!(reasons, ["exit"], "{ctx}");
    assert!(r.manifest.snapshots[0].heap.is_some(), "{ctx}");
    assert_private_and_clean(&r);
}

#[test]
fn ctrl_c_typed_at_the_terminal_ends_with_a_last_snapshot() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let mut t = OnTerminal::start(
        &["--backend", "none", "--after", "300ms", "--every", "30s"],
        &fixture("run/echo-lines.rb"),
    );
    wait_for_first_snapshot(t.bundle());
    // The terminal's interrupt character: SIGINT to its foreground process group.
    t.type_in(b"\x03");
    let r = t.finish();
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "interrupted", "{ctx}");
    assert!(r.manifest.outcome.detail.contains("SIGINT"), "{ctx}");
    let reasons = r.reasons();
    // The last snapshot is leakhunt's (`interrupt`) or the program's own at_exit one (`exit`),
    // whichever leakhunt hears of first: the program got the Ctrl-C at the same moment.
    assert!(
        reasons.len() == 2
            && reasons[0] == "interval"
            && ["interrupt", "exit"].contains(&reasons[1]),
        "{ctx}"
    );
    assert!(
        r.manifest.snapshots.iter().all(|s| s.heap.is_some()),
        "{ctx}"
    );
    assert!(r.stdout.contains("SIGINT: taking a last snapshot"), "{ctx}");
    assert_private_and_clean(&r);
}

#[test]
fn ctrl_z_typed_at_the_terminal_does_not_leave_the_program_stopped() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let mut t = OnTerminal::start(&["--backend", "none"], &fixture("run/echo-lines.rb"));
    t.type_in(b"one\n");
    t.wait_for("got: one");
    // SIGTSTP stops the program's group. leakhunt would stop its own job for the shell to see;
    // started here with no shell to continue it (its group is orphaned), it continues the
    // program at once instead. The terminal sends the signal as it reads ^Z and queues what
    // follows: the program reads "two" only if it was continued.
    t.type_in(b"\x1a");
    t.type_in(b"two\n");
    t.wait_for("got: two");
    t.type_in(b"quit\n");
    let r = t.finish();
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert_private_and_clean(&r);
}

/// Ctrl-Z, `fg`, `bg` in a real interactive shell: leakhunt stops as a job, and the program
/// gets the terminal back when it is in the foreground again.
#[test]
fn ctrl_z_fg_and_bg_in_an_interactive_shell() {
    if !ruby_ready() || !require("bash", have("bash")) {
        return;
    }
    let _one = one_run_at_a_time();
    let (scratch, tmpdir, bundle) = scratch();
    let mut bash = Command::new("bash");
    bash.args(["--norc", "--noprofile", "-i"])
        .env("PS1", "PROMPT$ ")
        .env("LEAKHUNT_NO_PROGRESS", "1")
        .env("NO_COLOR", "1")
        .env("TMPDIR", &tmpdir);
    let line = format!(
        "{} run --backend none -o {} {}\n",
        env!("CARGO_BIN_EXE_leakhunt"),
        bundle.display(),
        fixture("run/echo-lines.rb").display()
    );
    let mut t = OnTerminal::session(bash, (scratch, tmpdir, bundle));
    t.wait_for("PROMPT$ ");
    // `set -b`: the shell reports a job that stops at once, not at its next prompt.
    t.type_in(b"set -b\n");
    t.wait_for("PROMPT$ ");
    t.type_in(line.as_bytes());
    t.wait_for("/echo-lines.rb\r\n");
    t.type_in(b"one\n");
    t.wait_for("got: one");
    t.type_in(b"\x1a");
    t.wait_for("Stopped");
    t.wait_for("PROMPT$ ");
    // The shell has the terminal: it runs `jobs`, the program does not read it.
    t.type_in(b"jobs\n");
    t.wait_for("Stopped");
    t.wait_for("PROMPT$ ");
    t.type_in(b"fg\n");
    t.type_in(b"two\n");
    t.wait_for("got: two");
    t.type_in(b"\x1a");
    t.wait_for("Stopped");
    t.wait_for("PROMPT$ ");
    // In the background the program stops as soon as it reads the terminal, and leakhunt with
    // it; in the foreground again it reads.
    t.type_in(b"bg\n");
    t.wait_for("Stopped");
    t.type_in(b"fg\n");
    t.type_in(b"three\n");
    t.wait_for("got: three");
    t.type_in(b"quit\n");
    t.wait_for("leakhunt: bundle");
    t.type_in(b"echo ended=$?; exit\n");
    let r = t.finish();
    let ctx = r.context();
    assert!(!r.stdout.contains("got: jobs"), "{ctx}");
    assert!(r.stdout.contains("ended=0"), "{ctx}");
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert_private_and_clean(&r);
}

/// Waits (a minute at most) until the bundle's manifest records a snapshot with its heap dump.
fn wait_for_first_snapshot(bundle: &Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while !Manifest::load(bundle).is_ok_and(|m| m.snapshots.iter().any(|s| s.heap.is_some())) {
        assert!(Instant::now() < until, "no snapshot within a minute");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Errors before the program starts leave nothing behind.

#[test]
fn a_missing_program_is_a_usage_error_without_a_bundle() {
    let (_scratch, tmpdir, bundle) = scratch();
    let out = leakhunt()
        .args(["run", "--backend", "none", "-o"])
        .arg(&bundle)
        .arg("no-such-program.rb")
        .env("TMPDIR", &tmpdir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no-such-program.rb: no such file"),
        "{stderr}"
    );
    assert!(!bundle.exists());
    assert_eq!(std::fs::read_dir(&tmpdir).unwrap().count(), 0);
}

#[test]
fn an_unavailable_backend_exits_3_with_advice() {
    let (_scratch, tmpdir, bundle) = scratch();
    let backend = if cfg!(target_os = "macos") {
        "lsan"
    } else {
        "leaks"
    };
    let out = leakhunt()
        .args(["run", "--backend", backend, "-o"])
        .arg(&bundle)
        .arg(fixture("run/early-exit.rb"))
        .env("TMPDIR", &tmpdir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("use --backend"), "{stderr}");
    assert!(!bundle.exists());
    assert_eq!(std::fs::read_dir(&tmpdir).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// `leakhunt doctor`.

#[test]
fn doctor_passes_for_an_available_backend_and_says_what_to_fix_otherwise() {
    if !ruby_ready() {
        return;
    }
    let (code, stdout, stderr) = crate::common::run_leakhunt(["doctor", "--backend", "none"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("ok    ruby"), "{stdout}");
    assert!(stdout.contains("ok    agent libraries"), "{stdout}");
    assert!(
        stdout.contains("`leakhunt run --backend none` can work here."),
        "{stdout}"
    );

    let missing = if cfg!(target_os = "macos") {
        "lsan"
    } else {
        "leaks"
    };
    let (code, stdout, _) = crate::common::run_leakhunt(["doctor", "--backend", missing]);
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.contains(&format!("FAIL  backend {missing}")),
        "{stdout}"
    );
    assert!(stdout.contains("use --backend"), "{stdout}");

    let (code, stdout, _) =
        crate::common::run_leakhunt(["doctor", "--backend", "none", "--ruby", "/no/such/ruby"]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("FAIL  ruby"), "{stdout}");
    assert!(
        stdout.contains("/no/such/ruby is not an executable"),
        "{stdout}"
    );
}

// The same runs on a second Ruby, in a root built by .ci/ruby-root.
mod cext;
mod other_ruby;

// Pre-forking servers and fork pools: every process of the tree.
mod servers;
// The leaks backend with a stand-in for leaks(1), and the portable macOS fixes.
mod leaks_stand_in;
// Rounds that must neither stall nor break the program.
mod rounds;
// The agent under `bundle exec`.
mod bundler;
// Precision and recall on real applications: a Rails app under puma, a slow leak on a big heap.
mod apps;

/// Under sampled allocation sites (the default), objects made during warm-up and freed after
/// it, while tracing is off, leave their allocation records behind (objspace's free hook is
/// off then): the next object in the same slot (here a `Late`, made after warm-up without a
/// site) must not be given the warm-up object's file:line in any later dump.
#[test]
fn a_slot_freed_after_warm_up_does_not_give_its_site_to_the_next_object() {
    if ruby_ready() {
        reused_slots("none");
    }
}

/// The same under LSan, where the agent frees no record in rounds either (a freed record's
/// block can hide a native leak): the rounds' own records are left behind too.
#[test]
fn a_slot_freed_after_warm_up_does_not_give_its_site_to_the_next_object_under_lsan() {
    if ruby_ready() && lsan_ready() {
        reused_slots("lsan");
    }
}

/// Under LSan, warm-up objects that die after warm-up ended early (its code loading settled) and
/// before the first round leave their records: the first round's dump has no earlier round to
/// be judged by, so it is judged by the dump the agent took as warm-up ended.
#[test]
fn a_slot_freed_before_the_first_round_does_not_give_its_site_to_the_next_object_under_lsan() {
    if !ruby_ready() || !lsan_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let program = fixture("run/reused-slots-early.rb");
    let r = run(
        &[
            "--backend",
            "lsan",
            "--alloc-sites",
            "sampled",
            "--after",
            "4s",
            "--every",
            "1s",
            "--snapshots",
            "2",
        ],
        &[program.to_str().unwrap()],
        &[],
    );
    let ctx = r.context();
    assert!(
        r.stdout.contains("50000 Late made before the first round"),
        "{ctx}"
    );
    let boot_line = line_of(
        "run/reused-slots-boot.rb",
        "$boots = Array.new(50_000) { Boot.new }",
    );
    assert_eq!(class_counts(&r, "Late").first(), Some(&50_000), "{ctx}");
    for (i, sites) in alloc_sites_per_dump(&r).iter().enumerate() {
        let misattributed = lates_at(sites, boot_line);
        assert!(
            misattributed.is_empty(),
            "heap snapshot {}: Lates given the Boots' site: {misattributed:?}\n{ctx}",
            i + 1
        );
    }
}

/// With sampled sites a round traces only until it is over (under LSan until its command
/// returns, elsewhere until the program resumes): between the sampling windows a new object
/// gets no allocation site, under both backends.
#[test]
fn allocation_tracing_ends_after_a_round() {
    if !ruby_ready() {
        return;
    }
    let backends: &[&str] = if lsan_ready() {
        &["none", "lsan"]
    } else {
        &["none"]
    };
    for backend in backends {
        let _one = one_run_at_a_time();
        let r = run_sampled("run/tracing-after-round.rb", backend, "2");
        assert!(
            r.stdout
                .contains("tracing-after-round: untraced after the first round"),
            "{backend}: {}",
            r.context()
        );
    }
}

/// Every heap snapshot's allocation sites, in order.
fn alloc_sites_per_dump(r: &Run) -> Vec<Vec<leakhunt::heap::AllocSite>> {
    heap_summaries(r)
        .into_iter()
        .map(|summary| summary.alloc_sites)
        .collect()
}

/// The sites that give `Late`s the `Boot`s' line.
fn lates_at(
    sites: &[leakhunt::heap::AllocSite],
    boot_line: u32,
) -> Vec<&leakhunt::heap::AllocSite> {
    sites
        .iter()
        .filter(|s| s.class == "Late" && s.line == boot_line)
        .collect()
}

/// A fixture under sampled sites, a round a second from 1 s on.
fn run_sampled(program: &str, backend: &str, snapshots: &str) -> Run {
    let program = fixture(program);
    run(
        &[
            "--backend",
            backend,
            "--alloc-sites",
            "sampled",
            "--after",
            "1s",
            "--every",
            "1s",
            "--snapshots",
            snapshots,
        ],
        &[program.to_str().unwrap()],
        &[],
    )
}

fn reused_slots(backend: &str) {
    let _one = one_run_at_a_time();
    let r = run_sampled("run/reused-slots.rb", backend, "3");
    let ctx = r.context();
    assert!(r.stdout.contains("50000 Late made after warm-up"), "{ctx}");
    let boot_line = line_of(
        "run/reused-slots-boot.rb",
        "$boots = Array.new(50_000) { Boot.new }",
    );
    let sites = alloc_sites_per_dump(&r);
    assert!(sites.len() >= 2, "{ctx}");
    // Warm-up was traced: the first round saw every Boot at its line.
    let boots: u64 = sites[0]
        .iter()
        .filter(|s| s.class == "Boot" && s.line == boot_line)
        .map(|s| s.count)
        .sum();
    assert_eq!(boots, 50_000, "{:?}\n{ctx}", sites[0]);
    let last = sites.last().unwrap();
    assert!(
        class_counts(&r, "Late").last() == Some(&50_000),
        "the Lates are in the last dump: {ctx}"
    );
    let misattributed = lates_at(last, boot_line);
    assert!(
        misattributed.is_empty(),
        "Lates given the Boots' site: {misattributed:?}\n{ctx}"
    );
}

/// The same in a child forked after warm-up: it inherits the records of the objects its parent
/// dropped while tracing was off, with their free slots. The child's first dump is judged
/// against the parent's dump from before the fork, so the child's `Late`s, made in those
/// slots, do not get the `Boot`s' site.
#[test]
fn a_forked_child_does_not_give_its_parents_freed_sites_to_its_objects() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let r = run_sampled("run/reused-slots-fork.rb", "none", "4");
    let ctx = r.context();
    assert!(r.stdout.contains("50000 Late made in the child"), "{ctx}");
    let boot_line = line_of(
        "run/reused-slots-boot.rb",
        "$boots = Array.new(50_000) { Boot.new }",
    );
    let main = r.manifest.pid;
    let dumps: Vec<(bool, Vec<leakhunt::heap::AllocSite>, u64)> = r
        .manifest
        .snapshots
        .iter()
        .filter_map(|s| Some((s.pid != main, s.heap.as_ref()?)))
        .map(|(child, heap)| {
            let path = r.bundle.join(heap);
            let kind = leakhunt::detect::detect_path(&path).unwrap();
            let summary = leakhunt::heap::summarize(&path, kind).unwrap();
            let lates = summary.histogram.get("Late").map_or(0, |row| row.count);
            (child, summary.alloc_sites, lates as u64)
        })
        .collect();
    // The parent's first dump saw every Boot at its line.
    let boots: u64 = dumps
        .iter()
        .find(|(child, _, _)| !child)
        .map(|(_, sites, _)| {
            sites
                .iter()
                .filter(|s| s.class == "Boot" && s.line == boot_line)
                .map(|s| s.count)
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(boots, 50_000, "{ctx}");
    let children: Vec<_> = dumps.iter().filter(|(child, _, _)| *child).collect();
    assert!(
        children.iter().any(|(_, _, lates)| *lates == 50_000),
        "a dump of the child holds its Lates: {ctx}"
    );
    for (_, sites, _) in children {
        let misattributed = lates_at(sites, boot_line);
        assert!(
            misattributed.is_empty(),
            "the child's Lates given the Boots' site: {misattributed:?}\n{ctx}"
        );
    }
}

/// The one leak finding (runtime noise aside) of a run of `program` (a fixture) under
/// `--backend none` with `sites` (the allocation-site options), a round a second from 1 s on.
fn one_container_finding(program: &str, sites: &[&str]) -> serde_json::Value {
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let mut options = vec!["--backend", "none"];
    options.extend_from_slice(sites);
    options.extend_from_slice(&["--after", "1s", "--every", "1s", "--snapshots", "4"]);
    options.extend_from_slice(&[
        "--format",
        "json",
        "--report",
        report_path.to_str().unwrap(),
    ]);
    let r = run(&options, &[fixture(program).to_str().unwrap()], &[]);
    let ctx = r.context();
    assert_eq!(r.code, 1, "{ctx}");
    let report = json_report(&report_path, &r);
    let leaks: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] != "runtime_noise")
        .collect();
    assert_eq!(leaks.len(), 1, "{report:#}\n{ctx}");
    leaks[0].clone()
}

/// The finding's suggested location in `role`, as (file, line).
fn location_of(top: &serde_json::Value, role: &str) -> (String, u64) {
    let found = top["suggestion"]["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == role)
        .unwrap_or_else(|| panic!("no {role} location: {top:#}"));
    (
        found["file"].as_str().unwrap_or_default().to_owned(),
        found["line"].as_u64().unwrap_or_default(),
    )
}

/// Without allocation sites no object in the dumps has a site: a container a constant holds
/// (`Jobs::PENDING = []`) is named by the line that assigned the constant, which the agent lists
/// with the container's address right after each dump, and the finding says so (the line
/// assigns the constant: its role is `container_assigned`, not the Array's allocation).
#[test]
fn a_container_held_by_a_constant_is_named_without_allocation_sites() {
    if !ruby_ready() {
        return;
    }
    assert_jobs_pending_named("run/constant-queue.rb");
}

/// A constant the agent cannot read (`Jobs::Retries`, an autoload whose file is loaded and never
/// defined it: reading it raises NameError) does not end the listing of its module: `PENDING`,
/// after it in `Jobs.constants` (the fixture checks the order), still names the Array's line.
#[test]
fn a_container_held_by_a_constant_is_named_beside_an_unreadable_constant() {
    if !ruby_ready() {
        return;
    }
    assert_jobs_pending_named("run/constant-queue-stale-autoload.rb");
}

/// A run of `program` (a fixture that keeps Jobs in `Jobs::PENDING = []`) under
/// `--no-alloc-sites` has one finding, the Jobs, naming the Array by the line that assigned the
/// constant and the line that fills it.
fn assert_jobs_pending_named(program: &str) {
    let top = one_container_finding(program, &["--no-alloc-sites"]);
    assert_eq!(top["class"], "Job", "{top:#}");
    let path = fixture(program).display().to_string();
    let assigned = line_of(program, "PENDING = []");
    assert_eq!(
        location_of(&top, "container_assigned"),
        (path.clone(), u64::from(assigned)),
        "{top:#}"
    );
    let filled = line_of(program, "PENDING << Job.new(id)");
    assert_eq!(
        location_of(&top, "container_filled"),
        (path.clone(), u64::from(filled)),
        "{top:#}"
    );
    let said = top["evidence"].to_string();
    assert!(
        said.contains(&format!(
            "the constant Jobs::PENDING assigned at {path}:{assigned}"
        )),
        "{top:#}"
    );
    // The line assigns the constant: the finding never calls it the Array's allocation.
    assert!(
        top["title"].as_str().unwrap_or_default().contains(&format!(
            "kept by the Array held by the constant Jobs::PENDING (assigned at {path}:{assigned})"
        )),
        "{top:#}"
    );
}

/// With sampled allocation sites, a container made after warm-up (the first request's
/// `@cache ||= {}`, after the first snapshot) has no allocation site in the dumps: the finding
/// still names its line, read from the source from the line that keeps the new instances (the
/// heap gives that one from a sampled window or a round), and says it was read from the source.
#[test]
fn a_container_made_after_warm_up_is_named_under_sampled_sites() {
    if !ruby_ready() {
        return;
    }
    let top = one_container_finding("run/late-cache.rb", &["--alloc-sites", "sampled"]);
    assert_eq!(top["class"], "Entry", "{top:#}");
    let program = fixture("run/late-cache.rb").display().to_string();
    let made = line_of("run/late-cache.rb", "@cache ||= {}");
    assert_eq!(
        location_of(&top, "container_allocated"),
        (program.clone(), u64::from(made)),
        "{top:#}"
    );
    let filled = line_of("run/late-cache.rb", "@cache[key] = Entry.new(key)");
    assert_eq!(
        location_of(&top, "container_filled"),
        (program, u64::from(filled)),
        "{top:#}"
    );
    let said = top["evidence"].to_string();
    assert!(
        said.contains("read from the source; the Hash has no allocation site"),
        "the Hash was made outside every traced phase, and the report says how its line was found: {top:#}"
    );
}
