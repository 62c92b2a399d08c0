//! Helpers shared by the integration tests: the built binary, fixture paths, scratch dirs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `leakhunt` binary built by cargo for this test run.
pub fn leakhunt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leakhunt"));
    c.env("LEAKHUNT_NO_PROGRESS", "1").env("NO_COLOR", "1");
    c
}

/// Runs leakhunt with `args`; returns (exit code, stdout, stderr).
pub fn run_leakhunt<I, S>(args: I) -> (i32, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out: Output = leakhunt().args(args).output().expect("spawn leakhunt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the run lock until dropped: end-to-end runs (`leakhunt run`, programs under LSan or
/// valgrind) are timing-sensitive and the machine has two cores, so one runs at a time. A test
/// that panicked while holding it does not poison it.
pub fn one_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// `fixtures/<rel>` in the repository.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Whether a command is on PATH (end-to-end tests need ruby, valgrind, …; CI installs them).
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `fixtures/widget/<name>`: the widget library and its Ruby programs (fixtures/README.md).
pub fn widget_fixture(name: &str) -> PathBuf {
    fixture("widget").join(name)
}

/// Builds `fixtures/widget/widget.c` into `dir/libwidget.so` with `gcc -shared -fPIC -g -O0`
/// and returns its path. Run the programs with `WIDGET_LIB` set to it.
pub fn build_widget(dir: &Path) -> PathBuf {
    let lib = dir.join("libwidget.so");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-g", "-O0", "-o"])
        .arg(&lib)
        .arg(widget_fixture("widget.c"))
        .status()
        .expect("spawn gcc (package gcc)");
    assert!(status.success(), "gcc failed to build libwidget.so");
    lib
}

/// Copies `fixtures/cext/cbufs` (the test C extension) into `dir/cbufs` and returns that
/// directory; build it there with [`CBUFS_BUILD`] (mkmf: `ruby extconf.rb && make`).
pub fn copy_cbufs(dir: &Path) -> PathBuf {
    let to = dir.join("cbufs");
    std::fs::create_dir_all(&to).unwrap();
    for name in ["cbufs.c", "extconf.rb"] {
        std::fs::copy(fixture("cext/cbufs").join(name), to.join(name)).unwrap();
    }
    to
}

/// The shell command that builds cbufs.so in the current directory with the `ruby` on PATH.
pub const CBUFS_BUILD: &str = "ruby extconf.rb >/dev/null && make >/dev/null";

/// Builds the test C extension with this machine's Ruby into `dir/cbufs`; returns that
/// directory (the programs find it through `CBUFS_DIR`).
pub fn build_cbufs(dir: &Path) -> PathBuf {
    let at = copy_cbufs(dir);
    let status = Command::new("sh")
        .args(["-euc", CBUFS_BUILD])
        .current_dir(&at)
        .status()
        .expect("spawn sh");
    assert!(
        status.success(),
        "building cbufs.so with mkmf failed (packages ruby-dev, make, gcc)"
    );
    at
}

/// Whether a test that needs `what` from the system may run. Missing tools fail the test (CI
/// installs `.ci/packages`, so a silent skip would be a test that cannot fail); on a machine
/// without them, set `LEAKHUNT_ALLOW_SKIP=1` to skip such tests instead.
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("LEAKHUNT_ALLOW_SKIP").is_some() {
        eprintln!("skipping: {what} is not installed (LEAKHUNT_ALLOW_SKIP is set)");
        return false;
    }
    panic!("{what} is not installed: run .ci/setup (or set LEAKHUNT_ALLOW_SKIP=1 to skip)");
}

/// A JSON finding's suggestion locations as (file base name, line, role).
pub fn locations(finding: &serde_json::Value) -> Vec<(String, u64, String)> {
    finding["suggestion"]["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let file = l["file"].as_str().unwrap_or_default();
            let base = file.rsplit('/').next().unwrap_or(file).to_owned();
            (
                base,
                l["line"].as_u64().unwrap_or(0),
                l["role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// One line per finding of a JSON report (kind, confidence, title), put first in a failing
/// assertion's message: CI keeps the head and tail of a long failure and drops its middle.
pub fn findings_brief(report: &serde_json::Value) -> String {
    let lines: Vec<String> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "finding: {} [{}] {}",
                f["kind"].as_str().unwrap_or_default(),
                f["confidence"].as_str().unwrap_or_default(),
                f["title"].as_str().unwrap_or_default()
            )
        })
        .collect();
    lines.join("\n")
}

/// The kinds of a JSON report's findings, runtime noise left out.
pub fn leak_kinds(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["kind"].as_str().unwrap_or_default().to_owned())
        .filter(|k| k != "runtime_noise")
        .collect()
}

/// Seed A's diagnosis: Ruby retention of `ZMQ::Message` by the Array allocated at leak.rb:29
/// (`messages = []`) and filled at leak.rb:39 (`messages << message`).
pub fn assert_seed_a_top_finding(top: &serde_json::Value) {
    assert_eq!(top["kind"], "ruby_retention", "{top:#}");
    assert_eq!(top["class"], "ZMQ::Message");
    let locs = locations(top);
    assert!(
        locs.contains(&("leak.rb".into(), 29, "container_allocated".into())),
        "{locs:?}"
    );
    assert!(
        locs.contains(&("leak.rb".into(), 39, "container_filled".into())),
        "{locs:?}"
    );
}
