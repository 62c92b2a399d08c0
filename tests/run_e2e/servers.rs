//! Pre-forking servers and fork pools, end to end: Debian's puma (cluster mode, `-w 2`) and
//! unicorn (`worker_processes 2`) serving `fixtures/server/app.ru`, whose requests make Widgets
//! through FFI (`fixtures/widget/`, built here with gcc) and never close them; and
//! `fixtures/server/pool.rb`, a plain fork pool whose workers do the same. The fixed variants
//! close what they make. The leaks happen in the workers, never in the master.
//!
//! Load comes from the test itself, over the server's Unix socket (no TCP port to pick, none to
//! race for): a bounded number of requests, with a time limit. Rounds come on demand
//! (`leakhunt snapshot BUNDLE`) between load phases, so every worker has served requests between
//! two rounds; the runs end with Ctrl-C or `--duration`, and nothing of the program's tree may
//! be left running afterwards.

use super::{Run, assert_private_and_clean, finish, lsan_ready, one_run_at_a_time, scratch};
use crate::common::{
    build_widget, findings_brief, fixture, have, leak_kinds, leakhunt, locations, require,
};
use leakhunt::bundle::Manifest;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// Most requests one load phase may send.
const MAX_REQUESTS: usize = 3000;
/// How long a load phase (or waiting for the server) may take.
const LOAD_LIMIT: Duration = Duration::from_secs(180);

/// `leakhunt run` in the background, recording a server.
pub(super) struct Serving {
    child: Option<Child>,
    /// leakhunt runs under a wrapper (unshare and chroot, for the Ruby 3.3 root): it is the
    /// wrapper's child.
    wrapped: bool,
    scratch: Option<(tempfile::TempDir, PathBuf, PathBuf)>,
    /// The server's Unix socket.
    socket: PathBuf,
    /// leakhunt's stdout and stderr, read as they come: a pipe nobody reads fills up (64 KiB)
    /// and blocks whoever writes to it next, leakhunt or a server worker logging a request.
    output: Option<(Drain, Drain)>,
}

type Drain = std::thread::JoinHandle<Vec<u8>>;

/// Reads `from` to its end on a thread of its own.
fn drain(mut from: impl Read + Send + 'static) -> Drain {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

impl Serving {
    /// Starts `leakhunt run -o BUNDLE OPTIONS -- PROGRAM…` with libwidget built into the
    /// scratch directory; `program` gets the path of the server's socket.
    fn start(options: &[&str], program: impl FnOnce(&Path) -> Vec<String>) -> Serving {
        Serving::start_with(options, &[], program)
    }

    /// [`Serving::start`] with more environment for leakhunt.
    pub(super) fn start_with(
        options: &[&str],
        env: &[(&str, &str)],
        program: impl FnOnce(&Path) -> Vec<String>,
    ) -> Serving {
        let (scratch, tmpdir, bundle) = scratch();
        let lib = build_widget(scratch.path());
        let socket = scratch.path().join("server.sock");
        let mut command = leakhunt();
        command
            .arg("run")
            .arg("-o")
            .arg(&bundle)
            .args(["--format", "json", "--report"])
            .arg(scratch.path().join("report.json"))
            .args(options)
            .arg("--")
            .args(program(&socket))
            .env("TMPDIR", &tmpdir)
            .env("WIDGET_LIB", &lib)
            .env("UNICORN_SOCKET", &socket)
            .envs(env.iter().copied());
        Serving::launch(command, false, (scratch, tmpdir, bundle), socket)
    }

    /// Starts `command` (a leakhunt run writing its bundle and `report.json` into the scratch
    /// directory, serving on `socket`); `wrapped` when leakhunt is the command's child.
    pub(super) fn launch(
        mut command: std::process::Command,
        wrapped: bool,
        scratch: (tempfile::TempDir, PathBuf, PathBuf),
        socket: PathBuf,
    ) -> Serving {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Some((
            drain(child.stdout.take().unwrap()),
            drain(child.stderr.take().unwrap()),
        ));
        Serving {
            child: Some(child),
            wrapped,
            scratch: Some(scratch),
            socket,
            output,
        }
    }

    /// leakhunt's exit status and output, once it has ended.
    fn output_of(&mut self, mut child: Child) -> Output {
        let status = child.wait().unwrap();
        let (stdout, stderr) = self.output.take().unwrap();
        Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }

    /// leakhunt's pid (under a wrapper: the wrapper's child, from /proc).
    fn leakhunt_pid(&self) -> u32 {
        let pid = self.child.as_ref().unwrap().id();
        if !self.wrapped {
            return pid;
        }
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let rest = stat.rsplit_once(')')?.1;
                let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == pid).then(|| e.file_name().to_str()?.parse().ok())?
            })
            .next()
            .unwrap_or_else(|| panic!("no child of the wrapper {pid}"))
    }

    fn bundle(&self) -> &Path {
        &self.scratch.as_ref().unwrap().2
    }

    fn ended(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().unwrap().is_some())
    }

    /// What leakhunt said, once it has ended (for a failure's message).
    fn story(&mut self) -> String {
        if !self.ended() {
            return "leakhunt is still running".into();
        }
        let Some(child) = self.child.take() else {
            return String::new();
        };
        let out = self.output_of(child);
        format!(
            "leakhunt ended: {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Sends requests until `workers` different processes have answered.
    pub(super) fn wait_ready(&mut self, workers: usize) {
        let until = Instant::now() + LOAD_LIMIT;
        let mut seen = BTreeMap::new();
        while seen.len() < workers {
            if Instant::now() >= until || self.ended() {
                panic!(
                    "the server never answered from {workers} workers (seen {seen:?})\n{}",
                    self.story()
                );
            }
            match request(&self.socket) {
                Some(pid) => *seen.entry(pid).or_insert(0) += 1,
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Sends requests until each of `workers` processes has served `each` of them (at most
    /// [`MAX_REQUESTS`], within [`LOAD_LIMIT`]). Returns the requests served per pid.
    pub(super) fn load(&mut self, workers: usize, each: usize) -> BTreeMap<u32, usize> {
        let until = Instant::now() + LOAD_LIMIT;
        let mut served: BTreeMap<u32, usize> = BTreeMap::new();
        for _ in 0..MAX_REQUESTS {
            if served.len() >= workers && served.values().all(|&n| n >= each) {
                return served;
            }
            if Instant::now() >= until || self.ended() {
                panic!(
                    "load not spread over {workers} workers in time: {served:?}\n{}",
                    self.story()
                );
            }
            if let Some(pid) = request(&self.socket) {
                *served.entry(pid).or_insert(0) += 1;
            }
        }
        panic!("{MAX_REQUESTS} requests did not reach {workers} workers {each} times: {served:?}");
    }

    /// `leakhunt snapshot BUNDLE`: a round now. Returns its number.
    pub(super) fn round(&self) -> u32 {
        let out = leakhunt()
            .arg("snapshot")
            .arg(self.bundle())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .strip_prefix("round ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("leakhunt snapshot said {stdout:?}"))
    }

    /// Ctrl-C to leakhunt.
    pub(super) fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Sends `signal` to leakhunt.
    fn signal(&self, signal: i32) {
        let pid = self.leakhunt_pid();
        // SAFETY: signals the leakhunt process this test started.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }

    /// Waits (a minute at most) until the bundle's manifest satisfies `done`; returns it.
    fn manifest_when(&mut self, what: &str, done: impl Fn(&Manifest) -> bool) -> Manifest {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(m) = Manifest::load(self.bundle())
                && done(&m)
            {
                return m;
            }
            if Instant::now() >= until || self.ended() {
                panic!("the manifest never showed {what}\n{}", self.story());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for leakhunt to end (a few minutes at most) and reads the run and its report.
    pub(super) fn finish(mut self) -> (Run, serde_json::Value) {
        let mut child = self.child.take().unwrap();
        let until = Instant::now() + Duration::from_secs(300);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < until, "leakhunt did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self.output_of(child);
        let (scratch, tmpdir, bundle) = self.scratch.take().unwrap();
        let report_path = scratch.path().join("report.json");
        let r = finish(scratch, tmpdir, bundle, out);
        let report = super::json_report(&report_path, &r);
        (r, report)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `GET /` over the Unix socket (HTTP/1.0: the server closes when done). The app answers
/// with the pid of the worker that served it.
fn request(socket: &Path) -> Option<u32> {
    let mut stream = UnixStream::connect(socket).ok()?;
    // A request left unanswered is retried rather than waited for: the load loop has its own
    // limit, and one stalled connection must not use most of it.
    let limit = Some(Duration::from_secs(10));
    stream.set_read_timeout(limit).ok()?;
    stream.set_write_timeout(limit).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.") || !response.contains(" 200 ") {
        return None;
    }
    response.lines().last()?.trim().parse().ok()
}

/// Nothing of the program's tree is running any more: not a process the manifest lists, not
/// anything left in the program's process group.
pub(super) fn assert_tree_gone(r: &Run) {
    assert_private_and_clean(r);
    let group = r.manifest.processes[0].pid;
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = leakhunt::platform::group_members(group);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "left running: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workers of the run: processes forked by the main one, with their rounds.
pub(super) fn workers(r: &Run) -> Vec<&leakhunt::bundle::ProcessEntry> {
    let main = r.manifest.main_process().expect("a main process");
    r.manifest
        .processes
        .iter()
        .filter(|p| p.role == "worker" && p.ppid == Some(main.pid))
        .collect()
}

/// The lifecycle counts of `Widget` in the last sidecar of process `pid`: (created, released,
/// the leading creation site as (file name, line)).
pub(super) fn widget_counts(r: &Run, pid: u32) -> (u64, u64, Option<(String, u32)>) {
    let sidecar = r
        .manifest
        .snapshots_of(pid)
        .filter_map(|s| s.sidecar.clone())
        .last()
        .unwrap_or_else(|| panic!("no sidecar of {pid}\n{}", r.context()));
    let sidecar = r.sidecar(&sidecar);
    let widget = sidecar
        .lifecycle
        .iter()
        .find(|l| l.class == "Widget")
        .unwrap_or_else(|| panic!("no Widget lifecycle in {pid}: {:#?}", sidecar.lifecycle));
    let site = widget.created_at.first().map(|s| {
        let file = s.file.rsplit('/').next().unwrap_or(&s.file).to_owned();
        (file, s.line)
    });
    (widget.created, widget.released, site)
}

/// The report's diagnosis of a leaking pool or server: one leak finding, the missing
/// `Widget#close` of the widget_create memory, created at `file:line`, holding in every worker
/// that could be judged (at least two); the master leaks nothing. leakhunt exits 1.
/// The pids of the workers the report judged, in the report's order.
pub(super) fn judged_workers(report: &serde_json::Value) -> Vec<u64> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] == "worker" && p["judged"] == true)
        .filter_map(|p| p["pid"].as_u64())
        .collect()
}

/// The pids of the processes a merged finding holds in, in the finding's order.
pub(super) fn holding_pids(finding: &serde_json::Value) -> Vec<u64> {
    finding["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect()
}

pub(super) fn assert_leak_in_every_worker(
    r: &Run,
    report: &serde_json::Value,
    file: &str,
    line: u32,
) {
    let ctx = format!("{}\n{report:#}\n{}", findings_brief(report), r.context());
    assert_eq!(r.code, 1, "{ctx}");
    assert_eq!(report["verdict"], "leak", "{ctx}");
    assert_eq!(leak_kinds(report), ["missing_release"], "{ctx}");
    let f = &report["findings"][0];
    assert_eq!(f["suggestion"]["method"], "Widget#close", "{ctx}");
    assert_eq!(f["native"]["function"], "widget_create", "{ctx}");
    assert_eq!(
        locations(f)[0],
        (file.to_owned(), line as u64, "created".into()),
        "{ctx}"
    );
    let title = f["title"].as_str().unwrap_or_default();
    let place = title
        .split(" · ")
        .find_map(|p| p.strip_prefix("in "))
        .unwrap_or_else(|| panic!("the title does not say where: {title}"));
    let (k, n) = place
        .strip_suffix(" workers")
        .and_then(|p| p.split_once(" of "))
        .unwrap_or_else(|| panic!("not in workers only: {title}"));
    assert!(k == n && n.parse::<u32>().unwrap_or(0) >= 2, "{title}");
    assert!(title.ends_with(" bytes in total"), "{title}");
    assert_eq!(
        holding_pids(f),
        judged_workers(report),
        "every judged worker, only workers: {ctx}"
    );
    for p in f["processes"].as_array().unwrap() {
        let series = p["series"].as_array().unwrap();
        assert!(series.len() >= 2, "{ctx}");
        let first = series[0]["value"].as_i64().unwrap();
        let last = series[series.len() - 1]["value"].as_i64().unwrap();
        assert!(
            last > first,
            "the widget_create bytes grow in pid {}: {ctx}",
            p["pid"]
        );
    }
}

/// The fixed variants: no leak finding, leakhunt exits 0.
pub(super) fn assert_clean(r: &Run, report: &serde_json::Value) {
    let ctx = format!("{}\n{report:#}\n{}", findings_brief(report), r.context());
    assert!(leak_kinds(report).is_empty(), "{ctx}");
    assert_eq!(report["verdict"], "no_leak", "{ctx}");
    assert_eq!(r.code, 0, "{ctx}");
}

fn servers_ready(server: &str) -> bool {
    require("ruby", have("ruby"))
        && require("gcc", have("gcc"))
        && lsan_ready()
        && require(&format!("{server} (Debian package {server})"), have(server))
}

/// A server under LSan: ready, a round, load, a round, load, then Ctrl-C (a last round).
fn serve_with_rounds_on_demand(
    program: impl FnOnce(&Path) -> Vec<String>,
) -> (Run, serde_json::Value) {
    let s = Serving::start(&["--backend", "lsan", "--snapshots", "0"], program);
    rounds_between_loads(s)
}

/// Ready, a round, load, a round, load, then Ctrl-C (a last round).
pub(super) fn rounds_between_loads(mut s: Serving) -> (Run, serde_json::Value) {
    s.wait_ready(2);
    let first = s.round();
    let served = s.load(2, 60);
    let second = s.round();
    assert!(second > first);
    let more = s.load(2, 60);
    eprintln!("served per worker: {served:?}, then {more:?}");
    s.interrupt();
    s.finish()
}

/// The lines of fixtures/server/app.rb that create Widgets.
pub(super) fn app_leak_line() -> u32 {
    super::line_of("server/app.rb", "4.times { Widget.new(512).size }")
}

fn app_fixed_line() -> u32 {
    super::line_of("server/app.rb", "widget = Widget.new(512)")
}

fn puma(app: &str) -> impl FnOnce(&Path) -> Vec<String> {
    let app = fixture(&format!("server/{app}")).display().to_string();
    move |socket| {
        vec![
            "puma".into(),
            "-w".into(),
            "2".into(),
            "--bind".into(),
            format!("unix://{}", socket.display()),
            app,
        ]
    }
}

fn unicorn(app: &str) -> impl FnOnce(&Path) -> Vec<String> {
    let app = fixture(&format!("server/{app}")).display().to_string();
    move |_socket| {
        vec![
            "unicorn".into(),
            "-c".into(),
            fixture("server/unicorn.conf.rb").display().to_string(),
            app,
        ]
    }
}

/// What every server run must show: two workers forked by the master, each in the three
/// rounds (two on demand, the last on Ctrl-C), each with its own LSan log, and Widgets created
/// in app.rb (never closed, or all closed in the fixed app).
fn assert_workers_examined(r: &Run, fixed: bool) {
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "interrupted", "{ctx}");
    let workers = workers(r);
    assert_eq!(workers.len(), 2, "{ctx}");
    let line = if fixed {
        app_fixed_line()
    } else {
        app_leak_line()
    };
    for w in &workers {
        assert_eq!((w.first_round, w.last_round), (Some(1), Some(3)), "{ctx}");
        assert_eq!(w.native_logs, [format!("lsan-p{}.log", w.pid)], "{ctx}");
        let (created, released, site) = widget_counts(r, w.pid);
        assert!(created >= 240, "{created}\n{ctx}");
        assert_eq!(released, if fixed { created } else { 0 }, "{ctx}");
        assert_eq!(site, Some(("app.rb".into(), line)), "{ctx}");
    }
    assert_tree_gone(r);
}

fn server_case(server: &str, fixed: bool) {
    if !servers_ready(server) {
        return;
    }
    let app = if fixed { "app-fixed.ru" } else { "app.ru" };
    let program = match server {
        "puma" => Box::new(puma(app)) as Box<dyn FnOnce(&Path) -> Vec<String>>,
        _ => Box::new(unicorn(app)),
    };
    let _one = one_run_at_a_time();
    let started = Instant::now();
    let (r, report) = serve_with_rounds_on_demand(program);
    eprintln!(
        "{server} {app} under lsan: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_workers_examined(&r, fixed);
    if fixed {
        assert_clean(&r, &report);
    } else {
        assert_leak_in_every_worker(&r, &report, "app.rb", app_leak_line());
    }
}

#[test]
fn puma_cluster_leaks_in_every_worker() {
    server_case("puma", false);
}

#[test]
fn puma_cluster_fixed_app_is_clean() {
    server_case("puma", true);
}

#[test]
fn unicorn_leaks_in_every_worker() {
    server_case("unicorn", false);
}

#[test]
fn unicorn_fixed_app_is_clean() {
    server_case("unicorn", true);
}

// ---------------------------------------------------------------------------------------------
// A plain fork pool (fixtures/server/pool.rb): no server, no load from outside; the workers take
// jobs of their own. Ended by --duration.

/// `leakhunt run --duration … -- ruby pool.rb MODE 2 CRASH_AFTER` with libwidget built here.
fn pool_run(options: &[&str], mode: &str, crash_after: u32) -> (Run, serde_json::Value) {
    let s = Serving::start(options, |_| {
        vec![
            fixture("server/pool.rb").display().to_string(),
            mode.to_owned(),
            "2".to_owned(),
            crash_after.to_string(),
        ]
    });
    s.finish()
}

fn pool_ready() -> bool {
    require("ruby", have("ruby")) && require("gcc", have("gcc"))
}

/// The line of pool.rb that creates the Widgets.
fn pool_widget_line() -> u32 {
    super::line_of("server/pool.rb", "widget = Widget.new(512)")
}

#[test]
fn a_fork_pool_whose_worker_crashes_and_is_replaced() {
    if !pool_ready() || !lsan_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let started = Instant::now();
    // A worker makes a Widget every 5 ms at most: it cannot reach 1,500 jobs (7.5 s) before the
    // first rounds, 0.5 s after the pool started and then every second; it crashes after
    // them, and its replacement joins the later rounds. (With 200 jobs, 1 s, a first round
    // that came late under LSan on a loaded machine found the worker already gone.)
    let (r, report) = pool_run(
        &[
            "--backend",
            "lsan",
            "--after",
            "0.5s",
            "--every",
            "1s",
            "--snapshots",
            "3",
            "--duration",
            "25s",
        ],
        "leak",
        1500,
    );
    eprintln!("pool under lsan: {:.1} s", started.elapsed().as_secs_f64());
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "stopped", "{ctx}");
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(r.stdout.contains("replaced by"), "{ctx}");
    assert_eq!(r.reasons().last(), Some(&"duration"), "{ctx}");
    let workers = workers(&r);
    assert_eq!(workers.len(), 3, "two workers and a replacement: {ctx}");
    let crashed = workers
        .iter()
        .find(|w| w.outcome.kind == "vanished")
        .unwrap_or_else(|| panic!("no crashed worker: {ctx}"));
    let replacement = workers
        .iter()
        .max_by_key(|w| w.pid)
        .filter(|w| w.pid != crashed.pid)
        .unwrap_or_else(|| panic!("no replacement: {ctx}"));
    assert!(crashed.first_round.is_some(), "{ctx}");
    assert!(
        replacement.first_round > crashed.last_round,
        "the replacement joins the rounds after the crash: {ctx}"
    );
    for w in &workers {
        let (created, released, site) = widget_counts(&r, w.pid);
        assert!(created > 0 && released == 0, "{ctx}");
        assert_eq!(site, Some(("pool.rb".into(), pool_widget_line())), "{ctx}");
    }
    assert_leak_in_every_worker(&r, &report, "pool.rb", pool_widget_line());
    // The crashed worker is listed with its outcome, whether or not it could be judged.
    let listed = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == crashed.pid)
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(listed["outcome"]["kind"], "vanished", "{report:#}");
    assert_tree_gone(&r);
}

#[test]
fn a_fork_pool_that_closes_its_widgets_is_clean() {
    if !pool_ready() || !lsan_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let (r, report) = pool_run(
        &[
            "--backend",
            "lsan",
            "--after",
            "0.5s",
            "--every",
            "1s",
            "--snapshots",
            "2",
            "--duration",
            "15s",
        ],
        "fixed",
        0,
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "stopped", "{ctx}");
    let workers = workers(&r);
    assert_eq!(workers.len(), 2, "{ctx}");
    for w in &workers {
        let (created, released, _) = widget_counts(&r, w.pid);
        assert!(created > 0 && released == created, "{ctx}");
    }
    assert_clean(&r, &report);
    assert_tree_gone(&r);
}

#[test]
fn a_fork_pool_under_valgrind() {
    if !pool_ready() || !require("valgrind", have("valgrind")) {
        return;
    }
    let _one = one_run_at_a_time();
    let started = Instant::now();
    let (r, report) = pool_run(
        &[
            "--backend",
            "valgrind",
            "--after",
            "3s",
            "--every",
            "2s",
            "--snapshots",
            "2",
            "--duration",
            "30s",
        ],
        "leak",
        0,
    );
    eprintln!(
        "pool under valgrind: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "stopped", "{ctx}");
    let workers = workers(&r);
    assert_eq!(workers.len(), 2, "{ctx}");
    for w in &workers {
        assert_eq!(w.native_logs, [format!("valgrind-p{}.xml", w.pid)], "{ctx}");
        let natives: Vec<&str> = r
            .manifest
            .snapshots_of(w.pid)
            .filter_map(|s| s.native.as_ref().map(|n| n.file.as_str()))
            .collect();
        assert!(natives.len() >= 2, "{ctx}");
        let last = std::fs::read_to_string(r.bundle.join(natives[natives.len() - 1])).unwrap();
        assert!(last.contains("widget_create"), "{last}");
    }
    assert_leak_in_every_worker(&r, &report, "pool.rb", pool_widget_line());
    assert_tree_gone(&r);
}

/// Stops (SIGSTOP) one worker of a pool: a round still ends, with every other process
/// snapshotted and the stopped one recorded as not answering; a round asked for with SIGUSR1
/// passes it over; once continued, its late answer is kept, and it is in the last round again.
/// The `sleep` the master starts (not Ruby) is listed, never waited for, and gone at the end.
#[test]
fn a_stopped_worker_holds_up_no_round() {
    if !pool_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let mut s = Serving::start_with(
        &["--backend", "none", "--snapshots", "0", "--duration", "15s"],
        // A round waits 3 s for a process that does not answer.
        &[("LEAKHUNT_SNAPSHOT_DEADLINE", "3")],
        |_| {
            vec![
                fixture("server/pool.rb").display().to_string(),
                "leak".into(),
                "2".into(),
                "0".into(),
                "helper".into(),
            ]
        },
    );
    let workers = |m: &Manifest| -> Vec<u32> {
        m.processes
            .iter()
            .filter(|p| p.role == "worker")
            .map(|p| p.pid)
            .collect()
    };
    let m = s.manifest_when("two workers", |m| workers(m).len() == 2);
    let (stopped, other) = (workers(&m)[0], workers(&m)[1]);
    // SAFETY: stops a worker of the pool this test started (continued below).
    unsafe {
        libc::kill(stopped as i32, libc::SIGSTOP);
    }
    let first = s.round();
    let m = Manifest::load(s.bundle()).unwrap();
    let of = |pid: u32| m.snapshots_of(pid).find(|x| x.index == first).cloned();
    assert!(of(other).is_some_and(|x| x.taken()), "{m:#?}");
    assert!(of(m.pid.unwrap()).is_some_and(|x| x.taken()), "{m:#?}");
    let silent = of(stopped).unwrap_or_else(|| panic!("{m:#?}"));
    assert!(!silent.taken(), "{m:#?}");
    assert!(
        silent.errors[0].starts_with("the agent did not answer within 3 s"),
        "{m:#?}"
    );
    // SIGUSR1: a round on demand, which passes the stopped worker over.
    s.signal(libc::SIGUSR1);
    let second = first + 1;
    let m = s.manifest_when("a second round", |m| {
        m.snapshots.iter().any(|x| x.index == second)
    });
    assert!(
        m.snapshots
            .iter()
            .filter(|x| x.index == second)
            .all(|x| x.pid != Some(stopped) && x.reason == "request"),
        "{m:#?}"
    );
    // SAFETY: continues the worker stopped above.
    unsafe {
        libc::kill(stopped as i32, libc::SIGCONT);
    }
    s.manifest_when("the late answer", |m| {
        m.snapshots_of(stopped)
            .any(|x| x.index == first && x.taken())
    });
    let (r, _report) = s.finish();
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "stopped", "{ctx}");
    let late = r
        .manifest
        .snapshots_of(stopped)
        .find(|x| x.index == first)
        .unwrap();
    assert!(
        late.errors
            .iter()
            .any(|e| e == "the agent answered after the deadline; no native evidence"),
        "{ctx}"
    );
    // Back in the last round.
    let last = r.manifest.snapshots.last().unwrap().index;
    assert!(
        r.manifest
            .snapshots_of(stopped)
            .any(|x| x.index == last && x.taken() && x.reason == "duration"),
        "{ctx}"
    );
    let helper = r
        .manifest
        .processes
        .iter()
        .find(|p| p.role == "no agent")
        .unwrap_or_else(|| panic!("the sleep is not listed: {ctx}"));
    assert_eq!(helper.command, ["sleep", "600"], "{ctx}");
    assert_eq!(helper.ppid, r.manifest.pid, "{ctx}");
    assert_eq!(helper.outcome.kind, "unseen", "{ctx}");
    assert_tree_gone(&r);
}
