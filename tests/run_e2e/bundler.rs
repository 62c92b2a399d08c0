//! The agent under Bundler with a Gemfile that lists neither fiddle nor ffi. `bundle exec ruby
//! app.rb` execs Ruby with `RUBYOPT=-rbundler/setup -r<agent>`: the bundle is set up before the
//! agent loads, so the agent loads under the bundle's rules (from Ruby 3.5 `require 'fiddle'`
//! raises LoadError there, and 3.4 prints a deprecation warning on the program's stderr). The
//! agent loads Fiddle's extension from the Ruby installation instead; here LeakSanitizer's check
//! runs at every snapshot and the program's streams stay its own, on this machine's Ruby and on
//! Ruby 3.3 in the root.
//!
//! Those runs start Ruby as that exec does (RUBYOPT with `-rbundler/setup`, BUNDLE_GEMFILE).
//! The last one goes through `bundle exec` itself: the `bundle` process loads the agent, is
//! snapshotted, then execs Ruby with the same pid, whose snapshots alone are the program's.

use super::{Run, json_report, line_of, lsan_ready, one_run_at_a_time, ruby_ready, run};
use crate::common::{build_widget, have, require, widget_fixture};
use std::path::Path;
use std::process::{Command, Stdio};

fn bundler_ready() -> bool {
    let ok = have("ruby")
        && Command::new("ruby")
            .args(["-e", "require 'bundler'"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    require("Ruby's bundler (Debian bundler)", ok)
}

/// A plain program (no gems), running SECONDS.
const APP: &str = r#"kept = []
stop_at = Process.clock_gettime(Process::CLOCK_MONOTONIC) + Float(ARGV[0] || 6)
while Process.clock_gettime(Process::CLOCK_MONOTONIC) < stop_at
  kept << ("x" * 100) if kept.size < 20_000
  sleep 0.001
end
puts "app: done"
"#;

/// Writes the Gemfile (no gems: resolving it needs no network) and the program into `dir`.
pub(super) fn write_app(dir: &Path) {
    std::fs::write(dir.join("Gemfile"), "source \"https://rubygems.org\"\n").unwrap();
    std::fs::write(dir.join("app.rb"), APP).unwrap();
}

/// `run` options.
pub(super) const OPTIONS: &[&str] = &[
    "--backend",
    "lsan",
    "--after",
    "1s",
    "--every",
    "1s",
    "--snapshots",
    "2",
    "--fail-on",
    "never",
];

/// What a run under Bundler must show: every snapshot has native evidence from a check that ran
/// (the agent timed its `lsan` step and noted no LeakSanitizer problem), and nothing but
/// leakhunt wrote to stderr.
pub(super) fn assert_checked_and_quiet(r: &Run) {
    let ctx = r.context();
    assert_eq!(r.manifest.outcome.code, Some(0), "{ctx}");
    let rubyopt = r.manifest.env.get("RUBYOPT").map(String::as_str);
    assert!(
        rubyopt.is_some_and(|o| o.starts_with("-rbundler/setup -r")),
        "the bundle is set up before the agent loads, as under bundle exec: {rubyopt:?}"
    );
    assert!(r.stdout.contains("app: done"), "{ctx}");
    let stray: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| !l.starts_with("leakhunt: "))
        .collect();
    assert!(
        stray.is_empty(),
        "the program's stderr got {stray:?}\n{ctx}"
    );
    let interval: Vec<_> = r
        .manifest
        .snapshots
        .iter()
        .filter(|s| s.reason == "interval")
        .collect();
    assert_eq!(interval.len(), 2, "{ctx}");
    for s in interval {
        assert!(
            s.native.is_some(),
            "snapshot {} has no native evidence\n{ctx}",
            s.index
        );
        let sidecar = r.sidecar(s.sidecar.as_ref().unwrap());
        assert!(
            sidecar.timings.contains_key("lsan"),
            "snapshot {}: no check ran: {:?}",
            s.index,
            sidecar.timings
        );
        assert!(
            sidecar.errors.iter().all(|e| !e.contains("LeakSanitizer")),
            "{:?}",
            sidecar.errors
        );
    }
}

#[test]
fn under_bundler_without_fiddle_the_check_runs_and_prints_nothing() {
    if !ruby_ready() || !lsan_ready() || !bundler_ready() {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path());
    let gemfile = dir.path().join("Gemfile");
    let app = dir.path().join("app.rb");
    let r = run(
        OPTIONS,
        &[app.to_str().unwrap(), "7"],
        &[
            ("BUNDLE_GEMFILE", gemfile.to_str().unwrap()),
            ("RUBYOPT", "-rbundler/setup"),
        ],
    );
    assert_checked_and_quiet(&r);
}

/// `leakhunt run -- bundle exec ruby widget-leak.rb` with a Gemfile listing ffi (resolved from
/// the installed gems, no network): the `bundle` process says hello first and is snapshotted,
/// then execs Ruby under the same pid. Its snapshots and its LeakSanitizer log are set aside
/// (the new runtime would truncate the log), so the report is the program's own: the unclosed
/// widgets, and no growth of Bundler's objects between the two programs.
#[test]
fn bundle_exec_is_followed_into_the_program_it_execs() {
    if !ruby_ready() || !lsan_ready() || !bundler_ready() || !have("bundle") {
        return;
    }
    let _one = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let gemfile = dir.path().join("Gemfile");
    std::fs::write(&gemfile, "source \"https://rubygems.org\"\ngem \"ffi\"\n").unwrap();
    let locked = Command::new("bundle")
        .args(["lock", "--local"])
        .current_dir(dir.path())
        .env("BUNDLE_GEMFILE", &gemfile)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !require(
        "ffi as a gem Bundler resolves locally (Debian ruby-ffi)",
        locked,
    ) {
        return;
    }
    let lib = build_widget(dir.path());
    let report = dir.path().join("report.json");
    let program = widget_fixture("widget-leak.rb");
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
            "bundle",
            "exec",
            "ruby",
            program.to_str().unwrap(),
            "3000",
            "4",
        ],
        &[
            ("BUNDLE_GEMFILE", gemfile.to_str().unwrap()),
            ("WIDGET_LIB", lib.to_str().unwrap()),
        ],
    );
    let ctx = r.context();
    assert_eq!(r.code, 0, "{ctx}");
    assert!(!r.stderr.contains("shrank"), "{ctx}");
    let main = r.manifest.main_process().expect("a main process");
    let exec = main.exec.as_ref().expect("the exec is recorded");
    assert!(
        exec.before.iter().any(|w| w.ends_with("bundle")),
        "{exec:?}\n{ctx}"
    );
    assert!(
        exec.first_round >= 2,
        "the bundle process had a round: {ctx}"
    );
    for log in &exec.logs {
        assert!(r.bundle.join(log).is_file(), "{log} is kept\n{ctx}");
    }
    let after: Vec<_> = r
        .manifest
        .snapshots
        .iter()
        .filter(|s| s.taken() && exec.covers(s.index))
        .collect();
    assert!(after.len() >= 2, "two rounds of the program itself: {ctx}");
    let report = json_report(&report, &r);
    let findings = report["findings"].as_array().unwrap();
    let leaks: Vec<_> = findings
        .iter()
        .filter(|f| f["kind"] != "runtime_noise")
        .collect();
    assert_eq!(leaks.len(), 1, "only the widgets leak: {report:#}\n{ctx}");
    let top = leaks[0];
    assert_eq!(top["kind"], "missing_release", "{top:#}");
    assert_eq!(top["suggestion"]["method"], "Widget#close", "{top:#}");
    assert_eq!(top["native"]["function"], "widget_create", "{top:#}");
    let created = &top["suggestion"]["locations"][0];
    assert_eq!(
        created["file"].as_str(),
        program.to_str(),
        "the program's own file: {top:#}"
    );
    assert_eq!(
        created["line"],
        line_of(
            "widget/widget-leak.rb",
            "WidgetProgram.spread(count, seconds) { Widget.new(size) }"
        ),
        "{top:#}"
    );
}
