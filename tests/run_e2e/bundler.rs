//! The agent under Bundler with a Gemfile that lists neither fiddle nor ffi. `bundle exec ruby
//! app.rb` execs Ruby with `RUBYOPT=-rbundler/setup -r<agent>`: the bundle is set up before the
//! agent loads, so the agent loads under the bundle's rules (from Ruby 3.5 `require 'fiddle'`
//! raises LoadError there, and 3.4 prints a deprecation warning on the program's stderr). The
//! agent loads Fiddle's extension from the Ruby installation instead; here LeakSanitizer's check
//! runs at every snapshot and the program's streams stay its own, on this machine's Ruby and on
//! Ruby 3.3 in the root.
//!
//! The runs start Ruby as that exec does (RUBYOPT with `-rbundler/setup`, BUNDLE_GEMFILE), not
//! through `bundle exec` itself: the `bundle` processes before the exec load the agent too, and
//! following a run across them is another matter than what is tested here.

use super::{Run, lsan_ready, one_run_at_a_time, ruby_ready, run};
use crate::common::{have, require};
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
