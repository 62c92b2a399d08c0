//! `leakhunt run --backend leaks` and `leakhunt doctor --backend leaks` on Linux: leaks(1) is
//! replaced by `tests/support/leaks-stand-in` (named by the test-only
//! `LEAKHUNT_TEST_LEAKS_STAND_IN`), which honours leaks' command line and exit statuses and
//! replays real reports from `fixtures/leaks/`. The programs, the agent, the bundle, the
//! readers and the correlator are the real ones. Also here: the macOS fixes that are portable
//! (Ctrl-C sent from outside leakhunt's session, the socket directory's fallback).

use super::{
    OnTerminal, Run, assert_gone, assert_private_and_clean, one_run_at_a_time, private_endpoint,
    ruby_ready, run, scratch, seed_ready, wait_for_first_snapshot,
};
use crate::common::{fixture, leakhunt, locations};
use leakhunt::run::backend::leaks::run_leaks;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A real `--list` report (macOS 15.0.1, MallocStackLogging lite, Binary Images).
const LIST_REPORT: &str = "macos15.0-v3.0-list-msl-lite-callstack.txt";

/// `run` options for the leaks backend with this schedule (findings never fail the run).
fn leaks_schedule<'a>(after: &'a str, every: &'a str, snapshots: &'a str) -> Vec<&'a str> {
    vec![
        "--backend",
        "leaks",
        "--after",
        after,
        "--every",
        every,
        "--snapshots",
        snapshots,
        "--fail-on",
        "never",
    ]
}

fn stand_in_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/leaks-stand-in")
}

/// How the stand-in behaves in one test, and the log of its calls.
struct StandIn {
    dir: tempfile::TempDir,
    replay: Vec<PathBuf>,
    mode: &'static str,
    grow: Option<u32>,
}

impl StandIn {
    fn new(replay: &[&str], mode: &'static str) -> StandIn {
        StandIn {
            dir: tempfile::tempdir().unwrap(),
            replay: replay
                .iter()
                .map(|r| fixture(&format!("leaks/{r}")))
                .collect(),
            mode,
            grow: None,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// The variables that make leakhunt use the stand-in and tell the stand-in what to do.
    fn env(&self) -> Vec<(String, String)> {
        let replay: Vec<String> = self
            .replay
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut env = vec![
            (
                "LEAKHUNT_TEST_LEAKS_STAND_IN".to_owned(),
                stand_in_path().display().to_string(),
            ),
            ("LEAKS_STAND_IN_REPLAY".to_owned(), replay.join(":")),
            ("LEAKS_STAND_IN_MODE".to_owned(), self.mode.to_owned()),
            (
                "LEAKS_STAND_IN_LOG".to_owned(),
                self.log().display().to_string(),
            ),
        ];
        if let Some(k) = self.grow {
            env.push(("LEAKS_STAND_IN_GROW".to_owned(), k.to_string()));
        }
        env
    }

    /// One line per call: `pid=N args=… MallocStackLogging=…`.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The stand-in's own pids, from its log.
    fn pids(&self) -> Vec<u32> {
        self.calls()
            .iter()
            .filter_map(|l| l.strip_prefix("pid=")?.split(' ').next()?.parse().ok())
            .collect()
    }

    /// A script that runs the stand-in with this setting (for calls that inherit the test
    /// process's environment, which the tests must not change).
    fn as_tool(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = self.dir.path().join("leaks");
        let exports: String = self
            .env()
            .iter()
            .filter(|(k, _)| k.starts_with("LEAKS_STAND_IN_"))
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{exports}exec '{}' \"$@\"\n",
                stand_in_path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }
}

fn run_with(options: &[&str], program: &[&str], env: &[(String, String)]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run(options, program, &env)
}

fn snapshot_errors(r: &Run) -> Vec<String> {
    r.manifest
        .snapshots
        .iter()
        .flat_map(|s| s.errors.iter().cloned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The whole path: program, agent, leaks, bundle, readers, correlator.

/// The seed's second program (messages never closed) with the seed's own `leaks` report,
/// replayed growing from snapshot to snapshot: the diagnosis is the seed's, `ZMQ::Message#close`
/// for the messages created at leak-counter.rb:37, and the bundle holds what leaks gave.
#[test]
fn the_seeds_leak_through_leaks_names_zmq_message_close() {
    if !seed_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let mut stand_in = StandIn::new(&["seed-rbx-macos10.6.5-v2.0-excerpt.txt"], "report");
    stand_in.grow = Some(50);
    let mut env = stand_in.env();
    // Set in the user's shell too: leaks itself must not run with it.
    env.push(("MallocStackLogging".into(), "1".into()));
    let report = stand_in.dir.path().join("report.json");
    let program = fixture("seed/leak-counter.rb");
    let (_endpoint_dir, endpoint) = private_endpoint();
    let mut options = leaks_schedule("1s", "1s", "2");
    options.extend(["--format", "json", "--report", report.to_str().unwrap()]);
    // 300,000 round trips: the program must outlive two interval rounds (100,000 took 1.7 s
    // once sampled allocation sites became the default, and the second round never came).
    let r = run_with(
        &options,
        &[program.to_str().unwrap(), &endpoint, "1024", "300000"],
        &env,
    );
    let ctx = r.context();
    assert_eq!(r.code, 0, "{ctx}");
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    assert!(
        r.stderr.contains("LEAKHUNT_TEST_LEAKS_STAND_IN is set"),
        "{ctx}"
    );

    // The bundle: a leaks report per snapshot, the setting the program ran with.
    let snapshots = &r.manifest.snapshots;
    assert!(snapshots.len() >= 3, "{ctx}");
    assert_eq!(snapshots.last().unwrap().reason, "exit", "{ctx}");
    for s in snapshots {
        assert!(s.errors.is_empty(), "{ctx}");
        let native = s.native.as_ref().expect("a leaks report");
        assert_eq!(native.file, format!("native-{:03}.txt", s.index));
        let text = std::fs::read_to_string(r.bundle.join(&native.file)).unwrap();
        assert!(text.contains("zmq_msg_init_size"), "{text}");
        // -noContent: the blocks' contents (the seed's `aaaa…` message bodies) stay out.
        assert!(!text.contains("0x61616161"), "{text}");
    }
    let backend = &r.manifest.backend;
    assert_eq!(backend.name, "leaks");
    assert_eq!(
        backend.options,
        ["MallocStackLogging=lite", "-noContent"],
        "{ctx}"
    );
    assert_eq!(
        r.manifest.env.get("MallocStackLogging").map(String::as_str),
        Some("lite"),
        "{ctx}"
    );
    let pid = r.manifest.pid.unwrap();
    let calls = stand_in.calls();
    assert_eq!(calls.len(), snapshots.len(), "{calls:?}");
    for call in &calls {
        assert!(
            call.ends_with(&format!(
                " args=-noContent {pid} MallocStackLogging=(unset)"
            )),
            "{call}"
        );
    }
    assert_private_and_clean(&r);

    // The report: the seed's diagnosis.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["backend"], "leaks");
    let top = &report["findings"][0];
    assert_eq!(top["kind"], "missing_release", "{top:#}");
    assert_eq!(top["class"], "ZMQ::Message", "{top:#}");
    assert_eq!(top["native"]["function"], "zmq_msg_init_size", "{top:#}");
    assert_eq!(top["suggestion"]["method"], "ZMQ::Message#close", "{top:#}");
    let line = super::line_of("seed/leak-counter.rb", "message = ZMQ::Message.new");
    assert!(
        locations(top).contains(&("leak-counter.rb".into(), u64::from(line), "created".into())),
        "{:?}",
        locations(top)
    );
    // Blocks listed 50, 100, 150, … times: the site grows by 50 blocks per snapshot.
    let site = &report["native_sites"][0];
    assert_eq!(site["function"], "zmq_msg_init_size");
    let blocks: Vec<u64> = site["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(blocks[..3], [50, 100, 150], "{site:#}");
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("MallocStackLogging's own records"),
        "{notes}"
    );
}

/// leaks refusing the process: every snapshot keeps its heap dump and says why, with advice
/// that does not send the user to sudo. The program's child does not inherit stack logging.
#[test]
fn a_refusing_leaks_is_explained_per_snapshot_and_stack_logging_stays_out_of_children() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let stand_in = StandIn::new(&[LIST_REPORT], "cannot-examine");
    let r = run_with(
        &leaks_schedule("300ms", "500ms", "2"),
        &[fixture("run/starts-a-child.rb").to_str().unwrap(), "2"],
        &stand_in.env(),
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert!(
        r.stdout.contains("child sees MallocStackLogging=unset"),
        "{ctx}"
    );
    assert_eq!(
        r.manifest.env.get("MallocStackLogging").map(String::as_str),
        Some("lite"),
        "{ctx}"
    );
    assert!(r.manifest.snapshots.len() >= 2, "{ctx}");
    for s in &r.manifest.snapshots {
        assert!(s.heap.is_some() && s.native.is_none(), "{ctx}");
        let errors = s.errors.join("\n");
        assert!(
            errors.contains("leaks cannot examine process (ruby"),
            "{errors}"
        );
        assert!(
            errors.contains("leaks may not examine this process"),
            "{errors}"
        );
        assert!(errors.contains("sudo does not get past SIP"), "{errors}");
        assert!(!errors.contains("or run with sudo"), "{errors}");
    }
    assert_private_and_clean(&r);
}

/// A leaks that never ends is killed at its own deadline (not what the agent left of the
/// snapshot), and the snapshot keeps its heap dump.
#[test]
fn a_hanging_leaks_is_cut_at_its_own_deadline() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let stand_in = StandIn::new(&[LIST_REPORT], "hang");
    let mut env = stand_in.env();
    env.push(("LEAKHUNT_LEAKS_DEADLINE".into(), "2".into()));
    let r = run_with(
        &leaks_schedule("300ms", "30s", "1"),
        &[fixture("run/forever.rb").to_str().unwrap(), "3"],
        &env,
    );
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "exited", "{ctx}");
    assert_eq!(r.reasons(), ["interval", "exit"], "{ctx}");
    for s in &r.manifest.snapshots {
        assert!(s.heap.is_some() && s.native.is_none(), "{ctx}");
        let errors = s.errors.join("\n");
        assert!(
            errors
                .contains("leaks did not finish within 2 s (LEAKHUNT_LEAKS_DEADLINE allows more)"),
            "{errors}"
        );
    }
    assert_eq!(stand_in.calls().len(), 2, "{:?}", stand_in.calls());
    for pid in stand_in.pids() {
        assert_gone(pid);
    }
    assert_private_and_clean(&r);
}

/// Ctrl-C while leaks hangs: the first one would give it 15 s more, the second stops it,
/// and the program, at once; the snapshot under way keeps its heap dump.
#[test]
fn a_second_ctrl_c_stops_a_hanging_leaks_at_once() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let stand_in = StandIn::new(&[LIST_REPORT], "hang");
    let (scratch, tmpdir, bundle) = scratch();
    let child = leakhunt()
        .arg("run")
        .args(leaks_schedule("300ms", "30s", "3"))
        .arg("-o")
        .arg(&bundle)
        .arg(fixture("run/forever.rb"))
        .env("TMPDIR", &tmpdir)
        .env("LEAKHUNT_LEAKS_DEADLINE", "60")
        .envs(stand_in.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while stand_in.calls().is_empty() {
        assert!(Instant::now() < until, "leaks never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupted = Instant::now();
    for _ in 0..2 {
        // SAFETY: signals the leakhunt process this test started.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stopped_after = interrupted.elapsed();
    let r = super::finish(scratch, tmpdir, bundle, out);
    let ctx = r.context();
    // Well under the 15 s a first Ctrl-C leaves leaks, and the 60 s of its deadline.
    assert!(
        stopped_after < Duration::from_secs(10),
        "{stopped_after:?} {ctx}"
    );
    assert_eq!(r.manifest.outcome.kind, "interrupted", "{ctx}");
    assert_eq!(r.reasons(), ["interval"], "{ctx}");
    let first = &r.manifest.snapshots[0];
    assert!(first.heap.is_some() && first.native.is_none(), "{ctx}");
    assert!(
        snapshot_errors(&r)
            .iter()
            .any(|e| e == "leaks was cut short by a second interrupt"),
        "{ctx}"
    );
    for pid in stand_in.pids() {
        assert_gone(pid);
    }
    assert_private_and_clean(&r);
}

// ---------------------------------------------------------------------------------------------
// leaks' command-line contract, one call at a time (what `run` and `doctor` share).

#[test]
fn each_way_leaks_ends_is_told_apart() {
    if !ruby_ready() {
        return;
    }
    let mut target = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = target.id();
    let scratch = tempfile::tempdir().unwrap();
    let report = scratch.path().join("report.txt");
    let options = leakhunt::run::backend::leaks::options_for(None);
    let call = |stand_in: &StandIn, pid: u32, deadline: u64| {
        run_leaks(
            &stand_in.as_tool(),
            &options,
            pid,
            &report,
            scratch.path(),
            Duration::from_secs(deadline),
        )
    };

    let found = StandIn::new(&[LIST_REPORT], "report");
    assert_eq!(call(&found, pid, 30), Ok(1));
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.contains(&format!("Process {pid}: 1 leak for")),
        "{text}"
    );
    assert!(found.calls()[0].contains(&format!("args=-noContent {pid} ")));

    let clean = StandIn::new(
        &["macos13.2-v4.0-zero-leaks-msl-lite-notdebuggable.txt"],
        "not-debuggable",
    );
    assert_eq!(call(&clean, pid, 30), Ok(0));

    let refused = StandIn::new(&[LIST_REPORT], "cannot-examine");
    let why = call(&refused, pid, 30).unwrap_err();
    assert!(
        why.starts_with("leaks failed: leaks cannot examine process"),
        "{why}"
    );
    assert!(why.contains("run a Ruby you installed"), "{why}");

    let asks = StandIn::new(&[LIST_REPORT], "prompt");
    let started = Instant::now();
    let why = call(&asks, pid, 30).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited for the deadline"
    );
    assert!(
        why.contains("leaks stopped (SIGTTIN) waiting for input from the terminal"),
        "{why}"
    );
    assert!(why.contains("sudo DevToolsSecurity -enable"), "{why}");

    let hangs = StandIn::new(&[LIST_REPORT], "hang");
    let why = call(&hangs, pid, 1).unwrap_err();
    assert!(
        why.contains("leaks did not finish within 1 s (LEAKHUNT_LEAKS_DEADLINE allows more)"),
        "{why}"
    );
    for stand_in_pid in hangs.pids() {
        assert_gone(stand_in_pid);
    }

    target.kill().unwrap();
    target.wait().unwrap();
    let why = call(&found, pid, 30).unwrap_err();
    assert!(why.contains("no longer appears to be running"), "{why}");
    assert!(why.contains("the process had already exited"), "{why}");
}

// ---------------------------------------------------------------------------------------------
// `leakhunt doctor --backend leaks`: a trial leaks on a Ruby of doctor's own.

fn doctor(stand_in: &StandIn, extra: &[(&str, &str)]) -> (i32, String) {
    let out = leakhunt()
        .args(["doctor", "--backend", "leaks"])
        .envs(stand_in.env())
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn doctor_tries_leaks_and_explains_a_prompt_a_refusal_and_a_hang() {
    if !ruby_ready() {
        return;
    }
    let ok = StandIn::new(&[LIST_REPORT], "report");
    let (code, stdout) = doctor(&ok, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ok    backend leaks"), "{stdout}");
    assert!(stdout.contains("ok    leaks trial"), "{stdout}");
    assert!(
        stdout.contains("examined a Ruby of doctor's own"),
        "{stdout}"
    );
    // The trial examined a live Ruby, with run's options.
    let calls = ok.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("args=-noContent "), "{calls:?}");

    let asks = StandIn::new(&[LIST_REPORT], "prompt");
    let (code, stdout) = doctor(&asks, &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("FAIL  leaks trial"), "{stdout}");
    assert!(
        stdout.contains("waiting for input from the terminal"),
        "{stdout}"
    );
    assert!(stdout.contains("DevToolsSecurity -enable"), "{stdout}");

    let refused = StandIn::new(&[LIST_REPORT], "cannot-examine");
    let (code, stdout) = doctor(&refused, &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("FAIL  leaks trial"), "{stdout}");
    assert!(stdout.contains("sudo does not get past SIP"), "{stdout}");

    let hangs = StandIn::new(&[LIST_REPORT], "hang");
    let (code, stdout) = doctor(&hangs, &[("LEAKHUNT_LEAKS_DEADLINE", "1")]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("did not finish within 1 s"), "{stdout}");

    // The setting names a test stand-in; a wrong value is said plainly.
    let out = leakhunt()
        .args(["doctor", "--backend", "leaks"])
        .env("LEAKHUNT_TEST_LEAKS_STAND_IN", "leaks-stand-in")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("it is a test setting"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// The socket's directory.

/// A TMPDIR whose path is too long for the agent's socket (macOS's per-user TMPDIR is long and
/// its limit 104 bytes) or holds a space: the run's private directory goes to /tmp instead.
#[test]
fn an_unusable_tmpdir_falls_back_to_tmp() {
    if !ruby_ready() {
        return;
    }
    let holder = tempfile::tempdir().unwrap();
    let long = holder.path().join("d".repeat(120));
    let spaced = holder.path().join("with space");
    for dir in [&long, &spaced] {
        std::fs::create_dir(dir).unwrap();
        let r = run(
            &["--backend", "none"],
            &[fixture("run/early-exit.rb").to_str().unwrap()],
            &[("TMPDIR", dir.to_str().unwrap())],
        );
        let ctx = r.context();
        assert_eq!(r.manifest.outcome.code, Some(3), "{ctx}");
        assert_eq!(r.reasons(), ["exit"], "{ctx}");
        let socket = PathBuf::from(&r.manifest.env["LEAKHUNT_SOCKET"]);
        assert!(socket.starts_with("/tmp"), "{ctx}");
        assert!(!socket.parent().unwrap().exists(), "left behind: {ctx}");
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "{ctx}");
    }
    let out = leakhunt()
        .args(["doctor", "--backend", "none"])
        .env("TMPDIR", &long)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("is too long for a Unix socket path"),
        "{stdout}"
    );
    assert!(stdout.contains("runs use /tmp instead"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C as a Mac's terminal sends it.

/// On macOS the sender of a keyboard SIGINT is the process writing to the terminal's master
/// side (the terminal emulator, sshd, tmux), not pid 0. This test is that process: from
/// outside leakhunt's session it signals the program's group, which holds the terminal. The
/// program traps SIGINT and goes on, so only leakhunt hearing it ends the run; and leakhunt does
/// not send it a second SIGINT, since the program already had the terminal's.
#[test]
fn a_sigint_from_outside_leakhunts_session_counts_as_the_terminals() {
    if !ruby_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let t = OnTerminal::start(
        &["--backend", "none", "--after", "300ms", "--every", "30s"],
        &fixture("run/traps-int.rb"),
    );
    wait_for_first_snapshot(t.bundle());
    let manifest = leakhunt::bundle::Manifest::load(t.bundle()).unwrap();
    let program = manifest.pid.unwrap() as i32;
    // SAFETY: signals the process group of the program this test had leakhunt start.
    unsafe {
        libc::kill(-program, libc::SIGINT);
    }
    let r = t.finish();
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.kind, "interrupted", "{ctx}");
    assert!(r.manifest.outcome.detail.contains("SIGINT"), "{ctx}");
    assert_eq!(r.reasons(), ["interval", "interrupt"], "{ctx}");
    assert!(r.stdout.contains("SIGINT: taking a last snapshot"), "{ctx}");
    assert_eq!(
        r.stdout.matches("INT trapped, going on").count(),
        1,
        "{ctx}"
    );
    assert_private_and_clean(&r);
}

// ---------------------------------------------------------------------------------------------
// macos/capture-fixtures.sh, run here with stand-ins for the Mac's commands.

/// Writes an executable `name` into `dir` with `body` (a sh script).
fn stub(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The script hands `--ruby` to `leakhunt run` and `leakhunt doctor` (without it they would pick
/// the SIP-protected /usr/bin/ruby), and reaps each program it starts (started in a `$(…)`
/// subshell, a program is not the script's child: `wait` would return 127 at once).
#[test]
fn capture_fixtures_passes_its_ruby_on_and_waits_for_its_own_children() {
    if !seed_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let stand_in = StandIn::new(&[LIST_REPORT], "report");
    let bin = stand_in.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let leaks = stand_in.as_tool();
    stub(&bin, "leaks", &format!("exec '{}' \"$@\"", leaks.display()));
    stub(&bin, "uname", "echo Darwin");
    stub(
        &bin,
        "sw_vers",
        "case \"$1\" in -productName) echo macOS;; -productVersion) echo 15.5;; *) echo 24F74;; esac",
    );
    stub(
        &bin,
        "xcode-select",
        "echo /Library/Developer/CommandLineTools",
    );
    stub(
        &bin,
        "DevToolsSecurity",
        "echo 'Developer mode is currently enabled.'",
    );
    let real_ruby = Command::new("sh")
        .args(["-c", "command -v ruby"])
        .output()
        .unwrap();
    let real_ruby = String::from_utf8_lossy(&real_ruby.stdout).trim().to_owned();
    // Outside /usr/bin, as a Homebrew Ruby is; the script refuses the system one.
    let ruby = stub(&bin, "ruby", &format!("exec '{real_ruby}' \"$@\""));
    let calls = stand_in.dir.path().join("leakhunt-calls.txt");
    let leakhunt_stub = stub(
        &bin,
        "leakhunt",
        &format!(
            "echo \"$*\" >> '{}'\n[ \"$1\" = --version ] && echo 'leakhunt 0.1.0'\nexit 0",
            calls.display()
        ),
    );
    let out = stand_in.dir.path().join("out");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("macos/capture-fixtures.sh"))
        .arg("--ruby")
        .arg(&ruby)
        .arg("--leakhunt")
        .arg(&leakhunt_stub)
        .arg("--out")
        .arg(&out)
        .env("PATH", path)
        .env("CAPTURE_SETTLE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let leakhunt_calls = std::fs::read_to_string(&calls).unwrap();
    let ruby = ruby.display().to_string();
    assert!(
        leakhunt_calls.contains(&format!("run --backend leaks --ruby {ruby} -o ")),
        "{leakhunt_calls}"
    );
    assert!(
        leakhunt_calls.contains(&format!("doctor --backend leaks --ruby {ruby}")),
        "{leakhunt_calls}"
    );
    let manifest = std::fs::read_to_string(out.join("MANIFEST.txt")).unwrap();
    // Five programs started and stopped: each reaped by the script, ended by its SIGTERM.
    assert_eq!(
        manifest.matches("then ended with status 143").count(),
        5,
        "{manifest}\n{stderr}"
    );
    assert!(
        manifest.contains("leaks-msl1-nocontent.txt — leaks -noContent PID"),
        "{manifest}"
    );
    assert!(manifest.contains("DevToolsSecurity: Developer mode is currently enabled."));
    let report = std::fs::read_to_string(out.join("leaks-msl1-nocontent.txt")).unwrap();
    assert!(report.contains("1 leak for"), "{report}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}
